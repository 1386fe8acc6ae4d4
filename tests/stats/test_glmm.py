"""Random-intercept GLMM by adaptive Gauss–Hermite quadrature against lme4 and glmmTMB.

Reference values: tests/stats/reference/ae_glmm_*.json, made by tests/stats/reference/ae_models.R
(lme4 1.1-31, glmmTMB 1.1.5, R 4.2.2 from Debian).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import gammaln, xlogy

from studyman.errors import AnalysisError
from studyman.stats.glmm import GLMMResult, fit_glmm

DATA = Path(__file__).parents[1] / "data" / "reference"
REFERENCE = Path(__file__).parent / "reference"
LOGISTIC = "ANY_AE ~ ARM + C(VISIT)"
COUNTS = "N_AE ~ ARM + C(VISIT)"


def reference(name: str) -> dict[str, Any]:
    return dict(json.loads((REFERENCE / f"{name}.json").read_text()))


@pytest.fixture(scope="module")
def visits() -> pd.DataFrame:
    return pd.read_csv(DATA / "ae_visit.csv")


@pytest.fixture(scope="module")
def laplace_fit(visits: pd.DataFrame) -> GLMMResult:
    return fit_glmm(visits, LOGISTIC, group="SUBJID", family="binomial", n_quadrature=1)


@pytest.fixture(scope="module")
def agq_fit(visits: pd.DataFrame) -> GLMMResult:
    return fit_glmm(visits, LOGISTIC, group="SUBJID", family="binomial", n_quadrature=20)


def assert_coefficients(
    result: GLMMResult, expected: dict[str, Any], *, estimate_rtol: float, se_rtol: float
) -> None:
    assert list(result.coefficients.index) == list(expected["coefficients"])
    for term, values in expected["coefficients"].items():
        row = result.coefficients.loc[term]
        assert row["estimate"] == pytest.approx(values["estimate"], rel=estimate_rtol), term
        assert row["std_error"] == pytest.approx(values["std_error"], rel=se_rtol), term


def test_laplace_logistic_matches_the_exact_laplace_of_lme4_and_glmmtmb(
    laplace_fit: GLMMResult,
) -> None:
    assert laplace_fit.converged, laplace_fit.message
    # lme4::glmer(nAGQ = 1, glmerControl(tolPwrss = 1e-12)) and glmmTMB(family = binomial):
    # both optimise the exact Laplace approximation, as fit_glmm does.
    for name in ("ae_glmm_logistic_nagq1_tight", "ae_glmm_logistic_glmmtmb"):
        expected = reference(name)
        assert_coefficients(laplace_fit, expected, estimate_rtol=1e-5, se_rtol=2e-5)
        assert laplace_fit.random_intercept_sd == pytest.approx(
            expected["random_intercept_sd"], rel=1e-5
        )
        assert laplace_fit.loglik == pytest.approx(expected["loglik"], abs=1e-6)


def test_laplace_logistic_is_within_lme4_default_tolerance_of_lme4_default(
    laplace_fit: GLMMResult,
) -> None:
    # lme4::glmer(nAGQ = 1) with default controls: ARM 0.233563 (SE 0.183792), SD 0.82838.
    # Its inner PIRLS stops at tolPwrss = 1e-7, leaving the Laplace deviance 0.0017 above the
    # exact value (lme4's own devfun at our optimum: 1173.76788 vs 1173.76785 at its own), so its
    # optimum is ~1e-3 relative from the exact one; the test allows exactly that discrepancy.
    expected = reference("ae_glmm_logistic_nagq1")
    assert_coefficients(laplace_fit, expected, estimate_rtol=1.5e-3, se_rtol=5e-3)
    assert laplace_fit.random_intercept_sd == pytest.approx(0.82838, rel=1.5e-3)
    assert laplace_fit.loglik == pytest.approx(expected["loglik"], abs=2e-3)
    # ...but the exact Laplace likelihood is higher than lme4's at its early-stopped optimum.
    assert laplace_fit.loglik > expected["loglik"]


def test_twenty_point_quadrature_logistic_matches_lme4(agq_fit: GLMMResult) -> None:
    # lme4::glmer(ANY_AE ~ ARM + factor(VISIT) + (1 | SUBJID), binomial, nAGQ = 20):
    # ARM 0.239495 (SE 0.193165), random-intercept SD 0.92503, logLik -584.867053.
    expected = reference("ae_glmm_logistic_nagq20")
    assert agq_fit.converged, agq_fit.message
    assert_coefficients(agq_fit, expected, estimate_rtol=1e-4, se_rtol=1e-4)
    assert agq_fit.random_intercept_sd == pytest.approx(expected["random_intercept_sd"], rel=1e-4)
    assert agq_fit.loglik == pytest.approx(expected["loglik"], rel=1e-8)
    assert agq_fit.n_quadrature == 20
    assert (agq_fit.n_observations, agq_fit.n_groups, agq_fit.n_dropped) == (886, 240, 0)


def test_conditional_modes_match_lme4_ranef(agq_fit: GLMMResult) -> None:
    # ranef(glmer(..., nAGQ = 20))$SUBJID for participants 1-10.
    expected = reference("ae_glmm_logistic_nagq20")["conditional_modes_first10"]
    for participant, mode in expected.items():
        assert agq_fit.conditional_modes.loc[int(participant)] == pytest.approx(mode, abs=1e-4)


def test_coefficient_table_has_wald_columns_consistent_with_estimate_and_se(
    agq_fit: GLMMResult,
) -> None:
    table = agq_fit.coefficients
    assert list(table.columns) == [
        "estimate",
        "std_error",
        "z_value",
        "p_value",
        "ci_lower",
        "ci_upper",
    ]
    arm = table.loc["ARM[T.CBT+ADJ]"]
    # lme4 summary(): z value 1.239850609, Pr(>|z|) 0.2150306551
    assert arm["z_value"] == pytest.approx(1.239850609, rel=2e-4)
    assert arm["p_value"] == pytest.approx(0.2150306551, rel=2e-4)
    assert arm["ci_lower"] == pytest.approx(arm["estimate"] - 1.959964 * arm["std_error"])
    assert np.allclose(np.sqrt(np.diag(agq_fit.covariance)), table["std_error"])


def test_quadrature_is_between_laplace_and_a_finer_rule(
    visits: pd.DataFrame, agq_fit: GLMMResult, laplace_fit: GLMMResult
) -> None:
    finer = fit_glmm(visits, LOGISTIC, group="SUBJID", n_quadrature=30)
    # 20 points have converged (to 1e-6) while Laplace is visibly biased for binary data.
    assert finer.loglik == pytest.approx(agq_fit.loglik, abs=1e-6)
    assert abs(laplace_fit.random_intercept_sd - agq_fit.random_intercept_sd) > 0.05


def test_negative_binomial_glmm_with_offset_matches_glmmtmb(visits: pd.DataFrame) -> None:
    # glmmTMB(N_AE ~ ARM + factor(VISIT) + offset(log(DAYS)) + (1 | SUBJID), nbinom2):
    # ARM 0.312778 (SE 0.125393); Laplace, SE from sdreport.
    expected = reference("ae_glmm_negbin")
    result = fit_glmm(
        visits, COUNTS, group="SUBJID", family="negbin", exposure="DAYS", n_quadrature=1
    )
    assert result.converged, result.message
    assert_coefficients(result, expected, estimate_rtol=1e-4, se_rtol=1e-4)
    assert result.random_intercept_sd == pytest.approx(expected["random_intercept_sd"], rel=1e-4)
    assert result.theta == pytest.approx(expected["theta"], rel=1e-4)
    assert result.loglik == pytest.approx(expected["loglik"], rel=1e-9)


def test_poisson_glmm_with_offset_matches_lme4_twenty_points(visits: pd.DataFrame) -> None:
    expected = reference("ae_glmm_poisson_nagq20")
    result = fit_glmm(visits, COUNTS, group="SUBJID", family="poisson", exposure="DAYS")
    assert result.converged, result.message
    assert result.theta is None
    assert_coefficients(result, expected, estimate_rtol=1e-4, se_rtol=1e-4)
    assert result.random_intercept_sd == pytest.approx(expected["random_intercept_sd"], rel=1e-4)
    # lme4's logLik for nAGQ > 1 is relative to the saturated Poisson model; ours is the full one.
    counts = visits["N_AE"].to_numpy(dtype=float)
    saturated = float(np.sum(xlogy(counts, counts) - counts - gammaln(counts + 1.0)))
    assert result.loglik - saturated == pytest.approx(expected["loglik"], rel=1e-8)


def test_offset_column_equals_log_exposure(visits: pd.DataFrame) -> None:
    with_log = visits.assign(LOG_DAYS=np.log(visits["DAYS"]))
    by_offset = fit_glmm(
        with_log, COUNTS, group="SUBJID", family="poisson", offset="LOG_DAYS", n_quadrature=5
    )
    by_exposure = fit_glmm(
        visits, COUNTS, group="SUBJID", family="poisson", exposure="DAYS", n_quadrature=5
    )
    assert by_offset.loglik == pytest.approx(by_exposure.loglik, rel=1e-10)


def test_rows_with_missing_outcome_are_dropped_and_counted(visits: pd.DataFrame) -> None:
    holed = visits.copy()
    holed.loc[[0, 5, 9], "ANY_AE"] = np.nan
    result = fit_glmm(holed, LOGISTIC, group="SUBJID", n_quadrature=1)
    assert result.n_dropped == 3
    assert result.n_observations == 883


def test_non_binary_outcome_names_the_rows(visits: pd.DataFrame) -> None:
    bad = visits.copy()
    bad.loc[7, "ANY_AE"] = 2
    with pytest.raises(AnalysisError, match=r"ANY_AE must be 0 or 1; row\(s\) 7 "):
        fit_glmm(bad, LOGISTIC, group="SUBJID")


def test_non_numeric_outcome_names_the_rows(visits: pd.DataFrame) -> None:
    bad = visits.astype({"N_AE": object})
    bad.loc[[3, 4], "N_AE"] = "two"
    with pytest.raises(AnalysisError, match=r"N_AE is not numeric in row\(s\) 3, 4"):
        fit_glmm(bad, COUNTS, group="SUBJID", family="poisson")


def test_negative_count_names_the_row(visits: pd.DataFrame) -> None:
    bad = visits.copy()
    bad.loc[11, "N_AE"] = -1
    with pytest.raises(AnalysisError, match=r"non-negative whole count; row\(s\) 11 "):
        fit_glmm(bad, COUNTS, group="SUBJID", family="negbin")


def test_missing_participant_id_names_the_row(visits: pd.DataFrame) -> None:
    bad = visits.astype({"SUBJID": object})
    bad.loc[2, "SUBJID"] = None
    with pytest.raises(AnalysisError, match=r"group column SUBJID is missing in row\(s\) 2"):
        fit_glmm(bad, LOGISTIC, group="SUBJID")


def test_all_zero_counts_are_refused(visits: pd.DataFrame) -> None:
    with pytest.raises(AnalysisError, match="N_AE is 0 in every row"):
        fit_glmm(visits.assign(N_AE=0), COUNTS, group="SUBJID", family="poisson")


def test_non_positive_exposure_names_the_row(visits: pd.DataFrame) -> None:
    bad = visits.copy()
    bad.loc[4, "DAYS"] = 0
    with pytest.raises(AnalysisError, match=r"exposure column DAYS is not a positive number"):
        fit_glmm(bad, COUNTS, group="SUBJID", family="poisson", exposure="DAYS")


def test_rank_deficient_design_names_the_term(visits: pd.DataFrame) -> None:
    doubled = visits.assign(ARM_COPY=visits["ARM"])
    with pytest.raises(AnalysisError, match=r"ARM_COPY\[T.CBT\+ADJ\]"):
        fit_glmm(doubled, "ANY_AE ~ ARM + ARM_COPY", group="SUBJID")


def test_unknown_family_and_zero_quadrature_points_are_refused(visits: pd.DataFrame) -> None:
    with pytest.raises(AnalysisError, match="family 'gamma' is not supported"):
        fit_glmm(visits, LOGISTIC, group="SUBJID", family="gamma")  # type: ignore[arg-type]
    with pytest.raises(
        AnalysisError, match=r"n_quadrature must be between 1 \(Laplace\) and 100, got 0"
    ):
        fit_glmm(visits, LOGISTIC, group="SUBJID", n_quadrature=0)


def test_unfinished_optimisation_is_reported_as_not_converged(visits: pd.DataFrame) -> None:
    result = fit_glmm(visits, LOGISTIC, group="SUBJID", n_quadrature=1, max_iterations=1)
    assert not result.converged
    assert "did not converge" in result.message


def test_no_between_participant_variation_is_reported_as_a_singular_fit() -> None:
    # Independent Bernoulli outcomes: the ML random-intercept SD is 0 (lme4: "boundary
    # (singular) fit"); the fixed effects are then those of the plain logistic regression.
    rng = np.random.default_rng(7)
    participants, visits_each = 150, 4
    data = pd.DataFrame(
        {
            "ID": np.repeat(np.arange(participants), visits_each),
            "ARM": np.repeat(rng.integers(0, 2, participants), visits_each),
        }
    )
    data["Y"] = (rng.random(len(data)) < 0.4).astype(int)
    result = fit_glmm(data, "Y ~ ARM", group="ID", n_quadrature=1)
    assert result.random_intercept_sd < 1e-4
    assert "singular fit" in result.message
    # Logistic regression in closed form for one binary covariate: log odds ratio of the arms.
    means = data.groupby("ARM")["Y"].mean()
    log_odds = np.log(means / (1 - means))
    assert result.coefficients["estimate"].iloc[1] == pytest.approx(
        log_odds[1] - log_odds[0], abs=1e-6
    )
