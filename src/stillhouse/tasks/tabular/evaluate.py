"""Teacher vs distilled student vs hard-label student on the held-out rows of a tabular run, and the gate.

Per model: accuracy, macro-F1, ECE and NLL; for a binary task also AUC, KS, Brier, log loss and the
cost-weighted error at the cost threshold (``task.costs``), and Fairlearn's figures per sensitive feature
(selection rate, TPR and FPR by group; demographic-parity ratio, equalized-odds difference). The student's
figures are those of the probabilities it serves: its fitted calibration temperature applied. The promotion
gate (``evaluation.gate``) checks the student; its verdict and every measured value go into ``metrics.json``,
the report and the model card.
"""

from __future__ import annotations

import html
import json
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
from stillhouse.evaluate.model_card import TAG_LINE, teacher_note
from stillhouse.evaluate.report import reliability_plot, teacher_warning, training_loss_plot
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
    FRONTIER_HEADER,
    choose,
    cost_of,
    describe_choice,
    frontier_html,
    frontier_rows,
)
from stillhouse.tasks.tabular.mitigate import SETTINGS_FOLDER, Setting, settings_of
from stillhouse.tasks.tabular.model import load_tabular
from stillhouse.tasks.tabular.postprocess import load_rule
from stillhouse.tasks.tabular.synthesize import load_profiles
from stillhouse.tasks.tabular.teacher import TabularTeacher, fit_teacher, load_tabular_teacher

MODELS = ("teacher", "student", "baseline", "classical")
TITLES = {"teacher": "teacher", "student": "distilled student", "baseline": "hard-label student",
          "classical": "logistic regression"}


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
        failed = ", ".join(f"{c['figure']} {_number(c['value'])} vs {c['limit']} {c['threshold']:g}"
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


_NAMES = {"auc": "AUC", "accuracy": "accuracy"}
FAIRNESS_FIGURES = ("demographic_parity_ratio", "equalized_odds_difference")


def _number(value) -> str:
    return "not measured" if value is None else f"{value:.4f}"


_COLUMNS = (("auc", "AUC"), ("ks", "KS"), ("brier", "Brier"), ("log_loss", "log loss"), ("ece", "ECE"),
            ("accuracy", "accuracy"), ("cost_weighted_error", "cost / row"),
            ("demographic_parity_ratio", "DP ratio (worst)"), ("equalized_odds_difference", "EO diff (worst)"),
            ("parameters", "parameters"), ("latency_ms_p50", "ms / row (p50)"))


def _table(models: dict, markdown: bool) -> str:
    columns = [(k, t) for k, t in _COLUMNS if any(models[n].get(k) is not None for n in MODELS)]

    def cell(value) -> str:
        return "—" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4f}"

    rows = [[TITLES[n], *(cell(models[n].get(k)) for k, _ in columns)] for n in MODELS]
    if markdown:
        return "\n".join(["| model | " + " | ".join(t for _, t in columns) + " |",
                          "|---" * (len(columns) + 1) + "|", *("| " + " | ".join(r) + " |" for r in rows)])
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["model", *(t for _, t in columns)])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fairness_rows(models: dict) -> list[list[str]]:
    rows = []
    for feature in models["student"].get("fairness", {}):
        for name in MODELS:
            f = models[name]["fairness"][feature]
            groups = "; ".join(f"{g}: n={v['rows']}, favourable {_number(v['favourable_rate'])}, TPR "
                               f"{_number(v['tpr'])}, FPR {_number(v['fpr'])}" for g, v in f["groups"].items())
            rows.append([feature, TITLES[name],
                         _number(f["demographic_parity_ratio"]) + _interval(f.get("demographic_parity_ratio_ci95")),
                         _number(f["equalized_odds_difference"]) + _interval(f.get("equalized_odds_difference_ci95")),
                         groups])
    return rows


def _favourable_note(metrics: dict) -> str:
    decision = {"not_flagged": "not being flagged", "flagged": "being flagged"}.get(metrics.get("favourable"))
    if decision is None:
        return ""
    return (f"The demographic-parity ratio compares the rate of the favourable decision ({decision} as "
            f"`{metrics['positive_label']}`) between the groups: the smallest over the largest; the four-fifths "
            "rule asks at least 0.8. An interval that contains the gate's threshold means too few rows to tell.")


def _interval(bounds: list[float] | None) -> str:
    return f" [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else ""


