"""Ray Train on a Ray instance this process starts (or joins): the ``local`` launcher, and the trainer a RayJob's
entrypoint (:mod:`stillhouse.cluster.job`) runs on a cluster."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from stillhouse.cluster import storage
from stillhouse.distill.training import TrainJob, train_loop_per_worker
from stillhouse.errors import StillhouseError
from stillhouse.spec.runtime import RuntimeSpec


class LocalRayLauncher:
    """Ray Train ``TorchTrainer`` on a Ray instance started inside this process (``ray.init``)."""

    def __init__(self, runtime: RuntimeSpec | None = None):
        self.runtime = runtime

    def fit(self, job: TrainJob) -> Path:
        _ensure_ray(job)
        return Path(run_trainer(job))


def run_trainer(job: TrainJob) -> str:
    """Fit ``job`` with Ray Train on the Ray instance this process is connected to; return the final
    checkpoint's location in the job's storage (a path, or an ``s3://`` URI when ``storage_dir`` is one)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    filesystem, storage_path = storage.resolve(job.storage_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.to_config(),
        torch_config=TorchConfig(backend="nccl" if job.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.use_gpu,
                                     resources_per_worker={"CPU": job.cpus_per_worker}),
        run_config=RunConfig(
            name=job.name,
            # The checkpoints live in the job's storage, so a restarted worker (or pod) resumes from there.
            storage_path=storage_path,
            storage_filesystem=filesystem if storage.is_remote(job.storage_dir) else None,
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
    return storage.uri_of(result.checkpoint.filesystem, result.checkpoint.path)


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
    address = _start_isolated_ray(cpus, job.workers if job.use_gpu else 0)
    # Anything in this process that asks Ray for "the" cluster (the state API, job tools) gets this one.
    os.environ["RAY_ADDRESS"] = address
    _started_here = True


def _start_isolated_ray(cpus: int, gpus: int) -> str:
    """Start a Ray instance of this process's own, which other Ray instances on the host cannot disturb and
    which cannot disturb them; return its GCS address.

    ``address="local"``: never join a cluster found through $RAY_ADDRESS or /tmp/ray. A temp folder of its own:
    nothing is written to /tmp/ray, where `ray start` clusters and other users' runs record themselves. On
    127.0.0.1 at a port chosen here, so that every worker and actor of the job (Ray Train's placement-group
    cleaner among them) is given the address in $RAY_ADDRESS: without it they look for "the" local instance by
    scanning processes and, with a second Ray on the host, died with "Found multiple active Ray instances".
    """
    import ray

    with socket.socket() as probe:  # a free port now; Ray binds it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="shray-")  # short: Ray's socket paths must stay under 107 characters
    atexit.register(_remove_ray_temp, temp_dir)  # runs after Ray's own shutdown hook (registered later)
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, runtime_env={"env_vars": {"RAY_ADDRESS": address}},
                 log_to_driver=True, configure_logging=True, logging_level="WARNING",
                 # Without the dashboard, Ray Train's placement-group cleaner warns every second that the state
                 # API is unavailable (hundreds of lines per run); ERROR keeps real problems visible.
                 logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"))
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous
    return address


def _remove_ray_temp(temp_dir: str) -> None:
    """Remove a finished Ray's temp folder; its processes may still write a file or two while they exit."""
    for _ in range(10):
        shutil.rmtree(temp_dir, ignore_errors=True)
        if not os.path.exists(temp_dir):
            return
        time.sleep(0.2)


def _forwarded_env() -> dict[str, str]:
    # Ray workers do not inherit the driver's environment for these; offline mode must hold there too.
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STILLHOUSE_INJECT_FAILURE_AFTER_EPOCH", "STILLHOUSE_CACHE",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
    env = {name: os.environ[name] for name in names if name in os.environ}
    # Ray Train V2 re-routes print() through its logger as well, so each progress line appeared twice.
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    return env
