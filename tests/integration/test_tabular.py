"""Task `tabular` end to end: a Feast-backed spec through kfp.local (real Feast with the DuckDB offline and
SQLite online stores, real Ray Train for the student and baseline, real Great Expectations), packaged and
answered by a real `stillhouse serve` on /score (raw rows and borrower ids through the online store); the
point-in-time join; Feast's Redis online store against the real Redis server."""

import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from tests.integration.test_pipeline import stillhouse
from tests.tabular_data import credit_frame, write_feast_repo

pytestmark = pytest.mark.integration
TOKEN = "tabular-token-of-ci"


def tabular_spec(repo: Path, entity_rows: Path, output: Path) -> str:
    return yaml.safe_dump({
        "name": "tiny-credit",
        "task": {"type": "tabular", "label_field": "label", "positive_label": "bad", "entity": "borrower_id",
                 "timestamp": "application_time", "sensitive_features": ["sex", "age"],
                 "favourable": "not_flagged", "sensitive_bins": {"age": [25]}, "costs": {"false_negative": 5, "false_positive": 1}},
        "data": {"seed": str(entity_rows), "sampling": {"eval_size": 60},
                 "features": {"repo": str(repo), "feature_service": "credit_model"}},
        "teacher": {"kind": "ensemble", "members": [{"kind": "gradient_boosting", "max_iter": 50},
                                                    {"kind": "logistic_regression"}]},
        "student": {"kind": "mlp", "hidden": [16]},
        "synthesis": {"generator": "copula", "profiles": {"rows": 120, "scenarios": [
            {"name": "debt_spike", "fraction": 0.25, "changes": {"debt": {"scale": 2.0}}},
            {"name": "thin_file", "fraction": 0.25, "changes": {"history": {"set": "none"}, "months": {"set": 6}}}]}},
        "distillation": {"epochs": 12},
        "evaluation": {"latency_samples": 5, "throughput_batch_size": 4},
        "runtime": {"workers": 1, "cpus_per_worker": 1},
        "output_dir": str(output)})


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tabular")
    repo = folder / "feast"
    entity_rows = write_feast_repo(repo, credit_frame())
    spec = folder / "spec.yaml"
    spec.write_text(tabular_spec(repo, entity_rows, folder / "runs"))
    result = stillhouse("run", str(spec), cwd=folder)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [p for p in (folder / "runs" / "tiny-credit").iterdir() if p.is_dir()]
    assert len(runs) == 1
    return {"folder": folder, "run": runs[0], "stdout": result.stdout,
            "status": json.loads((runs[0] / "run.json").read_text())}


