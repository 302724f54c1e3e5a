"""Re-ranking teachers other than the fine-tuned cross-encoder: a prompted LLM asked for yes/no relevance, and
an ensemble of it with a cross-encoder, built and used through the pipeline's own step functions."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from stillhouse import steps
from stillhouse.tasks.reranking.prepare import PreparedRanking
from stillhouse.errors import ModelError
from stillhouse.spec import parse_spec
from stillhouse.tasks.reranking.teacher import (choose_ranking_demonstrations, load_ranking_teacher, mean_probability_logit,
                                         ranking_prompt)
from tests.integration.test_ranking_pipeline import write_toy_beir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROMPT = {"instruction": "Is the passage relevant?", "yes": " yes", "no": " no", "max_passage_chars": 20}


def test_the_prompt_shows_judged_examples_then_asks_about_the_pair():
    demos = [{"query": "card fee", "passage": "fees for cards", "relevant": True},
             {"query": "loan", "passage": "weather today", "relevant": False}]
    prompt = ranking_prompt(PROMPT, demos, "what  is\na bond", "A bond is a loan to an issuer, repaid later.")
    assert prompt == ("Is the passage relevant?\n\nQuery: card fee\nPassage: fees for cards\nRelevant: yes\n\n"
                      "Query: loan\nPassage: weather today\nRelevant: no\n\n"
                      "Query: what is a bond\nPassage: A bond is a loan to\nRelevant:")


def test_demonstrations_alternate_relevant_and_not_from_judged_candidates():
    groups = pd.DataFrame({"query": ["a", "b", "c"], "passages": [["p1", "p2"], ["p3", "p4"], ["p5", "p6"]],
                           "relevance": [[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]})
    demos = choose_ranking_demonstrations(groups, 3, seed_value=0)
    assert [d["relevant"] for d in demos] == [True, False, True]
    assert all((d["passage"] in ("p1", "p4", "p6")) == d["relevant"] for d in demos)


def test_ensemble_averages_relevance_probabilities():
    mixed = mean_probability_logit([np.array([0.0, math.log(3)]), np.array([math.log(3), 0.0])],
                                   np.array([0.5, 0.5]))
    # σ: (0.5 + 0.75) / 2 = 0.625 → log(0.625 / 0.375)
    assert mixed == pytest.approx([math.log(0.625 / 0.375)] * 2, abs=1e-6)


def spec_for(tmp_path, data, teacher: str):
    return parse_spec(f"""
name: llm-rerank
task: {{type: reranking, llm_shots: 2, llm_max_passage_chars: 200}}
data: {{corpus: {data}/corpus.jsonl, queries: {data}/queries.jsonl, qrels: {data}/qrels.tsv, candidates_k: 4,
        eval_queries: 8, seed_queries: 6, max_pool_queries: 4}}
