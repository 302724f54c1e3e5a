"""Fairness mitigation of the tabular task end to end: reductions on a table with a planted group disparity
(through the steps), and post-processing through `stillhouse run` and a real `stillhouse serve` on /score."""

import json
from pathlib import Path

import pytest
import yaml

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from tests.integration.test_pipeline import stillhouse
from tests.integration.test_tabular import TOKEN, auth

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_reductions_raise_the_students_parity_ratio_on_a_table_with_a_planted_disparity(tmp_path):
    """Group `b` defaults far more often and `region` betrays the group: the unmitigated student approves `b` at a
    fraction of `a`'s rate. The reductions mitigation fits the teacher under demographic parity; the student,
    which never sees the group, distils it — and its measured parity ratio rises."""
    from stillhouse import steps
    from stillhouse.spec import parse_spec
    from tests.tabular_data import disparate_frame

    frame = disparate_frame(rows=600, seed=1)
    frame.to_csv(tmp_path / "seed.csv", index=False)
    spec = parse_spec(yaml.safe_dump({
        "name": "planted", "task": {"type": "tabular", "label_field": "label", "positive_label": "bad",
                                    "sensitive_features": ["group"], "favourable": "not_flagged",
                                    "costs": {"false_negative": 1, "false_positive": 1},
                                    "mitigation": "reductions", "mitigation_grid": [0.9]},
        "data": {"seed": str(tmp_path / "seed.csv"), "sampling": {"eval_size": 200}},
        "teacher": {"kind": "logistic_regression"}, "student": {"kind": "mlp", "hidden": [8]},
        "evaluation": {"latency_samples": 3, "throughput_batch_size": 4},
        "runtime": {"workers": 1, "cpus_per_worker": 1}, "output_dir": str(tmp_path / "runs")}))
    j = spec.model_dump_json()
    d = {name: str(tmp_path / name) for name in ("data", "teacher", "synth", "soft", "student", "baseline", "eval")}
    steps.prepare_step(j, d["data"])
    steps.train_teacher_step(j, d["data"], d["teacher"])
    steps.synthesize_step(j, d["data"], d["teacher"], d["synth"])
    steps.soft_label_step(j, d["data"], d["teacher"], d["synth"], d["soft"])
    steps.distill_student_step(j, d["data"], d["teacher"], d["soft"], d["synth"], d["student"])
    steps.train_baseline_step(j, d["data"], d["teacher"], d["baseline"])
    metrics = steps.evaluate_step(j, d["data"], d["teacher"], d["student"], d["baseline"], d["eval"], d["synth"],
                                  d["soft"])
    rows = {r["setting"]: r for r in metrics["frontier"]["rows"]}
    assert list(rows) == ["none", "reductions-demographic-parity-0.9"]
    plain, constrained = rows["none"], rows["reductions-demographic-parity-0.9"]
    assert plain["student"]["demographic_parity_ratio"] < 0.6  # the planted disparity, inherited
    assert constrained["student"]["demographic_parity_ratio"] > plain["student"]["demographic_parity_ratio"] + 0.2
    assert constrained["teacher"]["demographic_parity_ratio"] > plain["teacher"]["demographic_parity_ratio"] + 0.2
    # what was packaged is what the rule chose, and its folder holds that setting's student
    chosen = metrics["frontier"]["choice"]["chosen"]
    assert metrics["student_folder"] == ("." if chosen == "none" else f"settings/{chosen}")
    assert (Path(d["student"]) / metrics["student_folder"] / "tabular.json").is_file()
    report = (Path(d["eval"]) / "report.html").read_text()
    assert "Mitigation frontier" in report and "Distillation report: planted" in report
    assert "logistic regression" in report and "worth distilling" in report
    assert "## Fairness mitigation" in (Path(d["eval"]) / "model_card.md").read_text()


