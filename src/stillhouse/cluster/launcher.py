"""Where training jobs run: one interface, a local-Ray implementation now, a KubeRay RayJob one later.

A pipeline step builds a :class:`~stillhouse.distill.training.TrainJob` and hands it to a launcher; the
launcher returns the folder of the final checkpoint. Steps never call Ray directly, so the same step can
submit the same job to a cluster (``KubeRayLauncher``, a later issue) instead of the step's own process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from stillhouse.distill.training import TrainJob, train_loop_per_worker
from stillhouse.errors import StillhouseError


class Launcher(Protocol):
    """Runs a training job to completion and returns the last checkpoint's folder."""

    def fit(self, job: TrainJob) -> Path: ...


class LocalRayLauncher:
    """Ray Train ``TorchTrainer`` on a Ray instance started inside this process (``ray.init``)."""

    def fit(self, job: TrainJob) -> Path:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        if not ray.is_initialized():
            # Ray Train V2; with V1 a 2-worker run on 2 cores was measured to hang forever.
            os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
            ray.init(num_cpus=job.workers * job.cpus_per_worker, num_gpus=job.workers if job.use_gpu else 0,
                     include_dashboard=False, log_to_driver=True, configure_logging=True, logging_level="WARNING",
                     logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"))
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=job.to_config(),
            torch_config=TorchConfig(backend="nccl" if job.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.use_gpu,
                                         resources_per_worker={"CPU": job.cpus_per_worker}),
            run_config=RunConfig(
                name=job.name,
                storage_path=str(Path(job.storage_dir).resolve()),
                failure_config=FailureConfig(max_failures=job.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=1),
                worker_runtime_env={"env_vars": _forwarded_env()},
            ),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # TrainingFailedError wraps the worker's exception
            raise StillhouseError(f"training job `{job.name}` failed: {str(exc).strip().splitlines()[-1]}",
                                  f"see the worker log above; checkpoints are in {job.storage_dir}") from exc
        if result.checkpoint is None:
            raise StillhouseError(f"training job `{job.name}` finished without a checkpoint",
                                  "set at least one epoch")
        return Path(result.checkpoint.path)


def _forwarded_env() -> dict[str, str]:
    # Ray workers do not inherit the driver's environment for these; offline mode must hold there too.
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STILLHOUSE_INJECT_FAILURE_AFTER_EPOCH")
    env = {name: os.environ[name] for name in names if name in os.environ}
    # Ray Train V2 re-routes print() through its logger as well, so each progress line appeared twice.
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    return env


def default_launcher() -> Launcher:
    return LocalRayLauncher()
