"""ONNX export equals the torch model within a tolerance; int8 quantization and its accuracy-change figure."""

import numpy as np
import pytest
import torch

from stillhouse.models.onnx_runtime import (
    conversion_figures,
    export_classifier,
    load_onnx_classifier,
    quantize_int8,
)
from stillhouse.models.classifier import (
    ClassifierInfo,
    TextClassifier,
    encode_texts,
    save_classifier,
)

TEXTS = ["my card payment was declined", "transfer money to my savings", "where is my refund", "ok",
         "a much longer text about a card that never arrived in the post after three weeks of waiting"]


def random_texts(tokenizer, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = [t for t in tokenizer.get_vocab() if t.isalpha()]
    return [" ".join(rng.choice(vocab, size=rng.integers(1, 30))) for _ in range(n)]


@pytest.fixture()
def saved(tiny_model_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = TextClassifier(AutoModel.from_pretrained(tiny_model_dir), num_labels=3).eval()
    save_classifier(model, tokenizer, ClassifierInfo(labels=["a", "b", "c"], max_length=48), tmp_path / "student")
    return model, tokenizer, tmp_path / "student"


def test_onnx_export_matches_torch_on_random_inputs_of_any_batch_and_length(saved):
    model, tokenizer, folder = saved
    export_classifier(model, tokenizer, 48, folder / "model.onnx")
    onnx = load_onnx_classifier(folder)
    texts = TEXTS + random_texts(tokenizer, 40, seed=1)
    expected = encode_texts(model, tokenizer, texts, 48)
    got = onnx.logits(texts, batch_size=7)  # batches of other sizes and lengths than the traced one
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert onnx.logits([]).shape == (0, 3)


def test_a_pruned_student_exports_with_its_id_map_and_counts_unknown_tokens(saved):
    from stillhouse.models.prune import prune_classifier

    model, tokenizer, folder = saved
    prune_classifier(model, tokenizer, TEXTS[:3], floor=0)
    save_classifier(model, tokenizer, ClassifierInfo(labels=["a", "b", "c"], max_length=48), folder)
    export_classifier(model, tokenizer, 48, folder / "model.onnx")
    onnx = load_onnx_classifier(folder)
    texts = TEXTS + random_texts(tokenizer, 10, seed=2)  # mostly out of the pruned vocabulary
    np.testing.assert_allclose(onnx.logits(texts), encode_texts(model, tokenizer, texts, 48), atol=1e-4)
    assert onnx.unknown_tokens > 0
    model.unknown_tokens = 0
    encode_texts(model, tokenizer, texts, 48)
    assert onnx.unknown_tokens == model.unknown_tokens  # the same count as the torch model's


def test_int8_quantization_runs_and_its_accuracy_change_is_measured(saved):
    model, tokenizer, folder = saved
    exported = export_classifier(model, tokenizer, 48, folder / "model.onnx")
    quantized = quantize_int8(exported, folder / "model.int8.onnx")
    assert quantized.stat().st_size < exported.stat().st_size
    int8 = load_onnx_classifier(folder, quantized)
    texts = TEXTS + random_texts(tokenizer, 30, seed=3)
    reference = encode_texts(model, tokenizer, texts, 48)
    converted = int8.logits(texts)
    y = reference.argmax(1)  # labels = the torch model's answers: accuracy change = agreement − 1
    figures = conversion_figures(y, reference, converted)
    assert figures["accuracy_change"] == pytest.approx(figures["agreement"] - 1.0)
    assert figures["max_abs_logit_difference"] == pytest.approx(float(np.abs(reference - converted).max()))


def test_conversion_figures_by_hand():
    y = np.array([0, 1, 1, 0])
    reference = np.array([[2.0, 0], [0, 2], [0, 2], [0, 2]])  # 3 of 4 right
    converted = np.array([[2.0, 0], [0, 2], [2, 0], [2, 0.5]])  # right on 0, 1, 3: 3 of 4; disagrees on 2, 3
    out = conversion_figures(y, reference, converted)
    assert out == {"accuracy": 0.75, "accuracy_change": 0.0, "agreement": 0.5, "max_abs_logit_difference": 2.0}


def test_a_conversion_that_loses_more_than_the_tolerance_is_not_packaged(tmp_path):
    import json

    import yaml

    from stillhouse.errors import ModelError
    from stillhouse.registry import save_student
    from stillhouse.spec import parse_spec

    spec = parse_spec(yaml.safe_dump({"name": "r", "data": {"seed": "s.csv", "eval": "e.csv"},
                                      "teacher": {"model": "m"}, "package": {"runtime": "onnx", "quantize": "int8"}}))
    runtime = {"deployed": "onnx-int8", "accuracy": 0.80, "accuracy_change": -0.08, "max_accuracy_loss": 0.01,
               "within_tolerance": False, "conversions": {}}
    (tmp_path / "metrics.json").write_text(json.dumps({"models": {"student": {"runtime": runtime}}}))
    with pytest.raises(ModelError, match=r"loses 8\.00 accuracy points .* package.max_accuracy_loss \(1\.00\)") as err:
        save_student(spec, "", "", str(tmp_path / "student"), str(tmp_path))
    assert "package.quantize none" in err.value.fix