@pytest.mark.timeout(900)
def test_tabular_spec_runs_end_to_end_with_feast_rows_profiles_and_the_gate(tabular_run):
    run_dir, status = tabular_run["run"], tabular_run["status"]
    assert status["status"] == "succeeded"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "tabular" and metrics["data"]["counts"] == {"seed": 180, "pool": 0, "eval": 60,
                                                                           "labels": 2}
    # the inputs came from the feature service; entity, timestamp and sensitive features are not inputs
    assert metrics["schema"]["numeric"] == ["income", "months", "debt"] and metrics["schema"]["categorical"] == [
        "history"]
    for name in ("teacher", "student", "baseline"):
        model = metrics["models"][name]
        for key in ("auc", "ks", "brier", "log_loss", "ece", "cost_weighted_error", "latency_ms_p50", "parameters"):
            assert model[key] is not None, (name, key)
        assert set(model["fairness"]) == {"sex", "age"} and set(model["fairness"]["age"]["groups"]) == {"<25",
                                                                                                        ">=25"}
    assert metrics["models"]["student"]["threshold"] == pytest.approx(1 / 6)
    assert metrics["models"]["teacher"]["auc"] > 0.7  # the table's risk is learnable; the teacher learned it
    gate = metrics["gate"]
    assert {c["limit"] for c in gate["checks"]} == {"min_auc", "max_ece", "min_demographic_parity_ratio",
                                                     "max_equalized_odds_difference", "max_auc_loss"}
    assert gate["verdict"] == ("passed" if all(c["passed"] for c in gate["checks"]) else "failed")
    assert status["gate"] == gate["verdict"] and f"promotion gate: {gate['verdict']}" in tabular_run["stdout"]
    report, card = (run_dir / "report.html").read_text(), (run_dir / "model_card.md").read_text()
    assert f"Promotion gate: <span class=\"verdict\">{gate['verdict']}</span>" in report
    assert f"**Promotion gate: {gate['verdict']}**" in card and "min_demographic_parity_ratio" in card
    assert report.count("data:image/png;base64,") == 2 and 'src="http' not in report
    # synthetic profiles per scenario, teacher-labelled, in synthesis.json and the report
    synthesis = json.loads((Path(status["artifacts"]["synthesize/synthetic"]) / "synthesis.json").read_text())
    assert set(synthesis["scenarios"]) == {"plain", "debt_spike", "thin_file"}
    assert synthesis["scenarios"]["debt_spike"]["generated"] == 30 and synthesis["kept"] > 0
    assert "thin_file" in report and "debt_spike" in card
    profiles = pd.read_parquet(Path(status["artifacts"]["synthesize/synthetic"]) / "synthetic.parquet")
    assert set(profiles.loc[profiles["scenario"] == "thin_file", "history"]) == {"none"}
    # soft labels stored as for text, with fingerprints; the student trained on the Ray Train loop
    soft = pd.read_parquet(Path(status["artifacts"]["soft-label/soft_labels"]) / "soft_labels.parquet")
    assert set(soft["split"]) == {"seed", "synthetic"} and len(soft) == 180 + synthesis["kept"]
    assert soft["input_fingerprint"].str.len().eq(16).all() and soft["teacher_fingerprint"].nunique() == 1
    student = Path(status["artifacts"]["distill-student/student"])
    assert len(json.loads((student / "training_history.json").read_text())["epochs"]) == 6
    assert {"preprocess.json", "tabular.json", "model.safetensors"} <= {p.name for p in student.iterdir()}
    # the packaged model says whether it passed the gate
    import bentoml

    stored = bentoml.models.get(status["model_tag"])
    assert stored.info.labels["task"] == "tabular" and stored.info.labels["gate"] == gate["verdict"]
    assert stored.info.metadata["features"]["feature_service"] == "credit_model"
    listing = stillhouse("models", "list", cwd=tabular_run["folder"])
    assert status["model_tag"] in listing.stdout and "AUC" in listing.stdout


@pytest.fixture(scope="module")
def tabular_server(tabular_run):
    folder = tabular_run["folder"]
    (folder / "tokens").write_text(f"ci {hash_token(TOKEN)}\n")
    process, client, _ = start_serve([tabular_run["status"]["model_tag"], "--dir", str(folder / "serve"),
                                      "--tokens-file", str(folder / "tokens")], folder)
    yield {"client": client, "folder": folder}
    stop_process_group(process)


def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.timeout(600)
def test_packaged_student_scores_rows_and_borrower_ids_behind_stillhouse_serve(tabular_server):
    client = tabular_server["client"]
    row = {"income": 2500.0, "months": 12, "debt": 3000.0, "history": "late"}
    scored = client.post("/score", json={"rows": [row, {**row, "debt": 100.0, "history": "paid"}]},
                         headers=auth())
    assert scored.status_code == 200, scored.text
    results = scored.json()["results"]
    assert [set(r["probabilities"]) for r in results] == [{"bad", "good"}] * 2
    assert results[0]["probability"] == pytest.approx(results[0]["probabilities"]["bad"], abs=1e-5)
    assert results[0]["probability"] > results[1]["probability"]  # more debt, late payments: riskier
    # the decision the evaluation measured: above the cost threshold (1/6), not the most probable label
    assert [r["flagged"] for r in results] == [r["probability"] > 1 / 6 for r in results]
    assert len(results[0]["contributions"]) == 3 and {c["feature"] for c in results[0]["contributions"]} <= set(row)
    by_id = client.post("/score", json={"entity_ids": [1, 2]}, headers=auth())
    assert by_id.status_code == 200, by_id.text
    assert [r["entity_id"] for r in by_id.json()["results"]] == [1, 2]
    # the same borrower scored from its online features and from the same values sent as a row
    online = credit_frame().set_index("borrower_id").loc[1, ["income", "months", "debt", "history"]].to_dict()
    direct = client.post("/score", json={"rows": [{k: (v.item() if hasattr(v, "item") else v)
                                                   for k, v in online.items()}]}, headers=auth())
    assert direct.json()["results"][0]["probability"] == pytest.approx(
        by_id.json()["results"][0]["probability"], abs=1e-5)


