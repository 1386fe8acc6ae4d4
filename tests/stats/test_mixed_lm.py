"""Random intercept and slope model (statsmodels MixedLM wrapper) against lme4::lmer.

Reference values: tests/stats/reference/lmer_random_slope_antidepressant*.json, made by
tests/stats/reference/ae_models.R (lme4 1.1-31, R 4.2.2 from Debian) on the antidepressant data
with WEEK = 1, 2, 4, 6 for VISIT 4, 5, 6, 7.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from studyman.errors import AnalysisError
from studyman.stats.mixed_lm import RandomSlopeResult, fit_random_slope

DATA = Path(__file__).parents[1] / "data" / "reference"
REFERENCE = Path(__file__).parent / "reference"
FORMULA = "CHANGE ~ THERAPY * WEEK + BASVAL"


def reference(name: str) -> dict[str, Any]:
    return dict(json.loads((REFERENCE / f"{name}.json").read_text()))


@pytest.fixture(scope="module")
def antidepressant() -> pd.DataFrame:
    data = pd.read_csv(DATA / "antidepressant.csv")
    return data.assign(WEEK=data["VISIT"].map({4: 1.0, 5: 2.0, 6: 4.0, 7: 6.0}))


def assert_matches_lmer(result: RandomSlopeResult, expected: dict[str, Any]) -> None:
    assert result.converged, result.message
    assert list(result.coefficients.index) == list(expected["coefficients"])
    for term, values in expected["coefficients"].items():
        row = result.coefficients.loc[term]
        assert row["estimate"] == pytest.approx(values["estimate"], rel=1e-4), term
        assert row["std_error"] == pytest.approx(values["std_error"], rel=1e-4), term
    covariance = result.random_effects_covariance.to_numpy()
    assert covariance[0, 0] == pytest.approx(expected["intercept_variance"], rel=1e-4)
    assert covariance[1, 1] == pytest.approx(expected["slope_variance"], rel=1e-4)
    assert covariance[0, 1] == pytest.approx(expected["intercept_slope_covariance"], rel=1e-3)
    assert result.residual_variance == pytest.approx(expected["residual_variance"], rel=1e-4)
    assert result.loglik == pytest.approx(expected["loglik"], rel=1e-8)


def test_reml_fit_matches_lmer(antidepressant: pd.DataFrame) -> None:
    # lmer(CHANGE ~ THERAPY * WEEK + BASVAL + (WEEK | PATIENT)): THERAPY:WEEK 0.577300
    # (SE 0.188518), REML logLik -1765.710266.
    result = fit_random_slope(antidepressant, FORMULA, group="PATIENT", time="WEEK")
    assert_matches_lmer(result, reference("lmer_random_slope_antidepressant"))
    assert result.method == "REML"
    assert (result.n_observations, result.n_groups, result.n_dropped) == (608, 172, 0)
    assert list(result.random_effects_covariance.index) == ["Intercept", "WEEK"]


def test_ml_fit_matches_lmer(antidepressant: pd.DataFrame) -> None:
    result = fit_random_slope(antidepressant, FORMULA, group="PATIENT", time="WEEK", method="ML")
    assert_matches_lmer(result, reference("lmer_random_slope_antidepressant_ml"))


def test_missing_outcome_and_time_rows_are_dropped_and_counted(
    antidepressant: pd.DataFrame,
) -> None:
    holed = antidepressant.iloc[:200].copy()  # a subset keeps the fit quick
    holed.loc[[0, 1], "CHANGE"] = np.nan
    holed.loc[[10], "WEEK"] = np.nan
    result = fit_random_slope(holed, FORMULA, group="PATIENT", time="WEEK")
    assert (result.n_observations, result.n_dropped) == (197, 3)


def test_non_numeric_time_names_the_rows(antidepressant: pd.DataFrame) -> None:
    bad = antidepressant.astype({"WEEK": object})
    bad.loc[[4, 6], "WEEK"] = "week 2"
    with pytest.raises(AnalysisError, match=r"time column WEEK is not numeric in row\(s\) 4, 6"):
        fit_random_slope(bad, FORMULA, group="PATIENT", time="WEEK")


def test_missing_participant_names_the_row(antidepressant: pd.DataFrame) -> None:
    bad = antidepressant.copy()
    bad.loc[3, "PATIENT"] = np.nan
    with pytest.raises(AnalysisError, match=r"PATIENT is missing in row\(s\) 3"):
        fit_random_slope(bad, FORMULA, group="PATIENT", time="WEEK")


def test_non_numeric_outcome_names_the_row(antidepressant: pd.DataFrame) -> None:
    bad = antidepressant.astype({"CHANGE": object})
    bad.loc[12, "CHANGE"] = "n/a?"
    with pytest.raises(AnalysisError, match=r"CHANGE is not numeric in row\(s\) 12"):
        fit_random_slope(bad, FORMULA, group="PATIENT", time="WEEK")
