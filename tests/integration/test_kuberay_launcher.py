"""The KubeRay launcher through the real ``kubernetes`` client against a RayJob API server on 127.0.0.1.

Not a mock of Stillhouse's code: :class:`tests.kube_api.FakeRayJobAPI` stands in for the kube-apiserver and the
KubeRay operator only (neither can run here: no container engine, no apiserver in any registry). The launcher,
the client, its kubeconfig loading, REST calls, watch stream and error handling are the production ones. One
test runs the RayJob's real entrypoint (as KubeRay's submitter Job would) on local Ray with the job's storage
on a shared folder (the ReadWriteMany volume case); the others script the operator's status transitions.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import pandas as pd
import pytest
import torch

from stillhouse.cluster import storage
from stillhouse.cluster.kuberay import KubeRayLauncher
from stillhouse.distill.training import TrainJob, load_trained_state
from stillhouse.errors import StillhouseError
from stillhouse.spec.runtime import KubeRaySpec, RuntimeSpec
from stillhouse.models.hf import load_encoder
from stillhouse.models.classifier import ClassifierInfo, TextClassifier, save_classifier
from stillhouse.tasks.classification.train import ITEMS
from tests.conftest import make_rows
from tests.integration.test_training import _accuracy, _job
from tests.kube_api import FakeRayJobAPI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}


@pytest.fixture()
def cluster(tmp_path, monkeypatch):
    """Start an API server; point KUBECONFIG at it. Yields a factory taking the server's script."""
    servers = []
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def start(**script) -> FakeRayJobAPI:
        api = FakeRayJobAPI(**script)
        servers.append(api)
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path)))
        return api

    yield start
    for api in servers:
        api.close()


def _runtime(tmp_path, **kuberay) -> RuntimeSpec:
    return RuntimeSpec(workers=1, cpus_per_worker=1, launcher="kuberay", storage=str(tmp_path / "shared"),
                       kuberay=KubeRaySpec(poll_seconds=1, **kuberay))


def _inputs(tmp_path) -> TrainJob:
    """A job whose inputs exist (what is uploaded); nothing trains in the scripted cases."""
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "config.json").write_text("{}")
    pd.DataFrame({"text": ["a"], "label_idx": [0]}).to_parquet(tmp_path / "train.parquet")
    return TrainJob(name="student", init_model_dir=str(tmp_path / "init"), train_file=str(tmp_path / "train.parquet"),
                    storage_dir=str(tmp_path / "work"), epochs=1, batch_size=1, learning_rate=1e-3,
                    head_learning_rate=1e-3, max_length=8, items=ITEMS)


def _succeeds_with_checkpoint(api: FakeRayJobAPI):
    """What a successful Ray job leaves in the storage: result.json naming its last checkpoint."""
    original = api._run_operator

    def run(key):
        folder = api.objects[key]["spec"]["entrypoint"].split("--job ")[1].rsplit("/", 1)[0].strip("'")
        checkpoint = storage.join(folder, "ray", "checkpoint_000000")
        os.makedirs(checkpoint)
        torch.save({"model": {}, "epoch": 0}, os.path.join(checkpoint, "train_state.pt"))
        storage.write_text(storage.join(folder, "result.json"), json.dumps({"checkpoint": checkpoint}))
        original(key)

    api._run_operator = run


def test_a_real_training_job_runs_through_its_rayjob(cluster, tmp_path, tiny_model_dir):
    torch.manual_seed(0)
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    save_classifier(TextClassifier(encoder, 2), tokenizer, ClassifierInfo(labels=["negative", "positive"],
                                                                           max_length=16), tmp_path / "init")
    rows = make_rows(16)
    pd.DataFrame({"text": [t for t, _ in rows], "label_idx": [int(lab == "positive") for _, lab in rows]}).to_parquet(
        tmp_path / "train.parquet")
    # The submitter's driver starts its own Ray here (on a cluster it gets the head's address from KubeRay): not
    # this test process's instance, whose address an earlier test may have left in RAY_ADDRESS.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    api = cluster(operator="run", env={**env, "RAY_TRAIN_V2_ENABLED": "1"})
    launcher = KubeRayLauncher(_runtime(tmp_path))

    checkpoint = launcher.fit(_job(tmp_path, epochs=6))

    assert api.entrypoint_output.count("error:") == 0, api.entrypoint_output[-2000:]
    (body,) = api.created
    assert body["metadata"]["namespace"] == "ml"  # the kubeconfig context's namespace (the CRD schema check of
    # bodies is tests/unit/test_rayjob.py's, which skips without ../shared/schemas; this test needs no schema)
    saved = torch.load(checkpoint / "train_state.pt", weights_only=False)
    assert saved["epoch"] == 5
    assert _accuracy(tmp_path, load_trained_state(checkpoint), rows) >= 0.9
    assert checkpoint.is_relative_to(tmp_path / "ray")  # brought back to the step's own disk
    assert api.deleted == []  # a finished RayJob is KubeRay's to clean up (ttlSecondsAfterFinished)
    assert not any((tmp_path / "shared" / "jobs").iterdir())  # the job's shared folder is emptied