@pytest.mark.timeout(600)
def test_score_refuses_bad_requests_with_one_clear_error_and_no_5xx(tabular_server):
    client, folder = tabular_server["client"], tabular_server["folder"]
    secret = "4929-1234-5678-9012"
    assert client.post("/score", json={"rows": [{"income": 1}]}).status_code == 401
    cases = [({"rows": [{"income": 1.0, "months": 3}]}, "lacks column(s) ['debt', 'history']"),
             ({"rows": [{"income": secret, "months": 3, "debt": 1, "history": "paid"}]}, "`income` is numeric"),
             ({"entity_ids": [987654]}, "have no features in the online store"),
             ({"entity_ids": [secret]}, "do not fit the entity's key type"),
             ({"rows": [], "entity_ids": [1]}, "exactly one of `rows` and `entity_ids`"),
             ({"rows": [["not", "an", "object"]]}, "is not an object"),
             ({"rows": [{"income": {"nested": secret}}]}, "not a string, number or null")]
    for body, message in cases:
        answer = client.post("/score", json=body, headers=auth())
        assert answer.status_code == 422 and message in answer.json()["error"], (body, answer.text)
        assert secret not in answer.text
    assert client.post("/classify", json={"texts": ["hello"]}, headers=auth()).status_code == 404  # not its route
    logs = (folder / "serve" / "audit.jsonl").read_text() + (folder / "server.log").read_text()
    assert secret not in logs and TOKEN not in logs
    assert "/score" in {json.loads(line)["endpoint"] for line in (folder / "serve" / "audit.jsonl").read_text()
                        .splitlines()}


def test_point_in_time_join_never_uses_a_feature_row_newer_than_the_label(tmp_path):
    from stillhouse.spec import parse_spec
    from stillhouse.tasks.tabular.features import join_features

    frame = credit_frame(rows=20)
    entity_rows = write_feast_repo(tmp_path / "repo", frame)
    profile = pd.read_parquet(tmp_path / "repo" / "data" / "profile.parquet")
    # borrower 1's income changes a day *after* its application: the training row must keep the old value
    newer = profile[profile["borrower_id"] == 1].assign(income=999_999.0,
                                                        event_timestamp=lambda f: f["event_timestamp"]
                                                        + pd.Timedelta(days=1))
    pd.concat([profile, newer]).to_parquet(tmp_path / "repo" / "data" / "profile.parquet", index=False)
    spec = parse_spec(tabular_spec(tmp_path / "repo", entity_rows, tmp_path / "runs"))
    rows = pd.read_csv(entity_rows)
    # an entity row older than every feature row is kept (its features missing), not silently dropped
    early = pd.DataFrame({"borrower_id": [3], "application_time": ["2023-06-01T00:00:00+00:00"], "label": ["good"]})
    joined = join_features(spec, pd.concat([rows, early], ignore_index=True), "eval")
    assert len(joined) == len(rows) + 1
    assert joined.loc[0, "income"] == frame.loc[0, "income"] != 999_999.0
    assert joined["income"].iloc[-1] != joined["income"].iloc[-1]  # NaN: no feature row that early
    assert list(joined["borrower_id"]) == [*rows["borrower_id"], 3]  # the entity rows' order is kept


def require_redis():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable at 127.0.0.1:6379: {exc}")
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    return redis


REDIS_ONLINE = "  type: redis\n  connection_string: 127.0.0.1:6379"


