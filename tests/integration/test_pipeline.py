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
    spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")

    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "succeeded"
    tag = status["model_tag"]
    assert tag.startswith("stillhouse-tiny:") and f"student tag: {tag}" in result.stdout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["models"]) == {"teacher", "student", "baseline"}
    for model in metrics["models"].values():
        for key in ("accuracy", "macro_f1", "ece", "nll", "parameters", "size_mb", "latency_ms_p50",
                    "latency_ms_p95", "throughput_per_s"):
            assert model[key] is not None
    assert "agreement_with_teacher" in metrics["models"]["student"]
    # The student is a 1-layer subset of the 2-layer teacher: fewer parameters.
    assert metrics["models"]["student"]["parameters"] < metrics["models"]["teacher"]["parameters"]
    assert metrics["data"]["counts"] == {"seed": 16, "pool": 40, "eval": 20, "labels": 2}

    report = (run_dir / "report.html").read_text()
    # Self-contained: three inlined plots (quality/latency, reliability, confusion), no external files.
    assert report.count('src="data:image/png;base64,') == 3 and "distilled student" in report
    assert 'src="http' not in report
    card = (run_dir / "model_card.md").read_text()
    assert metrics["spec_hash"] in card and metrics["data"]["fingerprints"]["seed"] in card

    # Soft labels: logits, temperature, teacher and input fingerprints per row.
    import pandas as pd

    soft = pd.read_parquet(Path(status["artifacts"]["soft-label/soft_labels"]) / "soft_labels.parquet")
    assert len(soft) == 16 + 40 and set(soft["split"]) == {"seed", "pool"}
    assert {"row_id", "teacher_logits", "temperature", "teacher_fingerprint", "input_fingerprint"} <= set(soft)
    assert len(soft["teacher_logits"].iloc[0]) == 2 and (soft["temperature"] == 2.0).all()
    assert soft["teacher_fingerprint"].nunique() == 1 and metrics["teacher_fingerprint"] == soft["teacher_fingerprint"][0]

    listing = stillhouse("models", "list", cwd=tmp_path)
    assert listing.returncode == 0 and tag in listing.stdout

    import bentoml

    stored = bentoml.models.get(tag)
    assert stored.info.metadata["spec_hash"] == metrics["spec_hash"]
    assert stored.info.metadata["data_fingerprints"]["seed"] == metrics["data"]["fingerprints"]["seed"]
    assert (Path(stored.path) / "student" / "classifier.json").is_file()
    assert (Path(stored.path) / "model_card.md").is_file()
    # No temporary or half-written folders anywhere in the run.
    assert not [p for p in run_dir.rglob(".*tmp-*")]


@pytest.mark.timeout(300)
def test_bad_seed_label_stops_at_validation_with_one_clear_error(tmp_path, tiny_model_dir, tiny_data):
    tiny_data["seed"] = write_csv(tmp_path / "bad_seed.csv", make_rows(8) + [("lost my card", "complaint")])
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(tiny_model_dir, tiny_data, tmp_path / "runs",
                                   task="task: {text_field: text, label_field: label, labels: [negative, positive]}"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()
    assert last[0].startswith("error: the pipeline failed:")
    assert "validate-data: seed data" in result.stderr and "unknown label(s) 'complaint'" in result.stderr
    assert "Traceback" not in result.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    # Nothing after validation ran, and validation left no partial output.
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
    ir = yaml.safe_load((tmp_path / "p.yaml").read_text())
    json_format.ParseDict(ir, pipeline_spec_pb2.PipelineSpec())  # strict: unknown fields would raise
    tasks = set(ir["root"]["dag"]["tasks"])
    assert tasks == {"prepare-data", "train-teacher", "soft-label", "distill-student", "train-baseline", "evaluate",
                     "package"}
    assert len(ir["deploymentSpec"]["executors"]) == 7
    assert "spec_json" in ir["root"]["inputDefinitions"]["parameters"]
    params = json.loads((tmp_path / "p.json").read_text())
    assert json.loads(params["spec_json"])["name"] == "tiny"
