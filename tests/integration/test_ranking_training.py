"""Ray Train jobs for re-rankers on tiny models: a cross-encoder distilled from teacher scores alone, and a
monoT5 trained on judgments alone, both learn a toy ranking (the relevant passage names the query's topic)."""

import numpy as np
import pandas as pd
import pytest
import torch

from stillhouse.cluster.local_ray import LocalRayLauncher
from stillhouse.distill.training import TrainJob, load_trained_state
from stillhouse.tasks.reranking.train import EMBEDDING_ITEMS, RANKING_ITEMS, sample_group
from stillhouse.tasks.reranking.metrics import rank_ids, ranking_metrics
from stillhouse.models.reranker import (CrossEncoder, RerankerInfo, load_reranker, new_monot5, save_reranker,
                                        score_pairs, tiny_t5)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TOPICS = "card loan mortgage dividend pension invoice salary tax refund bond stock fund".split()
FILLER = "the a of bank money account pay".split()


def toy_queries(n: int = 24, candidates: int = 5) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        others = rng.choice([t for t in TOPICS if t != topic], candidates - 1, replace=False)
        passages = [" ".join(rng.choice(FILLER, 4)) + " " + word for word in [topic, *others]]
        passages = [passages[j] for j in rng.permutation(candidates)]
        relevance = [1.0 if topic in p.split() else 0.0 for p in passages]
        rows.append({"query": f"about {topic}", "passages": passages, "relevance": relevance,
                     "teacher_scores": [4.0 * r - 1.0 for r in relevance]})
    return rows


def mrr(folder, state, rows) -> float:
    model, tokenizer, info = load_reranker(folder / "init")
    if state is not None:
        model.load_state_dict(state)
    rankings = {str(i): rank_ids([str(j) for j in range(len(r["passages"]))],
                                 score_pairs(model, tokenizer, [r["query"]] * len(r["passages"]), r["passages"], 32))
                for i, r in enumerate(rows)}
    qrels = {str(i): {str(j): g for j, g in enumerate(r["relevance"])} for i, r in enumerate(rows)}
    return ranking_metrics(rankings, qrels)["mrr@10"]


def fit(folder, model, tokenizer, frame, epochs, hard_loss="listwise", soft_loss="listwise", **settings):
    save_reranker(model, tokenizer, RerankerInfo(kind="cross_encoder", max_length=32), folder / "init")
    frame.to_parquet(folder / "train.parquet")
    job = TrainJob(name="rank", init_model_dir=str(folder / "init"), train_file=str(folder / "train.parquet"),
                   storage_dir=str(folder / "ray"), epochs=epochs, batch_size=4, learning_rate=3e-3,
                   head_learning_rate=3e-2, max_length=32, items=RANKING_ITEMS, workers=1, cpus_per_worker=1,
                   options={"group_size": 5, "hard_loss": hard_loss, "soft_loss": soft_loss}, **settings)
    return load_trained_state(LocalRayLauncher().fit(job))


