"""Classifier folders, the logistic-regression head, and student construction on a tiny encoder."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from stillhouse.distill.student import build_student, layer_subset
from stillhouse.errors import ModelError, SpecError
from stillhouse.spec import EncoderTeacherSpec, StudentSpec
from stillhouse.models.hf import load_encoder
from stillhouse.models.classifier import ClassifierInfo, TextClassifier, encode_texts, load_classifier, save_classifier
from stillhouse.models.heads import logistic_regression_head
from stillhouse.teachers.encoder import init_teacher
from tests.conftest import make_rows


@pytest.mark.parametrize("num_labels", [2, 4])
def test_lr_head_reproduces_sklearn_decisions_on_raw_embeddings(num_labels):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(80, 6)).astype(np.float32)
    y = np.arange(80) % num_labels
    x[np.arange(80), y] += 4.0
    weight, bias = logistic_regression_head(x, y, num_labels)
    mean, std = x.mean(0), x.std(0) + 1e-6
    reference = LogisticRegression(max_iter=2000, C=1.0, random_state=0).fit((x - mean) / std, y)
    ours = (x @ weight.T + bias).argmax(1)
    assert (ours == reference.predict((x - mean) / std)).all()


def test_lr_head_never_predicts_a_label_missing_from_the_seed():
    x = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    weight, bias = logistic_regression_head(x, np.arange(20) % 2, num_labels=3)
    assert bias[2] < -1000 and not (weight[2] != 0).any()


def test_classifier_folder_round_trip(tmp_path, tiny_model_dir):
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    model = TextClassifier(encoder, 3)
    save_classifier(model, tokenizer, ClassifierInfo(labels=["a", "b", "c"], max_length=16), tmp_path / "clf")
    loaded, _, info = load_classifier(tmp_path / "clf")
    texts = ["hello there", "a much longer sentence with more words", "hi"]
    assert info.labels == ["a", "b", "c"]
    np.testing.assert_allclose(encode_texts(model, tokenizer, texts, 16), encode_texts(loaded, tokenizer, texts, 16),
                               atol=1e-5)


def test_stored_temperature_softens_the_served_probabilities(tmp_path, tiny_model_dir):
    from stillhouse.evaluate.metrics import softmax
    from stillhouse.registry import store_classifier
    from stillhouse.serve.stored import load_student

    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    torch.manual_seed(0)
    model = TextClassifier(encoder, 3)
    with torch.no_grad():
        model.head.weight.mul_(50)  # sharp logits, so T = 4 visibly softens them
    save_classifier(model, tokenizer, ClassifierInfo(labels=["a", "b", "c"], max_length=16), tmp_path / "clf")
    texts = ["hello there", "a longer sentence"]
    logits = encode_texts(model, tokenizer, texts, 16)
    raw = load_student(store_classifier("temperature-raw", tmp_path / "clf"))
    scaled = load_student(store_classifier("temperature-four", tmp_path / "clf", temperature=4.0))
    assert (raw.temperature, scaled.temperature) == (1.0, 4.0)
    for served, temperature in ((raw, 1.0), (scaled, 4.0)):
        answers = served.predict(texts)
        expected = softmax(logits, temperature)
        got = np.array([[a["probabilities"][k] for k in "abc"] for a in answers])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert [a["label"] for a in answers] == ["abc"[i] for i in logits.argmax(1)]
    assert max(a["confidence"] for a in scaled.predict(texts)) < max(a["confidence"] for a in raw.predict(texts))
    assert load_classifier(tmp_path / "clf")[2].temperature == 1.0  # the run's own folder is left as trained


def test_encode_texts_returns_input_order_despite_length_sorting(tiny_model_dir):
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    model = TextClassifier(encoder, 2).eval()
    texts = ["a long long long long sentence", "short", "medium length text"]
    batched = encode_texts(model, tokenizer, texts, 16, batch_size=2)
    one_by_one = np.vstack([encode_texts(model, tokenizer, [t], 16) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load model"):
        load_encoder(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelError, match="not installed"):
        load_encoder("package:no_such_model_package_xyz")
    with pytest.raises(ModelError, match="not a Stillhouse classifier"):
        load_classifier(tmp_path)


def test_teacher_head_from_logistic_regression_fits_the_seed(tiny_model_dir):
    rows = make_rows(8)
    texts, y = [t for t, _ in rows], np.array([int(l == "positive") for _, l in rows])
    model, tokenizer, info = init_teacher(EncoderTeacherSpec(model=str(tiny_model_dir), max_length=16), texts, y,
                                          ["negative", "positive"], seed=0)
    accuracy = (encode_texts(model, tokenizer, texts, 16).argmax(1) == y).mean()
    assert accuracy == 1.0 and info.pooling == "mean"


def test_layer_subset_keeps_the_first_layers_exactly(tiny_model_dir):
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    teacher = TextClassifier(encoder, 2).eval()
    student = layer_subset(teacher, 1).eval()
    assert student.encoder.config.num_hidden_layers == 1
    assert torch.equal(student.encoder.encoder.layer[0].attention.self.query.weight,
                       teacher.encoder.encoder.layer[0].attention.self.query.weight)
    enc = tokenizer(["check the first layer"], return_tensors="pt")
    with torch.no_grad():
        teacher_hidden = teacher.encoder(**enc, output_hidden_states=True).hidden_states[1]
        student_hidden = student.encoder(**enc).last_hidden_state
    torch.testing.assert_close(student_hidden, teacher_hidden)
    with pytest.raises(SpecError, match="only 2 layers"):
        layer_subset(teacher, 3)


@pytest.mark.parametrize("spec", [
    StudentSpec(kind="layer_subset", layers=1),
    StudentSpec(kind="config", config={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}),
])
def test_build_student_kinds_are_smaller_and_fit_the_seed_head(spec, tiny_model_dir):
    rows = make_rows(8)
    texts, y = [t for t, _ in rows], np.array([int(l == "positive") for _, l in rows])
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    teacher = TextClassifier(encoder, 2)
    info = ClassifierInfo(labels=["negative", "positive"], max_length=16)
    student, student_tokenizer, student_info = build_student(spec, teacher, tokenizer, info, texts, y, seed=0)
    assert student_info.labels == info.labels and student_info.max_length == 16
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    assert (encode_texts(student, student_tokenizer, texts, 16).argmax(1) == y).mean() >= 0.9


def test_a_pretrained_student_keeps_the_first_layers_it_is_given(tiny_model_dir):
    rows = make_rows(8)
    texts, y = [t for t, _ in rows], np.array([int(l == "positive") for _, l in rows])
    info = ClassifierInfo(labels=["negative", "positive"], max_length=16)
    full, _ = load_encoder(str(tiny_model_dir))
    student, _, student_info = build_student(StudentSpec(kind="pretrained", model=str(tiny_model_dir), layers=1),
                                             None, None, info, texts, y, seed=0)
    assert student.encoder.config.num_hidden_layers == 1 and full.config.num_hidden_layers == 2
    kept = dict(student.encoder.named_parameters())
    for name, value in full.named_parameters():  # the pretrained weights of layer 0 and the embeddings
        if name.startswith(("embeddings.", "encoder.layer.0.")):
            assert torch.equal(kept[name], value), name
    assert not any(name.startswith("encoder.layer.1.") for name in kept)
    with pytest.raises(ValueError, match="student.layers is for kind"):
        StudentSpec(kind="config", layers=1,
                    config={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32})


def test_speeds_are_measured_for_every_model_on_the_same_texts(tiny_model_dir):
    from stillhouse.distill.student import layer_subset
    from stillhouse.evaluate.speed import Timed, measure_speeds

    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    teacher = TextClassifier(encoder, 2)
    models = {"teacher": Timed(teacher, tokenizer, 16), "student": Timed(layer_subset(teacher, 1), tokenizer, 16)}
    speeds = measure_speeds(models, ["one text", "another text here"], samples=6, batch_size=4)
    assert set(speeds) == {"teacher", "student"}
    for s in speeds.values():
        assert 0 < s["latency_ms_p50"] <= s["latency_ms_p95"] and s["throughput_per_s"] > 0
