"""Reading, checking and sampling data: every bad file gets one message naming the problem and the fix."""

import os

import pandas as pd
import pytest

from stillhouse.data.fingerprint import rows_fingerprint, text_fingerprint
from stillhouse.data.io import atomic_dir, atomic_file
from stillhouse.data.prepare import PreparedData, prepare_data
from stillhouse.errors import DataError
from stillhouse.spec import parse_spec
from tests.conftest import make_rows, write_csv


def spec_for(tmp_path, data_yaml: str, task: str = "{text_field: text, label_field: label}"):
    return parse_spec(f"name: t\ntask: {task}\ndata: {data_yaml}\nteacher: {{model: m}}\n", tmp_path)


def test_prepare_writes_seed_pool_eval_with_lineage(tmp_path, tiny_data):
    spec = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, pool: {tiny_data['pool']}, eval: {tiny_data['eval']}}}")
    data = prepare_data(spec, tmp_path / "prepared")
    assert data.labels == ["negative", "positive"]
    assert len(data.seed) == 16 and len(data.pool) == 40 and len(data.eval) == 20
    assert list(data.seed.columns) == ["row_id", "text", "label"] and list(data.pool.columns) == ["row_id", "text"]
    loaded = PreparedData.load(tmp_path / "prepared")
    assert loaded.report["fingerprints"]["seed"] == rows_fingerprint(data.seed["text"], data.seed["label"])
    assert loaded.seed.equals(data.seed)


def test_sampling_carves_seed_pool_and_eval_from_one_file(tmp_path):
    path = write_csv(tmp_path / "all.csv", make_rows(50))
    spec = spec_for(tmp_path, f"{{seed: {path}, sampling: {{eval_size: 20, seed_per_label: 5, pool_size: 30}}}}")
    data = prepare_data(spec, tmp_path / "out")
    assert len(data.eval) == 20 and data.eval["label"].value_counts().tolist() == [10, 10]
    assert data.seed["label"].value_counts().tolist() == [5, 5]
    assert len(data.pool) == 30
    # No row appears in two sets.
    sets = [set(data.seed["text"]), set(data.pool["text"]), set(data.eval["text"])]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    # Deterministic: the same spec gives the same split.
    again = prepare_data(spec, tmp_path / "again")
    assert again.seed["text"].tolist() == data.seed["text"].tolist()


def test_pool_rows_that_are_eval_rows_are_dropped(tmp_path, tiny_data):
    leaked = write_csv(tmp_path / "pool.csv", make_rows(3, offset=500) + make_rows(5, offset=100))
    spec = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, pool: {leaked}, eval: {tiny_data['eval']}}}")
    data = prepare_data(spec, tmp_path / "out")
    assert not set(data.pool["text"]) & set(data.eval["text"])
    assert data.report["dropped"]["pool_rows_in_seed_or_eval"] == 6


def test_duplicates_and_conflicting_labels_are_dropped_and_counted(tmp_path, tiny_data):
    rows = make_rows(4) + make_rows(1) + [("same text twice", "positive"), ("same text twice", "negative")]
    seed = write_csv(tmp_path / "dups.csv", rows)
    data = prepare_data(spec_for(tmp_path, f"{{seed: {seed}, eval: {tiny_data['eval']}}}"), tmp_path / "out")
    assert data.report["dropped"]["seed_duplicates"] == {"exact": 2, "conflicting_labels": 2}
    assert "same text twice" not in set(data.seed["text"])


def test_missing_column_names_the_column_and_the_fix(tmp_path, tiny_data):
    spec = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, eval: {tiny_data['eval']}}}",
                    task="{text_field: body, label_field: label}")
    with pytest.raises(DataError) as err:
        prepare_data(spec, tmp_path / "out")
    assert "column `body` not found (columns: text, label)" in str(err.value)
    assert "task.text_field" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unknown_label_names_label_rows_and_fix(tmp_path, tiny_data):
    bad = write_csv(tmp_path / "bad_eval.csv", make_rows(2, offset=500) + [("what is this", "neutral")])
    spec = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, eval: {bad}}}")
    with pytest.raises(DataError) as err:
        prepare_data(spec, tmp_path / "out")
    message = str(err.value)
    assert "unknown label(s) 'neutral' in 1 row(s) (rows 5)" in message and "task.labels" in message


