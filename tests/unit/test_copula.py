"""The Gaussian copula keeps each column's distribution and the columns' correlation; scenarios change what
they declare and nothing else."""

import numpy as np
import pandas as pd
import pytest

from stillhouse.synth.copula import GaussianCopula, apply_scenario


def _frame(rows=2000, seed=0):
    rng = np.random.default_rng(seed)
    income = rng.lognormal(8, 0.5, rows)
    debt = income * 0.3 + rng.normal(0, 300, rows)
    home = np.where(income > np.median(income), "own", np.where(rng.uniform(size=rows) < 0.3, "other", "rent"))
    age = rng.integers(18, 80, rows)
    return pd.DataFrame({"income": income, "debt": debt, "age": age, "home": home})


def test_copula_keeps_marginals_correlation_categories_and_whole_numbers():
    real = _frame()
    model = GaussianCopula.fit(real, ["income", "debt", "age"], ["home"], seed=1)
    fake = model.sample(4000, seed=2)
    assert list(fake.columns) == ["income", "debt", "age", "home"] and len(fake) == 4000
    for column in ("income", "debt", "age"):
        assert fake[column].median() == pytest.approx(real[column].median(), rel=0.08)
        assert fake[column].min() >= real[column].min() and fake[column].max() <= real[column].max()
    assert (fake["age"] == fake["age"].round()).all()
    assert fake[["income", "debt"]].corr(method="spearman").iloc[0, 1] == pytest.approx(
        real[["income", "debt"]].corr(method="spearman").iloc[0, 1], abs=0.05)
    assert set(fake["home"]) <= set(real["home"])
    shares = fake["home"].value_counts(normalize=True)
    assert shares["own"] == pytest.approx(real["home"].value_counts(normalize=True)["own"], abs=0.03)
    # the dependence between a category and a number survives: owners have higher incomes in both
    assert fake.groupby("home")["income"].median()["own"] > fake.groupby("home")["income"].median()["rent"]


def test_copula_draws_missing_values_at_the_column_rate():
    real = _frame(1000).astype({"income": float})
    real.loc[real.index[:200], "income"] = np.nan
    fake = GaussianCopula.fit(real, ["income", "debt", "age"], ["home"]).sample(3000, seed=3)
    assert fake["income"].isna().mean() == pytest.approx(0.2, abs=0.03)


def test_scenarios_change_only_what_they_declare():
    real = _frame(10)
    shocked = apply_scenario(real, {"income": {"scale": 0.5}, "home": {"set": "rent"}, "debt": {"add": 100}})
    assert np.allclose(shocked["income"], real["income"] * 0.5)
    assert np.allclose(shocked["debt"], real["debt"] + 100)
    assert (shocked["home"] == "rent").all() and shocked["age"].equals(real["age"])
    with pytest.raises(ValueError, match="unknown scenario operation"):
        apply_scenario(real, {"income": {"double": 2}})
