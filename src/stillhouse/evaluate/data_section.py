"""The report's data section: what was validated, what the teacher said about each split, what synthesis
generated, kept and dropped, and how synthetic labels and privacy distances are distributed."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.io import read_json
from stillhouse.data.prepare import PreparedData
from stillhouse.evaluate.metrics import softmax
from stillhouse.validate.suites import soft_label_frame

_EXAMPLES = 12


def _split_stats(soft: pd.DataFrame, data: PreparedData) -> dict:
    """Rows, mean top probability and mean normalised entropy per split, from the soft-label suite's frame."""
    frame = soft_label_frame(soft, data.seed, data.labels)
    top = np.stack(soft["teacher_logits"].to_numpy()).argmax(1)
    edges = np.linspace(0.0, 1.0, _CONFIDENCE_BINS + 1)
    out = {}
    for split, part in frame.groupby("split", sort=False):
        labels_of = top[part.index.to_numpy()]
        out[split] = {"rows": int(len(part)), "mean_confidence": float(part["prob_max"].mean()),
                      "mean_entropy": float(part["entropy"].mean()),
                      "confidence_histogram": np.histogram(part["prob_max"], bins=edges)[0].tolist(),
                      "teacher_label_counts": {label: int((labels_of == i).sum()) for i, label in
                                               enumerate(data.labels)}}
    return out


_CONFIDENCE_BINS = 20


def data_section(data: PreparedData, synthetic_dir: str | None, soft_labels_dir: str | None) -> dict:
    """Numbers and examples for the report (plain data; :func:`render_data_section` turns them into HTML)."""
    section = {"validation": list(data.report.get("great_expectations", [])), "synthesis": None,
               "soft_labels": None, "kept_examples": [], "dropped_examples": []}
    if soft_labels_dir and (Path(soft_labels_dir) / "summary.json").is_file():
        summary = read_json(Path(soft_labels_dir) / "summary.json")
        section["validation"].append(summary["great_expectations"])
        soft = pd.read_parquet(Path(soft_labels_dir) / "soft_labels.parquet")
        section["soft_labels"] = {"teachers": sorted(soft["teacher"].unique().tolist()) if "teacher" in soft else [],
                                  "splits": _split_stats(soft, data),
                                  "gold_label_counts": {role: {str(k): int(v) for k, v in getattr(
                                      data, role)["label"].value_counts().items()} for role in ("seed", "eval")}}
    if synthetic_dir and (Path(synthetic_dir) / "synthesis.json").is_file():
        synthesis = read_json(Path(synthetic_dir) / "synthesis.json")
        section["synthesis"] = synthesis
        if synthesis.get("enabled"):
            if "great_expectations" in synthesis:
                section["validation"].append(synthesis["great_expectations"])
            kept = pd.read_parquet(Path(synthetic_dir) / "synthetic.parquet")
            for _, row in kept.head(_EXAMPLES).iterrows():
                probs = softmax(np.asarray(row["teacher_logits"], dtype=np.float64)[None, :])[0]
                section["kept_examples"].append({"text": row["text"], "label": row["label"],
                                                 "teacher_label": data.labels[int(probs.argmax())],
                                                 "confidence": float(probs.max())})
            dropped = pd.read_parquet(Path(synthetic_dir) / "dropped.parquet")
            for _, row in dropped.groupby("reason", sort=True).head(2).iterrows():
                section["dropped_examples"].append({"text": row["text"], "label": row["label"],
                                                    "reason": row["reason"]})
    return section


# The step whose `validation` output holds each suite's files (collected to <run>/validation/<step>/).
_SUITE_STEP = {"seed": "prepare-data", "ranking_seed": "prepare-data", "soft_labels": "soft-label",
               "ranking_soft_labels": "soft-label", "synthetic": "synthesize"}


def _rows(items: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(item.get(key)))}</td>" for key, _ in columns) + "</tr>"
                   for item in items)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_data_section(section: dict, plots: dict[str, str]) -> str:
    """HTML for the data section; ``plots`` are data-URI PNGs keyed by name (may be empty)."""
    links = "".join(
        f"<tr><td><a href=\"validation/{_SUITE_STEP.get(v['suite'], '')}/{html.escape(v['suite'])}.html\">"
        f"{html.escape(v['suite'])}</a></td><td>{v['expectations']}</td><td>{v['rows']}</td><td>passed</td></tr>"
        for v in section["validation"])
    parts = ["<h2>Data</h2>", "<h3>Validation (Great Expectations)</h3>",
             "<table><tr><th>suite</th><th>expectations</th><th>rows</th><th>result</th></tr>" + links + "</table>",
             "<p>Each suite's name opens its results, one page that reads offline; the result JSON and GE's Data "
             "Docs (which load their scripts from CDNs) are beside it in <code>validation/&lt;step&gt;/</code>.</p>"]
    if section["soft_labels"]:
        splits = [{"split": k, **v} for k, v in section["soft_labels"]["splits"].items()]
        teachers = html.escape(", ".join(section["soft_labels"]["teachers"]))
        parts += ["<h3>Soft labels</h3>", f"<p>Teacher(s): {teachers}</p>",
                  _rows(splits, [("split", "split"), ("rows", "rows"), ("mean_confidence", "mean top probability"),
                                 ("mean_entropy", "mean entropy / log K")]),
                  "<div class='plots'>" + "".join(f"<img alt='{k}' src='{v}'>" for k, v in plots.items()
                                                  if k.startswith("soft labels")) + "</div>"]
    synthesis = section["synthesis"]
    if synthesis and synthesis.get("enabled"):
        counts = synthesis["filter"]
        parts += ["<h3>Synthetic data</h3>",
                  f"<p>Generator <code>{html.escape(str(synthesis['generator']))}</code>: {synthesis['generated']} rows in "
                  f"{synthesis['seconds']} s ({synthesis['rows_per_s']} rows/s); kept {counts['kept']}.</p>",
                  _rows([{"reason": k, "rows": v} for k, v in counts.items()], [("reason", "outcome"), ("rows", "rows")]),
                  "<div class='plots'>" + "".join(f"<img alt='{k}' src='{v}'>" for k, v in plots.items()
                                                  if not k.startswith("soft labels")) + "</div>",
                  "<h4>Kept rows (with the teacher's soft label)</h4>",
                  _rows(section["kept_examples"], [("text", "text"), ("label", "written for"),
                                                   ("teacher_label", "teacher's label"), ("confidence", "confidence")]),
                  "<h4>Dropped rows (examples per reason)</h4>",
                  _rows(section["dropped_examples"], [("text", "text"), ("label", "written for"), ("reason", "reason")])]
    elif synthesis is not None:
        parts.append("<p>Synthetic data: off for this run.</p>")
    return "\n".join(parts)
