"""The ``ray.io/v1`` RayJob a KubeRay training job becomes, and the rules its schema cannot express.

:func:`rayjob_manifest` builds the body from the spec's ``runtime`` section; :func:`check_rayjob` refuses a
body that KubeRay would reject or mishandle *before* any API call. The CRD's ``openAPIV3Schema`` types the
fields but leaves ``submissionMode`` a free string and puts the rest in CEL rules the tests cannot run, so
those are checked here (the tests validate every body against the schema itself).

The cluster is created for the job and torn down after it (``shutdownAfterJobFinishes``), kept
``ttlSecondsAfterFinished`` for inspection; ``K8sJobMode`` submits from a Kubernetes Job, the mode that
survives a head restart. ``backoffLimit: 0``: Ray Train already restarts failed workers from the last
checkpoint (``runtime.max_failures``); a whole-job retry would hide a deterministic failure.
"""

from __future__ import annotations

import re
import shlex
from importlib import metadata

from stillhouse.cluster import storage
from stillhouse.errors import StillhouseError
from stillhouse.spec.runtime import Resources, RuntimeSpec

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
# The user the project's image runs as (infra/images/Dockerfile); pods refuse to start as root.
RUN_AS_USER = 1000
_NAME = re.compile(r"[a-z]([a-z0-9-]{0,45}[a-z0-9])?")  # KubeRay derives longer cluster/job names from it
_SHM = "/dev/shm"


def _ray_version() -> str:
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "2.60.0"


def _container(name: str, image: str, resources: Resources, runtime: RuntimeSpec, env: dict[str, str]) -> dict:
    mounts = [{"name": "shm", "mountPath": _SHM}]
    if runtime.storage_volume is not None:
        mounts.append({"name": "storage", "mountPath": runtime.storage_volume.mount_path})
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": resources.requests, "limits": resources.limits},
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "volumeMounts": mounts,
        # Ray writes its session under /tmp and its object store spills to disk, so the root filesystem
        # stays writable here; everything else a restricted pod would drop is dropped.
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "runAsUser": RUN_AS_USER},
    }
    if runtime.storage_secret:
        container["envFrom"] = [{"secretRef": {"name": runtime.storage_secret}}]
    return container


def _pod_template(container: dict, runtime: RuntimeSpec) -> dict:
    ray = runtime.kuberay
    volumes = [{"name": "shm", "emptyDir": {"medium": "Memory"}}]  # Ray's object store wants a large /dev/shm
    if runtime.storage_volume is not None:
        volumes.append({"name": "storage", "persistentVolumeClaim": {"claimName": runtime.storage_volume.claim}})
    spec = {
        "containers": [container],
        "volumes": volumes,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "fsGroup": RUN_AS_USER,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": ray.service_account is not None,
    }
    if ray.service_account:
        spec["serviceAccountName"] = ray.service_account
    if ray.node_selector:
        spec["nodeSelector"] = dict(ray.node_selector)
    if ray.tolerations:
        spec["tolerations"] = [t.to_kubernetes() for t in ray.tolerations]
    if runtime.kubernetes.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in runtime.kubernetes.image_pull_secrets]
    return {"metadata": {"labels": {"app.kubernetes.io/part-of": "stillhouse"}}, "spec": spec}


def worker_resources(runtime: RuntimeSpec) -> Resources:
    """A worker pod's resources: the spec's, with CPU from ``cpus_per_worker`` and a GPU per worker with
    ``use_gpu`` unless given explicitly."""
    worker = runtime.kuberay.worker
    update = {}
    if worker.cpu is None:
        update["cpu"] = str(runtime.cpus_per_worker)
    if runtime.use_gpu and worker.gpus == 0:
        update["gpus"] = 1
    return worker.model_copy(update=update)


def rayjob_manifest(name: str, namespace: str, job_uri: str, runtime: RuntimeSpec, env: dict[str, str]) -> dict:
    """The RayJob body that runs the training job described at ``job_uri`` (see :mod:`stillhouse.cluster.job`)."""
    ray = runtime.kuberay
    image = ray.image or runtime.resolved_image
    workers = runtime.workers
    head = _container("ray-head", image, ray.head, runtime, env)
    worker = _container("ray-worker", image, worker_resources(runtime), runtime, env)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "stillhouse",
                                "app.kubernetes.io/part-of": "stillhouse"}},
        "spec": {
            "entrypoint": f"python -m stillhouse.cluster.job --job {shlex.quote(job_uri)}",
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": ray.ttl_seconds_after_finished,
            "activeDeadlineSeconds": ray.active_deadline_seconds,
            "backoffLimit": 0,
            "rayClusterSpec": {
                "rayVersion": _ray_version(),
                "headGroupSpec": {"rayStartParams": {}, "template": _pod_template(head, runtime)},
                "workerGroupSpecs": [{
                    "groupName": "workers", "replicas": workers, "minReplicas": workers, "maxReplicas": workers,
                    "rayStartParams": {}, "template": _pod_template(worker, runtime),
                }],
            },
        },
    }


def check_rayjob(body: dict) -> None:
    """Refuse what the CRD schema accepts but KubeRay rejects or mishandles (one message per problem)."""
    problems = []
    name = body.get("metadata", {}).get("name", "")
    spec = body.get("spec", {})
    if not _NAME.fullmatch(name):
        problems.append(f"metadata.name `{name}`: use at most 47 lowercase letters, digits and '-', starting with a "
                        "letter (KubeRay derives the cluster's and submitter's names from it)")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        problems.append(f"spec.submissionMode `{mode}`: use one of {', '.join(SUBMISSION_MODES)}")
    if spec.get("ttlSecondsAfterFinished") and not spec.get("shutdownAfterJobFinishes"):
        problems.append("spec.ttlSecondsAfterFinished works only with spec.shutdownAfterJobFinishes: true")
    if spec.get("activeDeadlineSeconds", 1) <= 0:
        problems.append("spec.activeDeadlineSeconds must be positive")
    if not spec.get("entrypoint", "").strip() and mode != "InteractiveMode":
        problems.append("spec.entrypoint is empty")
    cluster = spec.get("rayClusterSpec")
    if cluster is None and not spec.get("clusterSelector"):
        problems.append("spec.rayClusterSpec is missing (or name an existing cluster in spec.clusterSelector)")
    for group in (cluster or {}).get("workerGroupSpecs", []):
        low, n, high = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas", 2**31)
        if not low <= n <= high:
            problems.append(f"worker group `{group.get('groupName')}`: replicas {n} outside [{low}, {high}]")
    if problems:
        raise StillhouseError(f"the RayJob `{name}` would be refused by KubeRay: " + "; ".join(problems),
                              "correct runtime.kuberay / runtime.workers in the spec")


def job_name(train_name: str, suffix: str) -> str:
    """A RayJob name for one training job: its slugged name and a unique suffix (``student-3f9a1c2e``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", train_name.lower()).strip("-") or "train"
    return f"stillhouse-{slug[:24].strip('-')}-{suffix}"


def job_folder(runtime: RuntimeSpec, name: str) -> str:
    """The job's folder in the shared storage (inputs, Ray Train's checkpoints, result)."""
    assert runtime.storage is not None
    return storage.join(runtime.storage, "jobs", name)