def test_feast_redis_online_store_against_the_real_redis_server(tmp_path):
    redis = require_redis()
    from stillhouse.tasks.tabular.features import feature_store, online_rows

    project = f"stillhouse_test_{uuid.uuid4().hex[:10]}"
    frame = credit_frame(rows=12)
    write_feast_repo(tmp_path / "repo", frame, project=project, online=REDIS_ONLINE)
    store = feature_store(tmp_path / "repo")
    try:
        store.materialize_incremental(end_date=pd.Timestamp("2025-01-01", tz="UTC").to_pydatetime())
        rows = online_rows(tmp_path / "repo", "credit_model", "borrower_id", [2, 5, 404])
        assert rows["income"].tolist()[:2] == frame.set_index("borrower_id").loc[[2, 5], "income"].tolist()
        assert rows["history"].tolist()[:2] == frame.set_index("borrower_id").loc[[2, 5], "history"].tolist()
        assert pd.isna(rows["income"].iloc[2])  # an id the store does not hold
        keys = redis.Redis(host="127.0.0.1", port=6379).keys(f"*{project}*")
        assert keys  # the values really are in Redis
    finally:
        store.teardown()


def test_the_credit_feature_repository_joins_german_credit(tmp_path):
    import shutil

    from tests.conftest import SHARED_DATA

    source = SHARED_DATA / "german_credit" / "germancredit.csv"
    if not source.is_file():
        pytest.skip("../shared/data/german_credit is absent")
    import importlib.util

    repo = tmp_path / "credit"
    shutil.copytree(Path(__file__).resolve().parents[2] / "infra" / "feast" / "credit", repo,
                    ignore=shutil.ignore_patterns("data"))
    module = importlib.util.spec_from_file_location("build_data", repo / "build_data.py")
    build = importlib.util.module_from_spec(module)
    module.loader.exec_module(build)
    build.build(source, repo / "data")
    from stillhouse.spec import parse_spec
    from stillhouse.tasks.tabular.features import join_features

    text = (Path(__file__).resolve().parents[2] / "examples" / "credit-feast.yaml").read_text()
    spec = parse_spec(text.replace("../infra/feast/credit", str(repo)), base_dir=tmp_path)
    labels = pd.read_csv(repo / "data" / "labels.csv")
    joined = join_features(spec, labels, "seed")
    original = pd.read_csv(source)
    assert len(joined) == 1000 and joined["credit_amount"].tolist() == original["credit_amount"].tolist()
    assert joined["credit_history"].tolist() == original["credit_history"].tolist()


@pytest.mark.timeout(600)
def test_a_multiclass_table_runs_through_the_steps_with_accuracy_and_macro_auc(tmp_path):
    from stillhouse import steps

    frame = credit_frame(rows=150, seed=3)
    frame["label"] = pd.cut(frame["debt"] / frame["income"], [-1, 0.4, 0.9, 99], labels=["low", "mid", "high"])
    frame.drop(columns=["borrower_id", "application_time"]).to_csv(tmp_path / "seed.csv", index=False)
    spec = yaml.safe_dump({
        "name": "tiny-multiclass", "task": {"type": "tabular", "label_field": "label",
                                            "labels": ["low", "mid", "high"], "sensitive_features": ["sex"]},
        "data": {"seed": str(tmp_path / "seed.csv"), "sampling": {"eval_size": 45}},
        "teacher": {"kind": "gradient_boosting", "max_iter": 40}, "student": {"kind": "mlp", "hidden": []},
        "distillation": {"epochs": 6},
        "evaluation": {"latency_samples": 3, "throughput_batch_size": 4,
                       "gate": {"min_demographic_parity_ratio": None, "max_equalized_odds_difference": None}},
        "output_dir": str(tmp_path / "runs")})
    from stillhouse.spec import parse_spec

    j = parse_spec(spec).model_dump_json()
    d = {name: str(tmp_path / name) for name in ("data", "teacher", "synth", "soft", "student", "baseline", "eval")}
    assert steps.prepare_step(j, d["data"]) == {"seed": 105, "pool": 0, "eval": 45, "labels": 3}
    steps.train_teacher_step(j, d["data"], d["teacher"])
    assert steps.synthesize_step(j, d["data"], d["teacher"], d["synth"]) == {"enabled": False}
    steps.soft_label_step(j, d["data"], d["teacher"], d["synth"], d["soft"])
    steps.distill_student_step(j, d["data"], d["teacher"], d["soft"], d["synth"], d["student"])
    steps.train_baseline_step(j, d["data"], d["teacher"], d["baseline"])
    metrics = steps.evaluate_step(j, d["data"], d["teacher"], d["student"], d["baseline"], d["eval"], d["synth"],
                                  d["soft"])
    assert metrics["labels"] == ["low", "mid", "high"] and metrics["positive_label"] is None  # as declared
    assert metrics["comparison"]["headline"] == "accuracy"
    for model in metrics["models"].values():
        assert 0 <= model["accuracy"] <= 1 and 0 <= model["auc"] <= 1 and "fairness" not in model
    assert metrics["models"]["teacher"]["accuracy"] > 0.6  # the label is a function of two inputs
    assert {c["limit"] for c in metrics["gate"]["checks"]} == {"min_auc", "max_ece", "max_auc_loss"}
    assert "Promotion gate" in (Path(d["eval"]) / "report.html").read_text()


