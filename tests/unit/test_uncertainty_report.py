"""Intervals and paired differences against hand-computed cases; the report parsed as a reader's browser would."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from stillhouse.evaluate.calibration import calibrate
from stillhouse.evaluate.metrics import accuracy, calibration_bins, confusion_matrix, softmax
from stillhouse.evaluate.uncertainty import bootstrap_interval, paired_difference, per_class


def test_per_class_precision_recall_f1_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    rows = per_class(y, pred, ["a", "b", "c"])
    assert rows[0] == {"label": "a", "precision": 1.0, "recall": 2 / 3, "f1": pytest.approx(0.8), "support": 3}
    assert rows[1]["precision"] == 0.5 and rows[1]["recall"] == 0.5 and rows[2]["recall"] == 1.0
    assert per_class(np.array([0]), np.array([0]), ["a", "b"])[1] == {"label": "b", "precision": 0.0, "recall": 0.0,
                                                                       "f1": 0.0, "support": 0}


def test_bootstrap_interval_is_degenerate_when_every_answer_is_right_and_wide_for_few_rows():
    y = np.arange(50) % 3
    assert bootstrap_interval(y, y, accuracy) == (1.0, 1.0)
    rng = np.random.default_rng(1)
    pred = np.where(rng.random(50) < 0.6, y, (y + 1) % 3)
    low, high = bootstrap_interval(y, pred, accuracy)
    assert low < accuracy(y, pred) < high and 0.15 < high - low < 0.4  # ≈ 2·1.96·sqrt(.6·.4/50) = 0.27


def test_paired_difference_reads_within_noise_when_the_interval_spans_zero():
    y = np.zeros(1000, dtype=int)
    a = np.zeros(1000, dtype=int)
    a[:400] = 1  # wrong on 400 rows
    b = a.copy()
    b[400:406] = 1  # b is also wrong on 6 rows a gets right ...
    b[:4] = 0  # ... and right on 4 rows a gets wrong: 0.2 points apart, well within noise
    close = paired_difference(y, a, b, accuracy)
    assert close["verdict"] == "within noise" and close["low"] < 0 < close["high"]
    assert close["difference"] == pytest.approx(accuracy(y, a) - accuracy(y, b))
    far = paired_difference(y, np.zeros(1000, dtype=int), b, accuracy)
    assert far["verdict"] == "better" and far["low"] > 0
    assert paired_difference(y, b, np.zeros(1000, dtype=int), accuracy)["verdict"] == "worse"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.images, self.outside, self.scripts = set(), [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if re.match(r"(https?:)?//", attrs.get(key) or ""):
                self.outside.append(attrs[key])


def _metrics_and_plots():
    from stillhouse.tasks.classification.evaluate import _disagreements, paired_comparisons, quality_intervals

    rng = np.random.default_rng(0)
    labels = ["negative", "neutral", "positive"]
    y = rng.integers(0, 3, 300)
    logits = {name: rng.normal(size=(300, 3)) + 2.5 * np.eye(3)[np.where(rng.random(300) < p, y, (y + 1) % 3)]
              for name, p in (("teacher", 0.62), ("student", 0.64), ("baseline", 0.5))}
    models = {}
    for name in logits:
        pred = logits[name].argmax(1)
        models[name] = {"accuracy": accuracy(y, pred), "macro_f1": 0.5, "ece": 0.1, "nll": 1.0,
                        "parameters": 1_000_000, "size_mb": 4.0, "latency_ms_p50": 5.0 if name != "teacher" else 12,
                        "latency_ms_p95": 9.0, "throughput_per_s": 100.0,
                        **quality_intervals(y, pred, labels, seed=13)}
    calibrated = {n: calibrate(logits[n], y, bins=15) for n in logits}
    for name in logits:
        models[name]["calibration"] = {k: v for k, v in calibrated[name].items() if k != "bins_after"}
    comparison = {"parameter_ratio": 0.7, "speedup_batch1_p50": 2.4, "student_retention": 1.0,
                  "student_minus_baseline_accuracy": 0.1, "throughput_ratio": 2.0,
                  **paired_comparisons(y, {n: logits[n].argmax(1) for n in logits}, seed=13)}
    metrics = {"run": "demo", "spec_hash": "0" * 64, "stillhouse_version": "0.1.0", "eval_rows": 300,
               "labels": labels, "models": models, "comparison": comparison,
               "teacher": "encoder `package:demo<b>`",
               "data": {"counts": {"seed": 30, "pool": 100, "eval": 300}},
               "recipe": {"distillation": {"temperature": 2.0}}}
    plots = {"calibration": {n: calibration_bins(softmax(logits[n]), y) for n in logits},
             "confusion": {n: confusion_matrix(y, logits[n].argmax(1), 3).tolist() for n in logits},
             "disagreements": _disagreements([f"text {i}" for i in range(300)], y, logits, labels),
             "eval_label_counts": {label: int((y == i).sum()) for i, label in enumerate(labels)},
             "calibration_after": {n: calibrated[n]["bins_after"] for n in logits}}
    metrics["calibration"] = {"fitted_on": "the held-out evaluation rows", "figures_after": "out-of-fold (5-fold)"}
    return metrics, plots


def test_the_report_is_one_self_contained_file_with_every_section():
    from stillhouse.evaluate.report import render_report

    metrics, plots = _metrics_and_plots()
    page = render_report(metrics, plots)
    parsed = _Page()
    parsed.feed(page)
    assert {"models", "plots", "calibration", "per-class", "confusion", "disagreements", "recipe"} <= parsed.ids
    assert len(parsed.images) == 6 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert parsed.outside == [] and parsed.scripts == 0
    verdict = metrics["comparison"]["student_vs_teacher"]["verdict"]
    assert {"better": "better than", "worse": "worse than", "within noise": "within noise of"}[verdict] in page
    assert "95 % CI" in page and "compare the ratios" in page and "&quot;temperature&quot;: 2.0" in page
    assert "text " in page  # the disagreement examples are shown
    assert "Teacher: encoder <code>package:demo&lt;b&gt;</code>." in page  # card markdown rendered, still escaped
    student = metrics["models"]["student"]["calibration"]
    assert f"{student['ece_before']:.4f} → {student['ece_after']:.4f}" in page
    served = f"T = {student['temperature']:.3f}</b>" if student["applied"] else "serves its own probabilities"
    assert served in page
