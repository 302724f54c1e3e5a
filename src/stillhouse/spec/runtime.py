"""Where training runs and what a cluster gives each step: ``runtime``, ``runtime.kuberay``, ``runtime.kubernetes``.

Locally (the default) every field below except ``workers``/``cpus_per_worker``/``use_gpu``/``max_failures``/
``seed`` is ignored: ``kfp.local`` disregards platform config, and the local launcher trains in the step's own
process. On a cluster, ``runtime.kubernetes`` becomes the compiled pipeline's kfp-kubernetes platform spec
(resources, GPUs, secrets, volumes, node placement, timeouts, images per step) and ``runtime.launcher: kuberay``
moves each training job into a KubeRay ``RayJob`` whose pods read and write ``runtime.storage``.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from stillhouse.spec.base import _Strict

# The image every step and Ray pod runs unless the spec names another: built from infra/images/Dockerfile.
DEFAULT_IMAGE = "ghcr.io/stillhouse/stillhouse:0.1.0"
IMAGE_ENV = "STILLHOUSE_IMAGE"

StepName = Literal["prepare-data", "train-teacher", "synthesize", "soft-label", "distill-student",
                   "train-baseline", "evaluate", "package"]
TRAINING_STEPS: tuple[str, ...] = ("train-teacher", "distill-student", "train-baseline")
# Where a run executes, not what it computes: left out of the spec hash (the recipe's identity).
DEPLOYMENT_FIELDS = ("launcher", "storage", "storage_volume", "storage_secret", "image", "kuberay", "kubernetes")

# Kubernetes resource quantities as users write them (the apiserver accepts a few more spellings; these are
# the ones a reviewer can read): 2, 500m, 1.5, 8Gi, 512M.
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_LABEL_KEY = re.compile(r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An image reference with an explicit tag or digest: `latest` or no tag would make runs unreproducible.
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|@sha256:[0-9a-f]{64})")


def _check(pattern: re.Pattern, value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"`{value}` is not a valid {what}")
    return value


def _check_image(image: str | None) -> str | None:
    if image is None:
        return None
    if not _IMAGE.fullmatch(image) or image.endswith(":latest"):
        raise ValueError(f"`{image}` is not an image reference with a fixed tag or digest "
                         "(e.g. registry.example.com/stillhouse:0.1.0; `latest` is not reproducible)")
    return image


def _check_selector(selector: dict[str, str]) -> dict[str, str]:
    for key, value in selector.items():
        _check(_LABEL_KEY, key, "label key")
        _check(_LABEL_VALUE, value, "label value")
    return selector


def _absolute_path(value: str, message: str) -> str:
    """``value`` without a trailing ``/`` if it is absolute and has no ``..``; else ``ValueError(message)``."""
    if not value.startswith("/") or ".." in value.split("/"):
        raise ValueError(message)
    return value.rstrip("/") or "/"


def _named(pattern: re.Pattern, what: str) -> AfterValidator:
    return AfterValidator(lambda value: _check(pattern, value, what))


# Types whose values are checked wherever they appear.
ImageRef = Annotated[str, AfterValidator(_check_image)]
NodeSelector = Annotated[dict[str, str], AfterValidator(_check_selector)]
SecretName = Annotated[str, _named(_DNS_SUBDOMAIN, "Secret name")]


class Toleration(_Strict):
    """A Kubernetes toleration (lets pods onto tainted nodes, e.g. GPU nodes)."""

    key: str | None = Field(None, description="Taint key (omit with operator `Exists` to tolerate every taint).")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="`Equal` (key and value) or `Exists` (key).")
    value: str | None = Field(None, description="Taint value (operator `Equal`).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate (all when omitted).")
    toleration_seconds: int | None = Field(None, ge=0, description="With `NoExecute`: how long a pod may stay.")

    @model_validator(mode="after")
    def _consistent(self) -> "Toleration":
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("operator `Exists` takes no value: drop `value` or use operator `Equal`")
        if self.operator == "Equal" and self.key is None:
            raise ValueError("operator `Equal` needs a key")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds applies only to effect `NoExecute`")
        return self

    def to_kubernetes(self) -> dict:
        """The toleration as the Kubernetes API spells it (camelCase, unset fields left out)."""
        raw = {"key": self.key, "operator": self.operator, "value": self.value, "effect": self.effect,
               "tolerationSeconds": self.toleration_seconds}
        return {k: v for k, v in raw.items() if v is not None}


class Resources(_Strict):
    """CPU, memory and GPUs of one container. Limits default to the requests (predictable scheduling)."""

    cpu: str | None = Field(None, description="CPU request, e.g. `2` or `500m`.")
    memory: str | None = Field(None, description="Memory request, e.g. `8Gi`.")
    cpu_limit: str | None = Field(None, description="CPU limit (default: the request).")
    memory_limit: str | None = Field(None, description="Memory limit (default: the request).")
    gpus: int = Field(0, ge=0, description="GPUs (limit); 0 for none.")
    accelerator: str = Field("nvidia.com/gpu", description="Extended resource name of the GPU.")

    @field_validator("cpu", "memory", "cpu_limit", "memory_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        return value if value is None else _check(_QUANTITY, value, "Kubernetes quantity (e.g. 2, 500m, 8Gi)")

    @field_validator("accelerator")
    @classmethod
    def _resource_name(cls, value: str) -> str:
        return _check(_LABEL_KEY, value, "extended resource name (e.g. nvidia.com/gpu)")

    @property
    def limits(self) -> dict[str, str]:
        raw = {"cpu": self.cpu_limit or self.cpu, "memory": self.memory_limit or self.memory,
               self.accelerator: str(self.gpus) if self.gpus else None}
        return {k: v for k, v in raw.items() if v is not None}

    @property
    def requests(self) -> dict[str, str]:
        return {k: v for k, v in {"cpu": self.cpu, "memory": self.memory}.items() if v is not None}


class Volume(_Strict):
    """An existing PersistentVolumeClaim mounted into every step (and, for ``runtime.storage``, every Ray pod)."""

    claim: Annotated[str, _named(_DNS_SUBDOMAIN, "claim name")] = Field(
        description="Name of the PersistentVolumeClaim (it must exist in the namespace).")
    mount_path: str = Field(description="Absolute path it is mounted at.")

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _absolute_path(value, "must be an absolute path without `..`")


class SecretEnv(_Strict):
    """Environment variables taken from an existing Secret (API keys, S3 credentials, serving tokens)."""

    secret: SecretName = Field(description="Name of the Kubernetes Secret.")
    env: dict[str, str] = Field(description="Environment variable name → key in the Secret.")
    steps: list[StepName] | None = Field(None, description="Steps that get them (default: every step).")

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        if not env:
            raise ValueError("name at least one variable: {ENV_NAME: secret-key}")
        for name in env:
            _check(_ENV_NAME, name, "environment variable name")
        return env


class StepSettings(_Strict):
    """What one pipeline step's pod gets on the cluster."""

    resources: Resources | None = Field(None, description="CPU/memory requests and limits, GPUs.")
    image: ImageRef | None = Field(None, description="Image for this step (default: `runtime.image`).")
    timeout_s: int | None = Field(None, gt=0, description="Seconds before the step is stopped.")
    node_selector: NodeSelector = Field({}, description="Node labels the pod must land on.")
    tolerations: list[Toleration] = Field([], description="Taints the pod tolerates.")


