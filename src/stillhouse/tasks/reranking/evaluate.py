"""Re-ranking evaluation: first stage vs teacher vs distilled student vs qrels-only student, same held-out queries.

Writes ``metrics.json`` (nDCG@10, MRR@10, Recall@k per model; latency to re-rank one query's candidates;
sizes; the comparison), ``report.html`` (self-contained, with a plot) and ``model_card.md``.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np

from stillhouse import __version__
from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.data.io import atomic_dir, write_json
from stillhouse.evaluate.classical import teacher_check
from stillhouse.evaluate.model_card import TAG_LINE, teacher_note
from stillhouse.evaluate.report import _png, teacher_warning
from stillhouse.progress import say
from stillhouse.spec import Spec
from stillhouse.tasks.reranking.metrics import ndcg_at_k, rank_ids, ranking_metrics
from stillhouse.tasks.reranking.prepare import PreparedRanking
from stillhouse.tasks.reranking.teacher import RerankerModel, load_ranking_teacher, score_groups

MODELS = ("teacher", "student", "baseline")
TITLES = {"first_stage": "first stage", "teacher": "teacher", "student": "distilled student",
          "baseline": "qrels-only student"}


def _size_mb(folder: str | Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


def rerank_latency(scorers: dict, groups, candidates: int, samples: int) -> dict[str, dict]:
    """Per model: p50/p95 ms to score one query's first ``candidates`` candidates in one call (tokenisation
    included), models interleaved query by query so machine noise lands on each alike."""
    import torch

    times = {name: [] for name in scorers}
    rows = [(query, list(passages[:candidates])) for query, passages in
            list(zip(groups["query"], groups["passages"]))[:max(1, samples)]]
    with torch.inference_mode():
        for scorer in scorers.values():  # the first calls pay allocator and kernel set-up
            for query, chosen in rows[:2]:
                scorer.score([query] * len(chosen), chosen)
        for query, chosen in rows:
            for name, scorer in scorers.items():
                began = time.perf_counter()
                scorer.score([query] * len(chosen), chosen)
                times[name].append((time.perf_counter() - began) * 1000)
    return {name: {"rerank_ms_p50": float(np.percentile(t, 50)), "rerank_ms_p95": float(np.percentile(t, 95)),
                   "rerank_candidates": max(len(chosen) for _, chosen in rows)} for name, t in times.items()}


def evaluate_ranking_run(spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                         out_dir: str, synthetic_dir: str | None = None) -> dict:
    data = PreparedRanking.load(data_dir)
    groups, qrels = data.groups("eval"), data.judgments("eval")
    query_ids = groups["query_id"].tolist()
    rankings = {"first_stage": dict(zip(query_ids, groups["passage_ids"]))}
    models = {"first_stage": ranking_metrics(rankings["first_stage"], qrels)}
    scorers = {}
    for name, folder in zip(MODELS, (teacher_dir, student_dir, baseline_dir)):
        say(f"evaluate: {TITLES[name]} re-ranks {len(groups)} held-out queries")
        scorers[name] = load_ranking_teacher(folder) if name == "teacher" else RerankerModel(Path(folder))
        scores = score_groups(scorers[name], groups)
        rankings[name] = {q: rank_ids(ids, s) for q, ids, s in zip(query_ids, groups["passage_ids"], scores)}
        models[name] = {**ranking_metrics(rankings[name], qrels), "kind": scorers[name].name.split(":")[0],
                        "parameters": scorers[name].parameters, "size_mb": _size_mb(folder)}
    say("evaluate: timing the re-ranking of one query's candidates (interleaved, CPU)")
    speeds = rerank_latency(scorers, groups, spec.task.latency_candidates, spec.evaluation.latency_samples)
    for name in MODELS:
        models[name].update(speeds[name])
    teacher, student, baseline = models["teacher"], models["student"], models["baseline"]
    comparison = {
        "student_retention_ndcg@10": student["ndcg@10"] / teacher["ndcg@10"] if teacher["ndcg@10"] else None,
        "student_retention_mrr@10": student["mrr@10"] / teacher["mrr@10"] if teacher["mrr@10"] else None,
        "student_minus_baseline_ndcg@10": student["ndcg@10"] - baseline["ndcg@10"],
        "student_minus_first_stage_ndcg@10": student["ndcg@10"] - models["first_stage"]["ndcg@10"],
        "parameter_ratio": student["parameters"] / teacher["parameters"] if teacher["parameters"] else None,
        "rerank_speedup_p50": teacher["rerank_ms_p50"] / student["rerank_ms_p50"],
    }
    metrics = {"run": spec.name, "task": "reranking", "spec_hash": spec.spec_hash(),
               "stillhouse_version": __version__, "eval_queries": len(groups), "models": models,
               "comparison": comparison, "teacher_check": _teacher_check(rankings, qrels, spec.runtime.seed), "data": data.report, "teacher_fingerprint": dir_fingerprint(teacher_dir),
               "teacher": spec.teacher.describe(), "synthesis": _synthesis_report(synthetic_dir),
               "embedding_texts": spec.task.embedding_texts if spec.task.embedding_epochs else None}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        (tmp / "report.html").write_text(render_ranking_report(metrics), encoding="utf-8")
        (tmp / "model_card.md").write_text(render_ranking_card(spec, metrics), encoding="utf-8")
    say(f"evaluate: nDCG@10 first stage {models['first_stage']['ndcg@10']:.4f} | teacher {teacher['ndcg@10']:.4f} "
        f"| student {student['ndcg@10']:.4f} | qrels-only {baseline['ndcg@10']:.4f} | retention "
        f"{comparison['student_retention_ndcg@10']:.3f} | re-rank speed-up x{comparison['rerank_speedup_p50']:.2f}")
    if metrics["teacher_check"]["warning"]:
        say(f"evaluate: WARNING: {metrics['teacher_check']['warning']}")
    return metrics


def per_query_ndcg(rankings: dict[str, list[str]], qrels: dict[str, dict[str, float]], k: int = 10) -> np.ndarray:
    """nDCG@k of each judged query (those :func:`ranking_metrics` averages), in the rankings' order."""
    judged = [q for q in rankings if any(g > 0 for g in qrels.get(q, {}).values())]
    return np.array([ndcg_at_k(rankings[q], qrels[q], k) for q in judged])


