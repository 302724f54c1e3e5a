"""The re-ranking pipeline end to end through kfp.local and real Ray on a tiny model and a toy BEIR set, via
the CLI: prepare (BM25 candidates, query split, GE suite) → cross-encoder teacher → teacher scores (GE suite) →
distilled and qrels-only students → evaluation → packaged student."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from stillhouse.tasks.reranking.task import TEACHER_EMBEDDINGS_FILE
from stillhouse.models.reranker import PROJECTION_FILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TOPICS = ("card fee", "loan rate", "mortgage term", "dividend tax", "pension plan", "invoice payment",
          "salary transfer", "bond yield", "stock split", "fund fee", "refund delay", "atm limit")


def write_toy_beir(folder):
    """Each topic: 4 passages (one answers the topic's queries), 3 queries (2 judged, 1 unjudged)."""
    rng = np.random.default_rng(0)
    filler = "the bank said that our account team will look at it this week".split()
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for t, topic in enumerate(TOPICS):
        for k in range(4):
            words = " ".join(rng.choice(filler, 6))
            text = f"{topic} explained: {words}" if k == 0 else f"{words} {TOPICS[(t + k) % len(TOPICS)].split()[0]}"
            corpus.append({"_id": f"d{t}-{k}", "title": "", "text": text})
        for j, form in enumerate(("what is the {}", "how does {} work", "tell me about {}")):
            queries.append({"_id": f"q{t}-{j}", "text": form.format(topic)})
            if j < 2:
                qrels.append(f"q{t}-{j}\td{t}-0\t1")
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels.tsv").write_text("\n".join(qrels) + "\n")
    return folder


def test_reranking_run_distils_evaluates_and_packages(tmp_path, tiny_model_dir):
    data = write_toy_beir(tmp_path / "beir")
    spec = tmp_path / "rerank.yaml"
    spec.write_text(f"""
name: tiny-rerank
task: {{type: reranking, group_size: 4, queries_per_batch: 4, latency_candidates: 6, embedding_epochs: 1}}
data: {{corpus: {data}/corpus.jsonl, queries: {data}/queries.jsonl, qrels: {data}/qrels.tsv, candidates_k: 6,
        eval_queries: 8, seed_queries: 10}}
teacher: {{model: {tiny_model_dir}, epochs: 2, max_length: 32, learning_rate: 1.0e-3, head_learning_rate: 1.0e-2}}
student: {{kind: layer_subset, layers: 1}}
distillation: {{epochs: 2}}
validation: {{soft_labels: {{min_teacher_seed_accuracy: 0.0}}}}
evaluation: {{latency_samples: 4}}
runtime: {{workers: 1, cpus_per_worker: 1}}
output_dir: {tmp_path / 'runs'}
""")
    result = subprocess.run([sys.executable, "-m", "stillhouse.cli", "run", str(spec)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "runs" / "tiny-rerank").iterdir() if p.is_dir()]
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "succeeded" and status["model_tag"].startswith("stillhouse-tiny-rerank:")

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "reranking" and metrics["eval_queries"] == 8
    # 24 judged queries: 8 held out, 10 seed, 6 judged ones join the 12 unjudged in the pool
    assert metrics["data"]["counts"]["seed"] == 10 and metrics["data"]["counts"]["pool"] == 18
    assert metrics["data"]["first_stage"].startswith("BM25 top 6")
    for name in ("first_stage", "teacher", "student", "baseline"):
        for key in ("ndcg@10", "mrr@10", "recall@10"):
            assert 0.0 <= metrics["models"][name][key] <= 1.0
    for name in ("teacher", "student", "baseline"):
        assert metrics["models"][name]["rerank_ms_p50"] > 0 and metrics["models"][name]["rerank_candidates"] == 6
    assert metrics["models"]["student"]["parameters"] < metrics["models"]["teacher"]["parameters"]
    report = (run_dir / "report.html").read_text()
    assert "Distillation report: tiny-rerank" in report
    check = metrics["teacher_check"]  # the same check as every task's: worth distilling, or a warning box
    assert check["figure"] == "nDCG@10" and check["classical"] == "the first stage"
    assert ("Is this teacher worth distilling?" in report) == (check["warning"] is not None)
    assert metrics["spec_hash"] in (run_dir / "model_card.md").read_text()
    # Embedding-level distillation ran first: the teacher's embeddings are stored beside its scores, and the
    # student carries its projection into the teacher's space (the stage's own model folder is removed).
    (embeddings,) = (run_dir / "artifacts").rglob(TEACHER_EMBEDDINGS_FILE)
    assert len(pd.read_parquet(embeddings)) == 48 + 28  # every passage and the seed and pool queries
    (student,) = [p.parent for p in (run_dir / "artifacts").rglob(PROJECTION_FILE)]
    assert (student / "reranker.json").is_file() and not list((run_dir / "artifacts").rglob("*-embedding"))
