"""A self-contained HTML report (plots inlined as PNG) of one run's evaluation."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_TITLES = {"teacher": "teacher", "student": "distilled student", "baseline": "hard-label student"}
_COLOURS = {"teacher": "#1f77b4", "student": "#2ca02c", "baseline": "#d62728"}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def reliability_plot(calibration: dict) -> str:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    for name, bins in calibration.items():
        pts = [(b["confidence"], b["accuracy"]) for b in bins if b["count"]]
        if pts:
            ax.plot(*zip(*pts), "o-", color=_COLOURS[name], label=_TITLES[name])
    ax.set(xlabel="confidence (top label)", ylabel="accuracy", title="Reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def confusion_plot(matrix: list[list[int]], labels: list[str]) -> str:
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
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="gold", title="Distilled student: confusion (row-normalised)")
    return _png(fig)


def quality_latency_plot(models: dict) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, m in models.items():
        size = f"{m['parameters'] / 1e6:.1f}M params" if m["parameters"] else "size unknown"
        ax.scatter(m["latency_ms_p50"], m["accuracy"], s=40 + (m["parameters"] or 0) / 5e5, color=_COLOURS[name],
                   label=f"{_TITLES[name]} ({size})", alpha=0.8)
    ax.set(xlabel="CPU latency at batch 1, p50 (ms)", ylabel="accuracy", title="Quality vs latency")
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


def _data_plots(metrics: dict) -> dict[str, str]:
    synthesis = metrics.get("synthesis") or {}
    if not synthesis.get("enabled") or not synthesis.get("generated"):
        return {}
    return {"label distribution": label_distribution_plot(synthesis["label_counts"]),
            "privacy distances": privacy_plot(synthesis["nearest_seed_distance"], metrics.get("privacy_threshold"))}


def _table(models: dict) -> str:
    columns = [("accuracy", "accuracy", "{:.4f}"), ("macro_f1", "macro-F1", "{:.4f}"), ("ece", "ECE", "{:.4f}"),
               ("nll", "NLL", "{:.4f}"), ("agreement_with_teacher", "agreement w/ teacher", "{:.4f}"),
               ("parameters", "parameters", "{:,}"), ("size_mb", "size (MB)", "{:.1f}"),
               ("latency_ms_p50", "p50 ms (batch 1)", "{:.2f}"), ("latency_ms_p95", "p95 ms (batch 1)", "{:.2f}"),
               ("throughput_per_s", "texts/s (batch 32)", "{:.1f}")]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    rows = []
    for name, m in models.items():
        cells = "".join(f"<td>{fmt.format(m[key]) if m.get(key) is not None else '—'}</td>" for key, _, fmt in columns)
        rows.append(f"<tr><th>{_TITLES[name]}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def render_report(metrics: dict, plots: dict, section: dict | None = None) -> str:
    """The whole report as one HTML string (no external files or scripts)."""
    from stillhouse.evaluate.data_section import render_data_section

    c = metrics["comparison"]
    data = metrics["data"]["counts"]
    share = f" with <b>{c['parameter_ratio']:.1%}</b> of its parameters" if c["parameter_ratio"] else ""
    summary = (f"The distilled student keeps <b>{c['student_retention']:.1%}</b> of the teacher's accuracy"
               f"{share}, answers <b>{c['speedup_batch1_p50']:.2f}×</b> "
               f"faster at batch 1 on CPU, and is {c['student_minus_baseline_accuracy'] * 100:+.1f} accuracy points "
               f"from the same student trained on hard labels only.")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Stillhouse run {html.escape(metrics['run'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th:first-child{{text-align:left}}img{{max-width:100%}}.plots{{display:flex;gap:1em;flex-wrap:wrap}}
code{{background:#f4f4f4;padding:1px 4px}}</style></head><body>
<h1>Distillation report: {html.escape(metrics['run'])}</h1>
<p>{summary}</p>
<p>Teacher: {html.escape(metrics.get('teacher', ''))}.</p>
<p>Held-out rows: {metrics['eval_rows']} · seed rows: {data['seed']} · unlabelled pool rows: {data['pool']} ·
labels: {len(metrics['labels'])} · spec hash <code>{metrics['spec_hash'][:16]}</code> ·
Stillhouse {html.escape(metrics['stillhouse_version'])}</p>
<h2>Models</h2>{_table(metrics['models'])}
<h2>Plots</h2><div class="plots">
<img alt="quality vs latency" src="{quality_latency_plot(metrics['models'])}">
<img alt="reliability diagram" src="{reliability_plot(plots['calibration'])}"></div>
<img alt="confusion matrix" src="{confusion_plot(plots['confusion_student'], metrics['labels'])}">
{render_data_section(section, _data_plots(metrics)) if section else ""}
<details><summary>Data preparation (JSON)</summary><pre>{html.escape(_json(metrics['data']))}</pre></details>
</body></html>"""


def _json(payload) -> str:
    import json

    return json.dumps(payload, indent=2, sort_keys=True)
