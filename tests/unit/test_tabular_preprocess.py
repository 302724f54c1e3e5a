"""Tabular preprocessing: fitted imputation, scaling and one-hot that round-trip through the saved folder."""

import numpy as np
import pandas as pd
import pytest

from stillhouse.errors import DataError
from stillhouse.tasks.tabular.preprocess import MISSING, OTHER, Preprocessor, infer_column_types

FRAME = pd.DataFrame({"income": [10.0, 20.0, None, 30.0], "age": [30, 40, 50, 60],
                      "home": ["rent", "own", "rent", None], "flag": [True, False, True, True]})


def test_types_are_inferred_numbers_numeric_the_rest_categorical():
    assert infer_column_types(FRAME, ["income", "age", "home", "flag"]) == (["income", "age"], ["home", "flag"])


def test_transform_imputes_scales_and_one_hot_encodes(tmp_path):
    pre = Preprocessor.fit(FRAME, ["income", "age"], ["home"])
    assert pre.feature_names == ["income", "age", "home=rent", "home=own", f"home={OTHER}", f"home={MISSING}"]
    out = pre.transform(FRAME)
    assert out.shape == (4, 6) and out.dtype == np.float32
    # income's median 20 fills the gap; after scaling the filled column has mean 0 and sd 1
    filled = np.array([10.0, 20.0, 20.0, 30.0])
    assert out[:, 0] == pytest.approx((filled - filled.mean()) / filled.std(), abs=1e-6)
    assert out[:, 2:].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    unseen = pre.transform(pd.DataFrame({"income": [20.0], "age": [45], "home": ["boat"]}))
    assert unseen[0, 2:].tolist() == [0, 0, 1, 0]
    pre.save(tmp_path)
    again = Preprocessor.load(tmp_path)
    assert again == pre and np.array_equal(again.transform(FRAME), out)


def test_bad_rows_name_the_column_not_the_value():
    pre = Preprocessor.fit(FRAME, ["income", "age"], ["home"])
    with pytest.raises(DataError, match="lack feature column\\(s\\) \\['home'\\]"):
        pre.transform(FRAME.drop(columns="home"))
    with pytest.raises(DataError, match="numeric column `income` has 1 value") as err:
        pre.transform(FRAME.assign(income=["10", "secret-text", None, "3"]))
    assert "secret-text" not in str(err.value)


def test_records_transform_like_frames_and_refuse_the_same_bad_rows():
    pre = Preprocessor.fit(FRAME, ["income", "age"], ["home"])
    rows = [*FRAME.to_dict(orient="records"), {"income": "20", "age": 45, "home": "boat"},
            {"income": None, "age": 33.5, "home": float("nan")}]
    np.testing.assert_allclose(pre.transform_records(rows), pre.transform(pd.DataFrame(rows)), atol=1e-6)
    with pytest.raises(DataError, match="lack feature column\\(s\\) \\['home'\\]"):
        pre.transform_records([{"income": 1.0, "age": 3}])
    with pytest.raises(DataError, match="numeric column `income`") as err:
        pre.transform_records([{"income": "secret-text", "age": 3, "home": "own"}])
    assert "secret-text" not in str(err.value)
