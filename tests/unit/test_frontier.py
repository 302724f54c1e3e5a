"""The mitigation frontier's selection rule on hand-made figures, and a constrained teacher's soft labels."""

import math

import numpy as np
import pandas as pd
import pytest

from stillhouse.tasks.tabular.frontier import choose, cost_of, describe_choice, shortfall


def _row(setting: str, auc: float, *checks: tuple[str, float | None, float, bool]) -> dict:
    return {"setting": setting, "describe": setting, "student": {"auc": auc, "cost_weighted_error": 1 - auc},
            "teacher": {"auc": auc},
            "gate": {"verdict": "passed" if all(c[3] for c in checks) else "failed",
                     "checks": [{"limit": limit, "value": value, "threshold": threshold, "passed": passed}
                                for limit, value, threshold, passed in checks]}}


DP_FAIL = ("min_demographic_parity_ratio", 0.70, 0.8, False)
DP_PASS = ("min_demographic_parity_ratio", 0.85, 0.8, True)
AUC_PASS = ("min_auc", 0.75, 0.7, True)


def test_the_most_accurate_passing_setting_is_chosen_not_the_most_accurate_overall():
    rows = [_row("none", 0.80, AUC_PASS, DP_FAIL), _row("weak", 0.79, AUC_PASS, DP_PASS),
            _row("strong", 0.76, AUC_PASS, DP_PASS)]
    choice = choose(rows)
    assert choice == {"chosen": "weak", "passed": True, "misses": []}
    assert cost_of(rows, "weak")["auc"] == pytest.approx(-0.01)
    assert "costs +0.0100 AUC" in describe_choice({"rows": rows, "choice": choice, "cost": cost_of(rows, "weak")})


def test_an_unmitigated_student_that_passes_is_chosen_on_a_tie():
    rows = [_row("none", 0.8, AUC_PASS), _row("weak", 0.8, AUC_PASS)]
    assert choose(rows)["chosen"] == "none"


def test_none_passing_names_the_nearest_miss_and_by_how_much():
    rows = [_row("none", 0.80, AUC_PASS, DP_FAIL, ("max_ece", 0.2, 0.1, False)),  # two checks fail
            _row("weak", 0.78, AUC_PASS, ("min_demographic_parity_ratio", 0.74, 0.8, False)),  # misses by 0.06
            _row("strong", 0.70, ("min_auc", 0.69, 0.7, False), DP_PASS)]  # misses by 0.01: nearest
    choice = choose(rows)
    assert choice["chosen"] == "strong" and not choice["passed"]
    assert choice["misses"] == [{"limit": "min_auc", "threshold": 0.7, "value": 0.69, "by": pytest.approx(0.01)}]
    text = describe_choice({"rows": rows, "choice": choice, "cost": cost_of(rows, "strong")})
    assert text.startswith("No setting passes the gate. The nearest miss, strong") and "misses by 0.0100" in text


def test_an_unmeasured_figure_is_the_farthest_miss():
    unmeasured = {"checks": [{"limit": "min_demographic_parity_ratio", "value": None, "threshold": 0.8,
                              "passed": False}]}
    assert shortfall(unmeasured) == math.inf
    rows = [_row("none", 0.9, ("min_demographic_parity_ratio", None, 0.8, False)),
            _row("weak", 0.7, ("min_demographic_parity_ratio", 0.5, 0.8, False))]
    assert choose(rows)["chosen"] == "weak"


def test_settings_cover_none_and_the_grid():
    from stillhouse.spec.tabular import TabularTaskSpec
    from stillhouse.tasks.tabular.mitigate import settings_of

    task = TabularTaskSpec.model_validate({"type": "tabular", "sensitive_features": ["sex"],
                                           "favourable": "not_flagged", "mitigation": "reductions",
                                           "fairness_constraint": "equalized_odds"})
    assert [s.name for s in settings_of(task)] == ["none", "reductions-equalized-odds-0.1",
                                                   "reductions-equalized-odds-0.05", "reductions-equalized-odds-0.02"]
    with pytest.raises(ValueError, match="needs sensitive_features"):
        TabularTaskSpec.model_validate({"type": "tabular", "mitigation": "reweighing"})
    with pytest.raises(ValueError, match=r"outside \(0, 1\)"):
        TabularTaskSpec.model_validate({"type": "tabular", "sensitive_features": ["sex"], "favourable": "flagged",
                                        "mitigation": "reductions", "mitigation_grid": [1.0]})


