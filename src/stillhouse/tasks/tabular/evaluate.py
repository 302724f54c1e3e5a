"""Teacher vs distilled student vs hard-label student on the held-out rows of a tabular run, and the gate.

Per model: accuracy, macro-F1, ECE and NLL; for a binary task also AUC, KS, Brier, log loss and the
cost-weighted error at the cost threshold (``task.costs``), and Fairlearn's figures per sensitive feature
(selection rate, TPR and FPR by group; demographic-parity ratio, equalized-odds difference). The student's
figures are those of the probabilities it serves: its fitted calibration temperature applied. The promotion
gate (``evaluation.gate``) checks the student; its verdict and every measured value go into ``metrics.json``,
the report and the model card.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np

from stillhouse import __version__
from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.data.io import atomic_dir, read_json, write_json
from stillhouse.distill.training import HISTORY_FILE
from stillhouse.evaluate.calibration import calibrate
from stillhouse.evaluate.classical import teacher_check
from stillhouse.evaluate.gate import gate_verdict
from stillhouse.evaluate.metrics import calibration_bins, classification_metrics, softmax
from stillhouse.evaluate.risk import (
    cost_threshold,
    cost_weighted_error,
    fairness,
    fairness_intervals,
    risk_metrics,
    roc_auc,
)
from stillhouse.progress import say
from stillhouse.spec import LogisticTeacherSpec, Spec
from stillhouse.tasks.tabular.data import TabularData, label_indices
from stillhouse.tasks.tabular.frontier import (
    FIGURES,
    choose,
    cost_of,
    describe_choice,
)
from stillhouse.tasks.tabular.mitigate import SETTINGS_FOLDER, Setting, settings_of
from stillhouse.tasks.tabular.model import load_tabular
from stillhouse.tasks.tabular.postprocess import load_rule
from stillhouse.tasks.tabular.report import (
    FAIRNESS_FIGURES,
    MODELS,
    TITLES,
    number,
    render_tabular_card,
    render_tabular_report,
)
from stillhouse.tasks.tabular.synthesize import load_profiles
from stillhouse.tasks.tabular.teacher import TabularTeacher, fit_teacher, load_tabular_teacher


def multiclass_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUC (the binary AUC for two labels)."""
    if probs.shape[1] == 2:
        return roc_auc(y == 1, probs[:, 1])
    return float(np.nanmean([roc_auc(y == k, probs[:, k]) for k in range(probs.shape[1])]))


