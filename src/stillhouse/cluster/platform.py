"""What each pipeline step's pod gets on a Kubeflow cluster, from the spec's ``runtime`` (kfp-kubernetes).

:func:`configure_step` is called by the pipeline (``pipelines/distill.py``) for every task at compile time. It
sets the step's image, CPU/memory requests and limits, GPUs, secrets as environment variables, volumes
(the model cache, data, the shared training storage), node placement and timeout. ``kfp.local`` ignores all of
it, so a local run is unchanged; ``stillhouse compile`` / ``submit`` write it into the IR's platform spec.

Defaults a cluster operator would otherwise have to remember:

- every step runs as the image's non-root user (UID 1000, infra/images/Dockerfile);
- caching is off: a step reads files and endpoints outside its declared inputs (the data, a teacher
  endpoint), so a cached result could silently be stale when the data changed under the same spec;
- with the local launcher and ``use_gpu``, the training steps ask for one GPU per Ray worker (training
  runs in the step's pod); with ``kuberay`` the GPUs belong to the Ray workers, not to the step.
"""

from __future__ import annotations

from stillhouse.cluster.rayjob import RUN_AS_USER
from stillhouse.spec.runtime import (
    TRAINING_STEPS,
    Resources,
    RuntimeSpec,
    StepSettings,
    Volume,
)
from stillhouse.models.packaged import CACHE_ENV

# S3 credentials and endpoint, as AWS SDKs and pyarrow read them; taken from runtime.storage_secret when present.
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                       "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def step_settings(step: str, runtime: RuntimeSpec) -> StepSettings:
    """The effective settings of one step, the GPU default for local training included."""
    settings = runtime.kubernetes.settings(step)
    if runtime.use_gpu and runtime.launcher == "local" and step in TRAINING_STEPS:
        resources = settings.resources
        if resources is None or resources.gpus == 0:
            base = resources or Resources()
            settings = settings.model_copy(update={"resources": base.model_copy(update={"gpus": runtime.workers})})
    return settings


def step_volumes(runtime: RuntimeSpec) -> list[Volume]:
    """Every PVC a step mounts: data volumes, the model cache, the shared training storage."""
    volumes = list(runtime.kubernetes.volumes)
    volumes += [v for v in (runtime.kubernetes.model_cache, runtime.kubernetes.model_store) if v is not None]
    if runtime.storage_volume is not None and runtime.storage_volume not in volumes:
        volumes.append(runtime.storage_volume)
    return volumes


def configure_step(task, step: str, runtime: RuntimeSpec):
    """Apply the spec's cluster settings to one KFP task (a ``PipelineTask``); returns the task."""
    from kfp import kubernetes

    settings = step_settings(step, runtime)
    task.set_container_image(settings.image or runtime.resolved_image)
    task.set_caching_options(False)
    kubernetes.set_security_context(task, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, run_as_non_root=True)
    resources = settings.resources
    if resources is not None:
        if resources.cpu:
            task.set_cpu_request(resources.cpu)
        if resources.memory:
            task.set_memory_request(resources.memory)
        limits = resources.limits
        if "cpu" in limits:
            task.set_cpu_limit(limits["cpu"])
        if "memory" in limits:
            task.set_memory_limit(limits["memory"])
        if resources.gpus:
            task.set_accelerator_type(resources.accelerator).set_accelerator_limit(resources.gpus)
    for key, value in settings.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in settings.tolerations:
        kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator, value=toleration.value,
                                  effect=toleration.effect, toleration_seconds=toleration.toleration_seconds)
    if settings.timeout_s:
        kubernetes.set_timeout(task, settings.timeout_s)
    for secret in runtime.kubernetes.secrets:
        if secret.steps is None or step in secret.steps:
            # kfp-kubernetes maps secret key → variable; the spec reads the other way round (variable: key).
            kubernetes.use_secret_as_env(task, secret_name=secret.secret,
                                         secret_key_to_env={key: env for env, key in secret.env.items()})
    if runtime.storage_secret:
        kubernetes.use_secret_as_env(task, secret_name=runtime.storage_secret,
                                     secret_key_to_env={key: key for key in STORAGE_SECRET_KEYS}, optional=True)
    for volume in step_volumes(runtime):
        kubernetes.mount_pvc(task, pvc_name=volume.claim, mount_path=volume.mount_path)
    if runtime.kubernetes.model_cache is not None:
        task.set_env_variable(CACHE_ENV, runtime.kubernetes.model_cache.mount_path)
    if runtime.kubernetes.model_store is not None:
        task.set_env_variable("BENTOML_HOME", runtime.kubernetes.model_store.mount_path)
    if runtime.kubernetes.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(runtime.kubernetes.image_pull_secrets))
    return task
