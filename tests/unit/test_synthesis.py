"""Synthetic-data building blocks: similarity, each filter, the augmentation generator, prompts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stillhouse.spec import AugmentSpec, SynthesisSpec
from stillhouse.synth.augment import augment, span_mix, word_noise
from stillhouse.synth.filters import (FilterThresholds, agreement_mask, confidence_mask, exact_duplicate_mask,
                                      filter_synthetic, label_mention_mask, length_mask, prompt_echo_mask, reason_counts,
                                      seed_distance)
from stillhouse.synth.prompts import clean_generation, generation_prompt, generation_requests, readable_label
from stillhouse.synth.similarity import greedy_near_duplicates, nearest_other_similarity, nearest_similarity


def test_similarity_is_one_for_copies_and_low_for_unrelated_text():
    sims, where = nearest_similarity(["my card has not arrived", "the weather is nice in june"],
                                     ["what is the exchange rate", "my card has not arrived"])
    assert sims[0] == pytest.approx(1.0) and where[0] == 1
    assert sims[1] < 0.3
    assert nearest_similarity([], ["a"])[0].shape == (0,)
    assert nearest_similarity(["a text"], [])[1].tolist() == [-1]


def test_nearest_other_similarity_ignores_the_row_itself():
    sims = nearest_other_similarity(["alpha beta gamma", "completely different words", "alpha beta gamma!"])
    assert sims[0] > 0.9 and sims[2] > 0.9 and sims[1] < 0.3
    assert nearest_other_similarity(["only one"]).tolist() == [0.0]


def test_greedy_near_duplicates_keeps_the_first_of_each_group():
    texts = ["where is my new card", "Where is my new card?", "how do i top up", "where is my new card!!"]
    assert greedy_near_duplicates(texts, 0.9).tolist() == [False, True, False, True]
    assert not greedy_near_duplicates(texts, 1.01).any()


def test_length_confidence_and_agreement_masks():
    assert length_mask(["ok", "  x  ", "a much longer text"], 2, 10).tolist() == [True, False, False]
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    assert confidence_mask(probs, 0.6).tolist() == [True, False, True]
    assert agreement_mask(probs, np.array([0, 1, 1])).tolist() == [True, False, True]


def test_label_mention_mask_matches_the_intended_label_as_whole_words():
    labels = ["Bearish", "card_arrival", "top-up"]
    texts = ["A bearish update on oil", "Bearishness is not the label", "my card arrival is late",
             "card-arrival was slow", "where is my card", "please top up", "not bearish at all"]
    intended = np.array([0, 0, 1, 1, 1, 2, 1])
    # The last text names "bearish", but it was written for card_arrival: only the intended label counts.
    assert label_mention_mask(texts, intended, labels).tolist() == [True, False, True, True, False, True, False]


def test_exact_duplicates_ignore_case_and_spacing_and_include_known_rows():
    flagged = exact_duplicate_mask(["Hello  there", "hello there", "new text", "Seed Row"], known=["seed row"])
    assert flagged.tolist() == [False, True, False, True]


def test_seed_distance_is_zero_for_a_copy():
    distance = seed_distance(["my card is lost", "is there a fee for transfers abroad"], ["my card is lost"])
    assert distance[0] == pytest.approx(0.0, abs=1e-9) and distance[1] > 0.5


def test_filter_gives_the_first_reason_per_row_and_counts_them():
    seed = ["i lost my card yesterday", "the transfer failed twice"]
    texts = ["x",                                   # length
             "a message labelled card",             # prompt echo
             "maybe a card thing",                  # low confidence
             "a transfer question for you",         # teacher says label 1, intended 0
             "i lost my card yesterday",            # copy of a seed row
             "can i get a replacement card soon",   # kept
             "can i get a replacement card soon?",  # near-duplicate of the previous
             "CAN I GET A REPLACEMENT CARD SOON"]   # exact duplicate (normalised)
    intended = np.array([0, 0, 0, 0, 0, 0, 0, 0])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1],
                      [0.9, 0.1]])
    thresholds = FilterThresholds(min_confidence=0.6, min_text_length=2)
    reasons = filter_synthetic(texts, intended, probs, seed_distance(texts, seed), thresholds)
    assert reasons.tolist() == ["length", "prompt_echo", "low_confidence", "disagrees_with_intended_label",
                                "too_close_to_seed", "", "near_duplicate", "exact_duplicate"]
    counts = reason_counts(reasons)
    assert counts["kept"] == 1 and sum(counts.values()) == len(texts)
    relaxed = FilterThresholds(min_confidence=0.6, min_text_length=2, require_agreement=False)
    assert filter_synthetic(texts, intended, probs, seed_distance(texts, seed), relaxed)[3] == ""


def test_filter_drops_rows_naming_their_label_only_when_given_labels_and_enabled():
    texts, intended = ["a card thing happened to me", "great news for my card"], np.array([0, 1])
    probs, distance = np.array([[0.9, 0.1], [0.1, 0.9]]), np.ones(2)
    labels = ["card", "news"]
    assert filter_synthetic(texts, intended, probs, distance, FilterThresholds(), labels).tolist() == [
        "names_its_label", "names_its_label"]
    assert filter_synthetic(texts, intended, probs, distance, FilterThresholds()).tolist() == ["", ""]
    off = FilterThresholds(drop_label_mentions=False)
    assert filter_synthetic(texts, intended, probs, distance, off, labels).tolist() == ["", ""]


def test_span_mix_and_word_noise():
    rng = np.random.default_rng(0)
    mixed = span_mix("a b c d e f".split(), "u v w x y z".split(), rng)
    assert mixed[0] == "a" and mixed[-1] == "z" and set(mixed) & set("uvwxyz") and set(mixed) & set("abcdef")
    assert word_noise(["only"], 0.99, 0.0, rng) == ["only"]  # never drops everything
    assert sorted(word_noise(list("abcdef"), 0.0, 1.0, rng)) == list("abcdef")


def test_augment_writes_per_label_rows_deterministically():
    seed = pd.DataFrame({"text": ["my card never came", "card still not here after a week", "how do i send money",
                                  "transfer money to my friend"], "label": ["card", "card", "transfer", "transfer"]})
    first = augment(seed, ["card", "transfer"], 5, AugmentSpec(), 7)
    assert len(first) == 10 and first["label"].value_counts().to_dict() == {"card": 5, "transfer": 5}
    assert (first["generator"] == "augment").all() and first["text"].str.len().min() > 0
    pd.testing.assert_frame_equal(first, augment(seed, ["card", "transfer"], 5, AugmentSpec(), 7))


def test_prompts_show_examples_of_the_label_only():
    synthesis = SynthesisSpec(generator="llm", per_label=3, shots=2, task_description="customer message")
    seed = pd.DataFrame({"text": ["card one", "card two", "card three", "money one"],
                         "label": ["card_arrival", "card_arrival", "card_arrival", "transfer"]})
    requests = generation_requests(synthesis, seed, ["card_arrival", "transfer"], 0)
    assert [label for label, _ in requests] == ["card_arrival"] * 3 + ["transfer"] * 3
    assert all("money" not in prompt for label, prompt in requests if label == "card_arrival")
    assert requests[0][1].count("\n- card") == 2 and '"card arrival"' in requests[0][1]
    assert "customer messages" in requests[0][1]
    assert readable_label("lost_or_stolen_card") == "lost or stolen card"
    assert generation_prompt(synthesis, "x", ["a"]).endswith("Reply with the customer message only, without the label.")


@pytest.mark.parametrize("raw, clean", [
    ('"Where is my card?"', "Where is my card?"),
    ("Message: my card is late\nThis message asks about...", "my card is late"),
    ("\n\n- 1. I need a new PIN", "I need a new PIN"),
    ("   ", ""),
])
def test_clean_generation(raw, clean):
    assert clean_generation(raw) == clean


@pytest.mark.parametrize("raw, clean", [
    ("Bearish: Stocks slide on rate fears", "Stocks slide on rate fears"),
    ("BULLISH! Record quarter for $XYZ", "Record quarter for $XYZ"),
    ("card arrival - where is my card", "where is my card"),
    ('Here is a new tweet:\n"Oil jumps 5% on supply cut"', "Oil jumps 5% on supply cut"),
    ("Neutral outlook from the Fed today", "Neutral outlook from the Fed today"),  # a label word, not a prefix
])
def test_clean_generation_drops_prefaces_and_label_prefixes(raw, clean):
    assert clean_generation(raw, ["Bearish", "Bullish", "Neutral", "card_arrival"]) == clean


def test_prompt_echo_mask():
    texts = ["Here's a new tweet labelled Bullish", "Write a tweet that is not labeled as Bullish",
             "Stocks slide on rate fears", "I will write a letter to the bank"]
    assert prompt_echo_mask(texts).tolist() == [True, True, False, False]


def test_similarity_of_two_texts_does_not_depend_on_the_rest_of_the_batch():
    # The filter and the synthetic suite see different batches (all generated rows vs the kept ones): a row the
    # filter kept must get the same distance from the suite.
    seed = ["how can i get a virtual card", "my card payment was declined"]
    alone, _ = nearest_similarity(["can i get a disposable virtual card"], seed)
    batch, _ = nearest_similarity(["can i get a disposable virtual card", "card card card", "why declined"] * 5, seed)
    assert alone[0] == pytest.approx(batch[0], abs=1e-12)