@pytest.mark.parametrize("transitions, words", [
    ([(0.2, {"jobDeploymentStatus": "Initializing"}), (0.2, RUNNING),
      (0.3, {"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"})], ["STOPPED"]),
    ([(0.2, RUNNING), (0.3, {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed",
                             "message": "Job entrypoint command failed with exit code 1"})],
     ["AppFailed", "exit code 1", "kubectl logs"]),
    ([(0.2, {"jobDeploymentStatus": "ValidationFailed", "message": "workerGroupSpecs: invalid"})],
     ["ValidationFailed", "workerGroupSpecs: invalid"]),
    ([(0.2, RUNNING), (0.2, {"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED"}),
      (0.3, {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"})], ["DeadlineExceeded"]),
])
def test_every_failed_outcome_is_one_clear_error(cluster, tmp_path, transitions, words):
    api = cluster(transitions=transitions)
    with pytest.raises(StillhouseError) as err:
        KubeRayLauncher(_runtime(tmp_path)).fit(_inputs(tmp_path))
    (name,) = [body["metadata"]["name"] for body in api.created]
    assert f"RayJob {name} in namespace ml" in str(err.value)
    for word in words:
        assert word in str(err.value)
    assert api.deleted == []  # kept for `kubectl describe`; KubeRay's TTL removes it


def test_a_validation_failure_is_not_waited_out(cluster, tmp_path):
    # ValidationFailed is set once and never changes: the launcher must stop at it, not wait for Complete/Failed.
    api = cluster(transitions=[(0.1, {"jobDeploymentStatus": "ValidationFailed", "message": "bad"})])
    with pytest.raises(StillhouseError, match="ValidationFailed"):
        KubeRayLauncher(_runtime(tmp_path, active_deadline_seconds=3600)).fit(_inputs(tmp_path))
    assert len([v for v, _ in api.requests if v == "get"]) <= 3


@pytest.mark.parametrize("code, words", [
    (403, ["may not create RayJobs in namespace ml", "ray-jobs Role"]),
    (404, ["not installed", "install the KubeRay operator"]),
    (409, ["already exists", "kubectl delete rayjob"]),
    (401, ["refused the step's credentials"]),
])
def test_api_errors_name_the_fix(cluster, tmp_path, code, words):
    api = cluster(errors={"create": [code]})
    with pytest.raises(StillhouseError) as err:
        KubeRayLauncher(_runtime(tmp_path), backoff_s=0.01).fit(_inputs(tmp_path))
    for word in words:
        assert word in str(err.value)
    assert [v for v, _ in api.requests] == ["create"]  # not retried: retrying cannot help


def test_server_errors_are_retried_then_the_job_succeeds(cluster, tmp_path):
    api = cluster(errors={"create": [500, 503], "get": [502]},
                  transitions=[(0.2, RUNNING), (0.3, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"})])
    _succeeds_with_checkpoint(api)
    checkpoint = KubeRayLauncher(_runtime(tmp_path), backoff_s=0.01).fit(_inputs(tmp_path))
    assert (checkpoint / "train_state.pt").is_file()
    assert [v for v, _ in api.requests].count("create") == 3 and len(api.created) == 1


def test_server_errors_that_persist_end_the_step(cluster, tmp_path):
    cluster(errors={"create": [500] * 5})
    with pytest.raises(StillhouseError, match=r"failed to create .* \(HTTP 500\)"):
        KubeRayLauncher(_runtime(tmp_path), backoff_s=0.01).fit(_inputs(tmp_path))


def test_a_job_past_its_deadline_is_deleted(cluster, tmp_path):
    api = cluster(transitions=[(0.1, RUNNING)])  # the operator never finishes it
    with pytest.raises(StillhouseError, match="did not finish within") as err:
        KubeRayLauncher(_runtime(tmp_path, active_deadline_seconds=1), grace_s=1).fit(_inputs(tmp_path))
    (name,) = [body["metadata"]["name"] for body in api.created]
    assert api.deleted == [name] and "it was deleted" in str(err.value)


def test_a_cancelled_step_deletes_its_rayjob(cluster, tmp_path):
    api = cluster(transitions=[(0.1, RUNNING)])
    before = signal.getsignal(signal.SIGTERM)
    # KFP cancels a run by deleting the step's pod: the kubelet sends SIGTERM.
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(StillhouseError, match="was cancelled"):
            KubeRayLauncher(_runtime(tmp_path)).fit(_inputs(tmp_path))
    finally:
        timer.cancel()
    (name,) = [body["metadata"]["name"] for body in api.created]
    assert api.deleted == [name]
    assert signal.getsignal(signal.SIGTERM) is before  # the step's own handler is back


def test_a_bad_body_is_refused_before_any_api_call(cluster, tmp_path, monkeypatch):
    api = cluster(transitions=[(0.1, RUNNING)])
    monkeypatch.setattr("stillhouse.cluster.kuberay.job_name", lambda name, suffix: "Not_A_DNS_Name")
    with pytest.raises(StillhouseError, match="would be refused by KubeRay"):
        KubeRayLauncher(_runtime(tmp_path)).fit(_inputs(tmp_path))
    assert api.requests == [] and not (tmp_path / "shared").exists()