teacher: {teacher}
student: {{kind: layer_subset, layers: 1}}
validation: {{soft_labels: {{min_teacher_seed_accuracy: 0.0}}}}
runtime: {{workers: 1, cpus_per_worker: 1}}
""")


def test_prompted_llm_teacher_scores_yes_minus_no_and_joins_an_ensemble(tmp_path, tiny_model_dir,
                                                                        tiny_causal_lm_dir):
    from stillhouse.teachers.causal_lm import load_causal_lm, score_continuations

    data = write_toy_beir(tmp_path / "beir")
    spec = spec_for(tmp_path, data, f"{{kind: ensemble, weights: [1, 1], members: [{{model: {tiny_model_dir}, "
                                    f"epochs: 0, max_length: 32}}, {{kind: llm, model: {tiny_causal_lm_dir}}}]}}")
    spec_json = spec.model_dump_json()
    steps.prepare_step(spec_json=spec_json, out_dir=str(tmp_path / "data"))
    steps.train_teacher_step(spec_json=spec_json, data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "teacher"))
    described = json.loads((tmp_path / "teacher" / "member-1" / "teacher.json").read_text())
    assert described["task"] == "reranking" and len(described["demonstrations"]) == 2

    llm = load_ranking_teacher(tmp_path / "teacher" / "member-1")
    model, tokenizer = load_causal_lm(str(tiny_causal_lm_dir))
    prompt = ranking_prompt(described["prompt"], described["demonstrations"], "what is a bond", "a bond is a loan")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        yes, no = score_continuations(model, ids, [tokenizer(w, add_special_tokens=False)["input_ids"]
                                                   for w in (" yes", " no")])
    assert llm.score(["what is a bond"], ["a bond is a loan"])[0] == pytest.approx(yes - no, abs=1e-4)

    ensemble = load_ranking_teacher(tmp_path / "teacher")
    assert ensemble.name.startswith("ensemble(bi_encoder:") and "llm:" in ensemble.name
    summary = steps.soft_label_step(spec_json=spec_json, data_dir=str(tmp_path / "data"),
                                    teacher_dir=str(tmp_path / "teacher"), synthetic_dir=str(tmp_path / "none"),
                                    out_dir=str(tmp_path / "soft"))
    scores = pd.read_parquet(tmp_path / "soft" / "ranking_soft_labels.parquet")
    assert summary["seed_queries"] == 6 and summary["pool_queries"] == 4 and scores["teacher"].iloc[0] == ensemble.name
    groups = PreparedRanking.load(tmp_path / "data").groups("seed").iloc[:1]
    direct = ensemble.score([groups["query"].iloc[0]] * len(groups["passages"].iloc[0]), groups["passages"].iloc[0])
    stored = scores[scores["query_id"] == groups["query_id"].iloc[0]]["teacher_score"].to_numpy()
    assert stored == pytest.approx(direct, abs=1e-4)


def test_a_classification_teacher_folder_is_refused(tmp_path):
    (tmp_path / "teacher.json").write_text(json.dumps({"kind": "llm", "labels": ["a", "b"]}))
    with pytest.raises(ModelError, match="describes a classification teacher"):
        load_ranking_teacher(tmp_path)


def test_query_prompt_and_cleaning():
    from stillhouse.tasks.reranking.synthesize import clean_query, query_prompt

    prompt = query_prompt("Write the question.", [("what is a bond", "A bond is a loan.")], "Fees  apply\nabroad.", 60)
    assert prompt == ("Write the question.\n\nDocument: A bond is a loan.\nQuestion: what is a bond\n\n"
                      "Document: Fees apply abroad.\nQuestion:")
    assert clean_query('\n  Question: "Do card fees apply abroad?"\nDocument: x') == "Do card fees apply abroad?"
    assert clean_query("   ") == ""


def test_synthetic_queries_are_written_filtered_scored_and_learned_from(tmp_path, tiny_model_dir,
                                                                        tiny_causal_lm_dir):
    from stillhouse.tasks.reranking.synthesize import QUERIES_FILE

    data = write_toy_beir(tmp_path / "beir")
    spec = spec_for(tmp_path, data, f"{{model: {tiny_model_dir}, epochs: 0, max_length: 32}}")
    spec = spec.model_validate({**spec.model_dump(), "synthesis": {
        "generator": "llm", "max_new_tokens": 8, "llm": {"model": str(tiny_causal_lm_dir)},
        "queries": {"passages": 12, "shots": 2, "keep_fraction": 0.5, "negatives": 3, "min_chars": 1}},
        "distillation": {"epochs": 1, "sources": ["seed", "pool", "synthetic"]}})
    spec_json = spec.model_dump_json()
    folders = {k: str(tmp_path / k) for k in ("data", "teacher", "synthetic", "soft", "student")}
    steps.prepare_step(spec_json=spec_json, out_dir=folders["data"])
    steps.train_teacher_step(spec_json=spec_json, data_dir=folders["data"], out_dir=folders["teacher"])
    result = steps.synthesize_step(spec_json=spec_json, data_dir=folders["data"], teacher_dir=folders["teacher"],
                                   out_dir=folders["synthetic"], validation_dir=str(tmp_path / "validation"))
    report = json.loads((tmp_path / "synthetic" / "synthesis.json").read_text())
    kept = pd.read_parquet(tmp_path / "synthetic" / QUERIES_FILE)
    assert report["generated"] == 12 and result["kept"] == report["kept"] == len(kept)
    assert report["kept"] + sum(report["dropped"].values()) == 12
    data_ = PreparedRanking.load(folders["data"])
    eval_relevant = {p for judged in data_.judgments("eval").values() for p, g in judged.items() if g > 0}
    assert not set(kept["source_passage_id"]) & eval_relevant  # never a passage that answers a test query
    assert all(ids[0] == source for ids, source in zip(kept["passage_ids"], kept["source_passage_id"]))
    assert all(len(s) == len(ids) for s, ids in zip(kept["teacher_scores"], kept["passage_ids"]))
    assert all(s[0] > max(s[1:]) for s in kept["teacher_scores"])  # the teacher ranks each source passage first
    steps.soft_label_step(spec_json=spec_json, data_dir=folders["data"], teacher_dir=folders["teacher"],
                          synthetic_dir=folders["synthetic"], out_dir=folders["soft"])
    trained = steps.distill_student_step(spec_json=spec_json, data_dir=folders["data"], teacher_dir=folders["teacher"],
                                         soft_labels_dir=folders["soft"], synthetic_dir=folders["synthetic"],
                                         out_dir=folders["student"])
    assert trained["train_queries"] == 6 + 4 + len(kept)
