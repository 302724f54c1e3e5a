"""RayJob bodies built from specs validate against KubeRay's CRD schema; the rules it cannot express are
checked in code; every RayJob status maps to one step result."""

from __future__ import annotations

import copy

import pytest
import yaml

from stillhouse.cluster.kuberay import deployment_outcome
from stillhouse.cluster.rayjob import check_rayjob, job_name, rayjob_manifest, worker_resources
from stillhouse.errors import SpecError, StillhouseError
from stillhouse.spec import load_spec, parse_spec
from tests.conftest import REPO
from tests.kube_schemas import crd_errors

QUICKSTART = REPO / "examples" / "quickstart.yaml"


def _runtime(**runtime):
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["runtime"] = {**raw["runtime"], **runtime}
    return parse_spec(yaml.safe_dump(raw), base_dir=QUICKSTART.parent).runtime


def _body(runtime, name="stillhouse-student-0a1b2c3d"):
    return rayjob_manifest(name, "ml", f"{runtime.storage}/jobs/{name}/job.json", runtime, {"HF_HUB_OFFLINE": "1"})


SPECS = {
    "quickstart on a shared volume": dict(
        launcher="kuberay", storage="/mnt/stillhouse/jobs", storage_volume={"claim": "stillhouse-jobs",
                                                                            "mount_path": "/mnt/stillhouse"}),
    "gpu with tolerations and node selectors": dict(
        launcher="kuberay", storage="s3://ml-artifacts/stillhouse", use_gpu=True, workers=2,
        kuberay={"node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 "worker": {"cpu": "8", "memory": "64Gi", "gpus": 1}, "service_account": "ray-train"}),
    "s3 storage with its secret": dict(
        launcher="kuberay", storage="s3://ml-artifacts/stillhouse", storage_secret="stillhouse-s3",
        image="registry.bank.internal/ml/stillhouse:0.1.0",
        kuberay={"namespace": "ml-training", "ttl_seconds_after_finished": 60, "active_deadline_seconds": 7200}),
}


@pytest.mark.parametrize("case", list(SPECS))
def test_every_built_rayjob_validates_against_the_crd_schema(case):
    body = _body(_runtime(**SPECS[case]))
    assert crd_errors(body) == []
    check_rayjob(body)
    spec = body["spec"]
    assert spec["submissionMode"] == "K8sJobMode" and spec["shutdownAfterJobFinishes"] is True
    assert spec["entrypoint"].startswith("python -m stillhouse.cluster.job --job ")


def test_the_cluster_example_builds_a_valid_rayjob():
    runtime = load_spec(REPO / "examples" / "quickstart-cluster.yaml").runtime
    from stillhouse.cluster.kuberay import KubeRayLauncher

    assert KubeRayLauncher(runtime).namespace() == "ml"  # the spec's, where the chart's Role is
    body = _body(runtime)
    assert crd_errors(body) == []
    check_rayjob(body)
    worker = body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == 2 and worker["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "2", "memory": "6Gi"}


def test_the_schema_check_is_strict_enough_to_catch_a_typo():
    body = _body(_runtime(**SPECS["s3 storage with its secret"]))
    wrong = copy.deepcopy(body)
    wrong["spec"]["shutdownAfterJobFinish"] = True  # missing `es`
    wrong["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    errors = crd_errors(wrong)
    assert any("shutdownAfterJobFinish" in e for e in errors) and any("replicas" in e for e in errors)


def test_gpu_spec_reaches_the_worker_pods():
    runtime = _runtime(**SPECS["gpu with tolerations and node selectors"])
    body = _body(runtime)
    group = body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    pod = group["template"]["spec"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "ray-train"
    head = body["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]  # the head runs the driver only


def test_worker_cpu_and_gpu_default_from_the_runtime():
    runtime = _runtime(launcher="kuberay", storage="s3://b-1/p", cpus_per_worker=4, use_gpu=True)
    resources = worker_resources(runtime)
    assert resources.cpu == "4" and resources.gpus == 1 and resources.memory == "8Gi"


def test_pods_are_restricted_and_secrets_only_referenced():
    body = _body(_runtime(**SPECS["s3 storage with its secret"]))
    for template in (body["spec"]["rayClusterSpec"]["headGroupSpec"]["template"],
                     body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]):
        pod = template["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] and context["seccompProfile"]["type"] == "RuntimeDefault"
        container = pod["containers"][0]
        assert container["image"] == "registry.bank.internal/ml/stillhouse:0.1.0"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["envFrom"] == [{"secretRef": {"name": "stillhouse-s3"}}]
        assert all("SECRET" not in e["name"] and "KEY" not in e["name"] for e in container["env"])


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(submissionMode="K8sJob"), "submissionMode `K8sJob`"),
    (lambda s: s.update(shutdownAfterJobFinishes=False), "ttlSecondsAfterFinished works only with"),
    (lambda s: s.update(entrypoint="  "), "entrypoint is empty"),
    (lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas=5), "outside [1, 1]"),
])
def test_rules_the_schema_cannot_express_are_refused_in_code(mutate, message):
    body = _body(_runtime(**SPECS["s3 storage with its secret"]))
    mutate(body["spec"])
    assert crd_errors(body) == []  # the schema lets each of these through
    with pytest.raises(StillhouseError, match="would be refused by KubeRay") as err:
        check_rayjob(body)
    assert message in str(err.value)


def test_a_bad_name_is_refused():
    body = _body(_runtime(**SPECS["s3 storage with its secret"]), name="Student_1")
    with pytest.raises(StillhouseError, match="metadata.name"):
        check_rayjob(body)


def test_job_names_are_valid_and_unique_per_suffix():
    assert job_name("student (embeddings)", "0a1b2c3d") == "stillhouse-student-embeddings-0a1b2c3d"
    long = job_name("x" * 80, "0a1b2c3d")
    body = _body(_runtime(**SPECS["s3 storage with its secret"]), name=long)
    check_rayjob(body)


@pytest.mark.parametrize("runtime, field", [
    (dict(launcher="kuberay"), "runtime: Value error, launcher `kuberay` needs runtime.storage"),
    (dict(launcher="kuberay", storage="relative/path"), "runtime.storage"),
    (dict(launcher="kuberay", storage="gs://bucket"), "runtime.storage"),
    (dict(launcher="kuberay", storage="s3://b-1/p", kuberay={"worker": {"memory": "8 GB"}}),
     "runtime.kuberay.worker.memory"),
    (dict(launcher="kuberay", storage="s3://b-1/p", kuberay={"tolerations": [{"operator": "Exists", "value": "x"}]}),
     "runtime.kuberay.tolerations.0"),
    (dict(launcher="kuberay", storage="s3://b-1/p", image="stillhouse:latest"), "runtime.image"),
    (dict(launcher="kuberay", storage="s3://b-1/p", kuberay={"namespace": "ML"}), "runtime.kuberay.namespace"),
    (dict(launcher="slurm"), "runtime.launcher"),
])
def test_bad_runtime_values_are_refused_when_the_spec_loads(runtime, field):
    with pytest.raises(SpecError) as err:
        _runtime(**runtime)
    assert field.split(":")[0] in str(err.value)


def test_the_quickstart_keeps_the_local_launcher():
    assert load_spec(QUICKSTART).runtime.launcher == "local"


@pytest.mark.parametrize("status, expected", [
    (None, False), ({}, False),
    ({"jobDeploymentStatus": "Initializing"}, False),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, False),
    ({"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED"}, False),
    ({"jobDeploymentStatus": "Suspended"}, False),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, True),
])
def test_status_that_succeeds_or_keeps_waiting(status, expected):
    assert deployment_outcome("rj", "ml", status) is expected


@pytest.mark.parametrize("status, words", [
    ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"},
     ["without succeeding", "STOPPED", "stopped from outside"]),
    ({"jobDeploymentStatus": "Failed", "reason": "AppFailed", "message": "exit code 1"},
     ["RayJob rj in namespace ml failed", "AppFailed", "exit code 1", "kubectl logs -n ml job/rj"]),
    ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, ["DeadlineExceeded", "active_deadline_seconds"]),
    ({"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed"}, ["SubmissionFailed", "Ray head"]),
    ({"jobDeploymentStatus": "ValidationFailed", "message": "bad spec"}, ["ValidationFailed", "bad spec",
                                                                          "runtime.kuberay"]),
])
def test_terminal_failures_name_the_job_the_reason_and_the_fix(status, words):
    with pytest.raises(StillhouseError) as err:
        deployment_outcome("rj", "ml", status)
    for word in words:
        assert word in str(err.value)