@pytest.mark.timeout(900)
def test_postprocessing_decides_with_the_sensitive_feature_only_when_the_spec_accepts_it(tmp_path):
    """Post-processing end to end: the spec must accept deciding with the sensitive feature; the run fits a rule per
    tolerance on the unmitigated student, the card says plainly that the model decides with the group, and the
    served student then needs the group in every row and answers with the rule's decision."""
    from tests.tabular_data import disparate_frame

    disparate_frame(rows=500, seed=3).to_csv(tmp_path / "seed.csv", index=False)
    spec = {"name": "post", "task": {"type": "tabular", "label_field": "label", "positive_label": "bad",
                                     "sensitive_features": ["group"], "favourable": "not_flagged",
                                     "costs": {"false_negative": 1, "false_positive": 1},
                                     "mitigation": "postprocessing", "mitigation_grid": [0.0]},
            "data": {"seed": str(tmp_path / "seed.csv"), "sampling": {"eval_size": 200}},
            "teacher": {"kind": "logistic_regression"}, "student": {"kind": "mlp", "hidden": [8]},
            "evaluation": {"latency_samples": 3, "throughput_batch_size": 4,
                           "gate": {"max_ece": None, "max_equalized_odds_difference": None}},
            "runtime": {"workers": 1, "cpus_per_worker": 1}, "output_dir": str(tmp_path / "runs")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    refused = stillhouse("run", str(tmp_path / "spec.yaml"), cwd=tmp_path)
    assert refused.returncode != 0 and "decide_with_sensitive_features: true" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    spec["task"]["decide_with_sensitive_features"] = True
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = stillhouse("run", str(tmp_path / "spec.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = next(p for p in (tmp_path / "runs" / "post").iterdir() if p.is_dir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = {r["setting"]: r for r in metrics["frontier"]["rows"]}
    assert list(rows) == ["none", "postprocessing-demographic-parity-0"]
    exact = rows["postprocessing-demographic-parity-0"]["student"]["demographic_parity_ratio"]
    assert exact > rows["none"]["student"]["demographic_parity_ratio"] + 0.2  # per-group thresholds equalise
    # a rule is judged by what it decides: the AUC of its chance of a flag (one that approves everyone ranks no one)
    assert rows["postprocessing-demographic-parity-0"]["student"]["auc"] < rows["none"]["student"]["auc"]
    # the unmitigated student misses the parity limit by far more than the rule misses anything: the rule is packaged
    assert metrics["frontier"]["choice"]["chosen"] == "postprocessing-demographic-parity-0"
    card = (run_dir / "model_card.md").read_text()
    assert "**This model decides with the sensitive features.**" in card and "disparate treatment" in card
    tag = json.loads((run_dir / "run.json").read_text())["model_tag"]
    (tmp_path / "tokens").write_text(f"ci {hash_token(TOKEN)}\n")
    process, client, _ = start_serve([tag, "--dir", str(tmp_path / "serve"), "--tokens-file",
                                      str(tmp_path / "tokens")], tmp_path)
    try:
        row = {"income": 3000.0, "debt": 900.0, "region": "north"}
        missing = client.post("/score", json={"rows": [row]}, headers=auth())
        assert missing.status_code == 422 and "lacks column(s) ['group']" in missing.json()["error"]
        for value, message in ((None, "`group` is null"), ("zz-unknown", "not one of the values")):
            refused = client.post("/score", json={"rows": [{**row, "group": value}]}, headers=auth())
            assert refused.status_code == 422 and message in refused.json()["error"], refused.text
            assert "zz-unknown" not in refused.text
        scored = client.post("/score", json={"rows": [{**row, "group": "a"}, {**row, "group": "b"}] * 2},
                             headers=auth())
        assert scored.status_code == 200, scored.text
        results = scored.json()["results"]
        assert all(isinstance(r["flagged"], bool) for r in results)
        assert [r["flagged"] for r in results[:2]] == [r["flagged"] for r in results[2:]]  # same row, same answer
        assert results[0]["probability"] == pytest.approx(results[1]["probability"])  # the group is no input
    finally:
        stop_process_group(process)
