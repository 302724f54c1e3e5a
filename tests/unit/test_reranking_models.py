"""Cross-encoder and monoT5 re-rankers on tiny random-init models: scoring, saving, loading."""

import pytest
import torch

from stillhouse.errors import ModelError
from stillhouse.models.reranker import (CrossEncoder, MonoT5, RerankerInfo, load_reranker, new_monot5, save_reranker,
                                        score_pairs, tiny_t5, word_token_id)

QUERIES = ["card fee abroad", "why do stocks pay dividends", "card fee abroad"]
PASSAGES = ["A foreign transaction fee applies to card payments made abroad, " * 8,
            "Dividends share profits.", "Mortgage rates rose."]


@pytest.fixture()
def tiny_encoder(tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    return AutoModel.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_cross_encoder_scores_survive_save_and_load_in_input_order(tiny_encoder, tmp_path):
    encoder, tokenizer = tiny_encoder
    model = CrossEncoder(encoder).eval()
    scores = score_pairs(model, tokenizer, QUERIES, PASSAGES, max_length=64, batch_size=2)
    one_by_one = [score_pairs(model, tokenizer, [q], [p], 64)[0] for q, p in zip(QUERIES, PASSAGES)]
    assert scores == pytest.approx(one_by_one, abs=1e-5)  # batching by length puts scores back in input order
    assert len(set(scores.round(6))) == 3
    save_reranker(model, tokenizer, RerankerInfo(kind="cross_encoder", max_length=64, base_model="tiny"), tmp_path)
    loaded, loaded_tokenizer, info = load_reranker(tmp_path)
    assert isinstance(loaded, CrossEncoder) and info.max_length == 64 and info.base_model == "tiny"
    assert score_pairs(loaded, loaded_tokenizer, QUERIES, PASSAGES, 64) == pytest.approx(scores, abs=1e-5)


def test_cross_encoder_reads_query_and_passage_as_one_pair_truncating_the_longer(tiny_encoder):
    _, tokenizer = tiny_encoder
    enc = CrossEncoder.encode(tokenizer, [QUERIES[0]], [PASSAGES[0]], max_length=16)
    ids = enc["input_ids"][0].tolist()
    assert len(ids) == 16 and ids.count(tokenizer.sep_token_id) == 2
    assert tokenizer.decode(ids[1:ids.index(tokenizer.sep_token_id)]) == QUERIES[0]  # the query is intact


def test_monot5_scores_true_minus_false_at_the_first_decoder_step(tiny_encoder, tmp_path):
    _, tokenizer = tiny_encoder
    torch.manual_seed(0)
    model = new_monot5(tiny_t5(tokenizer, d_model=32, layers=1, heads=2, d_ff=64), tokenizer).eval()
    assert model.true_token_id == tokenizer.convert_tokens_to_ids("true")
    scores = score_pairs(model, tokenizer, QUERIES, PASSAGES, max_length=64)
    enc = MonoT5.encode(tokenizer, QUERIES[1:2], PASSAGES[1:2], 64)
    assert "query : why do stocks pay dividends document : dividends share profits. relevant :" in \
        tokenizer.decode(enc["input_ids"][0])
    start = torch.full((1, 1), model.model.config.decoder_start_token_id)
    with torch.no_grad():
        logits = model.model(**enc, decoder_input_ids=start).logits[0, 0]
    assert scores[1] == pytest.approx((logits[model.true_token_id] - logits[model.false_token_id]).item(), abs=1e-5)
    save_reranker(model, tokenizer, RerankerInfo(kind="monot5", max_length=64), tmp_path)
    loaded, loaded_tokenizer, info = load_reranker(tmp_path)
    assert isinstance(loaded, MonoT5) and info.true_token_id == model.true_token_id
    assert score_pairs(loaded, loaded_tokenizer, QUERIES, PASSAGES, 64) == pytest.approx(scores, abs=1e-5)


def test_a_saved_t5_checkpoint_loads_through_the_auto_class_as_a_monot5(tiny_encoder, tmp_path):
    from stillhouse.models.reranker import load_seq2seq

    _, tokenizer = tiny_encoder
    torch.manual_seed(0)
    t5 = tiny_t5(tokenizer, d_model=32, layers=1, heads=2, d_ff=64).eval()
    t5.save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    loaded, loaded_tokenizer = load_seq2seq(str(tmp_path / "t5"))  # the path a real monoT5 checkpoint takes
    scores = score_pairs(new_monot5(loaded, loaded_tokenizer), loaded_tokenizer, QUERIES, PASSAGES, 64)
    assert scores == pytest.approx(score_pairs(new_monot5(t5, tokenizer), tokenizer, QUERIES, PASSAGES, 64), abs=1e-5)
    with pytest.raises(ModelError, match="(?s)cannot load model .*no-such-t5.*fix: use a local T5/monoT5 folder"):
        load_seq2seq(str(tmp_path / "no-such-t5"))


def test_monot5_needs_one_token_true_and_false(tiny_encoder):
    _, tokenizer = tiny_encoder
    with pytest.raises(ModelError, match="splits 'zzqxvw' into"):
        word_token_id(tokenizer, "zzqxvw")


def test_loading_a_folder_that_is_not_a_reranker_names_it(tmp_path):
    with pytest.raises(ModelError, match="is not a Stillhouse re-ranker"):
        load_reranker(tmp_path)


def test_bi_encoder_scores_scaled_cosine_of_separate_embeddings(tiny_encoder, tmp_path):
    from stillhouse.models.reranker import BiEncoder

    encoder, tokenizer = tiny_encoder
    model = BiEncoder(encoder).eval()
    scores = score_pairs(model, tokenizer, QUERIES, PASSAGES, max_length=64, batch_size=2)
    with torch.no_grad():
        q, p = (model.embed(enc["input_ids"], enc["attention_mask"]) for enc in
                (tokenizer([QUERIES[1]], return_tensors="pt"), tokenizer([PASSAGES[1]], return_tensors="pt")))
    assert scores[1] == pytest.approx(20 * float((q * p).sum()) - 10, abs=1e-4)  # w 20, b -10 at the start
    save_reranker(model, tokenizer, RerankerInfo(kind="bi_encoder", max_length=64), tmp_path)
    loaded, loaded_tokenizer, info = load_reranker(tmp_path)
    assert isinstance(loaded, BiEncoder) and info.kind == "bi_encoder"
    assert score_pairs(loaded, loaded_tokenizer, QUERIES, PASSAGES, 64) == pytest.approx(scores, abs=1e-5)


def test_bi_encoder_projection_is_fitted_into_the_teacher_space_and_survives_save_and_load(tiny_encoder, tmp_path):
    from stillhouse.models.reranker import PROJECTION_FILE, BiEncoder, embed_texts, fit_projection

    encoder, tokenizer = tiny_encoder
    model = BiEncoder(encoder).eval()
    texts = [f"{word} account fee number {i}" for i in range(40) for word in ("card", "loan")]
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        pooled = model.pooled(enc["input_ids"], enc["attention_mask"])
    mapping = torch.randn(pooled.shape[1], 48)  # a "teacher" whose space is a linear map of the student's
    targets = torch.nn.functional.normalize(pooled @ mapping, dim=-1)
    fit_projection(model, tokenizer, texts, targets, max_length=64)
    embedded = embed_texts(model, tokenizer, texts, 64)
    assert embedded.shape == (80, 48)
    assert float((torch.from_numpy(embedded) * targets).sum(-1).min()) > 0.99  # the map is found
    assert model.projection.weight.requires_grad  # fitted, then trainable
    with torch.no_grad():  # forward without passages: the unit embeddings (the embedding-distillation path)
        forward = model(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(forward, torch.from_numpy(embedded), atol=1e-5)

    scores = score_pairs(model, tokenizer, QUERIES, PASSAGES, 64)
    save_reranker(model, tokenizer, RerankerInfo(kind="bi_encoder", max_length=64), tmp_path)
    assert (tmp_path / PROJECTION_FILE).is_file()
    loaded, loaded_tokenizer, _ = load_reranker(tmp_path)
    assert loaded.projection.weight.shape == (48, 32)
    assert score_pairs(loaded, loaded_tokenizer, QUERIES, PASSAGES, 64) == pytest.approx(scores, abs=1e-5)
