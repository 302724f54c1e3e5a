"""Spec validation: good specs load, bad ones fail before anything runs, naming the field and the reason."""

import json
from pathlib import Path

import pytest

from stillhouse.errors import SpecError
from stillhouse.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """
name: demo
data: {seed: seed.csv, eval: eval.csv}
teacher: {model: some/model}
"""


def test_every_example_spec_validates():
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples, "examples/ has no specs"
    for path in examples:
        spec = load_spec(path)
        assert spec.name and spec.teacher.describe()


def test_minimal_spec_gets_documented_defaults(tmp_path):
    spec = parse_spec(MINIMAL, base_dir=tmp_path)
    assert spec.distillation.temperature == 2.0 and spec.distillation.alpha == 0.5
    assert spec.teacher.pooling == "mean" and spec.teacher.head_init == "logistic_regression"
    assert spec.student.kind == "layer_subset" and spec.student.kept_layers == 2
    # Relative data paths resolve against the spec's folder.
    assert spec.data.seed.path == str(tmp_path / "seed.csv")
    assert spec.model_name == "stillhouse-demo"


def test_spec_hash_is_stable_and_sensitive(tmp_path):
    a, b = parse_spec(MINIMAL, tmp_path), parse_spec(MINIMAL, tmp_path)
    c = parse_spec(MINIMAL + "distillation: {temperature: 3}\n", tmp_path)
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


@pytest.mark.parametrize("extra, field, reason", [
    ("distillation: {temperature: 0}", "distillation.temperature", "greater than 0"),
    ("distillation: {alpha: 1.5}", "distillation.alpha", "less than or equal to 1"),
    ("distillation: {temprature: 2}", "distillation.temprature", "unknown field"),
    ("student: {kind: pretrained}", "student", "needs `model`"),
    ("student: {kind: config}", "student", "needs `config`"),
    ("student: {kind: mlp, vocabulary: {prune: true}}", "student", "vocabulary.prune is for text encoder students"),
    ("student: {vocabulary: {floor: -1}}", "student.vocabulary.floor", "greater than or equal to 0"),
    ("task: {labels: [a, a]}", "task.labels", "unique"),
    ("runtime: {workers: 0}", "runtime.workers", "greater than 0"),
])
def test_bad_field_is_named_with_reason(tmp_path, extra, field, reason):
    with pytest.raises(SpecError) as err:
        parse_spec(MINIMAL + extra + "\n", tmp_path)
    message = str(err.value)
    assert f"  {field}" in message and reason in message


def test_bad_name_and_missing_sections(tmp_path):
    with pytest.raises(SpecError, match=r"name: .*lowercase"):
        parse_spec(MINIMAL.replace("name: demo", "name: Demo Run"), tmp_path)
    with pytest.raises(SpecError, match=r"teacher: Field required"):
        parse_spec("name: x\ndata: {seed: a.csv, eval: b.csv}\n", tmp_path)


def test_evaluation_data_is_required(tmp_path):
    with pytest.raises(SpecError, match="no evaluation data"):
        parse_spec("name: x\ndata: {seed: a.csv}\nteacher: {model: m}\n", tmp_path)