def test_cross_encoder_learns_the_ranking_from_teacher_scores_alone(tmp_path, tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    rows = toy_queries()
    frame = pd.DataFrame(rows).assign(relevance=[[-1.0] * 5] * len(rows))  # unjudged: the listwise KL alone
    state = fit(tmp_path, CrossEncoder(AutoModel.from_pretrained(tiny_model_dir)),
                AutoTokenizer.from_pretrained(tiny_model_dir), frame, epochs=20, use_teacher_logits=True,
                soft_loss="listwise", temperature=1.0)
    before, after = mrr(tmp_path, None, rows), mrr(tmp_path, state, rows)
    assert after >= 0.8 and after > before + 0.3, (before, after)  # chance is ~0.46 with 5 candidates


def test_monot5_learns_the_ranking_from_judgments_alone(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = toy_queries()
    state = fit(tmp_path, new_monot5(tiny_t5(tokenizer, d_model=32, layers=2, heads=2, d_ff=64), tokenizer),
                tokenizer, pd.DataFrame(rows).drop(columns="teacher_scores"), epochs=20, hard_loss="listwise")
    before, after = mrr(tmp_path, None, rows), mrr(tmp_path, state, rows)
    assert after > before + 0.2, (before, after)


def test_bi_encoder_learns_the_ranking_from_judgments_alone(tmp_path, tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    from stillhouse.models.reranker import BiEncoder

    torch.manual_seed(0)
    rows = toy_queries()
    state = fit(tmp_path, BiEncoder(AutoModel.from_pretrained(tiny_model_dir)),
                AutoTokenizer.from_pretrained(tiny_model_dir), pd.DataFrame(rows).drop(columns="teacher_scores"),
                epochs=15, hard_loss="listwise")
    before, after = mrr(tmp_path, None, rows), mrr(tmp_path, state, rows)
    # Mean-pooled random embeddings already reward shared words (the topic), so the start is well above chance
    # (~0.84 here); training must finish the job.
    assert after >= 0.95 and after > before, (before, after)


def test_group_sampling_keeps_relevant_candidates_and_draws_the_rest():
    relevance = np.array([0, 0, 1, 0, 2, 0, 0, -1], dtype=np.float32)
    group = sample_group(relevance, 4, np.random.default_rng(0))
    assert list(group[:2]) == [2, 4] and len(group) == 4 and len(set(group)) == 4
    draws = {tuple(sample_group(relevance, 4, np.random.default_rng(seed))) for seed in range(10)}
    assert len(draws) > 1  # the rest changes from epoch to epoch
    assert len(sample_group(relevance, 20, np.random.default_rng(0))) == 8  # a short list is taken whole


def test_bi_encoder_learns_the_teacher_embeddings_and_with_them_its_ranking(tmp_path, tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    from stillhouse.models.reranker import BiEncoder, embed_texts

    torch.manual_seed(0)
    rows = toy_queries()
    texts = sorted({r["query"] for r in rows} | {p for r in rows for p in r["passages"]})
    # The teacher's space: one direction per topic, so a query and the passage naming its topic coincide.
    targets = torch.stack([torch.eye(len(TOPICS))[[t for t in TOPICS if t in text.split()][0] == np.array(TOPICS)]
                           .squeeze(0) for text in texts])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # A random projection into that space (not fit_projection's least squares, which alone finds these toy
    # topics: their words are whole tokens of the pooled input), so the training job must do the learning.
    model = BiEncoder(AutoModel.from_pretrained(tiny_model_dir), torch.nn.Linear(32, len(TOPICS), bias=False))

    def cosine(m) -> float:
        return float((torch.from_numpy(embed_texts(m, tokenizer, texts, 32)) * targets).sum(-1).mean())

    before = cosine(model)
    save_reranker(model, tokenizer, RerankerInfo(kind="bi_encoder", max_length=32), tmp_path / "init")
    pd.DataFrame({"text": texts, "teacher_embedding": list(targets.numpy())}).to_parquet(tmp_path / "train.parquet")
    job = TrainJob(name="embed", init_model_dir=str(tmp_path / "init"), train_file=str(tmp_path / "train.parquet"),
                   storage_dir=str(tmp_path / "ray"), epochs=15, batch_size=8, learning_rate=3e-3,
                   head_learning_rate=3e-2, max_length=32, items=EMBEDDING_ITEMS, workers=1, cpus_per_worker=1)
    state = load_trained_state(LocalRayLauncher().fit(job))
    trained = load_reranker(tmp_path / "init")[0]
    trained.load_state_dict(state)
    after = cosine(trained)
    assert after > 0.9 and after > before + 0.2, (before, after)
    ranked_before, ranked_after = mrr(tmp_path, None, rows), mrr(tmp_path, state, rows)
    assert ranked_after >= 0.95 and ranked_after >= ranked_before, (ranked_before, ranked_after)
