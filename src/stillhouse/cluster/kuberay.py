"""Training jobs as KubeRay ``RayJob`` resources (``runtime.launcher: kuberay``).

:class:`KubeRayLauncher` puts a job's inputs into the shared storage (:mod:`stillhouse.cluster.storage`),
creates a RayJob (:func:`~stillhouse.cluster.rayjob.rayjob_manifest`) with the ``kubernetes`` client's
``CustomObjectsApi``, watches it until it ends, and brings the final checkpoint back to the step's disk. Every
outcome becomes one step result: success only when ``jobDeploymentStatus`` is ``Complete`` *and*
``jobStatus`` is ``SUCCEEDED`` (``Complete`` also covers a stopped job); ``Failed`` and ``ValidationFailed``
(set once, never retried: a poller waiting only for Complete/Failed would hang) become a
:class:`StillhouseError` naming the RayJob, the reason and KubeRay's message. A step that is cancelled
(SIGTERM: KFP deletes its pod) or outlives the job's deadline deletes its RayJob on the way out.

The step's pod needs RBAC on ``ray.io`` ``rayjobs`` (create, get, list, watch, delete) and ``rayjobs/status``
(get): the chart's ``ray-jobs`` Role.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from stillhouse.cluster import storage
from stillhouse.cluster.job import result_uri
from stillhouse.cluster.local_ray import _forwarded_env
from stillhouse.cluster.rayjob import GROUP, PLURAL, VERSION, check_rayjob, job_folder, job_name, rayjob_manifest
from stillhouse.distill.training import FAIL_AFTER_EPOCH_ENV, TrainJob
from stillhouse.errors import StillhouseError
from stillhouse.models.packaged import CACHE_ENV
from stillhouse.progress import say
from stillhouse.spec.runtime import RuntimeSpec

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_RETRYABLE = {429, 500, 502, 503, 504}
# The step's own backstop beyond activeDeadlineSeconds: KubeRay enforces the deadline, but only while its
# operator runs; a RayJob that never gets a status must not keep the step waiting forever.
STARTUP_GRACE_S = 600.0
_NO_STATUS_WARNING_S = 120.0
_ROLE_FIX = ("grant the pipeline's service account the chart's ray-jobs Role (values: rayJobs.serviceAccounts) "
             "or an equivalent Role on ray.io rayjobs")


class RayJobFailed(StillhouseError):
    """The RayJob reached a terminal state other than success (it is left for ``kubectl describe``; KubeRay's
    ``ttlSecondsAfterFinished`` removes its cluster)."""


class _Cancelled(BaseException):
    """SIGTERM while a RayJob runs: unwinds the wait so the RayJob is deleted (BaseException: no handler
    between here and the launcher may swallow it)."""


def deployment_outcome(name: str, namespace: str, status: dict | None) -> bool:
    """``True`` when the RayJob succeeded, ``False`` while it may still run; raise for every terminal failure."""
    status = status or {}
    deployment, job_status = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
    reason, message = status.get("reason", ""), (status.get("message") or "").strip()
    detail = f": {message}" if message else ""
    where = f"RayJob {name} in namespace {namespace}"
    if deployment == "Complete":
        if job_status == "SUCCEEDED":
            return True
        raise RayJobFailed(f"{where} completed without succeeding (jobStatus {job_status or 'unknown'}){detail}",
                              "a STOPPED job was stopped from outside (ray job stop, the dashboard); rerun the step")
    if deployment == "Failed":
        fixes = {
            "AppFailed": f"the training itself failed: read the driver's log (kubectl logs -n {namespace} job/{name})",
            "DeadlineExceeded": "raise runtime.kuberay.active_deadline_seconds, or train fewer epochs",
            "SubmissionFailed": f"the submitter could not reach the Ray head: kubectl describe rayjob {name} -n "
                                f"{namespace} and the head pod's events (image pull, resources)",
        }
        raise RayJobFailed(f"{where} failed (reason {reason or 'unknown'}){detail}",
                              fixes.get(reason, f"kubectl describe rayjob {name} -n {namespace}"))
    if deployment == "ValidationFailed":
        raise RayJobFailed(f"{where} was refused by the KubeRay operator (ValidationFailed){detail}",
                              "correct runtime.kuberay in the spec (kubectl describe rayjob shows the event)")
    return False  # "", New, Initializing, Running, Waiting, Retrying, Suspended: not decided yet


class KubeRayLauncher:
    """Runs each training job as a RayJob on the cluster the step runs in (or the kubeconfig's)."""

    def __init__(self, runtime: RuntimeSpec, *, grace_s: float = STARTUP_GRACE_S, backoff_s: float = 1.0):
        if runtime.storage is None:
            raise StillhouseError("launcher `kuberay` needs runtime.storage", "set s3://bucket/prefix or a shared path")
        self.runtime = runtime
        self.grace_s, self.backoff_s = grace_s, backoff_s

    # -- the one public verb ---------------------------------------------------------------------------------

    def fit(self, job: TrainJob) -> Path:
        name = job_name(job.name, uuid.uuid4().hex[:8])
        folder = job_folder(self.runtime, name)
        namespace = self.namespace()
        body = rayjob_manifest(name, namespace, storage.join(folder, "job.json"), self.runtime, _pod_env())
        check_rayjob(body)  # refuse before anything is uploaded or created
        api = self._api()
        remote = replace(job, init_model_dir=storage.join(folder, "init"),
                         train_file=storage.join(folder, "train.parquet"), storage_dir=storage.join(folder, "ray"))
        storage.upload(job.init_model_dir, remote.init_model_dir)
        storage.upload(job.train_file, remote.train_file)
        storage.write_text(storage.join(folder, "job.json"), json.dumps(remote.to_config()))
        created = decided = cancelled = False
        try:
            with _sigterm_cancels():  # from the create on: a cancelled step must not leave its RayJob running
                self._call("create", lambda: api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body), name, namespace)
                created = True
                say(f"{job.name}: RayJob {name} created in namespace {namespace}")
                self._wait(api, name, namespace)
            decided = True
        except RayJobFailed:
            decided = True
            raise
        except _Cancelled:
            cancelled = True  # the create itself may have been under way: delete whatever exists
            raise StillhouseError(f"training job `{job.name}` was cancelled; its RayJob {name} was deleted",
                                  "rerun the step when you want it trained") from None
        finally:
            if (created or cancelled) and not decided:
                self._delete(api, name, namespace)
        result = json.loads(storage.read_text(result_uri(storage.join(folder, "job.json"))))
        checkpoint = storage.download(result["checkpoint"], Path(job.storage_dir) / "checkpoint")
        with contextlib.suppress(StillhouseError):  # the RayJob's TTL outlives it; the copy here is what counts
            storage.delete(folder)
        say(f"{job.name}: RayJob {name} succeeded")
        return checkpoint

    # -- the cluster ----------------------------------------------------------------------------------------

    def namespace(self) -> str:
        """The spec's namespace, else the step pod's own, else the kubeconfig context's, else ``default``."""
        if self.runtime.kuberay.namespace:
            return self.runtime.kuberay.namespace
        if _SA_NAMESPACE.is_file():
            return _SA_NAMESPACE.read_text().strip()
        with contextlib.suppress(Exception):
            from kubernetes import config

            _, context = config.list_kube_config_contexts(config_file=_kubeconfig())
            if context and context.get("context", {}).get("namespace"):
                return context["context"]["namespace"]
        return "default"

    def _api(self):
        from kubernetes import client, config

        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
            else:
                api_client = config.new_client_from_config(config_file=_kubeconfig())
        except config.ConfigException as exc:
            raise StillhouseError(f"no Kubernetes configuration for launcher `kuberay` ({exc})",
                                  "run the step in a cluster pod (in-cluster service account) or set KUBECONFIG; "
                                  "or use runtime.launcher `local`") from None
        return client.CustomObjectsApi(api_client)

    def _call(self, verb: str, request, name: str, namespace: str, attempts: int = 5):
        """One API request, retried with backoff on 429/5xx and dropped connections; the rest mapped to a fix."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(attempts):
            try:
                return request()
            except ApiException as exc:
                if exc.status not in _RETRYABLE or attempt == attempts - 1:
                    raise _api_error(verb, name, namespace, exc) from None
                code = f"HTTP {exc.status}"
            except HTTPError as exc:
                if attempt == attempts - 1:
                    raise StillhouseError(f"the Kubernetes API server could not be reached to {verb} RayJob {name} "
                                          f"({type(exc).__name__})", "check the cluster's API server and the "
                                          "step's network policy; the step can be retried") from None
                code = type(exc).__name__
            say(f"kubernetes API: {verb} RayJob {name} got {code}; retrying ({attempt + 1}/{attempts - 1})")
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def _wait(self, api, name: str, namespace: str) -> None:
        """Read the status, then watch for changes, until :func:`deployment_outcome` decides."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        started = time.monotonic()
        deadline = started + self.runtime.kuberay.active_deadline_seconds + self.grace_s
        poll = self.runtime.kuberay.poll_seconds
        last, warned = "", False
        while True:
            obj = self._call("read", lambda: api.get_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name), name, namespace)
            status = obj.get("status")
            if deployment_outcome(name, namespace, status):
                return
            state = (status or {}).get("jobDeploymentStatus", "")
            if state and state != last:
                say(f"RayJob {name}: {state}" + (f" ({status['jobStatus']})" if status.get("jobStatus") else ""))
                last = state
            now = time.monotonic()
            if not state and not warned and now - started > _NO_STATUS_WARNING_S:
                say(f"RayJob {name} has no status after {_NO_STATUS_WARNING_S:.0f} s: is the KubeRay operator running?")
                warned = True
            if now > deadline:
                raise StillhouseError(f"RayJob {name} in namespace {namespace} did not finish within "
                                      f"{deadline - started:.0f} s (last status: {state or 'none'}); it was deleted",
                                      "check that the KubeRay operator runs (kubectl get pods -A -l "
                                      "app.kubernetes.io/name=kuberay-operator), or raise "
                                      "runtime.kuberay.active_deadline_seconds")
            window = max(1, int(min(poll, deadline - now)))
            stream = watch.Watch()
            try:
                for event in stream.stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                           field_selector=f"metadata.name={name}",
                                           resource_version=obj.get("metadata", {}).get("resourceVersion"),
                                           timeout_seconds=window, _request_timeout=window + 10):
                    if event.get("type") == "DELETED":
                        raise StillhouseError(f"RayJob {name} was deleted while it ran (by someone else)",
                                              "rerun the step")
                    if event.get("type") != "ERROR" and deployment_outcome(
                            name, namespace, (event.get("object") or {}).get("status")):
                        return
            except ApiException as exc:  # 410 Gone, a restarted API server: read the status again
                if exc.status not in _RETRYABLE | {410}:
                    raise _api_error("watch", name, namespace, exc) from None
                time.sleep(min(poll, self.backoff_s))
            except StillhouseError:
                raise
            except Exception:  # a dropped watch connection: the next read decides
                time.sleep(min(poll, self.backoff_s))
            finally:
                stream.stop()

    def _delete(self, api, name: str, namespace: str) -> None:
        try:
            self._call("delete", lambda: api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"), name, namespace)
            say(f"RayJob {name} deleted")
        except StillhouseError as exc:
            if "(HTTP 404)" not in exc.problem:  # already gone is what we wanted
                say(f"could not delete RayJob {name}: {exc.problem} (delete it by hand: kubectl delete rayjob "
                    f"{name} -n {namespace})")


def _kubeconfig() -> str | None:
    # The client reads $KUBECONFIG once, when it is imported; a step reads it when it runs.
    return os.environ.get("KUBECONFIG") or None


def _api_error(verb: str, name: str, namespace: str, exc) -> StillhouseError:
    where = f"RayJob {name} in namespace {namespace}"
    if exc.status == 401:
        return StillhouseError(f"the Kubernetes API refused the step's credentials ({verb} {where}: HTTP 401)",
                               "check the pod's service account token or the kubeconfig")
    if exc.status == 403:
        return StillhouseError(f"the step's service account may not {verb} RayJobs in namespace {namespace} "
                               "(HTTP 403 Forbidden)", _ROLE_FIX)
    if exc.status == 404:
        if verb == "create":
            return StillhouseError("the RayJob resource (ray.io/v1) is not installed in this cluster (HTTP 404)",
                                   "install the KubeRay operator (helm install kuberay-operator "
                                   "kuberay/kuberay-operator; see infra/README.md)")
        return StillhouseError(f"{where} was not found (HTTP 404): deleted while the step waited", "rerun the step")
    if exc.status == 409:
        return StillhouseError(f"a RayJob named {name} already exists in namespace {namespace} (HTTP 409)",
                               f"delete it (kubectl delete rayjob {name} -n {namespace}) and rerun the step")
    if exc.status == 422:
        return StillhouseError(f"the API server refused {where} as invalid (HTTP 422): {_reason(exc)}",
                               "correct runtime.kuberay in the spec; a KubeRay operator older than the ray.io/v1 "
                               "RayJob fields used here needs upgrading")
    return StillhouseError(f"the Kubernetes API server failed to {verb} {where} (HTTP {exc.status})",
                           "check the API server's health; the step can be retried")


def _reason(exc) -> str:
    try:
        return json.loads(exc.body).get("message", "")[:300]
    except (TypeError, ValueError, AttributeError):
        return exc.reason or ""


def _pod_env() -> dict[str, str]:
    """What the Ray pods inherit from the step (offline mode, S3 endpoint and region); never credentials, which
    come to them from runtime.storage_secret, nor the step's own paths (its model cache is not mounted there)."""
    return {k: v for k, v in _forwarded_env().items() if k not in (CACHE_ENV, FAIL_AFTER_EPOCH_ENV)}


@contextlib.contextmanager
def _sigterm_cancels():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum, frame):
        raise _Cancelled()

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
