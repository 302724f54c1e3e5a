"""Task `tabular` in pieces: its spec, typed reading, fairness groups, the student (save/load, contributions),
the KD loss path of its training items, the teacher, the synthetic-profile suite and the privacy distance,
and /score's request checks."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from stillhouse.errors import RequestError, SpecError
from stillhouse.serve.config import LimitsConfig
from stillhouse.spec import parse_spec
from tests.tabular_data import credit_frame

BASE = """
name: tab
task: {type: tabular, label_field: label, positive_label: bad, sensitive_features: [sex, age],
       favourable: not_flagged, sensitive_bins: {age: [25]}}
data: {seed: /tmp/seed.csv, sampling: {eval_size: 40}}
teacher: {kind: gradient_boosting, max_iter: 20}
student: {kind: mlp, hidden: [8]}
"""


def spec_with(extra: str = "", base: str = BASE):
    return parse_spec(base + extra)


def test_tabular_spec_fills_its_training_defaults_and_keeps_the_users():
    spec = spec_with()
    assert spec.task.type == "tabular" and spec.distillation.epochs == 60 and spec.distillation.learning_rate == 3e-3
    assert spec_with("distillation: {epochs: 7}").distillation.epochs == 7
    # the defaults are written into the spec itself, so a step rebuilding it from JSON sees the same values
    from stillhouse.spec import spec_from_json

    assert spec_from_json(spec.model_dump_json()).distillation.epochs == 60
    assert spec.evaluation.gate.min_demographic_parity_ratio == 0.8


@pytest.mark.parametrize("text, message", [
    (BASE.replace("student: {kind: mlp, hidden: [8]}", "student: {kind: layer_subset}"), "needs student.kind `mlp`"),
    (BASE.replace("teacher: {kind: gradient_boosting, max_iter: 20}", "teacher: {model: x}"),
     "needs a tabular teacher"),
    (BASE.replace("sensitive_bins: {age: [25]}}", "sensitive_bins: {age: [25]}, numeric: [age]}"),
     "are sensitive features"),
    (BASE.replace("positive_label: bad,", "positive_label: bad, entity: id, numeric: [id],"), "cannot be inputs"),
    (BASE.replace("{age: [25]}", "{age: [40, 25]}"), "ascending order"),
    (BASE.replace("favourable: not_flagged, ", ""), "sensitive_features need `favourable`"),
    (BASE + "data: {seed: /tmp/s.csv, eval: /tmp/e.csv, features: {repo: /r, feature_service: s}}\n",
     "needs task.entity and task.timestamp"),
    (BASE + "synthesis: {generator: augment}\n", "generator `copula`"),
    (BASE + "synthesis: {generator: copula, profiles: {scenarios: [{name: a, fraction: 0.7, changes: {x: {set: 1}}},"
            " {name: b, fraction: 0.6, changes: {x: {set: 1}}}]}}\n", "add up to more than 1"),
    (BASE + "synthesis: {generator: copula, profiles: {scenarios: [{name: a, fraction: 0.1, changes: "
            "{x: {set: 1, scale: 2}}}]}}\n", "exactly one of scale, add, set"),
])
def test_bad_tabular_specs_name_the_problem(text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("`", ".")):
        parse_spec(text)  # a repeated top-level key (data:) replaces the first


def test_text_tasks_refuse_the_tabular_parts():
    with pytest.raises(SpecError, match="are for task.type `tabular`"):
        parse_spec("name: t\ndata: {seed: /tmp/s.csv, eval: /tmp/e.csv}\nteacher: {model: x}\n"
                   "student: {kind: mlp}\n")


def test_csv_text_is_typed_numbers_numeric_blanks_missing():
    from stillhouse.tasks.tabular.data import typed

    frame = typed(pd.DataFrame({"n": ["1", "2.5", ""], "c": ["a", "1", "b"], "z": ["", "", ""]}))
    assert frame["n"].dtype == float and np.isnan(frame["n"].iloc[2])
    assert frame["c"].tolist() == ["a", "1", "b"] and frame["z"].isna().all()


def test_fairness_groups_from_bins_and_value_maps():
    from stillhouse.tasks.tabular.data import TabularSchema

    schema = TabularSchema(labels=["bad", "good"], positive="bad", numeric=[], categorical=[],
                           sensitive=["age", "status"], bins={"age": [25, 60]},
                           groups_of={"status": {"male : single": "male", "female : married": "female"}})
    frame = pd.DataFrame({"age": [19, 25, 61, None], "status": ["male : single", "female : married", "other", None]})
    assert schema.groups(frame, "age").tolist() == ["<25", "25-60", ">=60", "nan"]
    assert schema.groups(frame, "status").tolist() == ["male", "female", "other", "missing"]


def _student(hidden, frame=None):
    from stillhouse.tasks.tabular.model import new_student
    from stillhouse.tasks.tabular.preprocess import Preprocessor

    frame = credit_frame(60) if frame is None else frame
    pre = Preprocessor.fit(frame, ["income", "debt", "months"], ["history"])
    return new_student(pre, frame, ["bad", "good"], "bad", hidden, 0.0, seed=0, contributions=2), frame


def test_student_round_trips_with_its_preprocessing_and_loads_weights_only(tmp_path):
    from stillhouse.tasks.tabular.model import load_tabular, save_tabular, set_tabular_temperature

    student, frame = _student([8])
    save_tabular(student, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"preprocess.json", "tabular.json", "model.safetensors"}
    set_tabular_temperature(tmp_path, 1.7)
    loaded = load_tabular(tmp_path)
    assert loaded.info.temperature == 1.7 and loaded.info.positive == "bad"
    np.testing.assert_allclose(loaded.logits(frame), student.logits(frame), atol=1e-6)


def test_a_linear_students_contributions_add_up_to_its_logit_change():
    student, frame = _student([])
    rows = frame.iloc[:5]
    logits = student.logits(rows)
    chosen = logits.argmax(1)
    baseline = student.model(torch.tensor([student.info.baseline])).detach().numpy()[0]
    student.info = type(student.info)(**{**student.info.__dict__, "contributions": 4})
    for i, why in enumerate(student.contributions(rows, 4)):  # 4 = every raw column: exact for a linear model
        assert {c["feature"] for c in why} == {"income", "debt", "months", "history"}
        assert sum(c["contribution"] for c in why) == pytest.approx(logits[i, chosen[i]] - baseline[chosen[i]],
                                                                    abs=1e-4)
        sizes = [abs(c["contribution"]) for c in why]
        assert sizes == sorted(sizes, reverse=True)


def test_the_tabular_items_use_the_kd_loss_on_teacher_logits_and_labels(tmp_path):
    from stillhouse.distill.losses import distillation_loss
    from stillhouse.distill.training import TrainJob
    from stillhouse.tasks.tabular.model import save_tabular
    from stillhouse.tasks.tabular.train import ITEMS, TabularItems

    student, frame = _student([8])
    save_tabular(student, tmp_path / "init")
    teacher = np.tile([[2.0, -1.0]], (len(frame), 1)).astype(np.float32)
    rows = frame[["income", "debt", "months", "history"]].assign(
        label_idx=[0, -1] * (len(frame) // 2), teacher_logits=list(teacher), weight=1.0)
    rows.to_parquet(tmp_path / "train.parquet")
    job = TrainJob(name="s", init_model_dir=str(tmp_path / "init"), train_file=str(tmp_path / "train.parquet"),
                   storage_dir=str(tmp_path), epochs=1, batch_size=8, learning_rate=1e-2, head_learning_rate=1e-2,
                   max_length=0, alpha=0.5, temperature=2.0, use_teacher_logits=True, items=ITEMS,
                   options={"repeats": 3})
    items = TabularItems(job)
    assert items.count == 3 * len(frame)  # three passes per loop epoch
    batch = np.array([0, 1, len(frame) + 2])  # an index past the rows is the same row on a later pass
    loss = items.loss(items.model, batch, 0, "cpu")
    x = torch.from_numpy(student.preprocessor.transform(frame.iloc[[0, 1, 2]]))
    expected = distillation_loss(items.model(x), torch.tensor([0, -1, 0]), torch.from_numpy(teacher[:3]), 0.5, 2.0,
                                 torch.ones(3))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert items.model.head.weight.grad is not None and items.model.head.weight.grad.abs().sum() > 0


def test_tree_and_linear_teacher_probabilities_average_and_round_trip(tmp_path):
    from stillhouse.spec import EnsembleTeacherSpec
    from stillhouse.tasks.tabular.preprocess import Preprocessor
    from stillhouse.tasks.tabular.teacher import fit_teacher, load_tabular_teacher, save_teacher

    frame = credit_frame(200)
    y = (frame["label"] == "good").to_numpy().astype(int)  # labels ["bad", "good"]: good is index 1
    pre = Preprocessor.fit(frame, ["income", "debt", "months"], ["history"])
    spec = EnsembleTeacherSpec.model_validate({"kind": "ensemble", "members": [
        {"kind": "gradient_boosting", "max_iter": 30}, {"kind": "logistic_regression"}], "weights": [3, 1]})
    teacher = fit_teacher(spec, frame, y, pre, ["bad", "good"], 0)
    x = pre.transform(frame)
    by_hand = 0.75 * teacher.models[0].predict_proba(x) + 0.25 * teacher.models[1].predict_proba(x)
    np.testing.assert_allclose(teacher.probabilities(frame), by_hand)
    save_teacher(teacher, spec.describe(), tmp_path / "teacher")
    np.testing.assert_allclose(load_tabular_teacher(tmp_path / "teacher").logits(frame), teacher.logits(frame))
    assert json.loads((tmp_path / "teacher" / "teacher.json").read_text())["weights"] == [0.75, 0.25]


def test_privacy_distance_is_to_the_nearest_real_record():
    from stillhouse.tasks.tabular.synthesize import nearest_distances

    real = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    assert nearest_distances(np.array([[0.0, 1.0], [3.0, 4.0]]), real).tolist() == [1.0, 0.0]
    assert nearest_distances(real, real, exclude_self=True).tolist() == [5.0, 5.0, pytest.approx(np.hypot(7, 4))]


def test_plausible_ranges_widen_with_the_scenarios_and_stay_non_negative():
    from stillhouse.spec import ScenarioSpec
    from stillhouse.tasks.tabular.synthesize import plausible_ranges

    seed = pd.DataFrame({"debt": [100.0, 1000.0], "months": [6, 48], "delta": [-5.0, 5.0]})
    scenarios = [ScenarioSpec(name="spike", fraction=0.1, changes={"debt": {"scale": 2.0}}),
                 ScenarioSpec(name="cut", fraction=0.1, changes={"months": {"add": -12}, "delta": {"add": -5}})]
    assert plausible_ranges(seed, ["debt", "months", "delta"], scenarios) == {
        "debt": (100.0, 2000.0), "months": (0.0, 48.0), "delta": (-10.0, 5.0)}


def test_the_profile_suite_passes_good_profiles_and_fails_bad_ones():
    from stillhouse.validate.runner import run_suite
    from stillhouse.validate.suites import profile_checks

    good = pd.DataFrame({"row_id": ["s-1", "s-2"], "label": ["bad", "good"], "scenario": ["plain", "debt_spike"],
                         "debt": [120.0, 1800.0], "months": [12.0, 24.0], "history": ["paid", "late"],
                         "privacy_ok": [True, True]})
    args = ({"debt": (100.0, 2000.0), "months": (6.0, 48.0)}, ["months"], {"history": ["late", "none", "paid"]},
            ["bad", "good"])
    assert run_suite("synthetic", *profile_checks(good, *args)).success
    bad = good.assign(debt=[-5.0, 1800.0], months=[12.5, 24.0], history=["paid", "unheard-of"],
                      privacy_ok=[True, False])
    result = run_suite("synthetic", *profile_checks(bad, *args))
    assert not result.success
    failed = " ".join(f["meaning"] for f in result.failures)
    for meaning in ("`debt` is within its plausible range", "`months` is a whole number",
                    "`history` takes one of the seed's categories", "privacy: no profile closer"):
        assert meaning in failed, failed


def test_score_requests_are_checked_before_the_model_sees_them():
    from stillhouse.tasks.tabular.requests import check_rows, check_score

    limits = LimitsConfig(max_texts=2)
    ok = check_score(b'{"rows": [{"income": 1.5, "history": "paid", "note": null}]}', limits)
    assert ok.payload["rows"][0]["income"] == 1.5 and ok.texts == []  # rows never become audit texts
    assert check_score(b'{"entity_ids": [1, "b-2"]}', limits).payload["entity_ids"] == [1, "b-2"]
    for body, message in ((b'{"rows": [{}], "entity_ids": [1]}', "exactly one of"),
                          (b'{"rows": [{}, {}, {}]}', "the limit is 2"),
                          (b'{"entity_ids": [true]}', "not a string"),
                          (b'{"rows": [{"a": [1]}]}', "not a string, number or null"),
                          (b'{"rows": [], "x": 1}', "unknown field")):
        with pytest.raises(RequestError, match=message):
            check_score(body, limits)
    check_rows([{"income": "12", "history": "paid", "debt": None}], ["income", "history", "debt"], ["income", "debt"])
    with pytest.raises(RequestError, match=r"lacks column\(s\) \['debt'\]"):
        check_rows([{"income": 1, "history": "paid"}], ["income", "history", "debt"], ["income"])
    with pytest.raises(RequestError, match="`income` is numeric") as err:
        check_rows([{"income": "4929-1234", "history": "paid"}], ["income", "history"], ["income"])
    assert "4929" not in str(err.value)


def test_reweighing_makes_the_label_independent_of_the_groups():
    from stillhouse.tasks.tabular.data import TabularSchema
    from stillhouse.tasks.tabular.mitigate import reweighing

    schema = TabularSchema(labels=["bad", "good"], positive="bad", numeric=[], categorical=[], sensitive=["age"],
                           bins={"age": [25]})
    # young: 3 bad of 4; old: 2 bad of 8 — the label depends on the group
    frame = pd.DataFrame({"age": [20] * 4 + [40] * 8, "label": ["bad"] * 3 + ["good"] + ["bad"] * 2 + ["good"] * 6})
    weights = reweighing(schema, frame)
    # P(young)=1/3, P(bad)=5/12, P(young, bad)=3/12 → (1/3 · 5/12) / (3/12) = 5/9
    assert weights[0] == pytest.approx(5 / 9) and weights[3] == pytest.approx((1 / 3 * 7 / 12) / (1 / 12))
    weighted = pd.DataFrame({"young": frame["age"] < 25, "bad": frame["label"] == "bad", "w": weights})
    rates = weighted.groupby("young").apply(lambda g: (g["w"] * g["bad"]).sum() / g["w"].sum(), include_groups=False)
    assert rates[True] == pytest.approx(rates[False])  # the weighted bad rate is the same in both groups
    assert (reweighing(schema, frame, strength=0) == 1).all()
    assert reweighing(schema, frame, cap=1.5).max() == 1.5
    half = reweighing(schema, frame, strength=0.5)  # half-way in log-weight
    np.testing.assert_allclose(half, np.sqrt(weights))


def test_hard_label_loss_takes_row_weights():
    from stillhouse.distill.losses import distillation_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, -1])
    ce = torch.nn.functional.cross_entropy(logits[:2], labels[:2], reduction="none")
    weighted = distillation_loss(logits, labels, None, 0.5, 2.0, torch.tensor([2.0, 0.5, 9.0]))
    assert weighted.item() == pytest.approx(((ce * torch.tensor([2.0, 0.5])).mean()).item())
    assert distillation_loss(logits, labels, None, 0.5, 2.0).item() == pytest.approx(ce.mean().item())


def test_a_rule_that_decides_by_a_sensitive_feature_refuses_rows_without_a_known_value():
    from stillhouse.errors import RequestError
    from stillhouse.tasks.tabular.requests import check_sensitive

    allowed = {"sex": ["female", "male"], "age": None}  # age: numeric, binned (any number)
    check_sensitive([{"sex": "male ", "age": 30}], allowed)
    check_sensitive([{"sex": None}], None)  # no rule: nothing to check
    with pytest.raises(RequestError, match=r"rows\[0\]: `age` is null"):
        check_sensitive([{"sex": "female", "age": None}], allowed)
    with pytest.raises(RequestError, match="not one of the values") as err:
        check_sensitive([{"sex": "4929-1234", "age": 30}], allowed)
    assert "4929" not in str(err.value)