def test_the_cluster_feature_store_sql_registry_on_postgresql_and_redis(tmp_path, postgres_url):
    """The chart's shape (SQL registry, Redis online store) on the real servers: the pipeline applies and loads
    the repository; a serving process with only the config (no definitions) reads online rows by id."""
    require_redis()
    from stillhouse.tasks.tabular.features import feature_store, online_rows

    project = f"stillhouse_test_{uuid.uuid4().hex[:10]}"
    registry = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    frame = credit_frame(rows=10)
    repo = tmp_path / "repo"
    write_feast_repo(repo, frame, project=project, online=REDIS_ONLINE)
    config = (repo / "feature_store.yaml").read_text().replace(
        "registry: data/registry.db", f"registry:\n  registry_type: sql\n  path: {registry}")
    (repo / "feature_store.yaml").write_text(config)
    store = feature_store(repo)
    try:
        store.materialize_incremental(end_date=pd.Timestamp("2025-01-01", tz="UTC").to_pydatetime())
        serving = tmp_path / "serving"  # what the chart mounts: feature_store.yaml alone
        serving.mkdir()
        (serving / "feature_store.yaml").write_text(config)
        rows = online_rows(serving, "credit_model", "borrower_id", [3, 7])
        assert rows["debt"].tolist() == frame.set_index("borrower_id").loc[[3, 7], "debt"].tolist()
    finally:
        store.teardown()


@pytest.mark.timeout(900)
def test_a_table_without_sensitive_features_runs_end_to_end_and_packages(tmp_path):
    """Before: the last step crashed inside BentoML (a None in the model's metadata: the unmeasurable fairness
    checks), nothing was packaged, and the console suggested reweighing with no feature to reweigh by."""
    frame = credit_frame(rows=160, seed=5).drop(columns=["borrower_id", "application_time", "sex", "age"])
    frame.to_csv(tmp_path / "seed.csv", index=False)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "name": "no-sensitive", "task": {"type": "tabular", "label_field": "label", "positive_label": "bad"},
        "data": {"seed": str(tmp_path / "seed.csv"), "sampling": {"eval_size": 50}},
        "teacher": {"kind": "logistic_regression"}, "student": {"kind": "mlp", "hidden": [8]},
        "distillation": {"epochs": 4}, "evaluation": {"latency_samples": 3, "throughput_batch_size": 4},
        "runtime": {"workers": 1, "cpus_per_worker": 1}, "output_dir": str(tmp_path / "runs")}))
    result = stillhouse("run", str(tmp_path / "spec.yaml"), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = next(p for p in (tmp_path / "runs" / "no-sensitive").iterdir() if p.is_dir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    unmeasured = [c for c in metrics["gate"]["checks"] if c["value"] is None]
    assert {c["limit"] for c in unmeasured} == {"min_demographic_parity_ratio", "max_equalized_odds_difference"}
    assert "could not be measured: declare task.sensitive_features" in result.stdout
    assert "task.mitigation: reweighing" not in result.stdout
    import bentoml

    tag = json.loads((run_dir / "run.json").read_text())["model_tag"]
    stored = bentoml.models.get(tag)
    assert stored.info.labels["gate"] == "failed" and stored.info.metadata["gate_checks"]
    assert "fairness was not checked" in (Path(stored.path) / "model_card.md").read_text()
