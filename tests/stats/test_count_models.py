"""Per-participant Poisson and NB2 rate models against R (glm, glmmTMB).

Reference values: tests/stats/reference/ae_nb2_subject.json and ae_poisson_subject.json, made by
tests/stats/reference/ae_models.R (glmmTMB 1.1.5, R 4.2.2 from Debian).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from studyman.errors import AnalysisError
from studyman.stats.count_models import fit_negative_binomial, fit_poisson

DATA = Path(__file__).parents[1] / "data" / "reference"
REFERENCE = Path(__file__).parent / "reference"


def reference(name: str) -> dict[str, Any]:
    return dict(json.loads((REFERENCE / f"{name}.json").read_text()))


@pytest.fixture(scope="module")
def subjects() -> pd.DataFrame:
    return pd.read_csv(DATA / "ae_subject.csv")


def test_negative_binomial_matches_glmmtmb_with_joint_information_se(
    subjects: pd.DataFrame,
) -> None:
    # glmmTMB(N_AE ~ ARM + offset(log(DAYS)), family = nbinom2): ARM 0.243336 (SE 0.123331),
    # theta 1.41885, logLik -664.48611.  (MASS::glm.nb: SE 0.122633, theta held fixed.)
    expected = reference("ae_nb2_subject")
    result = fit_negative_binomial(subjects, "N_AE ~ ARM", exposure="DAYS")
    assert result.converged, result.message
    for term, values in expected["coefficients"].items():
        assert result.coefficients.loc[term, "estimate"] == pytest.approx(
            values["estimate"], rel=1e-6
        )
        assert result.coefficients.loc[term, "std_error"] == pytest.approx(
            values["std_error"], rel=1e-5
        )
    assert result.theta == pytest.approx(expected["theta"], rel=1e-6)
    assert result.loglik == pytest.approx(expected["loglik"], rel=1e-10)
    assert result.aic == pytest.approx(-2 * expected["loglik"] + 6, rel=1e-10)
    # Joint SE is larger than the theta-fixed SE of MASS::glm.nb (0.122633).
    assert np.sqrt(result.covariance.to_numpy()[1, 1]) > 0.122633
    assert result.theta_std_error is not None
    assert result.theta_std_error > 0


def test_poisson_matches_r_glm(subjects: pd.DataFrame) -> None:
    # glm(N_AE ~ ARM + offset(log(DAYS)), family = poisson): ARM 0.263740 (SE 0.054802).
    expected = reference("ae_poisson_subject")
    result = fit_poisson(subjects, "N_AE ~ ARM", exposure="DAYS")
    assert result.converged, result.message
    assert result.theta is None
    for term, values in expected["coefficients"].items():
        assert result.coefficients.loc[term, "estimate"] == pytest.approx(
            values["estimate"], rel=1e-8
        )
        assert result.coefficients.loc[term, "std_error"] == pytest.approx(
            values["std_error"], rel=1e-5
        )  # R's IRLS stops at a deviance change of 1e-8: its SE is good to ~5e-6
    assert result.loglik == pytest.approx(expected["loglik"], rel=1e-10)


def test_negative_binomial_without_overdispersion_is_not_reported_as_converged() -> None:
    # Counts far less variable than Poisson: theta runs off to infinity.
    rng = np.random.default_rng(20261125)
    days = np.full(200, 100.0)
    counts = np.where(np.arange(200) % 2 == 0, 5, 6)
    arm = np.where(rng.random(200) < 0.5, "A", "B")
    data = pd.DataFrame({"N": counts, "ARM": arm, "DAYS": days})
    result = fit_negative_binomial(data, "N ~ ARM", exposure="DAYS")
    assert not result.converged
    assert "did not converge" in result.message


def test_missing_count_is_dropped_and_counted(subjects: pd.DataFrame) -> None:
    holed = subjects.copy()
    holed.loc[[1, 2], "N_AE"] = np.nan
    result = fit_negative_binomial(holed, "N_AE ~ ARM", exposure="DAYS")
    assert (result.n_observations, result.n_dropped) == (238, 2)


def test_fractional_count_names_the_row(subjects: pd.DataFrame) -> None:
    bad = subjects.astype({"N_AE": float})
    bad.loc[17, "N_AE"] = 2.5
    with pytest.raises(AnalysisError, match=r"row\(s\) 17"):
        fit_poisson(bad, "N_AE ~ ARM", exposure="DAYS")


def test_missing_exposure_column_is_named(subjects: pd.DataFrame) -> None:
    with pytest.raises(AnalysisError, match="column\\(s\\) EXPOSURE_DAYS not in the data"):
        fit_negative_binomial(subjects, "N_AE ~ ARM", exposure="EXPOSURE_DAYS")


def test_all_zero_counts_are_refused(subjects: pd.DataFrame) -> None:
    with pytest.raises(AnalysisError, match="no events"):
        fit_negative_binomial(subjects.assign(N_AE=0), "N_AE ~ ARM", exposure="DAYS")