def test_label_list_from_spec_is_enforced(tmp_path, tiny_data):
    spec = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, eval: {tiny_data['eval']}}}",
                    task="{text_field: text, label_field: label, labels: [negative, neutral]}")
    with pytest.raises(DataError, match="unknown label.*'positive'"):
        prepare_data(spec, tmp_path / "out")


def test_label_without_seed_examples_is_an_error(tmp_path, tiny_data):
    spec = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, eval: {tiny_data['eval']}}}",
                    task="{text_field: text, label_field: label, labels: [negative, positive, neutral]}")
    with pytest.raises(DataError, match="labels with no seed examples: neutral"):
        prepare_data(spec, tmp_path / "out")


def test_empty_file_and_header_only_file(tmp_path, tiny_data):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    for name, expected in (("empty.csv", "data file is empty"), ("header.csv", "header but no rows")):
        spec = spec_for(tmp_path, f"{{seed: {tmp_path / name}, eval: {tiny_data['eval']}}}")
        with pytest.raises(DataError, match=expected):
            prepare_data(spec, tmp_path / "out")


def test_wrong_encoding_suggests_the_encoding_field(tmp_path, tiny_data):
    path = tmp_path / "latin.csv"
    path.write_bytes(("text,label\n" + "".join(f"{t},{l}\n" for t, l in make_rows(3)) + "caf\xe9 g\xe9nial,positive\n")
                     .encode("latin-1"))
    spec = spec_for(tmp_path, f"{{seed: {path}, eval: {tiny_data['eval']}}}")
    with pytest.raises(DataError) as err:
        prepare_data(spec, tmp_path / "out")
    assert "is not valid utf-8 text" in str(err.value) and "encoding: latin-1" in str(err.value)
    fixed = spec_for(tmp_path, f"{{seed: {{path: {path}, encoding: latin-1}}, eval: {tiny_data['eval']}}}")
    assert "café génial" in set(prepare_data(fixed, tmp_path / "out").seed["text"])


def test_missing_file_and_empty_text(tmp_path, tiny_data):
    spec = spec_for(tmp_path, f"{{seed: {tmp_path / 'nope.csv'}, eval: {tiny_data['eval']}}}")
    with pytest.raises(DataError, match="data file not found"):
        prepare_data(spec, tmp_path / "out")
    blank = write_csv(tmp_path / "blank.csv", make_rows(2) + [("  ", "positive")])
    with pytest.raises(DataError, match=r"1 row\(s\) with empty `text` \(rows 5\)"):
        prepare_data(spec_for(tmp_path, f"{{seed: {blank}, eval: {tiny_data['eval']}}}"), tmp_path / "out")


def test_jsonl_and_parquet_sources(tmp_path, tiny_data):
    frame = pd.DataFrame(make_rows(4), columns=["text", "label"])
    frame.to_json(tmp_path / "seed.jsonl", orient="records", lines=True)
    pd.DataFrame(make_rows(4, offset=50), columns=["text", "label"]).to_parquet(tmp_path / "eval.parquet")
    data = prepare_data(spec_for(tmp_path, f"{{seed: {tmp_path / 'seed.jsonl'}, eval: {tmp_path / 'eval.parquet'}}}"),
                        tmp_path / "out")
    assert len(data.seed) == 8 and len(data.eval) == 8


def test_package_path_reads_a_file_shipped_in_a_package(tmp_path, tiny_data):
    spec = spec_for(tmp_path, "{seed: 'package:not_a_real_pkg_xyz/data.csv', eval: x.csv}")
    with pytest.raises(DataError, match="package `not_a_real_pkg_xyz`.*not installed"):
        prepare_data(spec, tmp_path / "out")


def test_atomic_dir_and_file_leave_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "x.json") as handle:
            handle.write("{")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("whole")
    assert (tmp_path / "model" / "weights").read_text() == "whole"