def _gate_rows(gate: dict, worst: dict) -> list[list[str]]:
    """One row per check; a fairness figure names the sensitive feature it is the worst of and its interval, and
    says when the interval straddles the limit (too few rows to tell)."""
    return [[c["limit"], f"{c['threshold']:g}",
             _number(c["value"]) + (f" ({worst[c['figure']]})" if c["figure"] in worst else "")
             + _interval(c.get("ci95")),
             ("passed" if c["passed"] else "FAILED")
             + ("" if c.get("conclusive", True) else " (inconclusive: the 95 % interval contains the threshold)")]
            for c in gate["checks"]]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
                      *("| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows)])


def _scenario_rows(synthesis: dict) -> list[list[str]]:
    return [[name, str(s["generated"]), str(s["kept"]),
             ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "none",
             _number(s.get("mean_positive_probability"))]
            for name, s in synthesis.get("scenarios", {}).items()]


_SCENARIO_HEADER = ["scenario", "generated", "kept", "dropped", "mean teacher P(positive)"]
_FAIRNESS_HEADER = ["sensitive feature", "model", "DP ratio of the favourable decision [95 % CI]",
                    "EO difference [95 % CI]", "groups (favourable rate, TPR and FPR of the flag)"]
_GATE_HEADER = ["limit", "threshold", "student's value [95 % CI]", "verdict"]


def render_tabular_report(metrics: dict, plots: dict) -> str:
    c, gate, synthesis = metrics["comparison"], metrics["gate"], metrics["synthesis"]
    verdict = gate["verdict"]
    colour = "#1b7a1b" if verdict == "passed" else "#b00020"
    synthesis_html = (f"<p>{synthesis['kept']} of {synthesis['generated']} synthetic profiles kept (privacy "
                      f"threshold {synthesis['privacy_threshold']:.3f}).</p>"
                      + _html_table(_SCENARIO_HEADER, _scenario_rows(synthesis))
                      if synthesis.get("enabled") else "<p>Synthetic profiles: off for this run.</p>")
    history = plots.get("training_history") or {}
    loss_plot = f'<p><img alt="training loss" src="{training_loss_plot(history)}"></p>' if history else ""
    title = html.escape(metrics["run"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Stillhouse run {title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:4px 8px}}
img{{max-width:100%}}code{{background:#f4f4f4;padding:1px 4px}}.note{{color:#555;font-size:13px}}
.warn{{background:#fff4e5;border-left:4px solid #e67e00;padding:8px 12px}}
.verdict{{font-weight:bold;color:{colour}}}</style></head><body>
<h1>Distillation report: {title}</h1>
<p class="note">{TAG_LINE}</p>
<p>The distilled student keeps {c['student_retention']:.1%} of the teacher's {_NAMES[c['headline']]}
({c['auc_loss']:+.4f} AUC lost), is {c['student_minus_baseline_auc'] * 100:+.1f} AUC points from the same student
trained on the labels alone and {c['student_minus_classical_auc'] * 100:+.1f} from logistic regression on the same
seed, and scores a row {c['speedup_batch1_p50']:.1f}× faster than the teacher.</p>
{teacher_warning(metrics)}
{'<p class="warn"><b>This model decides with the sensitive features</b> (a post-processing rule with thresholds per group): every request must carry them, and in many jurisdictions that is disparate treatment.</p>' if metrics.get('decides_with_sensitive_features') else ''}
<p>Teacher: {html.escape(metrics['teacher'])}. Held-out rows: {metrics['eval_rows']} · seed rows:
{metrics['data']['counts']['seed']} · unlabelled pool rows: {metrics['data']['counts']['pool']} · labels:
{html.escape(', '.join(metrics['labels']))}
{f"(positive: <code>{html.escape(str(metrics['positive_label']))}</code>)" if metrics['positive_label'] else ''} ·
spec hash <code>{metrics['spec_hash'][:16]}</code> · Stillhouse {html.escape(metrics['stillhouse_version'])}</p>
<h2>Promotion gate: <span class="verdict">{html.escape(verdict)}</span></h2>
{_html_table(_GATE_HEADER, _gate_rows(gate, metrics['models']['student'].get('fairness_worst', {})))}
<h2 id="models">Models</h2>{_table(metrics['models'], markdown=False)}
<p class="note">The hard-label student and logistic regression learn the seed's labels without mitigation. Latency
was measured once, interleaved, on the machine that ran the evaluation: compare the ratios, not the
milliseconds.</p>
{frontier_html(metrics.get('frontier'), {c['limit']: c['threshold'] for c in gate['checks']})}
<p>Decisions are taken at the cost threshold {metrics['models']['student'].get('threshold', 0.5):.3f}
(false negative costs {metrics['costs']['false_negative']:g}, false positive {metrics['costs']['false_positive']:g}).</p>
<h2>Fairness by group</h2><p>{html.escape(_favourable_note(metrics))}</p>
{_html_table(_FAIRNESS_HEADER, _fairness_rows(metrics['models']))}
<h2>Calibration</h2><p><img alt="reliability" src="{reliability_plot(plots['calibration'])}"></p>
<h2>Synthetic profiles</h2>{synthesis_html}
{loss_plot}
<h2 id="recipe">Recipe</h2><details open><summary>teacher, student, distillation and synthesis settings (from the spec)</summary>
<pre>{html.escape(json.dumps(metrics['recipe'], indent=2, sort_keys=True))}</pre></details>
</body></html>"""


def _disparate_treatment(metrics: dict) -> str:
    if not metrics.get("decides_with_sensitive_features"):
        return ""
    return ("\n- **This model decides with the sensitive features.** Its decisions come from a post-processing rule "
            "with thresholds per group of " + ", ".join(metrics["schema"]["sensitive"]) + ": every request must "
            "carry them, and in many jurisdictions deciding by them is disparate treatment. The spec accepted this "
            "(`task.decide_with_sensitive_features: true`).")


def _mitigation_card(metrics: dict) -> str:
    frontier = metrics.get("frontier")
    if not frontier or len(frontier["rows"]) < 2:
        return ""
    used = ("The packaged rule decides with the sensitive features (see Inputs)."
            if metrics.get("decides_with_sensitive_features") else
            "The packaged model uses the sensitive features at training only, never at decision time.")
    if frontier["choice"]["chosen"].startswith("reductions"):
        used += (" Its probabilities are the constrained teacher's scores for the decision: they move by group to "
                 "reach parity, so they are not calibrated probabilities of the label within each group.")
    return (f"## Fairness mitigation\n{describe_choice(frontier)} {used} Every setting, measured on the held-out "
            "rows (the choice was made on "
            "them too, so the packaged setting's figures are optimistic by that choice):\n\n"
            + _md_table(FRONTIER_HEADER, frontier_rows(frontier)) + "\n\n")


def render_tabular_card(spec: Spec, metrics: dict) -> str:
    gate, c, schema = metrics["gate"], metrics["comparison"], metrics["schema"]
    synthesis = metrics["synthesis"]
    synthetic = (f"Synthetic profiles: {synthesis['kept']} kept of {synthesis['generated']} drawn from a Gaussian "
                 "copula fitted to the seed, by scenario:\n\n" + _md_table(_SCENARIO_HEADER, _scenario_rows(synthesis))
                 if synthesis.get("enabled") else "No synthetic profiles.")
    counts = metrics["data"]["counts"]
    sources = f"{counts['seed']} labelled seed rows" + (f" and {counts['pool']} unlabelled pool rows"
                                                        if counts["pool"] else "")
    return f"""# Model card: {spec.model_name}

**Promotion gate: {gate['verdict']}**{'' if gate['verdict'] == 'passed' else ' — do not use this model for decisions until the failed checks below are resolved.'}

## Intended use
{spec.description or "Scoring rows of the columns below."}
Input: one row of the raw columns below; output: a probability per label, the label, and the columns that
moved the score most. Labels: {', '.join(metrics['labels'])}{f"; positive (flagged) label: `{metrics['positive_label']}`" if metrics['positive_label'] else ''}.

Not for: populations or products unlike the training data; automated decisions without human review where the
law requires it.

## Inputs
- numeric: {', '.join(schema['numeric']) or 'none'}
- categorical: {', '.join(schema['categorical']) or 'none'}
- sensitive features (fairness is measured over them; {'model inputs' if spec.task.sensitive_as_inputs else 'not model inputs'}): {', '.join(schema['sensitive']) or 'none: fairness was not checked'}{_disparate_treatment(metrics)}

## How it was made
Knowledge distillation with Stillhouse {metrics['stillhouse_version']}: a teacher ({metrics['teacher']}) gave
every training row a probability per label; the student (an MLP with hidden layers {spec.student.hidden or 'none'})
learned them (KL at T={spec.distillation.temperature}) plus the seed's labels (α={spec.distillation.alpha}),
from {sources}{' and the synthetic profiles' if synthesis.get('enabled') else ''}.

{synthetic}

- spec hash: `{metrics['spec_hash']}`
- teacher fingerprint: `{metrics['teacher_fingerprint']}`

{_mitigation_card(metrics)}
## Promotion gate
{_md_table(_GATE_HEADER, _gate_rows(gate, metrics['models']['student'].get('fairness_worst', {})))}

## Evaluation ({metrics['eval_rows']} held-out rows)
{_table(metrics['models'], markdown=True)}

Retention of the teacher's {_NAMES[c['headline']]}: {c['student_retention']:.3f}; AUC lost: {c['auc_loss']:+.4f}.
{teacher_note(metrics)}
Decision threshold {metrics['models']['student'].get('threshold', 0.5):.3f} from the cost matrix (false negative
{metrics['costs']['false_negative']:g}, false positive {metrics['costs']['false_positive']:g}).

## Fairness
{_favourable_note(metrics) + chr(10) * 2 + _md_table(_FAIRNESS_HEADER, _fairness_rows(metrics['models'])) if schema['sensitive'] else 'No sensitive features were declared: fairness was not measured.'}

## Limitations
- {metrics['eval_rows']} held-out rows: differences of a few AUC points are within noise.
- Fairness figures are for the groups above at the cost threshold; other thresholds and groups differ.
- The student inherits the teacher's errors and biases; contributions are first-order attributions, not causes.
"""
