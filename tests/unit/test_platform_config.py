"""The compiled pipeline carries the spec's cluster settings (kfp-kubernetes platform spec, container resources,
images), read back from the IR YAML a Kubeflow Pipelines server would receive."""

from __future__ import annotations

import pytest
import yaml

from stillhouse.runner import compile_pipeline
from stillhouse.spec import load_spec, parse_spec
from tests.conftest import REPO

QUICKSTART = REPO / "examples" / "quickstart.yaml"

CLUSTER_RUNTIME = {
    "workers": 2, "cpus_per_worker": 4, "use_gpu": True,
    "image": "registry.bank.internal/ml/stillhouse:0.1.0",
    "storage": "/mnt/jobs/stillhouse", "storage_volume": {"claim": "stillhouse-jobs", "mount_path": "/mnt/jobs"},
    "kubernetes": {
        "defaults": {"resources": {"cpu": "1", "memory": "4Gi"}, "timeout_s": 7200,
                     "node_selector": {"pool": "ml"}},
        "steps": {
            "train-teacher": {"resources": {"cpu": "8", "memory": "32Gi", "gpus": 2},
                              "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                               "effect": "NoSchedule"}],
                              "image": "registry.bank.internal/ml/stillhouse-cuda:0.1.0"},
            "package": {"timeout_s": 600},
        },
        "secrets": [{"secret": "teacher-endpoint", "env": {"OPENAI_API_KEY": "api-key"},
                     "steps": ["train-teacher", "soft-label"]}],
        "model_cache": {"claim": "stillhouse-models", "mount_path": "/models"},
        "volumes": [{"claim": "credit-data", "mount_path": "/data"}],
        "image_pull_secrets": ["registry-creds"],
    },
}


def _compiled(tmp_path, runtime: dict | None = None) -> tuple[dict, dict]:
    raw = yaml.safe_load(QUICKSTART.read_text())
    if runtime is not None:
        raw["runtime"] = runtime
    spec = parse_spec(yaml.safe_dump(raw), base_dir=QUICKSTART.parent)
    documents = list(yaml.safe_load_all(compile_pipeline(tmp_path / "pipeline.yaml", spec).read_text()))
    pipeline = documents[0]
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}
    return pipeline["deploymentSpec"]["executors"], platform


def test_the_spec_reaches_the_compiled_platform_spec(tmp_path):
    containers, platform = _compiled(tmp_path, CLUSTER_RUNTIME)
    teacher = containers["exec-train-teacher"]["container"]
    assert teacher["image"] == "registry.bank.internal/ml/stillhouse-cuda:0.1.0"
    accelerator = teacher["resources"]["accelerator"]
    assert accelerator["resourceCount"] == "2" and accelerator["resourceType"] == "nvidia.com/gpu"
    assert teacher["resources"]["cpuLimit"] == 8.0 and teacher["resources"]["memoryRequest"] == 34.359738368
    evaluate = containers["exec-evaluate"]["container"]
    assert evaluate["image"] == "registry.bank.internal/ml/stillhouse:0.1.0"
    assert evaluate["resources"]["cpuRequest"] == 1.0 and "accelerator" not in evaluate["resources"]
    # Local launcher + use_gpu: training steps that set no GPUs get one per Ray worker; others none.
    assert containers["exec-distill-student"]["container"]["resources"]["accelerator"]["resourceCount"] == "2"

    teacher_k8s = platform["exec-train-teacher"]
    assert {"secretName": "teacher-endpoint", "secretNameParameter": {"runtimeValue": {"constant": "teacher-endpoint"}},
            "keyToEnv": [{"secretKey": "api-key", "envVar": "OPENAI_API_KEY"}], "optional": False} in \
        teacher_k8s["secretAsEnv"]
    assert "secretAsEnv" not in platform["exec-evaluate"]  # the secret goes only where the spec says
    mounts = {(m["constant"], m["mountPath"]) for m in teacher_k8s["pvcMount"]}
    assert mounts == {("credit-data", "/data"), ("stillhouse-models", "/models"), ("stillhouse-jobs", "/mnt/jobs")}
    assert teacher_k8s["nodeSelector"]["labels"] == {"pool": "ml"}
    assert teacher_k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert teacher_k8s["activeDeadlineSeconds"] == "7200" and platform["exec-package"]["activeDeadlineSeconds"] == "600"
    assert teacher_k8s["imagePullSecret"][0]["secretName"] == "registry-creds"
    assert teacher_k8s["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in teacher["env"]}
    assert env["STILLHOUSE_CACHE"] == "/models"


def test_s3_storage_credentials_come_from_the_named_secret(tmp_path):
    runtime = {"launcher": "kuberay", "storage": "s3://ml-artifacts/stillhouse", "storage_secret": "stillhouse-s3"}
    _, platform = _compiled(tmp_path, runtime)
    for executor in platform.values():
        (secret,) = [s for s in executor["secretAsEnv"] if s["secretName"] == "stillhouse-s3"]
        keys = {k["envVar"] for k in secret["keyToEnv"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= keys
        assert secret["optional"] is True  # a store that needs no session token or region still starts


def test_the_quickstart_compiles_with_the_project_image_and_no_gpus(tmp_path, monkeypatch):
    monkeypatch.delenv("STILLHOUSE_IMAGE", raising=False)
    containers, platform = _compiled(tmp_path)
    assert {c["container"]["image"] for c in containers.values()} == {"ghcr.io/stillhouse/stillhouse:0.1.0"}
    assert not any("accelerator" in c["container"].get("resources", {}) for c in containers.values())
    assert all(set(p) == {"securityContext"} for p in platform.values())


def test_stillhouse_image_overrides_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("STILLHOUSE_IMAGE", "registry.example.com/stillhouse:9.9.9")
    containers, _ = _compiled(tmp_path)
    assert {c["container"]["image"] for c in containers.values()} == {"registry.example.com/stillhouse:9.9.9"}


@pytest.mark.parametrize("kubernetes, field", [
    ({"steps": {"train-techer": {}}}, "runtime.kubernetes.steps.train-techer"),
    ({"defaults": {"resources": {"cpu": "two"}}}, "runtime.kubernetes.defaults.resources.cpu"),
    ({"secrets": [{"secret": "s", "env": {"1BAD": "k"}}]}, "runtime.kubernetes.secrets.0.env"),
    ({"volumes": [{"claim": "a", "mount_path": "/x"}, {"claim": "b", "mount_path": "/x"}]}, "runtime.kubernetes"),
])
def test_bad_cluster_settings_are_refused_naming_the_field(kubernetes, field):
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["runtime"]["kubernetes"] = kubernetes
    with pytest.raises(Exception) as err:
        parse_spec(yaml.safe_dump(raw), base_dir=QUICKSTART.parent)
    assert field in str(err.value)


def test_every_example_compiles(tmp_path):
    for path in sorted((REPO / "examples").glob("*.yaml")):
        compile_pipeline(tmp_path / f"{path.stem}.yaml", load_spec(path))


def test_where_a_recipe_runs_is_not_part_of_its_hash():
    local, cluster = load_spec(QUICKSTART), load_spec(REPO / "examples" / "quickstart-cluster.yaml")
    assert cluster.runtime.launcher == "kuberay" and cluster.runtime.workers != local.runtime.workers
    same_workers = cluster.model_copy(update={"runtime": cluster.runtime.model_copy(update={"workers": 1})})
    assert same_workers.spec_hash() == local.spec_hash()
    assert cluster.spec_hash() != local.spec_hash()  # the number of workers is part of the recipe