def test_fingerprints_are_order_independent_and_content_sensitive():
    assert rows_fingerprint(["a", "b"], ["x", "y"]) == rows_fingerprint(["b", "a"], ["y", "x"])
    assert rows_fingerprint(["a", "b"], ["x", "y"]) != rows_fingerprint(["a", "b"], ["y", "x"])
    assert text_fingerprint("a") != text_fingerprint("a ") and len(text_fingerprint("a")) == 16


def test_hugging_face_source_without_datasets_package_says_how_to_fix(tmp_path, tiny_data, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without the `hub` extra
    spec = spec_for(tmp_path, f"{{seed: {{hf_dataset: banking77}}, eval: {tiny_data['eval']}}}")
    with pytest.raises(DataError, match=r"needs the `datasets` package.*\n  fix: pip install datasets"):
        prepare_data(spec, tmp_path / "out")


def test_a_binary_file_is_named_as_one_instead_of_suggesting_an_encoding(tmp_path, tiny_data):
    import zipfile

    path = tmp_path / "seed.csv"  # a spreadsheet saved as .xlsx and renamed: a zip archive
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", "\x00\xff" * 100)
    spec = spec_for(tmp_path, f"{{seed: {path}, eval: {tiny_data['eval']}}}")
    with pytest.raises(DataError) as err:
        prepare_data(spec, tmp_path / "out")
    assert "is a binary file" in str(err.value) and "latin-1" not in str(err.value)
    assert "save as CSV" in str(err.value)


def test_validate_checks_that_every_data_file_exists_and_is_readable(tmp_path, tiny_data):
    from stillhouse.data.io import check_data_files

    spec = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, pool: {tiny_data['pool']}, eval: {tiny_data['eval']}}}")
    assert check_data_files(spec) == [tiny_data["seed"], tiny_data["pool"], tiny_data["eval"]]
    missing = spec_for(tmp_path, f"{{seed: {tiny_data['seed']}, eval: {tmp_path / 'gone.csv'}}}")
    with pytest.raises(DataError, match="data.eval: data file not found"):
        check_data_files(missing)
    if os.geteuid() != 0:  # root reads every file
        tiny_data["pool"].chmod(0)
        with pytest.raises(DataError, match="data.pool: .* is not readable"):
            check_data_files(spec)


def test_utf16_text_is_not_mistaken_for_a_binary_file(tmp_path, tiny_data):
    path = tmp_path / "utf16.csv"
    path.write_bytes(("text,label\n" + "".join(f"{t},{l}\n" for t, l in make_rows(3))).encode("utf-16"))
    spec = spec_for(tmp_path, f"{{seed: {path}, eval: {tiny_data['eval']}}}")
    with pytest.raises(DataError) as err:
        prepare_data(spec, tmp_path / "out")
    assert "binary" not in str(err.value) and "encoding:" in str(err.value)
    fixed = spec_for(tmp_path, f"{{seed: {{path: {path}, encoding: utf-16}}, eval: {tiny_data['eval']}}}")
    assert len(prepare_data(fixed, tmp_path / "out").seed) == 6


def test_exported_feedback_joins_the_seed_after_sampling(tmp_path, tiny_data):
    import json

    rows = make_rows(6)
    source = write_csv(tmp_path / "all.csv", rows + make_rows(6, offset=100))
    fixed, new = rows[0][0], "a brand new customer message"
    feedback = tmp_path / "feedback.jsonl"  # as `stillhouse feedback export ... --label-field label` writes it
    feedback.write_text("".join(json.dumps({"text": t, "label": l, "feedback_id": i}) + "\n"
                                for i, (t, l) in enumerate([(fixed, "negative"), (new, "positive")])))
    spec = spec_for(tmp_path, f"{{seed: {source}, feedback: feedback.jsonl, sampling: {{seed_per_label: 4}}, "
                              f"eval: {tiny_data['eval']}}}")
    data = prepare_data(spec, tmp_path / "out")
    texts = dict(zip(data.seed["text"], data.seed["label"]))
    assert texts[new] == "positive" and texts[fixed] == "negative"  # both kept whatever the sampling drew
    assert list(data.seed["text"]).count(fixed) == 1  # the correction replaced the original row
    assert data.report["feedback_rows"] == 2 and fixed not in set(data.pool["text"])
