"""The Helm chart: a real ``helm`` (v4, installed from PyPI by scripts/install_helm.py) lints and renders it with the
default values and with ci/full-values.yaml; every rendered manifest validates offline against the Kubernetes
schemas in strict mode (``kubernetes-validate``); the rendered objects are hardened as the README says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "stillhouse"
FULL = CHART / "ci" / "full-values.yaml"
KUBERNETES = "1.30.0"  # the oldest release the chart's APIs and fields are checked against
STUDENT = {"name": "sentiment", "model": "stillhouse-quickstart-sentiment:6cx2sgqbxs5nqaav",
           "image": {"repository": "registry.example.com/sentiment-service", "tag": "6cx2sgqbxs5nqaav"}}
SECRETS = ["--set", "audit.keySecret.name=stillhouse-audit", "--set", "auth.tokenHashesSecret.name=stillhouse-tokens"]


@pytest.fixture(scope="module")
def helm() -> str:
    found = shutil.which("helm", path=os.path.dirname(sys.executable)) or shutil.which("helm")
    if found is None:
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "install_helm.py")], capture_output=True,
                              text=True)
        found = shutil.which("helm", path=os.path.dirname(sys.executable))
        if found is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"could not install helm: {done.stderr[-2000:]}")
            pytest.skip("helm is not installed and could not be (offline?)")
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, cwd=CHART)


def render(helm: str, *args: str) -> list[dict]:
    done = run_helm(helm, "template", "rel", ".", "--namespace", "ml", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one_student(**student) -> list[str]:
    return ["--set-json", "students=" + json.dumps([{**STUDENT, **student}]), *SECRETS]


@pytest.mark.parametrize("values", [[], ["-f", str(FULL)]], ids=["defaults", "full"])
def test_lint_strict_passes(helm, values):
    done = run_helm(helm, "lint", "--strict", ".", *values)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [[], ["-f", str(FULL)], one_student()], ids=["defaults", "full", "one-student"])
def test_every_rendered_manifest_validates_strictly_against_the_kubernetes_schemas(helm, values):
    import kubernetes_validate

    docs = render(helm, *values)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises, naming the field


def test_pods_are_hardened_with_resources_probes_and_only_referenced_secrets(helm):
    docs = render(helm, "-f", str(FULL))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deployments) == 2
    assert not [d for d in docs if d["kind"] == "Secret"]  # secrets are the operator's; the chart only names them
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1034
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"  # TLS is on in the full values
            assert container["command"] == ["python", "-m", "stillhouse.cli", "serve"]
            assert "--ssl-certfile" in container["args"]
            for env in container["env"]:  # every secret arrives by reference, none as a literal value
                if env["name"] in ("STILLHOUSE_TOKEN_HASHES", "STILLHOUSE_AUDIT_KEY", "PGPASSWORD"):
                    assert set(env) == {"name", "valueFrom"} and "secretKeyRef" in env["valueFrom"]
            names = {e["name"] for e in container["env"]}
            assert {"STILLHOUSE_TOKEN_HASHES", "STILLHOUSE_AUDIT_KEY", "PGPASSWORD"} <= names


def test_the_serving_config_is_one_the_server_accepts(helm):
    from stillhouse.serve.config import validate_config

    for doc in render(helm, "-f", str(FULL)):
        if doc["kind"] == "ConfigMap":
            config = validate_config(yaml.safe_load(doc["data"]["serve.yaml"]), doc["metadata"]["name"])
            assert config.auth.enabled and config.feedback.url.startswith("postgresql://")
            assert config.audit.key_env == "STILLHOUSE_AUDIT_KEY"
    single = next(d for d in render(helm, *one_student()) if d["kind"] == "ConfigMap")
    config = validate_config(yaml.safe_load(single["data"]["serve.yaml"]), "single")
    assert config.feedback.url is None and config.feedback.path == "/var/lib/stillhouse/feedback.sqlite"


def test_the_feature_store_config_is_one_feast_accepts_with_passwords_only_from_secrets(helm, tmp_path,
                                                                                         monkeypatch):
    from feast.repo_config import load_repo_config

    docs = render(helm, "-f", str(FULL))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    text = configmap["data"]["feature_store.yaml"]
    assert "${REDIS_PASSWORD}" in text and "${FEAST_REGISTRY_PASSWORD}" in text  # placeholders, not secrets
    assert yaml.safe_load(configmap["data"]["serve.yaml"])["features_repo"] == "/etc/stillhouse/feast"
    (tmp_path / "feature_store.yaml").write_text(text)
    monkeypatch.setenv("REDIS_PASSWORD", "r3dis")
    monkeypatch.setenv("FEAST_REGISTRY_PASSWORD", "pg")
    config = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    assert config.online_store.type == "redis" and config.online_store.connection_string.endswith("password=r3dis")
    assert config.registry.registry_type == "sql" and ":pg@feast-db" in config.registry.path
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "feast-redis", "key": "password"}
    assert any(m["mountPath"] == "/etc/stillhouse/feast/feature_store.yaml" for m in container["volumeMounts"])
    single = next(d for d in render(helm, *one_student()) if d["kind"] == "ConfigMap")
    assert "feature_store.yaml" not in single["data"]


def test_the_ray_jobs_role_grants_exactly_the_rayjob_verbs(helm):
    docs = render(helm, "-f", str(FULL))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": ["ray.io"], "resources": ["rayjobs/status"], "verbs": ["get"]},
    ]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": "ml-team"}]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_role_covers_every_call_the_launcher_makes(helm):
    (role,) = [d for d in render(helm) if d["kind"] == "Role"]
    granted = {(resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}
    source = (REPO / "src" / "stillhouse" / "cluster" / "kuberay.py").read_text()
    calls = re.findall(r"api\.(create|get|list|delete)_namespaced_custom_object(_status)?", source)
    needed = set()
    for verb, status in calls:
        resource = "rayjobs/status" if status else "rayjobs"
        needed |= {(resource, "list"), (resource, "watch")} if verb == "list" else {(resource, verb)}  # list: a watch
    assert {("rayjobs", "create"), ("rayjobs", "delete"), ("rayjobs/status", "get")} <= needed
    assert needed <= granted


def test_network_policy_admits_only_the_named_peers(helm):
    docs = render(helm, "-f", str(FULL))
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 2
    ingress = policies[0]["spec"]["ingress"]
    assert ingress[0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "crm"}
    closed = next(d for d in render(helm, *one_student()) if d["kind"] == "NetworkPolicy")
    assert closed["spec"]["ingress"] == [] and set(closed["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_several_replicas_on_sqlite_are_refused_with_the_fix(helm):
    done = run_helm(helm, "template", "rel", ".", *one_student(replicas=3))
    assert done.returncode != 0
    assert "students[sentiment]: 3 replicas" in done.stderr and "feedback.url" in done.stderr
    rwo = run_helm(helm, "template", "rel", ".", *one_student(replicas=3), "--set",
                   "feedback.url=postgresql://app@db:5432/feedback")
    assert rwo.returncode != 0 and "ReadWriteMany" in rwo.stderr
    ok = run_helm(helm, "template", "rel", ".", *one_student(replicas=3), "--set",
                  "feedback.url=postgresql://app@db:5432/feedback", "--set-json",
                  'persistence.accessModes=["ReadWriteMany"]')
    assert ok.returncode == 0, ok.stderr
    assert "type: RollingUpdate" in ok.stdout and "type: Recreate" in run_helm(
        helm, "template", "rel", ".", *one_student()).stdout


@pytest.mark.parametrize("args, words", [
    (["--set", "replicas=three"], "at '/replicas': got string, want integer"),
    (["--set", "replicaCount=2"], "additional properties 'replicaCount' not allowed"),
    (["--set", "service.port=99999"], "/service/port"),
    (one_student(image={"repository": "r", "tag": "latest"}), "/students/0/image/tag"),
    (one_student(config={"limits": {"max_textz": 3}}), "additional properties 'max_textz' not allowed"),
    (one_student(config={"limits": {"max_texts": "many"}}), "/students/0/config/limits/max_texts"),
    (["--set-json", "students=" + json.dumps([STUDENT])], "/audit/keySecret/name"),
    (["--set", "feedback.url=postgresql://app:hunter2@db:5432/feedback"], "/feedback/url"),
])
def test_a_bad_value_fails_naming_the_key(helm, args, words):
    done = run_helm(helm, "template", "rel", ".", *args)
    assert done.returncode != 0 and words in done.stderr, done.stderr


def test_the_committed_values_schema_is_the_generated_one():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import chart_schema
    finally:
        sys.path.pop(0)
    assert (CHART / "values.schema.json").read_text() == chart_schema.render(), \
        "values.schema.json is stale: run python scripts/chart_schema.py"


def test_every_value_is_documented():
    undocumented, stack = [], []  # stack of (indent, documented)
    comment = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment += stripped
            continue
        match = re.match(r"^(\s*)(?:- )?([A-Za-z][\w-]*):", line)
        if not match:
            comment = ""
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = "# --" in comment or any(d for _, d in stack)
        leaf = not line.rstrip().endswith(":")
        if leaf and not documented:
            undocumented.append(match.group(2))
        stack.append((indent, documented))
        comment = ""
    assert undocumented == []


def test_the_values_readme_lists_every_top_level_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in readme]
    assert missing == []


def test_the_kind_walkthrough_manifests_validate_strictly():
    import kubernetes_validate

    docs = [d for d in yaml.safe_load_all((REPO / "infra" / "kind" / "minio.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "Job"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