class KubernetesSpec(_Strict):
    """kfp-kubernetes platform config applied to the compiled pipeline (``kfp.local`` ignores it)."""

    defaults: StepSettings = Field(StepSettings(), description="Settings of every step.")
    steps: dict[StepName, StepSettings] = Field(
        {}, description="Per-step settings; a field set here replaces the default's (resources as a whole).")
    secrets: list[SecretEnv] = Field([], description="Secrets exposed as environment variables.")
    model_cache: Volume | None = Field(
        None, description="PVC for unpacked packaged models (`$STILLHOUSE_CACHE`), shared across steps and runs.")
    model_store: Volume | None = Field(
        None, description="PVC holding the BentoML model store (`$BENTOML_HOME`) the package step saves students to; "
        "without it a packaged student lives only in the pipeline's artifact store.")
    volumes: list[Volume] = Field([], description="Further PVCs every step mounts (e.g. where the data lives).")
    image_pull_secrets: list[str] = Field([], description="Secrets for pulling images from a private registry.")

    def settings(self, step: str) -> StepSettings:
        """The effective settings of ``step``: the defaults, with the step's own fields on top."""
        own = self.steps.get(step)  # type: ignore[call-overload]
        if own is None:
            return self.defaults
        return self.defaults.model_copy(update={name: getattr(own, name) for name in own.model_fields_set})

    @model_validator(mode="after")
    def _mounts_distinct(self) -> "KubernetesSpec":
        shared = [v for v in (self.model_cache, self.model_store) if v is not None]
        mounts = [v.mount_path for v in [*self.volumes, *shared]]
        if len(set(mounts)) != len(mounts):
            raise ValueError("two volumes share a mount_path: give each its own folder")
        return self


