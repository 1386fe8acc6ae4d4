"""Covariance structures, groups, ML, fallbacks and df methods of fit_mmrm.

Reference values: nlme::gls (R 4.2.2, nlme 3.1.162) in reference/mmrm_nlme.json, produced by
reference/mmrm_nlme.R, and lmerTest 3.1.3 / pbkrtest in reference/mmrm_lmertest.json, produced by
reference/mmrm_lmertest.R, both on fev_data (R package mmrm, Apache-2.0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.stats import MMRMConvergenceError, MMRMResult, fit_mmrm

HERE = Path(__file__).parent
DATA = HERE.parent / "data" / "reference"
NLME = json.loads((HERE / "reference" / "mmrm_nlme.json").read_text())["cases"]
FORMULA = "FEV1 ~ ARMCD * AVISIT + RACE + SEX"


def _fev() -> pd.DataFrame:
    data = pd.read_csv(DATA / "fev_data.csv")
    data["SEX"] = pd.Categorical(data["SEX"], categories=["Male", "Female"])
    return data


def _fit(covariance: str, **kwargs: object) -> MMRMResult:
    options: dict[str, object] = {"df_method": "satterthwaite", **kwargs}
    return fit_mmrm(
        _fev(), FORMULA, subject="USUBJID", visit="AVISIT", covariance=covariance, **options
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fits() -> dict[str, MMRMResult]:
    names = [
        "unstructured",
        "toeplitz",
        "heterogeneous-toeplitz",
        "ar1",
        "heterogeneous-ar1",
        "compound-symmetry",
        "heterogeneous-compound-symmetry",
        "ante-dependence",
    ]
    return {name: _fit(name) for name in names}


@pytest.mark.parametrize(
    "case",
    [
        # UN at the exact REML optimum: SAS stops 6e-6 short of it (see test_mmrm.py)
        "unstructured",
        "ar1",
        "heterogeneous-ar1",
        "compound-symmetry",
        "heterogeneous-compound-symmetry",
        "toeplitz",
        "heterogeneous-toeplitz",
    ],
)
def test_structure_matches_nlme_gls(fits: dict[str, MMRMResult], case: str) -> None:
    reference = NLME[case]
    result = fits[case]
    assert result.covariance_structure == case
    # nlme::gls -2 REML log-likelihood (same constant as SAS)
    assert result.deviance == pytest.approx(reference["deviance"], rel=1e-9)
    estimate = result.coefficients["estimate"].to_numpy()
    std_error = result.coefficients["std_error"].to_numpy()
    assert np.all(np.abs(estimate - reference["estimate"]) <= 1e-3 * std_error)
    assert np.allclose(std_error, reference["std_error"], rtol=1e-4)
    covariance = np.array(reference["covariance"])
    scale = np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
    assert np.all(np.abs(result.covariance.to_numpy() - covariance) <= 1e-4 * scale)


@pytest.mark.parametrize(
    ("covariance", "case"), [("unstructured", "unstructured_ml"), ("ar1", "ar1_ml")]
)
def test_maximum_likelihood_matches_nlme_gls(covariance: str, case: str) -> None:
    reference = NLME[case]
    result = _fit(covariance, method="ml")
    assert result.method == "ml"
    # nlme::gls(method = "ML") -2 log-likelihood
    assert result.deviance == pytest.approx(reference["deviance"], rel=1e-9)
    std_error = result.coefficients["std_error"].to_numpy()
    estimate = result.coefficients["estimate"].to_numpy()
    assert np.all(np.abs(estimate - reference["estimate"]) <= 1e-3 * std_error)
    # nlme scales the ML covariance of beta by N / (N - p); SAS and studyman do not
    n, p = result.n_observations, len(estimate)
    assert np.allclose(std_error * np.sqrt(n / (n - p)), reference["std_error"], rtol=1e-4)
    # ML: AIC and BIC count the fixed effects too (SAS)
    q = len(result.covariance_parameters)
    assert result.aic == pytest.approx(result.deviance + 2 * (q + p))
    assert result.bic == pytest.approx(result.deviance + (q + p) * np.log(result.n_subjects))


def test_nested_structures_never_fit_better_than_their_generalisations(
    fits: dict[str, MMRMResult],
) -> None:
    deviance = {name: fit.deviance for name, fit in fits.items()}
    tolerance = 1e-6
    pairs = [
        ("unstructured", "heterogeneous-compound-symmetry"),
        ("heterogeneous-compound-symmetry", "compound-symmetry"),
        ("unstructured", "heterogeneous-toeplitz"),
        ("heterogeneous-toeplitz", "toeplitz"),
        ("toeplitz", "ar1"),
        ("heterogeneous-toeplitz", "heterogeneous-ar1"),
        ("heterogeneous-ar1", "ar1"),
        ("unstructured", "ante-dependence"),
        ("ante-dependence", "heterogeneous-ar1"),
        ("toeplitz", "compound-symmetry"),
    ]
    for general, special in pairs:
        assert deviance[general] <= deviance[special] + tolerance, (general, special)


def test_parameter_counts_enter_aic(fits: dict[str, MMRMResult]) -> None:
    expected = {
        "unstructured": 10,
        "toeplitz": 4,
        "heterogeneous-toeplitz": 7,
        "ar1": 2,
        "heterogeneous-ar1": 5,
        "compound-symmetry": 2,
        "heterogeneous-compound-symmetry": 5,
        "ante-dependence": 7,
    }
    for name, q in expected.items():
        fit = fits[name]
        assert len(fit.covariance_parameters) == q, name
        assert fit.aic == pytest.approx(fit.deviance + 2 * q), name


def test_ar1_parameters_are_variance_and_correlation(fits: dict[str, MMRMResult]) -> None:
    parameters = fits["ar1"].covariance_parameters
    assert list(parameters.index) == ["Var", "AR(1)"]
    variance, rho = parameters["estimate"]
    covariance = fits["ar1"].covariance.to_numpy()
    assert covariance[0, 0] == pytest.approx(variance)
    assert covariance[0, 2] == pytest.approx(variance * rho**2)
    assert np.all(parameters["std_error"] > 0)


def test_structure_names_accept_sas_types() -> None:
    result = _fit("CSH")
    assert result.covariance_structure == "heterogeneous-compound-symmetry"


def test_separate_covariance_per_group_equals_separate_fits() -> None:
    data = _fev()
    formula = "FEV1 ~ ARMCD * AVISIT"
    grouped = fit_mmrm(
        data, formula, subject="USUBJID", visit="AVISIT", group="ARMCD", df_method="satterthwaite"
    )
    # the design is block diagonal by arm, so the grouped REML fit is two independent fits
    separate = {
        arm: fit_mmrm(
            data[data["ARMCD"] == arm],
            "FEV1 ~ AVISIT",
            subject="USUBJID",
            visit="AVISIT",
            df_method="satterthwaite",
        )
        for arm in ("PBO", "TRT")
    }
    assert grouped.deviance == pytest.approx(
        separate["PBO"].deviance + separate["TRT"].deviance, rel=1e-10
    )
    assert list(grouped.covariance.index.get_level_values(0).unique()) == ["PBO", "TRT"]
    for arm, fit in separate.items():
        block = grouped.covariance.loc[arm].to_numpy()
        assert np.allclose(block, fit.covariance.to_numpy(), rtol=1e-6)
    assert len(grouped.covariance_parameters) == 20
    ungrouped = fit_mmrm(data, formula, subject="USUBJID", visit="AVISIT")
    assert grouped.deviance <= ungrouped.deviance
    # TRT - PBO at VIS4 equals the difference of the arms' own visit-4 means
    diff = grouped.lsmeans_contrasts("ARMCD").iloc[-1]
    pbo = separate["PBO"].lsmeans("AVISIT").iloc[-1]
    trt = separate["TRT"].lsmeans("AVISIT").iloc[-1]
    assert diff["estimate"] == pytest.approx(trt["estimate"] - pbo["estimate"], rel=1e-8)
    assert diff["std_error"] == pytest.approx(
        np.hypot(trt["std_error"], pbo["std_error"]), rel=1e-6
    )


def _unidentifiable_data() -> pd.DataFrame:
    """fev_data where no subject has both VIS1 and VIS4: UN(4,1) cannot be estimated."""
    data = _fev()
    subjects = sorted(data["USUBJID"].unique())
    half = set(subjects[: len(subjects) // 2])
    drop = (data["USUBJID"].isin(half) & (data["AVISIT"] == "VIS4")) | (
        ~data["USUBJID"].isin(half) & (data["AVISIT"] == "VIS1")
    )
    return data.loc[~drop]


def test_fallback_is_used_and_reported_when_structure_fails() -> None:
    result = fit_mmrm(
        _unidentifiable_data(),
        FORMULA,
        subject="USUBJID",
        visit="AVISIT",
        covariance="unstructured",
        fallbacks=("toeplitz", "heterogeneous-ar1"),
    )
    assert result.converged
    assert result.covariance_structure == "heterogeneous-ar1"
    assert result.fallback_reason is not None
    assert "unstructured did not converge" in result.fallback_reason
    assert "toeplitz did not converge" in result.fallback_reason
    assert "not identifiable" in result.fallback_reason


def test_non_convergence_raises_with_every_attempt() -> None:
    with pytest.raises(MMRMConvergenceError) as error:
        fit_mmrm(
            _unidentifiable_data(),
            FORMULA,
            subject="USUBJID",
            visit="AVISIT",
            fallbacks=("heterogeneous-toeplitz",),
        )
    assert [name for name, _ in error.value.attempts] == [
        "unstructured",
        "heterogeneous-toeplitz",
    ]
    assert "did not converge" in str(error.value)


def test_iteration_limit_is_reported_not_hidden() -> None:
    with pytest.raises(MMRMConvergenceError, match="no convergence in 1 iterations"):
        fit_mmrm(_fev(), FORMULA, subject="USUBJID", visit="AVISIT", max_iterations=1)


def test_residual_df_is_observations_minus_rank() -> None:
    result = _fit("unstructured", df_method="residual")
    assert np.all(result.coefficients["df"] == 537 - 11)


def test_between_within_df_split_by_whether_a_column_varies_within_subject() -> None:
    result = _fit("unstructured", df_method="between-within")
    df = result.coefficients["df"]
    # between: Intercept, ARMCD, RACE (2), SEX -> 197 subjects - 5
    for term in ["Intercept", "ARMCD[T.TRT]", "RACE[T.White]", "SEX[T.Female]"]:
        assert df[term] == 197 - 5, term
    # within: the 6 visit and arm-by-visit columns -> 537 - 197 - 6
    for term in ["AVISIT[T.VIS2]", "ARMCD[T.TRT]:AVISIT[T.VIS4]"]:
        assert df[term] == 537 - 197 - 6, term
    # a contrast touching a within-subject column takes the within df
    diffs = result.lsmeans_contrasts("ARMCD")
    assert list(diffs["df"]) == [192, 334, 334, 334]


def test_kenward_roger_linear_equals_kenward_roger_for_unstructured() -> None:
    exact = _fit("unstructured", df_method="kenward-roger")
    linear = _fit("unstructured", df_method="kenward-roger-linear")
    assert np.allclose(exact.coefficients["std_error"], linear.coefficients["std_error"])


def test_kenward_roger_second_derivative_term_matters_for_nonlinear_structure() -> None:
    exact = _fit("heterogeneous-ar1", df_method="kenward-roger")
    linear = _fit("heterogeneous-ar1", df_method="kenward-roger-linear")
    satterthwaite = _fit("heterogeneous-ar1", df_method="satterthwaite")
    difference = np.abs(exact.coefficients["std_error"] - linear.coefficients["std_error"])
    assert float(difference.max()) > 1e-6
    # both adjust the model-based standard errors upwards
    assert np.all(linear.coefficients["std_error"] >= satterthwaite.coefficients["std_error"])
    assert np.allclose(exact.coefficients["estimate"], satterthwaite.coefficients["estimate"])


def test_grouped_kenward_roger_equals_separate_kenward_roger_fits() -> None:
    data = _fev()
    grouped = fit_mmrm(
        data, "FEV1 ~ ARMCD * AVISIT", subject="USUBJID", visit="AVISIT", group="ARMCD"
    )
    means = grouped.lsmeans("ARMCD").set_index(["visit", "level"])
    for arm in ("PBO", "TRT"):
        alone = fit_mmrm(
            data[data["ARMCD"] == arm], "FEV1 ~ AVISIT", subject="USUBJID", visit="AVISIT"
        ).lsmeans("AVISIT")
        for _, row in alone.iterrows():
            ours = means.loc[(row["visit"], arm)]
            assert ours["estimate"] == pytest.approx(row["estimate"], rel=1e-8)
            assert ours["std_error"] == pytest.approx(row["std_error"], rel=1e-6)
            assert ours["df"] == pytest.approx(row["df"], rel=1e-5)


LMERTEST = json.loads((HERE / "reference" / "mmrm_lmertest.json").read_text())


def test_compound_symmetry_satterthwaite_matches_lmertest(fits: dict[str, MMRMResult]) -> None:
    """lmerTest on the equivalent random-intercept model (reference/mmrm_lmertest.R).

    Satterthwaite df do not depend on the variance parametrisation, so they must agree exactly,
    including the Type III F tests (eigen-decomposition method, SAS Type III hypotheses).
    """
    result = fits["compound-symmetry"]
    assert result.deviance == pytest.approx(LMERTEST["deviance"], rel=1e-9)
    table = result.coefficients
    assert np.allclose(table["estimate"], LMERTEST["estimate"], rtol=1e-7, atol=1e-7)
    assert np.allclose(table["std_error"], LMERTEST["std_error"], rtol=1e-6)
    assert np.allclose(table["df"], LMERTEST["df"], rtol=1e-6)
    tests = result.type3_tests()
    assert list(tests["term"]) == LMERTEST["anova_terms"]
    assert np.allclose(tests["num_df"], LMERTEST["anova_num_df"])
    assert np.allclose(tests["den_df"], LMERTEST["anova_den_df"], rtol=1e-6)
    assert np.allclose(tests["f_value"], LMERTEST["anova_f"], rtol=1e-6)


def test_compound_symmetry_kenward_roger_close_to_pbkrtest() -> None:
    """pbkrtest (through lmerTest) uses the expected information of lme4's parameters, SAS and
    studyman the observed information: standard errors and F agree to 1e-4, df to 2 %."""
    result = _fit("compound-symmetry", df_method="kenward-roger")
    table = result.coefficients
    assert np.allclose(table["std_error"], LMERTEST["kr_std_error"], rtol=1e-4)
    assert np.allclose(table["df"], LMERTEST["kr_df"], rtol=2e-2)
    tests = result.type3_tests()
    assert np.allclose(tests["f_value"], LMERTEST["kr_anova_f"], rtol=1e-4)
    assert np.allclose(tests["den_df"], LMERTEST["kr_anova_den_df"], rtol=2e-2)
    # and Kenward-Roger is not Satterthwaite: the adjustment is visible
    satterthwaite = _fit("compound-symmetry")
    assert not np.allclose(table["std_error"], satterthwaite.coefficients["std_error"], rtol=1e-6)