def model_figures(spec: Spec, data: TabularData, logits: np.ndarray, y: np.ndarray,
                  rule: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The quality, risk and fairness block of one model on the evaluation rows. Its decisions are the probability
    above the cost threshold, or, where a post-processing ``rule`` takes them, ``(chance of a flag, flagged)``:
    then the AUC, accuracy and cost are of the rule's decisions (a rule that approves everyone ranks no one),
    the calibration figures still of the probabilities."""
    schema, bins = data.schema, spec.evaluation.calibration_bins
    probs = softmax(logits)
    out = {**classification_metrics(logits, y, bins), "auc": multiclass_auc(y, probs)}
    if not schema.binary:
        return out
    positive = schema.labels.index(schema.positive)
    is_positive, p = (y == positive), probs[:, positive]
    costs = spec.task.costs
    threshold = cost_threshold(costs.false_negative, costs.false_positive)
    out.update(risk_metrics(is_positive, p, threshold, costs.false_negative, costs.false_positive, bins))
    flagged = p > threshold
    if rule is not None:
        chance, flagged = rule
        out.update(auc=roc_auc(is_positive, chance), accuracy=float(np.mean(flagged == is_positive)),
                   cost_weighted_error=cost_weighted_error(is_positive, flagged, costs.false_negative,
                                                           costs.false_positive),
                   decided_by="post-processing rule")
    out["fairness"] = {}
    for column in schema.sensitive:
        groups = schema.groups(data.eval, column)
        favourable = spec.task.favourable
        out["fairness"][column] = {**fairness(is_positive, flagged, groups, favourable=favourable),
                                   **fairness_intervals(is_positive, flagged, groups, favourable=favourable,
                                                        seed=spec.runtime.seed)}
    worst = {}
    for figure, pick in (("demographic_parity_ratio", min), ("equalized_odds_difference", max)):
        values = {column: f[figure] for column, f in out["fairness"].items()}
        measured = values and None not in values.values()
        out[figure] = pick(values.values()) if measured else None
        if measured:  # the sensitive feature the gate's figure comes from
            worst[figure] = pick(values, key=values.get)
    out["fairness_worst"] = worst
    return out


def scoring_latency(scorers: dict, frame, samples: int, batch_size: int) -> dict[str, dict]:
    """Per model: p50/p95 milliseconds to score one raw row as a request brings it (a mapping of column values;
    preprocessing included) and rows per second at ``batch_size``; the models are timed interleaved so that
    machine noise lands on each alike."""
    records = frame.to_dict(orient="records")
    rows = [[records[i % len(records)]] for i in range(samples)]
    batch = records[:batch_size]
    times: dict[str, list[float]] = {name: [] for name in scorers}
    for name, score in scorers.items():
        score(rows[0])  # warm-up
    for row in rows:
        for name, score in scorers.items():
            start = time.perf_counter()
            score(row)
            times[name].append((time.perf_counter() - start) * 1000)
    out = {}
    for name, score in scorers.items():
        start, repeats = time.perf_counter(), 5
        for _ in range(repeats):
            score(batch)
        out[name] = {"latency_ms_p50": float(np.percentile(times[name], 50)),
                     "latency_ms_p95": float(np.percentile(times[name], 95)),
                     "throughput_per_s": repeats * len(batch) / (time.perf_counter() - start)}
    return out


def _size_mb(folder: str) -> float:
    """Megabytes on disk of the model in ``folder`` (the other settings' models below it left out)."""
    files = [p for p in Path(folder).rglob("*") if p.is_file() and SETTINGS_FOLDER not in p.relative_to(folder).parts]
    return sum(p.stat().st_size for p in files) / 1e6


def _parameters(teacher) -> int:
    """Fitted values in the teacher: tree nodes (split feature, threshold, value) or coefficients."""
    total = 0
    for model in teacher.models:
        if hasattr(model, "_predictors"):
            total += sum(len(tree.nodes) * 3 for stage in model._predictors for tree in stage)
        elif hasattr(model, "coef_"):
            total += int(model.coef_.size + model.intercept_.size)
        else:  # a constant (a reductions mixture's member that flags every row, or none)
            total += 1
    return total


def _setting(spec: Spec, data: TabularData, y: np.ndarray, setting: Setting, teacher_dir: str,
             student_dir: str) -> dict:
    """One setting's teacher and (calibrated) student on the held-out rows, and the gate on its student."""
    teacher = load_tabular_teacher(setting.folder(teacher_dir))
    student = load_tabular(setting.folder(student_dir))
    logits = {"teacher": teacher.logits(data.eval), "student": student.logits(data.eval)}
    e = spec.evaluation
    calibration = calibrate(logits["student"], y, e.calibration_bins, e.calibration_folds, spec.runtime.seed,
                            e.calibration)
    decisions = {"teacher": _rule_decisions(setting.folder(teacher_dir), data, logits["teacher"]),
                 "student": _rule_decisions(setting.folder(student_dir), data, logits["student"])}
    logits["student"] = logits["student"] / calibration["temperature"]
    figures = {name: model_figures(spec, data, logits[name], y, decisions[name]) for name in logits}
    figures["student"]["calibration"] = {k: v for k, v in calibration.items() if k != "bins_after"}
    gate = _gate(spec, figures["student"], {"auc_loss": figures["teacher"]["auc"] - figures["student"]["auc"]})
    return {"setting": setting, "teacher": teacher, "student": student, "logits": logits, "figures": figures,
            "calibration": calibration, "gate": gate}


def _rule_decisions(folder: Path, data: TabularData, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A post-processing rule's chance of flagging each evaluation row and its decisions (from the model's
    uncalibrated probabilities, as it was fitted and as serving applies it), or None where the folder holds no
    rule."""
    rule = load_rule(folder)
    if rule is None:
        return None
    positive = softmax(logits)[:, data.labels.index(data.schema.positive)]
    return rule.flag_probability(positive, rule.group_of(data.eval)), rule.decide(positive, data.eval)


def _frontier_figures(figures: dict) -> dict:
    """A model's frontier point: AUC, cost per row and the worst fairness figures with their intervals."""
    out = {f: figures.get(f) for f in FIGURES}
    for figure, column in figures.get("fairness_worst", {}).items():
        out[f"{figure}_ci95"] = figures["fairness"][column].get(f"{figure}_ci95")
    return out


def _frontier(spec: Spec, measured: list[dict]) -> dict:
    rows = [{"setting": m["setting"].name, "describe": m["setting"].describe(),
             "teacher": _frontier_figures(m["figures"]["teacher"]), "student": _frontier_figures(m["figures"]["student"]),
             "gate": m["gate"], "student_temperature": m["calibration"]["temperature"]} for m in measured]
    choice = choose(rows)
    return {"mitigation": spec.task.mitigation, "constraint": (spec.task.fairness_constraint
                                                               if spec.task.mitigation == "reductions" else None),
            "rows": rows, "choice": choice, "cost": cost_of(rows, choice["chosen"])}


def _classical(spec: Spec, data: TabularData, y_seed: np.ndarray, preprocessor) -> TabularTeacher:
    """Logistic regression on the same seed and preprocessing: the scorecard a credit team would otherwise fit."""
    return fit_teacher(LogisticTeacherSpec(kind="logistic_regression"), data.seed, y_seed, preprocessor, data.labels,
                       spec.runtime.seed)


def _teacher_check(spec: Spec, data: TabularData, y: np.ndarray, logits: dict) -> dict:
    """Is the (unmitigated) teacher worth distilling: better than logistic regression and the hard-label student
    beyond noise, in AUC (accuracy for more than two labels)?"""
    remedy = ("Try a stronger teacher (more boosting rounds, or an ensemble of trees and logistic regression) or "
              "label more seed rows; where logistic regression is as good, it may be the model to deploy.")
    names = ("teacher", "classical", "baseline")
    if data.schema.binary:
        positive = data.labels.index(data.schema.positive)
        scores = {n: softmax(logits[n])[:, positive] for n in names}
        return teacher_check(y == positive, scores, spec.runtime.seed, metric=roc_auc, figure="AUC",
                             classical=TITLES["classical"], remedy=remedy)
    return teacher_check(y, {n: logits[n].argmax(1) for n in names}, spec.runtime.seed,
                         classical=TITLES["classical"], remedy=remedy)


def evaluate_tabular(spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                     out_dir: str, synthetic_dir: str | None, soft_labels_dir: str | None) -> dict:
    data = TabularData.load(data_dir)
    y = label_indices(data.eval, data.labels)
    measured = [_setting(spec, data, y, setting, teacher_dir, student_dir) for setting in settings_of(spec.task)]
    frontier = _frontier(spec, measured)
    chosen = next(m for m in measured if m["setting"].name == frontier["choice"]["chosen"])
    baseline = load_tabular(baseline_dir)
    classical = _classical(spec, data, label_indices(data.seed, data.labels), chosen["teacher"].preprocessor)
    logits = {"baseline": baseline.logits(data.eval), "classical": classical.logits(data.eval)}
    models = {**chosen["figures"], **{name: model_figures(spec, data, logits[name], y) for name in logits}}
    models = {name: models[name] for name in MODELS}
    check = _teacher_check(spec, data, y, {**logits, "teacher": measured[0]["logits"]["teacher"]})
    _measure_size_and_speed(spec, data, models, {"teacher": chosen["teacher"], "student": chosen["student"],
                                                 "baseline": baseline, "classical": classical},
                            {"teacher": chosen["setting"].folder(teacher_dir),
                             "student": chosen["setting"].folder(student_dir), "baseline": Path(baseline_dir)})
    headline = "auc" if data.schema.binary else "accuracy"
    comparison = _comparison(models, headline)
    metrics = _metrics_record(spec, data, models, comparison, chosen, frontier, check, teacher_dir, synthetic_dir,
                              soft_labels_dir)
    served = {**chosen["logits"], **logits}
    plots = {"calibration": {n: calibration_bins(softmax(served[n]), y, spec.evaluation.calibration_bins)
                             for n in ("teacher", "student", "baseline")},
             "training_history": {n: read_json(Path(f) / HISTORY_FILE)["epochs"]
                                  for n, f in (("student", chosen["setting"].folder(student_dir)),
                                               ("baseline", baseline_dir))
                                  if (Path(f) / HISTORY_FILE).is_file()}}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "plots.json", plots)
        (tmp / "report.html").write_text(render_tabular_report(metrics, plots), encoding="utf-8")
        (tmp / "model_card.md").write_text(render_tabular_card(spec, metrics), encoding="utf-8")
    _announce(spec, models, headline, chosen["gate"], frontier)
    if check["warning"]:
        say(f"evaluate: WARNING: {check['warning']}")
    return metrics


def _measure_size_and_speed(spec: Spec, data: TabularData, models: dict, scorers: dict, folders: dict) -> None:
    """Parameters, size on disk and CPU latency per model, in place."""
    sizes = {name: _size_mb(str(folder)) for name, folder in folders.items()}
    sizes["classical"] = len(pickle.dumps(scorers["classical"].models)) / 1e6
    parameters = {"teacher": _parameters(scorers["teacher"]), "classical": _parameters(scorers["classical"]),
                  **{n: sum(p.numel() for p in scorers[n].model.parameters()) for n in ("student", "baseline")}}
    e = spec.evaluation
    say(f"evaluate: timing teacher and students per scored row ({e.latency_samples} rows, interleaved, CPU)")
    speeds = scoring_latency({n: (s.probabilities if n in ("teacher", "classical") else s.logits)
                              for n, s in scorers.items()}, data.eval, e.latency_samples, e.throughput_batch_size)
    for name in MODELS:
        models[name].update(parameters=parameters[name], size_mb=sizes[name], **speeds[name])


def _metrics_record(spec: Spec, data: TabularData, models: dict, comparison: dict, chosen: dict, frontier: dict,
                    check: dict, teacher_dir: str, synthetic_dir: str | None, soft_labels_dir: str | None) -> dict:
    e, setting = spec.evaluation, chosen["setting"]
    synthesis = load_profiles(synthetic_dir)[1] if synthetic_dir else {"enabled": False}
    teacher = spec.teacher.describe() + ("" if setting.name == "none" else f", {setting.describe()}")
    return {
        "run": spec.name, "task": spec.task.type, "spec_hash": spec.spec_hash(), "stillhouse_version": __version__,
        "eval_rows": len(data.eval), "labels": data.labels, "positive_label": data.schema.positive,
        "favourable": spec.task.favourable,
        "schema": {"numeric": data.schema.numeric, "categorical": data.schema.categorical,
                   "sensitive": data.schema.sensitive, "sensitive_bins": data.schema.bins},
        "costs": spec.task.costs.model_dump(), "models": models, "comparison": comparison, "gate": chosen["gate"],
        "frontier": frontier, "teacher_check": check,
        # the student folder's model this evaluation judged (the packaged one), relative to the folder
        "student_folder": setting.folder(".").as_posix(), "other_models": [SETTINGS_FOLDER],
        "decides_with_sensitive_features": not setting.retrains,
        "recipe": spec.model_dump(mode="json", include={"teacher", "student", "distillation", "synthesis"}),
        "data": data.report, "teacher_fingerprint": dir_fingerprint(setting.folder(teacher_dir)), "teacher": teacher,
        "synthesis": synthesis,
        "soft_labels": read_json(Path(soft_labels_dir) / "summary.json") if soft_labels_dir else None,
        "calibration": {"method": e.calibration, "fitted_on": "the held-out evaluation rows",
                        "served_temperature": chosen["calibration"]["temperature"]},
    }


def _comparison(models: dict, headline: str) -> dict:
    t, s, b = models["teacher"], models["student"], models["baseline"]
    return {"headline": headline, "student_retention": s[headline] / t[headline] if t[headline] else None,
            "auc_loss": t["auc"] - s["auc"], "student_minus_baseline_auc": s["auc"] - b["auc"],
            "student_minus_classical_auc": s["auc"] - models["classical"]["auc"],
            "parameter_ratio": s["parameters"] / t["parameters"] if t["parameters"] else None,
            "size_ratio": s["size_mb"] / t["size_mb"] if t["size_mb"] else None,
            "speedup_batch1_p50": t["latency_ms_p50"] / s["latency_ms_p50"]}


def _gate(spec: Spec, s: dict, comparison: dict) -> dict:
    """The promotion gate's verdict on the student's figures (fairness with its worst group's interval)."""
    figures = {"auc": s["auc"], "ece": s["ece"], "demographic_parity_ratio": s.get("demographic_parity_ratio"),
               "equalized_odds_difference": s.get("equalized_odds_difference"), "auc_loss": comparison["auc_loss"]}
    worst = s.get("fairness_worst", {})
    intervals = {figure: s["fairness"][column].get(f"{figure}_ci95") for figure, column in worst.items()}
    return gate_verdict(spec.evaluation.gate.model_dump(), figures, intervals)


def _announce(spec: Spec, models: dict, headline: str, gate: dict, frontier: dict) -> None:
    t, s, b = models["teacher"], models["student"], models["baseline"]
    say(f"evaluate: {headline} teacher {t[headline]:.4f} | student {s[headline]:.4f} | hard-label student "
        f"{b[headline]:.4f} | {TITLES['classical']} {models['classical'][headline]:.4f} | gate {gate['verdict']}")
    if len(frontier["rows"]) > 1:
        say(f"evaluate: {describe_choice(frontier)}")
    if gate["verdict"] != "passed":
        failed = ", ".join(f"{c['figure']} {number(c['value'])} vs {c['limit']} {c['threshold']:g}"
                           for c in gate["checks"] if not c["passed"])
        say(f"evaluate: promotion gate FAILED ({failed}): the student is packaged marked `gate: failed`")
        fairness = [c for c in gate["checks"] if not c["passed"] and c["figure"] in FAIRNESS_FIGURES]
        unmeasured = [c["limit"] for c in fairness if c["value"] is None]
        if unmeasured:  # no sensitive feature (or one group only): no mitigation can apply
            say(f"evaluate: the gate's fairness limit(s) {', '.join(unmeasured)} could not be measured: declare "
                "task.sensitive_features (with task.favourable), or set evaluation.gate."
                f"{unmeasured[0]}: null if this table has no protected attribute (the model card then says "
                "fairness was not checked)")
        elif fairness and spec.task.mitigation == "none":
            say("evaluate: to see what passing costs, set task.mitigation: reductions (or reweighing): the run then "
                "trains a teacher and a student per constraint strength and reports the frontier (the sensitive "
                "features stay out of the inputs)")
