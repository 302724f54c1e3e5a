"""The entrypoint of a KubeRay RayJob: ``python -m stillhouse.cluster.job --job URI``.

``URI`` is ``job.json`` in the job's shared storage, written by
:class:`~stillhouse.cluster.kuberay.KubeRayLauncher`: a :class:`~stillhouse.distill.training.TrainJob` whose
inputs and ``storage_dir`` are locations in that storage. This runs the same Ray Train job as the local
launcher, on the Ray cluster it was submitted to (``RAY_ADDRESS``, set by Ray's job submission; without it, a
local Ray is started), and writes ``result.json`` beside ``job.json``: where the final checkpoint is. A failure
exits with status 1 after one ``error:`` line, so the RayJob ends ``Failed``/``AppFailed``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from stillhouse.cluster import storage
from stillhouse.cluster.local_ray import _ensure_ray, run_trainer
from stillhouse.distill.training import TrainJob
from stillhouse.errors import StillhouseError

RESULT_FILE = "result.json"


def result_uri(job_uri: str) -> str:
    return job_uri.rsplit("/", 1)[0] + "/" + RESULT_FILE


def run_job(job_uri: str) -> str:
    """Run the job described at ``job_uri``; return the final checkpoint's URI (also written to result.json)."""
    import ray

    try:
        job = TrainJob(**json.loads(storage.read_text(job_uri)))
    except (TypeError, ValueError) as exc:
        raise StillhouseError(f"{job_uri} is not a Stillhouse training job ({type(exc).__name__})",
                              "the step that created this RayJob wrote it; rerun that step") from None
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, logging_level="WARNING")
    else:
        _ensure_ray(job)
    checkpoint = run_trainer(job)
    storage.write_text(result_uri(job_uri), json.dumps({"job": job.name, "checkpoint": checkpoint}))
    return checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stillhouse.cluster.job", description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, help="URI of the job.json the launcher wrote")
    args = parser.parse_args(argv)
    try:
        checkpoint = run_job(args.job)
    except StillhouseError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"stillhouse: training job finished; checkpoint {checkpoint}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
