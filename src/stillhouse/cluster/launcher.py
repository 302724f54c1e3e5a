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
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        _ensure_ray(job)
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


_started_here = False


def _ensure_ray(job: TrainJob) -> None:
    """Start a local Ray sized for ``job``, or check that the running one can hold it.

    Ray Train waits forever for resources it cannot get, so a too-small instance is an error here (or,
    when this process started it for an earlier, smaller job, it is restarted at the new size).
    """
    import ray

    global _started_here
    cpus = job.workers * job.cpus_per_worker
    if ray.is_initialized():
        have = ray.cluster_resources().get("CPU", 0)
        if have >= cpus and (not job.use_gpu or ray.cluster_resources().get("GPU", 0) >= job.workers):
            return
        if not _started_here:
            raise StillhouseError(f"the Ray instance this process is connected to has {have:g} CPUs; training job "
                                  f"`{job.name}` needs {cpus} ({job.workers} workers x {job.cpus_per_worker})",
                                  "lower runtime.workers / runtime.cpus_per_worker, or connect to a larger cluster")
        ray.shutdown()
    # Ray Train V2; with V1 a 2-worker run on 2 cores was measured to hang forever.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(num_cpus=cpus, num_gpus=job.workers if job.use_gpu else 0, include_dashboard=False,
             log_to_driver=True, configure_logging=True, logging_level="WARNING",
             # Without the dashboard, Ray Train's placement-group cleaner warns every second that the state
             # API is unavailable (hundreds of lines per run); ERROR keeps real problems visible.
             logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"))
    _started_here = True


def _forwarded_env() -> dict[str, str]:
    # Ray workers do not inherit the driver's environment for these; offline mode must hold there too.
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STILLHOUSE_INJECT_FAILURE_AFTER_EPOCH")
    env = {name: os.environ[name] for name in names if name in os.environ}
    # Ray Train V2 re-routes print() through its logger as well, so each progress line appeared twice.
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    return env


def default_launcher() -> Launcher:
    return LocalRayLauncher()