@pytest.mark.parametrize("constraint", ["demographic_parity", "equalized_odds"])
def test_a_constrained_teachers_soft_labels_are_valid_distributions(tmp_path, constraint):
    """The randomized mixture's expected probabilities: finite, in [0, 1], summing to 1 per row, for either label
    order; and they survive the teacher's folder."""
    from stillhouse.spec import EnsembleTeacherSpec
    from stillhouse.spec.tabular import TabularTaskSpec
    from stillhouse.tasks.tabular.data import TabularSchema, label_indices
    from stillhouse.tasks.tabular.mitigate import Setting, fit_setting_teacher
    from stillhouse.tasks.tabular.preprocess import Preprocessor
    from stillhouse.tasks.tabular.teacher import load_tabular_teacher, save_teacher
    from tests.tabular_data import disparate_frame

    frame = disparate_frame(rows=300, seed=2)
    spec = EnsembleTeacherSpec.model_validate({"kind": "ensemble", "members": [
        {"kind": "gradient_boosting", "max_iter": 20}, {"kind": "logistic_regression"}]})
    pre = Preprocessor.fit(frame, ["income", "debt"], ["region"])
    for labels in (["good", "bad"], ["bad", "good"]):  # the positive label first or second
        schema = TabularSchema(labels=labels, positive="bad", numeric=["income", "debt"], categorical=["region"],
                               sensitive=["group"], bins={})
        task = TabularTaskSpec.model_validate({"type": "tabular", "sensitive_features": ["group"],
                                               "favourable": "not_flagged"})
        strength = 0.9 if constraint == "demographic_parity" else 0.05
        teacher = fit_setting_teacher(Setting("reductions", strength, constraint), spec, frame,
                                      label_indices(frame, labels), pre, schema, task, 0)
        probs = teacher.probabilities(frame)
        assert probs.shape == (len(frame), 2) and np.isfinite(probs).all()
        assert ((probs >= 0) & (probs <= 1)).all()
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
        bad = probs[:, labels.index("bad")]
        assert bad[(frame["label"] == "bad").to_numpy()].mean() > bad[(frame["label"] == "good").to_numpy()].mean()
        save_teacher(teacher, "constrained", tmp_path / "-".join(labels))
        np.testing.assert_allclose(load_tabular_teacher(tmp_path / "-".join(labels)).probabilities(frame), probs)
        assert np.allclose(np.exp(teacher.logits(pd.DataFrame(frame))).sum(1), 1.0, atol=1e-5)


def _rule_data(rows: int = 400, seed: int = 0):
    from stillhouse.tasks.tabular.data import TabularSchema

    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], rows)
    bad = rng.random(rows) < np.where(group == "b", 0.6, 0.2)
    positive = np.clip(0.5 * bad + 0.2 * (group == "b") + rng.random(rows) * 0.4, 0, 1)
    frame = pd.DataFrame({"x": rng.normal(size=rows).round(3), "group": group})
    schema = TabularSchema(labels=["good", "bad"], positive="bad", numeric=["x"], categorical=[],
                           sensitive=["group"], bins={})
    return frame, positive, bad, schema


@pytest.mark.parametrize("constraint", ["demographic_parity", "equalized_odds"])
def test_a_post_processing_rule_equalises_its_groups_and_decides_the_same_row_the_same_way(tmp_path, constraint):
    from stillhouse.tasks.tabular.postprocess import fit_rule, load_rule

    frame, positive, bad, schema = _rule_data()
    rule = fit_rule(constraint, None, positive, bad, frame["group"].to_numpy(dtype=object), schema, 0.5)
    chance = rule.flag_probability(positive, rule.group_of(frame))
    assert ((chance >= 0) & (chance <= 1)).all()
    if constraint == "demographic_parity":  # the expected flag rates of the groups meet
        rates = [chance[frame["group"] == g].mean() for g in "ab"]
        assert abs(rates[0] - rates[1]) < 0.03
        plain = [(positive > 0.5)[frame["group"] == g].mean() for g in "ab"]
        assert abs(plain[0] - plain[1]) > 0.2  # they did not before
    decided = rule.decide(positive, frame)
    np.testing.assert_array_equal(decided, rule.decide(positive, frame.to_dict(orient="records")))
    rule.save(tmp_path)
    np.testing.assert_array_equal(load_rule(tmp_path).decide(positive, frame), decided)
    unseen = pd.DataFrame({"x": [0.1, 0.2], "group": ["c", "c"]})  # a group the seed never showed: cost threshold
    assert rule.decide(np.array([0.9, 0.1]), unseen).tolist() == [True, False]


def test_post_processing_needs_the_spec_to_accept_deciding_with_the_sensitive_features():
    from stillhouse.spec.tabular import TabularTaskSpec

    base = {"type": "tabular", "sensitive_features": ["sex"], "favourable": "not_flagged"}
    with pytest.raises(ValueError, match="decide_with_sensitive_features: true"):
        TabularTaskSpec.model_validate({**base, "mitigation": "postprocessing"})
    with pytest.raises(ValueError, match="goes with postprocessing only"):
        TabularTaskSpec.model_validate({**base, "decide_with_sensitive_features": True})
    with pytest.raises(ValueError, match="relaxes demographic parity only"):
        TabularTaskSpec.model_validate({**base, "mitigation": "postprocessing", "decide_with_sensitive_features": True,
                                        "fairness_constraint": "equalized_odds", "mitigation_grid": [0.1]})
    task = TabularTaskSpec.model_validate({**base, "mitigation": "postprocessing",
                                           "decide_with_sensitive_features": True})
    from stillhouse.tasks.tabular.mitigate import settings_of

    assert [s.name for s in settings_of(task)] == ["none", "postprocessing-demographic-parity-0.1",
                                                   "postprocessing-demographic-parity-0.05",
                                                   "postprocessing-demographic-parity-0"]
    assert not settings_of(task)[1].retrains and settings_of(task)[0].retrains
