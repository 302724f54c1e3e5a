"""``stillhouse submit`` through the real ``kfp.Client`` against a KFP API server on 127.0.0.1 (see
tests/kfp_api.py for why that server is not a mock of our code), and ``--dry-run`` without any server."""

from __future__ import annotations

import json

import pytest
import yaml

from stillhouse.cli import main
from stillhouse.cluster.submit import kfp_cron
from stillhouse.errors import StillhouseError
from tests.conftest import REPO
from tests.kfp_api import FakeKfpServer

pytestmark = pytest.mark.integration

QUICKSTART = REPO / "examples" / "quickstart.yaml"


@pytest.fixture()
def kfp_server(monkeypatch):
    for name in ("KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_TOKEN", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    servers = []

    def start(**kw) -> FakeKfpServer:
        servers.append(FakeKfpServer(**kw))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_dry_run_writes_the_package_and_parameters_and_contacts_nothing(tmp_path, capsys):
    assert main(["submit", str(QUICKSTART), "--dry-run", "--out-dir", str(tmp_path)]) == 0
    pipeline = yaml.safe_load_all((tmp_path / "quickstart-sentiment.pipeline.yaml").read_text())
    assert next(pipeline)["pipelineInfo"]["name"] == "stillhouse-distill"
    params = json.loads((tmp_path / "quickstart-sentiment.params.json").read_text())
    assert json.loads(params["spec_json"])["name"] == "quickstart-sentiment"
    assert "nothing submitted" in capsys.readouterr().out


def test_a_run_is_started_with_the_spec_as_its_parameter_and_the_token_file(kfp_server, tmp_path, monkeypatch,
                                                                             capsys):
    server = kfp_server()
    token = tmp_path / "token"
    token.write_text("sa-token-123")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    assert main(["submit", str(QUICKSTART), "--host", server.url, "--experiment", "credit",
                 "--out-dir", str(tmp_path)]) == 0
    (experiment,) = server.posted("/apis/v2beta1/experiments")
    assert experiment["body"]["display_name"] == "credit"
    (run,) = server.posted("/apis/v2beta1/runs")
    assert run["headers"]["authorization"] == "Bearer sa-token-123"
    assert run["body"]["experiment_id"] == "exp-1"
    package = run["body"]["pipeline_spec"]
    assert package["pipeline_spec"]["pipelineInfo"]["name"] == "stillhouse-distill"
    assert "exec-train-teacher" in package["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    spec_json = run["body"]["runtime_config"]["parameters"]["spec_json"]
    assert json.loads(spec_json)["name"] == "quickstart-sentiment"
    assert "run run-1 started" in capsys.readouterr().out


def test_a_schedule_creates_a_recurring_run(kfp_server, tmp_path, monkeypatch):
    server = kfp_server()
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "bearer-xyz")
    assert main(["submit", str(QUICKSTART), "--host", server.url, "--schedule", "0 3 * * 1",
                 "--out-dir", str(tmp_path)]) == 0
    (recurring,) = server.posted("/apis/v2beta1/recurringruns")
    assert recurring["headers"]["authorization"] == "Bearer bearer-xyz"
    body = recurring["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert json.loads(body["runtime_config"]["parameters"]["spec_json"])["name"] == "quickstart-sentiment"
    assert server.posted("/apis/v2beta1/runs") == []


def test_refused_credentials_are_one_clear_error(kfp_server, tmp_path, capsys):
    server = kfp_server(refuse_with=403)
    assert main(["submit", str(QUICKSTART), "--host", server.url, "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "refused the credentials (HTTP 403)" in err and "KF_PIPELINES_SA_TOKEN_PATH" in err
    assert "Traceback" not in err


def test_a_local_data_file_that_no_step_mounts_is_refused_before_submitting(kfp_server, tmp_path, tiny_data, capsys):
    server = kfp_server()
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["data"] = {"seed": str(tiny_data["seed"]), "pool": str(tiny_data["pool"]), "eval": str(tiny_data["eval"])}
    raw["task"] = {"type": "classification", "labels": ["negative", "positive"]}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    assert main(["submit", str(spec), "--host", server.url, "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "data.seed.path is a local path" in err and "runtime.kubernetes.volumes" in err
    assert server.requests == []
    # On a mounted volume it goes through.
    raw["runtime"]["kubernetes"] = {"volumes": [{"claim": "data", "mount_path": str(tmp_path)}]}
    spec.write_text(yaml.safe_dump(raw))
    assert main(["submit", str(spec), "--host", server.url, "--out-dir", str(tmp_path)]) == 0


@pytest.mark.parametrize("cron, expected", [("0 3 * * 1", "0 0 3 * * 1"), ("30 0 3 * * *", "30 0 3 * * *"),
                                            ("*/15 * * * *", "0 */15 * * * *")])
def test_cron_expressions_become_kfp_six_field_crons(cron, expected):
    assert kfp_cron(cron) == expected


@pytest.mark.parametrize("cron", ["daily", "0 3 * *", "0 3 * * 1; rm -rf /"])
def test_bad_cron_is_refused(cron):
    with pytest.raises(StillhouseError, match="not a cron expression"):
        kfp_cron(cron)