def _teacher_check(rankings: dict, qrels: dict, seed: int) -> dict:
    """Is the teacher worth distilling: better than the first stage and the student trained on the judged queries
    alone beyond noise, in nDCG@10 per query (paired bootstrap over the held-out queries)?"""
    per_query = {name: per_query_ndcg(rankings[key], qrels)
                 for name, key in (("teacher", "teacher"), ("classical", "first_stage"), ("baseline", "baseline"))}
    return teacher_check(np.zeros(len(per_query["teacher"])), per_query, seed,
                         metric=lambda _, values: float(np.mean(values)) if len(values) else float("nan"),
                         figure="nDCG@10", classical="the first stage", baseline="the qrels-only student",
                         remedy="Try a stronger teacher (a larger cross-encoder or LLM judge) or judge more queries; "
                         "where the qrels-only student is as good, it may be the model to deploy.")


def _synthesis_report(synthetic_dir: str | None) -> dict | None:
    path = Path(synthetic_dir) / "synthesis.json" if synthetic_dir else None
    if path is None or not path.is_file():
        return None

    report = json.loads(path.read_text(encoding="utf-8"))
    return report if report.get("enabled") else None


def _table_rows(models: dict, markdown: bool) -> list[str]:
    rows = []
    for name, m in models.items():
        cells = [TITLES[name], f"{m['ndcg@10']:.4f}", f"{m['mrr@10']:.4f}", f"{m['recall@10']:.4f}",
                 f"{m['parameters'] / 1e6:.1f}M" if m.get("parameters") else "—",
                 f"{m['rerank_ms_p50']:.1f} ms" if "rerank_ms_p50" in m else "—"]
        rows.append("| " + " | ".join(cells) + " |" if markdown
                    else "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return rows


def _quality_plot(models: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(models)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    for offset, metric in ((-0.2, "ndcg@10"), (0.2, "mrr@10")):
        ax.bar(x + offset, [models[n][metric] for n in names], width=0.4, label=metric)
    ax.set_xticks(x, [TITLES[n] for n in names], fontsize=8)
    ax.set(ylim=(0, 1), title="Re-ranking quality on the held-out queries")
    ax.legend(fontsize=8)
    return _png(fig)


def _synthesis_html(report: dict | None) -> str:
    if not report:
        return "<p>Synthetic queries: off for this run.</p>"
    dropped = ", ".join(f"{html.escape(k)} {v}" for k, v in report["dropped"].items()) or "none"
    return (f"<h3>Synthetic queries</h3><p>Generator <code>{html.escape(report['generator'])}</code> wrote "
            f"{report['generated']} queries in {report['seconds']} s; kept {report['kept']} (dropped: {dropped}). "
            f"Distance of kept queries to the nearest real query: "
            f"{html.escape(str(report.get('nearest_real_query_distance')))}.</p>")


def render_ranking_report(metrics: dict) -> str:
    c = metrics["comparison"]
    header = "<tr><th>model</th><th>nDCG@10</th><th>MRR@10</th><th>Recall@10</th><th>parameters</th>" \
             "<th>re-rank one query, p50</th></tr>"
    title = f"Stillhouse run {html.escape(metrics['run'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
code{{background:#f4f4f4;padding:1px 4px}}.note{{color:#555;font-size:13px}}
.warn{{background:#fff4e5;border-left:4px solid #e67e00;padding:8px 12px}}</style>
</head><body><h1>Distillation report: {html.escape(metrics['run'])}</h1>
<p class="note">{TAG_LINE}</p>
{teacher_warning(metrics)}
<p>{metrics['eval_queries']} held-out queries; teacher: {html.escape(metrics['teacher'])}; first stage:
{html.escape(str(metrics['data'].get('first_stage', '')))}.</p>
<p>The distilled student keeps {c['student_retention_ndcg@10']:.1%} of the teacher's nDCG@10, re-ranks
{c['rerank_speedup_p50']:.2f}× faster, and is {c['student_minus_baseline_ndcg@10'] * 100:+.1f} nDCG points from the
same student trained on the judgments alone.</p>
<table>{header}{''.join(_table_rows(metrics['models'], markdown=False))}</table>
{_synthesis_html(metrics.get('synthesis'))}
<p><img alt="quality" src="{_quality_plot(metrics['models'])}"></p></body></html>"""


def _embedding_line(spec: Spec) -> str:
    r = spec.task
    if not r.embedding_epochs:
        return "off"
    which = ("every passage except those only held-out queries rank (inductive)"
             if r.embedding_texts == "training" else
             "every candidate passage, held-out queries' included (transductive: no labels, but the evaluation "
             "passages' texts were seen)")
    return f"{r.embedding_epochs} epoch(s) on the training queries and {which}"


def render_ranking_card(spec: Spec, metrics: dict) -> str:
    c, data = metrics["comparison"], metrics["data"]
    counts = ", ".join(f"{k} {v}" for k, v in data["counts"].items())
    return f"""# Model card: {spec.model_name}

## Intended use
{spec.description or "Re-ranking a first stage's candidate passages for a query."}
Input: a query and its candidate passages; output: one relevance score per passage (higher = more relevant).

Not for: corpora or query styles unlike the training data; as the only judge of relevance where an error
harms someone.

## How it was made
Knowledge distillation with Stillhouse {metrics['stillhouse_version']}: a teacher ({spec.teacher.describe()})
scored the candidates of the seed and unlabelled queries; the student (`{spec.student.kind}`) learned them with
the `{spec.task.loss}` loss (T={spec.distillation.temperature}) plus the seed judgments
(`{spec.task.teacher_loss}`, α={spec.distillation.alpha}) for {spec.distillation.epochs} epochs.

- spec hash: `{metrics['spec_hash']}`
- teacher fingerprint: `{metrics['teacher_fingerprint']}`
- queries: {counts}; first stage: {data.get('first_stage', '')}
- embedding-level distillation: {_embedding_line(spec)}

## Evaluation ({metrics['eval_queries']} held-out queries)
| model | nDCG@10 | MRR@10 | Recall@10 | parameters | re-rank one query (CPU, p50) |
|---|---|---|---|---|---|
{chr(10).join(_table_rows(metrics['models'], markdown=True))}

Retention of teacher nDCG@10: {c['student_retention_ndcg@10']:.3f}; re-ranking speed-up: {c['rerank_speedup_p50']:.2f}×.{teacher_note(metrics)}

## Limitations
- Measured on held-out queries of the same collection; quality on other collections is unknown.
- The student inherits the teacher's errors; unjudged candidates count as not relevant, so absolute scores
  read low where judgments are sparse.
- Latency was measured on the machine that ran the pipeline; serving hardware will differ.
"""
