"""The teacher's filter over synthetic re-ranking queries (pure: scores in, keep mask and reasons out)."""

import numpy as np

from stillhouse.tasks.reranking.synthesize import clean_query, teacher_keep

SCORES = [np.array([3.0, 1.0, 0.0]),    # source first, high
          np.array([2.0, 2.5, 0.0]),    # a negative above the source: the query asks for something else
          np.array([1.0, -1.0, -2.0]),  # source first, lower
          np.array([0.5, 0.0, 0.4]),    # source first, lowest
          np.array([-1.0])]             # no negatives: nothing to rank it against


def test_source_must_come_first_then_the_highest_source_scores_fill_the_fraction():
    keep, reasons = teacher_keep(SCORES, keep_fraction=0.5, require_source_first=True)  # ceil(2.5) = 3 places
    assert keep.tolist() == [True, False, True, True, False]
    assert reasons.tolist() == ["", "teacher ranks a negative above the source passage", "", "",
                                "teacher scores the source passage low"]


def test_without_the_consistency_rule_only_the_source_score_counts():
    keep, reasons = teacher_keep(SCORES, keep_fraction=0.4, require_source_first=False)  # 2 places
    assert keep.tolist() == [True, True, False, False, False]
    assert set(reasons[~keep]) == {"teacher scores the source passage low"}


def test_a_tie_with_a_negative_is_not_first_and_an_empty_list_keeps_nothing():
    keep, reasons = teacher_keep([np.array([1.0, 1.0])], keep_fraction=1.0, require_source_first=True)
    assert not keep[0] and reasons[0].startswith("teacher ranks a negative")
    keep, reasons = teacher_keep([], keep_fraction=0.5, require_source_first=True)
    assert keep.shape == (0,) and reasons.shape == (0,)


def test_the_generated_query_is_its_first_line_without_an_echoed_label():
    assert clean_query('\n Question: "How are dividends taxed?"\nDocument: more text') == "How are dividends taxed?"