def test_data_source_needs_exactly_one_origin(tmp_path):
    with pytest.raises(SpecError, match="exactly one of `path` or `hf_dataset`"):
        parse_spec("name: x\ndata: {seed: {path: a.csv, hf_dataset: b}, eval: c.csv}\nteacher: {model: m}\n", tmp_path)


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("name: [unclosed", tmp_path)
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        parse_spec("- a\n- b\n", tmp_path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_spec_round_trips_through_json(tmp_path):
    from stillhouse.spec import spec_from_json

    spec = parse_spec(MINIMAL, tmp_path)
    assert spec_from_json(spec.model_dump_json()) == spec


RERANKING = """
name: rank
task: {type: reranking}
data: {corpus: c.jsonl, queries: q.jsonl, qrels: r.tsv, eval_queries: 5}
teacher: {model: some/model}
student: {kind: pretrained, model: small/model}
"""


@pytest.mark.parametrize("extra", [
    "embedding_epochs: 2, teacher_architecture: cross_encoder",
    "embedding_epochs: 2, student_architecture: cross_encoder",
])
def test_embedding_distillation_needs_a_bi_encoder_teacher_and_student(tmp_path, extra):
    spec = parse_spec(RERANKING.replace("{type: reranking}", "{type: reranking, embedding_epochs: 2}"), tmp_path)
    assert spec.task.embedding_epochs == 2 and spec.task.teacher_architecture == "bi_encoder"
    with pytest.raises(SpecError, match="embedding_epochs distils a bi-encoder teacher's embeddings into a "
                                        "bi-encoder student.*set task.embedding_epochs to 0"):
        parse_spec(RERANKING.replace("{type: reranking}", f"{{type: reranking, {extra}}}"), tmp_path)


def test_the_old_top_level_ranking_section_still_reads_with_a_deprecation_warning(tmp_path):
    with pytest.warns(FutureWarning, match="top-level `ranking:` section is deprecated: move its fields into `task:`"):
        old = parse_spec(RERANKING + "ranking: {embedding_epochs: 2, loss: margin_mse}\n", tmp_path)
    new = parse_spec(RERANKING.replace("{type: reranking}", "{type: reranking, embedding_epochs: 2, loss: margin_mse}"),
                     tmp_path)
    assert old == new and old.spec_hash() == new.spec_hash() and old.task.loss == "margin_mse"
    # on another task the section never applied: dropped, with a warning when it held more than the defaults
    with pytest.warns(FutureWarning, match="applies to task.type `reranking` only; it is ignored here"):
        assert parse_spec(MINIMAL + "ranking: {loss: margin_mse}\n", tmp_path) == parse_spec(MINIMAL, tmp_path)


def test_specs_dumped_before_the_task_sections_held_their_settings_still_load(tmp_path):
    """Every run folder's spec.yaml and every submit's parameters were written with a top-level `ranking:` of
    defaults for every task, and a re-ranking `task:` with the text task's fields at their defaults."""
    import warnings

    from stillhouse.spec import RankingSpec, spec_from_json

    legacy_ranking = RankingSpec().model_dump(mode="json")
    for path in sorted((REPO / "examples").glob("*.yaml")):
        spec = load_spec(path)
        dumped = spec.model_dump(mode="json")
        dumped["ranking"] = {**legacy_ranking, **{k: v for k, v in dumped["task"].items() if k in legacy_ranking}}
        if spec.task.type == "reranking":
            dumped["task"] = {"type": "reranking", "text_field": "text", "label_field": "label", "labels": None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            assert spec_from_json(json.dumps(dumped)) == spec, path.name


@pytest.mark.parametrize("task, data", [
    ("{type: reranking}", "{seed: seed.csv, eval: eval.csv}"),
    ("{type: classification}", "{corpus: c.jsonl, queries: q.jsonl, qrels: r.tsv, eval_queries: 5}"),
])
def test_data_is_read_in_the_task_s_layout_and_another_layout_is_named(tmp_path, task, data):
    with pytest.raises(SpecError, match="data: `data` is in the .* layout, and this task.type reads .*: make "
                                        "task.type and data agree"):
        parse_spec(f"name: x\ntask: {task}\ndata: {data}\nteacher: {{model: m}}\n"
                   "student: {kind: pretrained, model: s}\n", tmp_path)


@pytest.mark.parametrize("teacher, field", [
    ("{model: m, epoch: 3}", "teacher.epoch"),
    ("{kind: ensemble, members: [{model: m, epoch: 2}, {model: n}]}", "teacher.members.0.epoch"),
    ("{kind: llm, modle: x}", "teacher.modle"),
])
def test_a_nested_typo_is_named_as_written_not_with_the_union_tag(tmp_path, teacher, field):
    with pytest.raises(SpecError) as err:
        parse_spec(f"name: demo\ndata: {{seed: seed.csv, eval: eval.csv}}\nteacher: {teacher}\n", tmp_path)
    assert f"{field}: unknown field" in str(err.value)
    assert ".encoder." not in str(err.value) and ".ensemble." not in str(err.value)


def test_output_dir_is_relative_to_the_spec_folder_like_every_path(tmp_path):
    assert parse_spec(MINIMAL, tmp_path).output_dir == str(tmp_path / "runs")
    assert parse_spec(MINIMAL + "output_dir: out/here\n", tmp_path).output_dir == str(tmp_path / "out" / "here")
    assert parse_spec(MINIMAL + "output_dir: /abs/runs\n", tmp_path).output_dir == "/abs/runs"


def test_calibration_defaults_to_temperature_and_names_the_choices_when_misspelt(tmp_path):
    spec = parse_spec(MINIMAL, tmp_path)
    assert (spec.evaluation.calibration, spec.evaluation.calibration_folds) == ("temperature", 5)
    assert parse_spec(MINIMAL + "evaluation: {calibration: none}\n", tmp_path).evaluation.calibration == "none"
    with pytest.raises(SpecError) as err:
        parse_spec(MINIMAL + "evaluation: {calibration: platt}\n", tmp_path)
    assert "evaluation.calibration" in str(err.value) and "'temperature'" in str(err.value) and "'none'" in str(err.value)
    with pytest.raises(SpecError, match="evaluation.calibration_folds"):
        parse_spec(MINIMAL + "evaluation: {calibration_folds: 1}\n", tmp_path)


def test_a_typo_in_the_task_section_is_the_only_error_not_a_false_data_layout_one(tmp_path):
    with pytest.raises(SpecError) as err:
        parse_spec(RERANKING.replace("{type: reranking}", "{type: reranking, group_sise: 8}"), tmp_path)
    assert "task.group_sise: unknown field" in str(err.value) and "layout" not in str(err.value)