class KubeRaySpec(_Strict):
    """The RayJob a training step creates with ``runtime.launcher: kuberay``."""

    namespace: Annotated[str, _named(_DNS_LABEL, "namespace")] | None = Field(
        None, description="Namespace of the RayJobs (default: the step pod's own).")
    image: ImageRef | None = Field(None, description="Ray head/worker image (default: `runtime.image`).")
    service_account: Annotated[str, _named(_DNS_SUBDOMAIN, "service account name")] | None = Field(
        None, description="Service account of the Ray pods (S3 access via IRSA/WI).")
    head: Resources = Field(Resources(cpu="1", memory="4Gi"), description="The Ray head pod (runs the driver).")
    worker: Resources = Field(
        Resources(memory="8Gi"),
        description="Each Ray worker pod; CPU defaults to `runtime.cpus_per_worker`, GPUs to 1 with `use_gpu`.")
    node_selector: NodeSelector = Field({}, description="Node labels the Ray pods must land on.")
    tolerations: list[Toleration] = Field([], description="Taints the Ray pods tolerate.")
    ttl_seconds_after_finished: int = Field(
        300, ge=0, description="Seconds the finished cluster stays for inspection before KubeRay deletes it.")
    active_deadline_seconds: int = Field(
        86_400, gt=0, description="KubeRay fails the job after this many seconds (DeadlineExceeded).")
    poll_seconds: float = Field(10.0, gt=0, description="Longest wait between status reads while it runs.")



class RuntimeSpec(_Strict):
    """Where and how training runs."""

    workers: int = Field(1, gt=0, description="Ray Train workers per training job.")
    cpus_per_worker: int = Field(2, gt=0, description="CPUs (and torch threads) per worker.")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL, bf16 autocast).")
    max_failures: int = Field(2, ge=0, description="Worker failures a job survives, resuming from its last epoch.")
    seed: int = Field(13, description="Random seed for sampling, initialisation and shuffling.")
    launcher: Literal["local", "kuberay"] = Field(
        "local", description="`local`: Ray inside the step's process; `kuberay`: a RayJob per training job.")
    storage: str | None = Field(
        None, description="Shared storage for training jobs' inputs, checkpoints and outputs: `s3://bucket/prefix` "
        "(endpoint and credentials from the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) or an absolute "
        "path on a ReadWriteMany volume mounted at the same place in every pod. Needed by `kuberay`.")
    storage_volume: Volume | None = Field(
        None, description="With a path `storage`: the ReadWriteMany PVC that holds it (mounted into steps and Ray "
        "pods).")
    storage_secret: SecretName | None = Field(
        None, description="Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...) become "
        "the environment of every step and Ray pod, for S3 `storage`.")
    image: ImageRef | None = Field(
        None, description=f"Image of every step and Ray pod (default: ${IMAGE_ENV}, else {DEFAULT_IMAGE}, "
        "built from infra/images/Dockerfile).")
    kuberay: KubeRaySpec = Field(KubeRaySpec(), description="The RayJob of each training job (launcher `kuberay`).")
    kubernetes: KubernetesSpec = Field(KubernetesSpec(), description="Per-step pod settings on a cluster.")

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("s3://"):
            if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/=-]*)?", value):
                raise ValueError("an S3 URI is s3://bucket/prefix (bucket: lowercase letters, digits, '.', '-')")
            return value.rstrip("/")
        if "://" in value:
            raise ValueError("use s3://bucket/prefix or an absolute path on a shared volume")
        return _absolute_path(value, "a storage path must be absolute (the same path in every pod), without `..`")

    @model_validator(mode="after")
    def _storage_fits_launcher(self) -> "RuntimeSpec":
        if self.launcher == "kuberay" and self.storage is None:
            raise ValueError("launcher `kuberay` needs runtime.storage: Ray pods do not see the step's disk; set "
                             "s3://bucket/prefix or a path on a ReadWriteMany volume (runtime.storage_volume)")
        if self.storage_volume is not None:
            path = self.storage or ""
            if path.startswith("s3://") or not (path + "/").startswith(self.storage_volume.mount_path + "/"):
                raise ValueError("runtime.storage_volume holds a path storage: set runtime.storage to a folder "
                                 f"under {self.storage_volume.mount_path}")
        return self

    @property
    def resolved_image(self) -> str:
        """The image steps and Ray pods run: the spec's, else $STILLHOUSE_IMAGE, else the project's tag."""
        return self.image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
