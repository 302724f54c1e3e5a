"""A self-contained HTML report (plots inlined as PNG) of one run's evaluation."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import json
import re

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stillhouse.evaluate.classical import CLASSICAL_TITLE, worth_distilling_sentence  # noqa: E402
from stillhouse.evaluate.data_section import render_data_section
from stillhouse.evaluate.model_card import TAG_LINE

MODEL_TITLES = {"teacher": "teacher", "student": "distilled student", "baseline": "hard-label student",
                "classical": CLASSICAL_TITLE}  # how the report, the console and the card name each model
_COLOURS = {"teacher": "#1f77b4", "student": "#2ca02c", "baseline": "#d62728", "classical": "#7f7f7f"}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def reliability_plot(calibration: dict, title: str = "Reliability diagram") -> str:
    """Accuracy vs confidence per bin; each point's area and the bars below show how many predictions it holds
    (a top bin with half the predictions weighs more than an empty-looking curve suggests)."""
    fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    width = 1.0 / max(len(next(iter(calibration.values()), [])), 1)
    for offset, (name, bins) in enumerate(calibration.items()):
        pts = [(b["confidence"], b["accuracy"], b["count"]) for b in bins if b["count"]]
        if pts:
            x, y, n = zip(*pts)
            ax.plot(x, y, "-", color=_COLOURS[name], alpha=0.6)
            ax.scatter(x, y, s=[10 + 200 * c / max(n) for c in n], color=_COLOURS[name], label=MODEL_TITLES[name])
        counts_ax.bar([b["lower"] + width * (0.2 + 0.3 * offset) for b in bins], [b["count"] for b in bins],
                      width=width * 0.3, align="edge", color=_COLOURS[name])
    ax.set(ylabel="accuracy", title=f"{title} (point area: predictions in the bin)", ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    counts_ax.set(xlabel="confidence (top label)", ylabel="predictions", xlim=(0, 1))
    return _png(fig)


def confusion_plot(matrix: list[list[int]], labels: list[str], title: str) -> str:
    """Row-normalised confusion (each gold label's row sums to 1): the share shown, the count beneath it."""
    counts = np.array(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = min(12, 3 + 0.12 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 30:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        if len(labels) <= 10:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, f"{rates[i, j]:.2f}\n({int(counts[i, j])})", ha="center", va="center",
                            fontsize=8, color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="gold", title=f"{title}: confusion (row-normalised; counts in brackets)")
    return _png(fig)


def quality_latency_plot(models: dict) -> str:
    """Accuracy (with its 95 % bootstrap interval) vs batch-1 latency, on an accuracy axis from 0 to 1: a gap of
    a few points looks as large as it is."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, m in models.items():
        p = m["parameters"]
        size = "size unknown" if not p else f"{p / 1e6:.1f}M params" if p >= 100_000 else f"{p:,} params"
        low, high = m.get("accuracy_ci95") or (m["accuracy"], m["accuracy"])
        ax.errorbar(m["latency_ms_p50"], m["accuracy"], yerr=[[m["accuracy"] - low], [high - m["accuracy"]]],
                    fmt="o", color=_COLOURS[name], capsize=4, markersize=6 + (m["parameters"] or 0) / 4e6,
                    label=f"{MODEL_TITLES[name]} ({size})", alpha=0.85)
    runtime = models.get("student", {}).get("runtime")
    for name, conversion in (runtime or {}).get("conversions", {}).items():  # the student in its serving runtime
        ax.plot(conversion["latency_ms_p50"], conversion["accuracy"], "D" if name == runtime["deployed"] else "d",
                color=_COLOURS["student"], markerfacecolor="white", markersize=8,
                label=f"{MODEL_TITLES['student']}, {name}" + (" (deployed)" if name == runtime["deployed"] else ""))
    ax.set(xlabel="CPU latency at batch 1, p50 (ms)", ylabel="accuracy (95 % bootstrap interval)",
           title="Quality vs latency", ylim=(0, 1))
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def training_loss_plot(histories: dict) -> str:
    """Mean training loss per epoch of each model trained here (the teacher's on its seed set; the student's
    distillation loss; the hard-label student's cross-entropy): different losses, so compare shapes, not levels."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, epochs in histories.items():
        if epochs:
            ax.plot([e["epoch"] for e in epochs], [e["loss"] for e in epochs], "o-", color=_COLOURS[name],
                    label=MODEL_TITLES[name], markersize=3)
    ax.set(xlabel="epoch", ylabel="mean training loss", title="Training loss per epoch", yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def label_distribution_plot(label_counts: dict) -> str:
    """Share of each label in the seed vs the kept synthetic rows (the drift the synthetic suite bounds)."""
    labels = list(label_counts["seed"])
    shares = {name: np.array([counts.get(label, 0) for label in labels], dtype=float) for name, counts in
              label_counts.items()}
    shares = {name: v / max(v.sum(), 1) for name, v in shares.items()}
    fig, ax = plt.subplots(figsize=(min(12, 3 + 0.15 * len(labels)), 3.5))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, shares["seed"], 0.4, label="seed", color="#1f77b4")
    ax.bar(x + 0.2, shares["synthetic"], 0.4, label="synthetic (kept)", color="#ff7f0e")
    if len(labels) <= 30:
        ax.set_xticks(x, labels, rotation=90, fontsize=7)
    ax.set(ylabel="share of rows", title="Label distribution: seed vs synthetic")
    ax.legend(fontsize=8)
    return _png(fig)


def privacy_plot(distance: dict, threshold: float | None) -> str:
    """Histogram of each generated row's distance to its nearest seed row, with the privacy threshold."""
    edges, counts = np.array(distance["histogram"]["edges"]), distance["histogram"]["counts"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#9467bd", edgecolor="white")
    if threshold is not None:
        ax.axvline(threshold, color="#d62728", linestyle="--", label=f"privacy threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set(xlabel="distance to nearest seed row (1 - cosine)", ylabel="generated rows",
           title="Privacy: nearest-seed distance")
    return _png(fig)


def confidence_histogram_plot(splits: dict) -> str:
    """The teacher's top probability per row, one histogram per split (share of the split's rows): how sure the
    soft labels are where the student learns from them."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, stats in splits.items():
        counts = np.array(stats["confidence_histogram"], dtype=float)
        edges = np.linspace(0.0, 1.0, len(counts) + 1)
        ax.step(edges[:-1], counts / max(counts.sum(), 1), where="post", label=f"{name} ({stats['rows']} rows)")
    ax.set(xlabel="teacher's top probability", ylabel="share of rows", title="Soft-label confidence per split",
           xlim=(0, 1))
    ax.legend(fontsize=8)
    return _png(fig)


def split_labels_plot(soft_labels: dict, labels: list[str]) -> str:
    """Label shares of the seed and held-out sets (gold) and the pool (the teacher's labels)."""
    gold = soft_labels.get("gold_label_counts", {})
    series = {f"{role} (gold)": gold[role] for role in ("seed", "eval") if role in gold}
    if "pool" in soft_labels["splits"]:
        series["pool (teacher's label)"] = soft_labels["splits"]["pool"]["teacher_label_counts"]
    fig, ax = plt.subplots(figsize=(min(12, 3.5 + 0.2 * len(labels)), 3.5))
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, counts) in enumerate(series.items()):
        values = np.array([counts.get(label, 0) for label in labels], dtype=float)
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values / max(values.sum(), 1), width, label=name)
    if len(labels) <= 30:
        ax.set_xticks(x, labels, rotation=90 if len(labels) > 6 else 0, fontsize=7)
    ax.set(ylabel="share of rows", title="Labels per set", ylim=(0, 1))
    ax.legend(fontsize=8)
    return _png(fig)


def _data_plots(metrics: dict) -> dict[str, str]:
    plots = {}
    soft = metrics.get("soft_labels") or {}
    if soft.get("splits") and all("confidence_histogram" in s for s in soft["splits"].values()):
        plots["soft labels: confidence"] = confidence_histogram_plot(soft["splits"])
        plots["soft labels: labels per set"] = split_labels_plot(soft, metrics["labels"])
    synthesis = metrics.get("synthesis") or {}
    if synthesis.get("enabled") and synthesis.get("generated"):
        plots["label distribution"] = label_distribution_plot(synthesis["label_counts"])
        plots["privacy distances"] = privacy_plot(synthesis["nearest_seed_distance"], metrics.get("privacy_threshold"))
    return plots


def _table(models: dict) -> str:
    columns = [("accuracy", "accuracy", "{:.4f}"), ("macro_f1", "macro-F1", "{:.4f}"), ("ece", "ECE (raw)", "{:.4f}"),
               ("nll", "NLL (raw)", "{:.4f}"), ("agreement_with_teacher", "agreement w/ teacher", "{:.4f}"),
               ("parameters", "parameters", "{:,}"), ("size_mb", "size (MB)", "{:.1f}"),
               ("latency_ms_p50", "p50 ms (batch 1)", "{:.2f}"), ("latency_ms_p95", "p95 ms (batch 1)", "{:.2f}"),
               ("throughput_per_s", "texts/s (batch 32)", "{:.1f}")]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    rows = []
    for name, m in models.items():
        cells = "".join(f"<td>{fmt.format(m[key]) if m.get(key) is not None else '—'}</td>" for key, _, fmt in columns)
        rows.append(f"<tr><th>{MODEL_TITLES[name]}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _runtime_section(metrics: dict) -> str:
    """The student in the runtime it is served with: each conversion's accuracy change and speed, and the
    deployed student against the teacher (the fair ratio, both in torch, is the summary's)."""
    runtime = metrics["models"]["student"].get("runtime")
    if not runtime:
        return ""
    c, teacher = metrics["comparison"], metrics["models"]["teacher"]
    rows = []
    for name, m in runtime["conversions"].items():
        rows.append(f"<tr><th>{html.escape(m['from'])} → {html.escape(name)}</th><td>{m['accuracy']:.4f}</td>"
                    f"<td>{m['accuracy_change'] * 100:+.2f}</td><td>{m['agreement']:.4f}</td>"
                    f"<td>{m['max_abs_logit_difference']:.2g}</td><td>{m['size_mb']:.1f}</td>"
                    f"<td>{m['latency_ms_p50']:.2f}</td><td>{m['latency_ms_p95']:.2f}</td>"
                    f"<td>{m['throughput_per_s']:.1f}</td></tr>")
    size = (f", <b>{c['deployed_size_ratio']:.1%}</b> of its size on disk" if c.get("deployed_size_ratio")
            else "")
    refused = ("" if runtime.get("within_tolerance", True) else
               f'<p class="warn"><b>Not packaged:</b> this conversion loses more than package.max_accuracy_loss '
               f'({runtime["max_accuracy_loss"] * 100:.2f} points); serve it with package.quantize none or '
               f'package.runtime torch.</p>')
    return f"""<h2 id="runtime">Serving runtime: {html.escape(runtime['deployed'])}</h2>{refused}
<p>The packaged student runs on ONNX Runtime ({html.escape(runtime['deployed'])}). Against the torch student it
scores <b>{runtime['accuracy']:.4f}</b> ({runtime['accuracy_change'] * 100:+.2f} accuracy points; the same label on
{runtime['agreement_with_torch']:.1%} of the held-out rows). As deployed, it answers
<b>{c['deployed_speedup_batch1_p50']:.2f}×</b> faster than the teacher at batch 1 (p50; p95
{c['deployed_speedup_batch1_p95']:.2f}×) with <b>{c['deployed_throughput_ratio']:.2f}×</b> its throughput at batch
{teacher['throughput_batch_size']}{size}; in the same runtime as the teacher (torch) the ratio is
{c['speedup_batch1_p50']:.2f}×.</p>
<table><tr><th>conversion</th><th>accuracy</th><th>change (points)</th><th>agreement</th><th>max |Δ logit|</th>
<th>size (MB)</th><th>p50 ms (batch 1)</th><th>p95 ms (batch 1)</th><th>texts/s (batch {teacher['throughput_batch_size']})</th></tr>
{''.join(rows)}</table>
<p class="note">Each conversion is measured against the model it was made from, on every held-out row; sizes are
what the runtime reads (the ONNX file and the tokenizer); latency is end to end from text, tokenisation and
padding included, timed interleaved with the models above.</p>"""


def _inline_code(markdown: str) -> str:
    """Escaped text with its `backtick` spans as <code> (the teacher's description is written for the card)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(markdown))


def _calibration_table(models: dict) -> str:
    """Temperature, ECE and NLL before → after per model, and whether serving applies it."""
    rows = []
    for name, m in models.items():
        c = m.get("calibration")
        if not c:
            continue
        served = "yes" if c["applied"] else "no"
        reduction = c.get("ece_reduction")
        interval = (f"{reduction['low']:+.4f} to {reduction['high']:+.4f} ({reduction['verdict']})" if reduction
                    else "—")
        rows.append(f"<tr><th>{MODEL_TITLES[name]}</th><td>{c['temperature']:.3f}</td><td>{c['ece_before']:.4f} → "
                    f"{c['ece_after']:.4f}</td><td>{html.escape(interval)}</td><td>{c['nll_before']:.4f} → "
                    f"{c['nll_after']:.4f}</td><td>{served}</td></tr>")
    return ("<table><tr><th>model</th><th>temperature</th><th>ECE before → after</th><th>ECE reduction, paired 95 % "
            "CI</th><th>NLL before → after</th><th>applied (served)</th></tr>" + "".join(rows) + "</table>")


def _calibration_section(metrics: dict, plots: dict) -> str:
    student = metrics["models"]["student"].get("calibration")
    if not student:
        return ""
    info = metrics.get("calibration", {})
    after = plots.get("calibration_after")
    image = (f'<img alt="reliability diagram after temperature scaling" '
             f'src="{reliability_plot(after, "After temperature scaling, out-of-fold")}">' if after else "")
    served = (f"The packaged student divides its logits by <b>T = {student['temperature']:.3f}</b> before the "
              "softmax, so the served probabilities are the calibrated ones." if student["applied"]
              else f"The packaged student serves its own probabilities: {html.escape(student['reason'])}.")
    return f"""<h2 id="calibration">Calibration</h2>{_calibration_table(metrics['models'])}
<p class="note">Temperature scaling (Guo et al. 2017) fitted on {html.escape(info.get('fitted_on', 'held-out rows'))},
which no model trained on; the "after" figures are {html.escape(info.get('figures_after', 'out-of-fold'))}: each
row's probability uses a temperature fitted on the other folds, so they are not measured on the rows they were
fitted on. Accuracy does not change (the top label stays the same). {served}</p>
<div class="plots">{image}</div>"""


def _summary(metrics: dict) -> str:
    """What a reader takes away, in words, with the intervals that decide whether a difference is real."""
    c, models = metrics["comparison"], metrics["models"]
    student = models["student"]
    share = f" with <b>{c['parameter_ratio']:.1%}</b> of its parameters" if c["parameter_ratio"] else ""
    low, high = student.get("accuracy_ci95") or (float("nan"), float("nan"))
    lines = [f"The distilled student reaches accuracy <b>{student['accuracy']:.3f}</b> (95 % CI {low:.3f}–{high:.3f} "
             f"on {metrics['eval_rows']} held-out rows){share}, and answers <b>{c['speedup_batch1_p50']:.2f}×</b> "
             "faster than the teacher at batch 1 on CPU."]
    calibration = student.get("calibration")
    if calibration and calibration["applied"]:
        lines.append(f"Its served probabilities are temperature-scaled (T = {calibration['temperature']:.2f}): "
                     f"calibration error (ECE) <b>{calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}"
                     "</b> on held-out rows.")
    for key, other in (("student_vs_teacher", "the teacher"), ("student_vs_baseline", "the hard-label student")):
        paired = c.get(key)
        if paired:
            words = {"better": "better than", "worse": "worse than", "within noise": "within noise of"}
            verdict = words.get(paired["verdict"], paired["verdict"])
            lines.append(f"Against {other}: {paired['difference'] * 100:+.1f} accuracy points (paired 95 % CI "
                         f"{paired['low'] * 100:+.1f} to {paired['high'] * 100:+.1f}): <b>{verdict} {other}</b>.")
    return " ".join(lines)


def teacher_warning(metrics: dict) -> str:
    """The box at the top of a report whose teacher is not clearly better than the classical baseline or the
    hard-label student (:func:`stillhouse.evaluate.classical.teacher_check`), or the check's figures in a note."""
    check = metrics.get("teacher_check")
    if not check:
        return ""
    if check["warning"]:
        return f'<p class="warn"><b>Is this teacher worth distilling?</b> {_inline_code(check["warning"])}</p>'
    return f'<p class="note">{html.escape(worth_distilling_sentence(check))}</p>'


def _per_class_table(models: dict) -> str:
    labels = [row["label"] for row in models["student"]["per_class"]]
    head = "".join(f"<th colspan=3>{MODEL_TITLES[name]}</th>" for name in models)
    sub = "".join("<th>precision</th><th>recall</th><th>F1</th>" for _ in models)
    rows = []
    for i, label in enumerate(labels):
        cells = "".join(f"<td>{m['per_class'][i]['precision']:.3f}</td><td>{m['per_class'][i]['recall']:.3f}</td>"
                        f"<td>{m['per_class'][i]['f1']:.3f}</td>" for m in models.values())
        rows.append(f"<tr><th>{html.escape(label)} ({models['student']['per_class'][i]['support']})</th>{cells}</tr>")
    return (f"<table><tr><th>label (held-out rows)</th>{head}</tr><tr><th></th>{sub}</tr>{''.join(rows)}</table>")


def _disagreement_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>The student and the teacher agree on every held-out row.</p>"
    body = "".join(f"<tr><th>{html.escape(r['text'][:200])}</th><td>{html.escape(r['gold'])}</td>"
                   f"<td>{html.escape(r['teacher'])} ({r['teacher_confidence']:.2f})</td>"
                   f"<td>{html.escape(r['student'])} ({r['student_confidence']:.2f})</td></tr>" for r in rows)
    return ("<table><tr><th>held-out text</th><th>gold</th><th>teacher (confidence)</th><th>student (confidence)"
            f"</th></tr>{body}</table>")


def render_report(metrics: dict, plots: dict, section: dict | None = None) -> str:
    """The whole report as one HTML string (no external files or scripts)."""
    data = metrics["data"]["counts"]
    confusion = plots.get("confusion") or {"student": plots.get("confusion_student")}
    confusion_imgs = "".join(f'<img alt="confusion matrix, {MODEL_TITLES[name]}" '
                             f'src="{confusion_plot(matrix, metrics["labels"], MODEL_TITLES[name])}">'
                             for name, matrix in confusion.items() if matrix is not None)
    eval_counts = plots.get("eval_label_counts") or {}
    recipe = metrics.get("recipe")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Stillhouse run {html.escape(metrics['run'])}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th:first-child{{text-align:left}}img{{max-width:100%}}.plots{{display:flex;gap:1em;flex-wrap:wrap}}
code{{background:#f4f4f4;padding:1px 4px}}.note{{color:#555;font-size:13px}}
.warn{{background:#fff4e5;border-left:4px solid #e67e00;padding:8px 12px}}</style></head><body>
<h1>Distillation report: {html.escape(metrics['run'])}</h1>
<p class="note">{TAG_LINE}</p>
<p>{_summary(metrics)}</p>
{teacher_warning(metrics)}
<p>Teacher: {_inline_code(metrics.get('teacher', ''))}.</p>
<p>Held-out rows: {metrics['eval_rows']} · seed rows: {data['seed']} · unlabelled pool rows: {data['pool']} ·
labels: {len(metrics['labels'])} · spec hash <code>{metrics['spec_hash'][:16]}</code> ·
Stillhouse {html.escape(metrics['stillhouse_version'])}</p>
<h2 id="models">Models</h2>{_table(metrics['models'])}
<p class="note">Accuracy 95 % intervals: {" · ".join(f"{MODEL_TITLES[n]} {m['accuracy_ci95'][0]:.3f}–{m['accuracy_ci95'][1]:.3f}"
  for n, m in metrics['models'].items() if m.get('accuracy_ci95'))} (percentile bootstrap, 2,000 resamples of the
held-out rows). Latency and throughput were measured once, interleaved, on the machine that ran the evaluation while
it did nothing else of this run; another load on that machine inflates them: compare the ratios, not the
milliseconds.</p>
<h2 id="plots">Plots</h2><div class="plots">
<img alt="quality vs latency" src="{quality_latency_plot(metrics['models'])}">
<img alt="reliability diagram" src="{reliability_plot(plots['calibration'])}">
{f'<img alt="training loss" src="{training_loss_plot(plots["training_history"])}">' if plots.get("training_history") else ""}
</div>
{_runtime_section(metrics)}
{_calibration_section(metrics, plots)}
<h2 id="per-class">Per class</h2>{_per_class_table(metrics['models']) if metrics['models']['student'].get('per_class') else ''}
<p class="note">Held-out label counts: {html.escape(", ".join(f"{k} {v}" for k, v in eval_counts.items()))}.</p>
<h2 id="confusion">Confusion</h2><div class="plots">{confusion_imgs}</div>
<h2 id="disagreements">Where the student and the teacher disagree</h2>{_disagreement_table(plots.get('disagreements', []))}
{render_data_section(section, _data_plots(metrics)) if section else ""}
<h2 id="recipe">Recipe</h2><details open><summary>teacher, student, distillation and synthesis settings (from the spec)</summary>
<pre>{html.escape(_json(recipe)) if recipe else ''}</pre></details>
<details><summary>Data preparation (JSON)</summary><pre>{html.escape(_json(metrics['data']))}</pre></details>
</body></html>"""


def _json(payload) -> str:
    return json.dumps(payload, indent=2, sort_keys=True)
