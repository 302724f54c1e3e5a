"""The whole distillation pipeline through kfp.local and real Ray, on a tiny model and tiny data, via the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_rows, tiny_spec_yaml, write_csv

pytestmark = [pytest.mark.integration]


def stillhouse(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stillhouse.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def only_run_dir(output: Path) -> Path:
    runs = [p for p in (output / "tiny").iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.timeout(900)
def test_run_distils_evaluates_and_packages(tmp_path, tiny_model_dir, tiny_data):
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs",
                                   synthesis="synthesis: {generator: augment, per_label: 12}"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")

    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "succeeded"
    tag = status["model_tag"]
    assert tag.startswith("stillhouse-tiny:") and f"student tag: {tag}" in result.stdout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["models"]) == {"teacher", "student", "baseline", "classical"}
    for model in metrics["models"].values():
        for key in ("accuracy", "macro_f1", "ece", "nll", "parameters", "size_mb", "latency_ms_p50",
                    "latency_ms_p95", "throughput_per_s"):
            assert model[key] is not None
    assert "agreement_with_teacher" in metrics["models"]["student"]
    # The student is a 1-layer subset of the 2-layer teacher: fewer parameters.
    assert metrics["models"]["student"]["parameters"] < metrics["models"]["teacher"]["parameters"]
    assert metrics["data"]["counts"] == {"seed": 16, "pool": 40, "eval": 20, "labels": 2}

    report = (run_dir / "report.html").read_text()
    # Self-contained: eleven inlined plots (quality/latency, reliability before and after calibration, training loss, a confusion matrix per model,
    # soft-label confidence and labels per set; synthetic label distribution, privacy distances), no external files.
    assert report.count("data:image/png;base64,") == 11 and "distilled student" in report
    assert 'id="calibration"' in report and "out-of-fold" in report
    assert "paired 95 % CI" in report and f"<code>{tag}</code>" in report  # intervals in words; the model tag
    assert "Validation (Great Expectations)" in report and "Kept rows (with the teacher" in report
    assert 'src="http' not in report
    # The classical baseline on the same seed: a bag of words reads these sentiment-word texts perfectly, so the
    # tiny teacher cannot beat it beyond noise and the run warns, naming the remedy.
    check = metrics["teacher_check"]
    assert metrics["models"]["classical"]["accuracy"] == 1.0 and check["worth_distilling"] is False
    assert check["teacher_vs_classical"]["low"] <= 0 and "package:all-mpnet-base-v2" in check["warning"]
    assert "TF-IDF + logistic regression</th>" in report and "Is this teacher worth distilling?" in report
    assert "WARNING: the teacher does not beat TF-IDF + logistic regression" in result.stdout
    card = (run_dir / "model_card.md").read_text()
    assert "| TF-IDF + logistic regression (seed only) | 1.0000 |" in card and "**Warning:** the teacher" in card
    assert metrics["spec_hash"] in card and metrics["data"]["fingerprints"]["seed"] in card
    assert f"Model tag: `{tag}`" in card and "{'" not in card  # the tag, and no Python dict printed
    assert set(metrics["comparison"]["student_vs_teacher"]) == {"difference", "low", "high", "verdict"}
    assert len(metrics["models"]["student"]["accuracy_ci95"]) == 2 and metrics["models"]["teacher"]["per_class"]

    # Soft labels: logits, temperature, teacher and input fingerprints per row.
    import pandas as pd

    soft = pd.read_parquet(Path(status["artifacts"]["soft-label/soft_labels"]) / "soft_labels.parquet")
    synthesis = json.loads((Path(status["artifacts"]["synthesize/synthetic"]) / "synthesis.json").read_text())
    assert synthesis["generated"] == 24 and sum(synthesis["filter"].values()) == 24
    kept = synthesis["filter"]["kept"]
    assert kept > 0, synthesis["filter"]
    assert len(soft) == 16 + 40 + kept and set(soft["split"]) == {"seed", "pool", "synthetic"}
    assert {"row_id", "teacher_logits", "temperature", "teacher", "teacher_fingerprint", "input_fingerprint"} <= set(soft)
    assert soft["teacher"].unique().tolist() == [f"encoder:{tiny_model_dir}"]
    # Every kept synthetic row respects the privacy distance (the synthetic suite checked it, too).
    assert synthesis["nearest_seed_distance"]["count"] == 24
    # Each validating step's GE results and Data Docs are in the run folder.
    for step, suite in (("prepare-data", "seed"), ("soft-label", "soft_labels"), ("synthesize", "synthetic")):
        assert json.loads((run_dir / "validation" / step / f"{suite}.json").read_text())["success"] is True
        assert (run_dir / "validation" / step / "data_docs" / "index.html").is_file()
        page = (run_dir / "validation" / step / f"{suite}.html").read_text()
        assert_offline_page(page)
        assert page.count('<span class="ok">passed</span>') == json.loads(
            (run_dir / "validation" / step / f"{suite}.json").read_text())["statistics"]["evaluated_expectations"]
        assert f'href="validation/{step}/{suite}.html"' in report  # the report links each suite's page
    assert len(soft["teacher_logits"].iloc[0]) == 2 and (soft["temperature"] == 2.0).all()
    assert soft["teacher_fingerprint"].nunique() == 1 and metrics["teacher_fingerprint"] == soft["teacher_fingerprint"][0]
    # The student's training rows (kept for audit) count each synthetic row at distillation.synthetic_weight.
    student_dir = Path(status["artifacts"]["distill-student/student"])
    trained_on = pd.read_parquet(student_dir.parent / "student-work" / "train.parquet")
    assert len(trained_on) == 16 + 40 + kept
    assert sorted(trained_on["weight"].value_counts().items()) == [(0.3, kept), (1.0, 16 + 40)]

    listing = stillhouse("models", "list", cwd=tmp_path)
    assert listing.returncode == 0 and tag in listing.stdout

    import bentoml

    stored = bentoml.models.get(tag)
    assert stored.info.metadata["spec_hash"] == metrics["spec_hash"]
    assert stored.info.metadata["data_fingerprints"]["seed"] == metrics["data"]["fingerprints"]["seed"]
    # Calibration: fitted for every model on the held-out rows, cross-fitted figures, the student's temperature
    # travels with the packaged model (the run's own student folder stays as trained).
    for model in metrics["models"].values():
        c = model["calibration"]
        assert c["folds"] == 5 and len(c["fold_temperatures"]) == 5 and c["nll_after"] > 0
        assert c["applied"] == (c["nll_after"] < c["nll_before"]) and (c["temperature"] != 1.0) == c["applied"]
    served = json.loads((Path(stored.path) / "student" / "classifier.json").read_text())
    assert served["temperature"] == metrics["models"]["student"]["calibration"]["temperature"]
    assert stored.info.metadata["temperature"] == served["temperature"]
    assert json.loads((student_dir / "classifier.json").read_text()).get("temperature", 1.0) == 1.0
    assert "Calibration:" in card
    assert f"Model tag: `{tag}`" in (Path(stored.path) / "model_card.md").read_text()
    # No temporary or half-written folders anywhere in the run.
    assert not [p for p in run_dir.rglob(".*tmp-*")]


@pytest.mark.timeout(900)
def test_ensemble_teacher_with_a_prompted_llm_and_llm_synthesis(tmp_path, tiny_model_dir, tiny_causal_lm_dir,
                                                                tiny_data):
    teacher = (f"teacher: {{kind: ensemble, weights: [3, 1], members: ["
               f"{{model: {tiny_model_dir}, epochs: 0, max_length: 16}}, "
               f"{{kind: llm, model: {tiny_causal_lm_dir}, shots_per_label: 1}}]}}")
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(
        tiny_model_dir, tiny_data, tmp_path / "runs", teacher=teacher,
        synthesis=f"synthesis: {{generator: llm, per_label: 3, max_new_tokens: 12, llm: {{model: {tiny_causal_lm_dir}}}}}",
        # A random 2-layer LLM knows nothing: its quarter of the ensemble flattens the distributions, and the few
        # rows it writes that survive the filters fall on one label (the drift check would rightly stop the run).
        validation="validation: {soft_labels: {max_mean_entropy: 1.0}, synthetic: {max_label_kl: 10}}",
        evaluation="evaluation: {latency_samples: 3, throughput_batch_size: 2}"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")
    status = json.loads((run_dir / "run.json").read_text())
    teacher_dir = Path(status["artifacts"]["train-teacher/teacher"])
    assert json.loads((teacher_dir / "teacher.json").read_text())["members"] == ["member-0", "member-1"]
    assert (teacher_dir / "member-0" / "classifier.json").is_file()
    assert len(json.loads((teacher_dir / "member-1" / "teacher.json").read_text())["demonstrations"]) == 2

    import pandas as pd

    soft = pd.read_parquet(Path(status["artifacts"]["soft-label/soft_labels"]) / "soft_labels.parquet")
    assert soft["teacher"].unique().tolist() == [
        f"ensemble(encoder:{tiny_model_dir}*0.75, llm:{tiny_causal_lm_dir}*0.25)"]
    synthesis = json.loads((Path(status["artifacts"]["synthesize/synthetic"]) / "synthesis.json").read_text())
    assert synthesis["generator"] == "llm" and synthesis["generated"] == 6
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The ensemble's size counts both members; the student is a layer subset of the encoder member.
    assert metrics["models"]["teacher"]["parameters"] > 2 * metrics["models"]["student"]["parameters"]
    assert metrics["teacher"].startswith("ensemble averaging the probabilities of encoder")
    assert "prompted LLM" in (run_dir / "model_card.md").read_text()


@pytest.mark.timeout(300)
def assert_offline_page(page: str) -> bool:
    """A page that renders with no network: no script, and no reference to anything outside it."""
    import re

    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "default-src 'none'" in page  # and the browser is told to load nothing
    return True


def test_bad_seed_label_stops_at_validation_with_one_clear_error(tmp_path, tiny_model_dir, tiny_data):
    tiny_data["seed"] = write_csv(tmp_path / "bad_seed.csv", make_rows(8) + [("lost my card", "complaint")])
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs",
                                   task="task: {text_field: text, label_field: label, labels: [negative, positive]}"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()
    assert last[0].startswith("error: the pipeline failed:")
    assert "prepare-data: seed data" in result.stderr and "unknown label(s) 'complaint'" in result.stderr
    assert (result.stdout + result.stderr).count("unknown label(s) 'complaint'") == 1  # once, not twice
    assert "Traceback" not in result.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    # Nothing after validation ran, and validation left no partial output.
    assert not list(run_dir.glob("artifacts/*/train-teacher"))
    assert not list(run_dir.glob("artifacts/*/prepare-data/data"))


@pytest.mark.timeout(300)
def test_misspelt_seed_label_fails_the_seed_suite_and_no_model_is_trained(tmp_path, tiny_model_dir, tiny_data):
    # No task.labels: the misspelt label becomes a label of its own, with one example: the GE seed suite's
    # "at least N examples per label" expectation is what catches it.
    tiny_data["seed"] = write_csv(tmp_path / "bad_seed.csv", make_rows(8) + [("lovely and great item", "postive")])
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 1
    assert "seed validation failed: 1 of 13 expectations" in result.stderr
    assert "every label has at least 3 seed examples" in result.stderr and "relax validation.seed" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 20
    run_dir = only_run_dir(tmp_path / "runs")
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "failed" and "prepare-data" in status["validation"]
    saved = json.loads((run_dir / "validation" / "prepare-data" / "seed.json").read_text())
    assert saved["success"] is False
    assert (run_dir / "validation" / "prepare-data" / "data_docs" / "index.html").is_file()
    page = (run_dir / "validation" / "prepare-data" / "seed.html").read_text()
    assert_offline_page(page) and 'class="fail">failed</span></td><td>every label has at least 3 seed' in page
    assert str(run_dir / "validation" / "prepare-data" / "seed.html") in result.stderr  # the summary names it
    assert not list(run_dir.glob("artifacts/*/train-teacher"))
    assert not list(run_dir.glob("artifacts/*/prepare-data/data"))


def test_bad_spec_fails_before_anything_runs(tmp_path, tiny_model_dir, tiny_data):
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs",
                                   distillation="distillation: {temperature: -1}"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 1
    assert "distillation.temperature: Input should be greater than 0" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_compile_writes_a_valid_pipeline_with_every_component(tmp_path, tiny_model_dir, tiny_data):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs"))
    result = stillhouse("compile", str(spec), "-o", str(tmp_path / "p.yaml"), "--params", str(tmp_path / "p.json"),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ir, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())  # the pipeline, then its platform spec
    json_format.ParseDict(ir, pipeline_spec_pb2.PipelineSpec())  # strict: unknown fields would raise
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    tasks = set(ir["root"]["dag"]["tasks"])
    assert tasks == {"prepare-data", "train-teacher", "synthesize", "soft-label", "distill-student", "train-baseline",
                     "evaluate", "package"}
    assert len(ir["deploymentSpec"]["executors"]) == 8
    assert "spec_json" in ir["root"]["inputDefinitions"]["parameters"]
    params = json.loads((tmp_path / "p.json").read_text())
    assert json.loads(params["spec_json"])["name"] == "tiny"
