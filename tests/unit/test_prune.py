"""Vocabulary pruning: ids remapped, in-vocabulary predictions unchanged, out-of-vocabulary tokens → [UNK]."""

import numpy as np
import pytest
import torch

from stillhouse.models.prune import id_map_for, kept_token_ids, prune_classifier, unknown_tokens
from stillhouse.models.classifier import (
    TextClassifier,
    encode_texts,
    load_classifier,
    save_classifier,
    ClassifierInfo,
)

TRAIN = ["my card payment was declined", "transfer money to my savings", "where is my refund"]


@pytest.fixture()
def classifier(tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = TextClassifier(AutoModel.from_pretrained(tiny_model_dir), num_labels=3).eval()
    return model, tokenizer


def test_kept_ids_are_the_special_tokens_the_texts_and_a_floor_of_low_ids(classifier):
    _, tokenizer = classifier
    keep, counts = kept_token_ids(tokenizer, TRAIN, floor=0)
    used = {i for ids in tokenizer(TRAIN)["input_ids"] for i in ids}
    assert set(keep) == used | set(tokenizer.all_special_ids) and list(keep) == sorted(keep)
    assert counts["floor_tokens"] == 0 and counts["special_tokens"] == len(set(tokenizer.all_special_ids))
    floored, counts = kept_token_ids(tokenizer, TRAIN, floor=200)
    assert len(floored) == 200 and set(keep) <= set(floored) and counts["floor_tokens"] == 200 - len(keep)
    added = sorted(set(floored) - set(keep))
    assert not any(tokenizer.convert_ids_to_tokens(int(i)).startswith("[unused") for i in added)  # none reserved


def test_id_map_sends_kept_ids_to_their_rows_and_the_rest_to_unk():
    keep = np.array([0, 3, 7, 100])
    mapping = id_map_for(keep, vocab_size=120, unk_id=100)
    assert mapping[[0, 3, 7, 100]].tolist() == [0, 1, 2, 3]
    assert mapping[[1, 50, 119]].tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match="UNK"):
        id_map_for(np.array([0, 3]), vocab_size=10, unk_id=5)
    assert unknown_tokens(mapping, torch.tensor([[0, 50, 100, 7]]), unk_id=100) == 1  # 50 lost; [UNK] was UNK
    assert unknown_tokens(None, torch.tensor([[0, 50]]), unk_id=100) == 0


def test_pruning_leaves_in_vocabulary_predictions_identical_and_survives_save_and_load(classifier, tmp_path):
    model, tokenizer = classifier
    before = encode_texts(model, tokenizer, TRAIN + ["my refund card"], max_length=32)
    original_rows = model.get_input_embeddings().weight.detach().clone()
    report = prune_classifier(model, tokenizer, TRAIN, floor=0)
    after = encode_texts(model, tokenizer, TRAIN + ["my refund card"], max_length=32)
    np.testing.assert_allclose(after, before, atol=1e-6)  # every token of these texts was kept
    assert report.kept_tokens == model.get_input_embeddings().num_embeddings < report.original_tokens
    assert report.parameters_after < report.parameters_before
    assert model.encoder.config.vocab_size == report.kept_tokens
    # the rows are the original rows of the kept ids, in order
    keep, _ = kept_token_ids(tokenizer, TRAIN, floor=0)
    assert torch.equal(model.get_input_embeddings().weight, original_rows[torch.as_tensor(keep)])

    info = ClassifierInfo(labels=["a", "b", "c"], pruning=report.to_dict())
    save_classifier(model, tokenizer, info, tmp_path / "pruned")
    loaded, loaded_tokenizer, loaded_info = load_classifier(tmp_path / "pruned")
    np.testing.assert_allclose(encode_texts(loaded, loaded_tokenizer, TRAIN, 32), after[:3], atol=1e-6)
    assert loaded_info.pruning["kept_tokens"] == report.kept_tokens
    with pytest.raises(ValueError, match="already pruned"):
        prune_classifier(loaded, loaded_tokenizer, TRAIN, floor=0)


def test_an_out_of_vocabulary_word_reads_as_unk_after_pruning(classifier):
    model, tokenizer = classifier
    prune_classifier(model, tokenizer, TRAIN, floor=0)
    ids = tokenizer(["my card was swallowed by the atm"], return_tensors="pt")["input_ids"]
    lost = unknown_tokens(model.id_map, ids, tokenizer.unk_token_id)
    assert lost >= 3  # "was" is kept; swallowed / by / the / atm are not in the training texts
    unk_row = model.id_map[tokenizer.unk_token_id]
    kept = {int(i) for i in kept_token_ids(tokenizer, TRAIN, 0)[0]}
    assert all(int(model.id_map[i]) == unk_row for i in ids[0].tolist() if i not in kept)
    # in inference the model counts what it could not read (serving exports the count)
    model.eval()
    with torch.no_grad():
        model(ids, torch.ones_like(ids))
    assert model.unknown_tokens == lost


def test_vocabulary_figures_count_the_tokens_a_pruned_model_cannot_see(classifier):
    from stillhouse.models.prune import vocabulary_figures

    model, tokenizer = classifier
    assert vocabulary_figures(model, tokenizer, TRAIN, 32) is None  # not pruned
    prune_classifier(model, tokenizer, TRAIN, floor=0)
    seen = vocabulary_figures(model, tokenizer, TRAIN, 32)
    assert seen["unknown_tokens"] == 0 and seen["texts_with_unknown"] == 0
    texts = ["my card payment", "swallowed by the atm"]
    ids = tokenizer(texts[1])["input_ids"]
    lost = unknown_tokens(model.id_map, torch.as_tensor(ids), tokenizer.unk_token_id)
    figures = vocabulary_figures(model, tokenizer, texts, 32)
    total = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    assert figures["unknown_tokens"] == lost > 0 and figures["texts_with_unknown"] == 1
    assert figures["unknown_token_rate"] == pytest.approx(lost / total)
