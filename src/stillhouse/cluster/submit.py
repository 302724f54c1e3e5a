"""``stillhouse submit``: compile a spec's pipeline and start it on a Kubeflow Pipelines server.

One-off runs go to ``create_run_from_pipeline_package``; with a schedule, a recurring run (re-distillation on a
cron) goes to ``create_recurring_run`` in the named experiment. ``dry_run`` writes the pipeline package and its
parameters and contacts nothing.

Auth comes from where KFP's own tools take it, never from the spec: a service-account token file
(``$KF_PIPELINES_SA_TOKEN_PATH``, or the projected ``/var/run/secrets/kubeflow/pipelines/token`` in a pod), else a
bearer token in ``$KF_PIPELINES_TOKEN`` (e.g. from your identity provider), else none (a port-forwarded or
in-cluster endpoint without auth). The server URL is ``--host`` or ``$KF_PIPELINES_ENDPOINT``.

The steps run in pods, so every local file the spec names must be on a volume they mount: a path that is not
under one of ``runtime.kubernetes.volumes`` is refused here, before anything is submitted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from stillhouse.errors import StillhouseError
from stillhouse.runner import compile_pipeline
from stillhouse.spec import Spec

TOKEN_FILE_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"
_POD_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")
_CRON_FIELD = re.compile(r"[0-9*/,?LW#A-Za-z-]+")


@dataclass(frozen=True)
class Submission:
    pipeline: Path
    params: Path
    run_id: str | None = None
    recurring_run_id: str | None = None
    url: str | None = None


def kfp_cron(schedule: str) -> str:
    """A cron expression as KFP's scheduler reads it (six fields, seconds first); five-field crons get ``0`` s."""
    fields = schedule.split()
    if len(fields) not in (5, 6) or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise StillhouseError(f"--schedule `{schedule}` is not a cron expression",
                              "give five fields (minute hour day month weekday), e.g. \"0 3 * * 1\" for Mondays "
                              "at 03:00")
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


def local_paths(spec: Spec) -> list[tuple[str, str]]:
    """``(field, path)`` for every local file or folder the spec reads (``package:`` and hub names excluded)."""
    found = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}.{i}")
        elif isinstance(node, str) and node.startswith("/") and where.rsplit(".", 1)[-1] in _PATH_FIELDS:
            found.append((where, node))

    walk(spec.model_dump(mode="json", include={"data", "teacher", "student", "synthesis"}), "")
    return found


_PATH_FIELDS = {"path", "corpus", "queries", "qrels", "candidates", "model", "tokenizer"}


def check_paths_mounted(spec: Spec) -> None:
    """Refuse a spec whose local files the step pods could not see."""
    mounts = [v.mount_path for v in spec.runtime.kubernetes.volumes]
    missing = [(field, path) for field, path in local_paths(spec)
               if not any((path + "/").startswith(m.rstrip("/") + "/") for m in mounts)]
    if missing:
        field, path = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise StillhouseError(f"{field} is a local path ({path}){more} that no pipeline step mounts",
                              "put the files on a PersistentVolumeClaim, list it in runtime.kubernetes.volumes "
                              "(claim, mount_path) and write their paths under that mount_path")


def write_package(spec: Spec, out_dir: str | Path) -> tuple[Path, Path]:
    """Compile ``spec``'s pipeline to ``<out_dir>/<name>.pipeline.yaml`` and its parameters to ``.params.json``."""
    out_dir = Path(out_dir)
    pipeline = compile_pipeline(out_dir / f"{spec.name}.pipeline.yaml", spec)
    params = out_dir / f"{spec.name}.params.json"
    params.write_text(json.dumps({"spec_json": spec.model_dump_json()}), encoding="utf-8")
    return pipeline, params


def _client(host: str, namespace: str | None):
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    token_file = os.environ.get(TOKEN_FILE_ENV) or (str(_POD_TOKEN) if _POD_TOKEN.is_file() else None)
    if token_file:
        if not Path(token_file).is_file():
            raise StillhouseError(f"${TOKEN_FILE_ENV} names a token file that does not exist ({token_file})",
                                  "point it at the service-account token file, or unset it")
        return kfp.Client(host=host, namespace=namespace or "kubeflow",
                          credentials=ServiceAccountTokenVolumeCredentials(path=token_file))
    return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=os.environ.get(TOKEN_ENV) or None)


def _server_error(host: str, exc: Exception) -> StillhouseError:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return StillhouseError(f"Kubeflow Pipelines at {host} refused the credentials (HTTP {status})",
                               f"set ${TOKEN_FILE_ENV} to a service-account token file or ${TOKEN_ENV} to a bearer "
                               "token allowed to create runs in this namespace")
    if status is not None:
        return StillhouseError(f"Kubeflow Pipelines at {host} answered HTTP {status} ({getattr(exc, 'reason', '')})",
                               "check the namespace and experiment; the server's log has the details")
    return StillhouseError(f"could not reach Kubeflow Pipelines at {host} ({type(exc).__name__})",
                           "check --host (for a port-forward: http://127.0.0.1:8080) and the network")


def submit(spec: Spec, host: str | None, *, namespace: str | None = None, experiment: str | None = None,
           schedule: str | None = None, dry_run: bool = False, out_dir: str | Path = ".") -> Submission:
    """Compile, then (unless ``dry_run``) start one run or a recurring run of ``spec`` on a KFP server."""
    cron = kfp_cron(schedule) if schedule else None
    check_paths_mounted(spec)
    host = (host or os.environ.get(ENDPOINT_ENV) or "").rstrip("/")
    if not host and not dry_run:
        raise StillhouseError("no Kubeflow Pipelines server given",
                              f"pass --host https://kubeflow.example.com/pipeline (or set ${ENDPOINT_ENV})")
    pipeline, params = write_package(spec, out_dir)
    if dry_run:
        return Submission(pipeline, params)
    arguments = json.loads(params.read_text(encoding="utf-8"))
    experiment = experiment or f"stillhouse-{spec.name}"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        with warnings.catch_warnings():  # kfp warns on every client that it needs a v2 server: it is one
            warnings.simplefilter("ignore", FutureWarning)
            client = _client(host, namespace)
        if cron is None:
            run = client.create_run_from_pipeline_package(str(pipeline), arguments=arguments,
                                                          run_name=f"{spec.name}-{stamp}", experiment_name=experiment,
                                                          namespace=namespace)
            return Submission(pipeline, params, run_id=run.run_id, url=f"{host}/#/runs/details/{run.run_id}")
        found = client.create_experiment(name=experiment, namespace=namespace)
        recurring = client.create_recurring_run(found.experiment_id, job_name=f"{spec.name}-redistill",
                                                description=f"Re-distillation of {spec.name} on `{schedule}`",
                                                cron_expression=cron, max_concurrency=1, no_catchup=True,
                                                params=arguments, pipeline_package_path=str(pipeline))
        return Submission(pipeline, params, recurring_run_id=recurring.recurring_run_id,
                          url=f"{host}/#/recurringrun/details/{recurring.recurring_run_id}")
    except StillhouseError:
        raise
    except Exception as exc:  # kfp_server_api.ApiException, urllib3 connection errors
        raise _server_error(host, exc) from None
