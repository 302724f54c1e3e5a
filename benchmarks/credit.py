"""Credit-risk benchmark on German credit (../shared/data/german_credit, 1,000 borrowers, good 700 / bad 300).

Stratified 5-fold: each fold's 800 rows are the seed, its 200 the evaluation set. Per fold the real tabular
steps run (the task's verbs through ``stillhouse.steps``: teacher, copula profiles with the example's four
scenarios, soft labels, Ray Train students, evaluation with the gate), for

- teacher: gradient-boosted trees + logistic regression, probabilities averaged (examples/credit.yaml);
- student: MLP [32] distilled from the teacher on the seed and the synthetic profiles;
- student (no profiles): the same, on the seed alone;
- hard-label student: the same MLP on the seed's labels alone;
- logistic regression: scikit-learn's, on the same preprocessing (C=0.3) — the scorecard a bank would fit.

Figures: AUC, Brier score, cost-weighted error at the 5:1 cost threshold, demographic-parity ratio and
equalized-odds difference by sex and by age group (<25 / >=25); AUC on the rare-scenario slice (evaluation rows
that match a rare scenario: a late-payment history, a thin file, a credit in the top decile); the student's default-gate verdict per fold and on the pooled out-of-fold rows
(1,000 borrowers, each scored by the fold's models that did not see it); CPU milliseconds per scored row and the
student's size against the teacher's. Mean ± sd over folds. The demographic-parity ratio counts the favourable
decision (approval: not flagged), as the four-fifths rule does. Usage::

    python benchmarks/credit.py [--out FILE] [--folds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, print_table, target, write_result  # noqa: E402

SOURCE = SHARED_DATA / "german_credit" / "germancredit.csv"
MODELS = ("teacher", "student", "student_no_profiles", "baseline", "logistic_regression")


def rare_slice(frame: pd.DataFrame, debt_cut: float) -> np.ndarray:
    """Evaluation rows in a rare scenario's region, as real rows show it: a late-payment history (9 % of German
    credit), a thin file (no credits taken, 4 %), a credit in the seed's top decile. The income-shock scenario's
    region (the top installment rate) is left out: half of all borrowers are in it."""
    return ((frame["credit_history"] == "delay in paying off in the past")
            | (frame["credit_history"] == "no credits taken/ all credits paid back duly")
            | (frame["credit_amount"] >= debt_cut)).to_numpy()


def fold_spec(seed_csv: Path, eval_csv: Path, out: Path, sources: list[str], name: str) -> dict:
    spec = yaml.safe_load((REPO / "examples" / "credit.yaml").read_text())
    spec["name"] = name
    spec["data"] = {"seed": str(seed_csv), "eval": str(eval_csv)}
    spec["distillation"]["sources"] = sources
    spec["output_dir"] = str(out)
    return spec


def run_fold(k: int, train: pd.DataFrame, test: pd.DataFrame, work: Path) -> dict:
    from sklearn.linear_model import LogisticRegression

    from stillhouse import steps
    from stillhouse.evaluate.risk import brier_score, cost_threshold, cost_weighted_error, fairness, roc_auc
    from stillhouse.spec import parse_spec
    from stillhouse.tasks.tabular.data import TabularData, label_indices
    from stillhouse.tasks.tabular.model import load_tabular
    from stillhouse.tasks.tabular.teacher import load_tabular_teacher

    folder = work / f"fold{k}"
    folder.mkdir(parents=True)
    train.to_csv(folder / "seed.csv", index=False)
    test.to_csv(folder / "eval.csv", index=False)
    specs = {name: parse_spec(yaml.safe_dump(fold_spec(folder / "seed.csv", folder / "eval.csv", folder / "runs",
                                                       sources, f"credit-fold{k}")))
             for name, sources in (("with", ["seed", "synthetic"]), ("without", ["seed"]))}
    j = specs["with"].model_dump_json()
    f = {x: str(folder / x) for x in ("data", "teacher", "synth", "soft", "student", "student0", "baseline",
                                      "eval", "eval0", "soft0")}
    steps.prepare_step(j, f["data"])
    steps.train_teacher_step(j, f["data"], f["teacher"])
    steps.synthesize_step(j, f["data"], f["teacher"], f["synth"])
    steps.soft_label_step(j, f["data"], f["teacher"], f["synth"], f["soft"])
    steps.distill_student_step(j, f["data"], f["teacher"], f["soft"], f["synth"], f["student"])
    steps.train_baseline_step(j, f["data"], f["teacher"], f["baseline"])
    j0 = specs["without"].model_dump_json()
    steps.soft_label_step(j0, f["data"], f["teacher"], f["synth"], f["soft0"])
    steps.distill_student_step(j0, f["data"], f["teacher"], f["soft0"], f["synth"], f["student0"])
    metrics = steps.evaluate_step(j, f["data"], f["teacher"], f["student"], f["baseline"], f["eval"], f["synth"],
                                  f["soft"])
    data = TabularData.load(f["data"])
    schema = data.schema
    positive = schema.labels.index(schema.positive)
    y = label_indices(data.eval, data.labels) == positive
    teacher = load_tabular_teacher(f["teacher"])
    lr = LogisticRegression(C=0.3, max_iter=5000).fit(teacher.preprocessor.transform(data.seed),
                                                      label_indices(data.seed, data.labels) == positive)
    temperature = metrics["models"]["student"]["calibration"]["temperature"]

    def positive_probability(student_dir: str, t: float = 1.0) -> np.ndarray:
        logits = load_tabular(student_dir).logits(data.eval) / t
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True))[:, positive]

    p = {"teacher": teacher.probabilities(data.eval)[:, positive],
         "student": positive_probability(f["student"], temperature),
         "student_no_profiles": positive_probability(f["student0"]),
         "baseline": positive_probability(f["baseline"]),
         "logistic_regression": lr.predict_proba(teacher.preprocessor.transform(data.eval))[:, 1]}
    costs = specs["with"].task.costs
    threshold = cost_threshold(costs.false_negative, costs.false_positive)
    rare = rare_slice(data.eval, float(np.quantile(data.seed["credit_amount"], 0.9)))
    row = {"fold": k, "rare_rows": int(rare.sum()), "gate": metrics["gate"]["verdict"],
           "gate_checks": metrics["gate"]["checks"], "synthesis_kept": metrics["synthesis"]["kept"],
           "size_ratio": metrics["comparison"]["size_ratio"], "parameter_ratio": metrics["comparison"]["parameter_ratio"],
           "speedup_per_row": metrics["comparison"]["speedup_batch1_p50"],
           "teacher_ms_per_row": metrics["models"]["teacher"]["latency_ms_p50"],
           "student_ms_per_row": metrics["models"]["student"]["latency_ms_p50"]}
    for name, prob in p.items():
        flagged = prob > threshold
        row[f"{name}_auc"] = roc_auc(y, prob)
        row[f"{name}_rare_auc"] = roc_auc(y[rare], prob[rare])
        row[f"{name}_brier"] = brier_score(y, prob)
        row[f"{name}_cost"] = cost_weighted_error(y, flagged, costs.false_negative, costs.false_positive)
        for feature, label in (("personal_status_and_sex", "sex"), ("age_in_years", "age")):
            fair = fairness(y, flagged, schema.groups(data.eval, feature), favourable=specs["with"].task.favourable)
            row[f"{name}_dp_ratio_{label}"] = fair["demographic_parity_ratio"]
            row[f"{name}_eo_diff_{label}"] = fair["equalized_odds_difference"]
    print(json.dumps({k_: (round(v, 4) if isinstance(v, float) else v) for k_, v in row.items()
                      if k_.endswith("auc") or k_ in ("fold", "gate")}), flush=True)
    pooled = {"y": y, "probability": p, "groups": {label: schema.groups(data.eval, feature) for feature, label in
                                                   (("personal_status_and_sex", "sex"), ("age_in_years", "age"))}}
    return row, pooled


def pooled_figures(pooled: list[dict], spec) -> dict:
    """Out-of-fold figures over all folds' evaluation rows together (each borrower scored once, by the models
    that did not see it): five times the rows of one fold, so a small group's fairness figures are measured with
    a narrower interval; the student's default-gate verdict on them."""
    from stillhouse.evaluate.gate import gate_verdict
    from stillhouse.evaluate.metrics import expected_calibration_error
    from stillhouse.evaluate.risk import cost_threshold, fairness, fairness_intervals, roc_auc
    from stillhouse.spec.tabular import GateSpec

    y = np.concatenate([f["y"] for f in pooled])
    threshold = cost_threshold(spec.task.costs.false_negative, spec.task.costs.false_positive)
    out = {"rows": int(len(y))}
    for name in MODELS:
        p = np.concatenate([f["probability"][name] for f in pooled])
        model = {"auc": roc_auc(y, p),
                 "ece": expected_calibration_error(np.stack([1 - p, p], 1), y.astype(int), 15)}
        for label in ("sex", "age"):
            groups = np.concatenate([f["groups"][label] for f in pooled])
            fair = {**fairness(y, p > threshold, groups, favourable=spec.task.favourable),
                    **fairness_intervals(y, p > threshold, groups, favourable=spec.task.favourable)}
            model[f"dp_ratio_{label}"], model[f"eo_diff_{label}"] = (fair["demographic_parity_ratio"],
                                                                     fair["equalized_odds_difference"])
            model[f"dp_ratio_{label}_ci95"] = fair["demographic_parity_ratio_ci95"]
            model[f"eo_diff_{label}_ci95"] = fair["equalized_odds_difference_ci95"]
            model[f"favourable_rate_{label}"] = {g: v["favourable_rate"] for g, v in fair["groups"].items()}
        out[name] = model
    s = out["student"]
    dp, eo = (min(("sex", "age"), key=lambda g: s[f"dp_ratio_{g}"]), max(("sex", "age"), key=lambda g: s[f"eo_diff_{g}"]))
    figures = {"auc": s["auc"], "ece": s["ece"], "demographic_parity_ratio": s[f"dp_ratio_{dp}"],
               "equalized_odds_difference": s[f"eo_diff_{eo}"], "auc_loss": out["teacher"]["auc"] - s["auc"]}
    out["student_gate"] = gate_verdict(GateSpec().model_dump(), figures,
                                       {"demographic_parity_ratio": s[f"dp_ratio_{dp}_ci95"],
                                        "equalized_odds_difference": s[f"eo_diff_{eo}_ci95"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/credit.json)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    if not SOURCE.is_file():
        print(f"benchmark needs {SOURCE} (absent)")
        return 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from sklearn.model_selection import StratifiedKFold

    frame = pd.read_csv(SOURCE)
    rows, pooled = [], []
    with tempfile.TemporaryDirectory(prefix="stillhouse-credit-") as work:
        for k, (train, test) in enumerate(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(
                frame, frame["creditability"])):
            row, scored = run_fold(k, frame.iloc[train], frame.iloc[test], Path(work))
            rows.append(row)
            pooled.append(scored)
    from stillhouse.spec import parse_spec

    spec = parse_spec((REPO / "examples" / "credit.yaml").read_text())
    summary_pooled = pooled_figures(pooled, spec)
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    summary = {k: {"mean": float(np.nanmean([r[k] for r in rows])), "sd": float(np.nanstd([r[k] for r in rows]))}
               for k in keys}
    summary["gate_passed_folds"] = sum(r["gate"] == "passed" for r in rows)
    mean = {k: v["mean"] for k, v in summary.items() if isinstance(v, dict)}
    table = [{"model": m, **{metric: f"{summary[f'{m}_{metric}']['mean']:.4f} ± {summary[f'{m}_{metric}']['sd']:.4f}"
                            for metric in ("auc", "rare_auc", "brier", "cost", "dp_ratio_sex", "dp_ratio_age",
                                           "eo_diff_sex", "eo_diff_age")}} for m in MODELS]
    print_table(table, ["model", "auc", "rare_auc", "brier", "cost", "dp_ratio_sex", "dp_ratio_age", "eo_diff_sex",
                        "eo_diff_age"])
    targets = [
        target("student AUC within 0.01 of the teacher's (teacher − student)", mean["teacher_auc"] - mean["student_auc"],
               0.01, "<="),
        target("student AUC above logistic regression (difference)",
               mean["student_auc"] - mean["logistic_regression_auc"], 0.0, ">"),
        target("profiles do not lower the student's AUC (with − without)",
               mean["student_auc"] - mean["student_no_profiles_auc"], 0.0, ">="),
        target("profiles raise the student's AUC on the rare-scenario slice (with − without)",
               mean["student_rare_auc"] - mean["student_no_profiles_rare_auc"], 0.0, ">"),
        target("student passes the default gate on the pooled out-of-fold rows (checks passed)",
               sum(c["passed"] for c in summary_pooled["student_gate"]["checks"]),
               len(summary_pooled["student_gate"]["checks"]), ">="),
    ]
    for c in summary_pooled["student_gate"]["checks"]:
        print(f"pooled gate: {c['limit']} {c['threshold']:g}: {c['value']:.4f}"
              + (f" [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]" if c.get("ci95") else "")
              + (" passed" if c["passed"] else " FAILED") + ("" if c.get("conclusive", True) else " (inconclusive)"))
    for name in MODELS:
        m = summary_pooled[name]
        print(f"pooled {name}: AUC {m['auc']:.4f}; favourable rate by age {m['favourable_rate_age']}, DP ratio "
              f"age {m['dp_ratio_age']:.3f} {np.round(m['dp_ratio_age_ci95'], 3).tolist()}, sex {m['dp_ratio_sex']:.3f}")
    for t in targets:
        print(("MET  " if t["met"] else "MISS ") + f"{t['name']}: {t['value']:.4f} (target {t['op']} {t['target']})")
    print(f"per scored row (CPU, p50): teacher {mean['teacher_ms_per_row']:.2f} ms, student "
          f"{mean['student_ms_per_row']:.2f} ms (×{mean['speedup_per_row']:.2f}); student size "
          f"{mean['size_ratio']:.3f} of the teacher's on disk")
    path = write_result("credit", {"folds": args.folds, "source": str(SOURCE), "spec": "examples/credit.yaml"},
                        rows + [{"summary": summary}, {"pooled_out_of_fold": summary_pooled}], targets, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
