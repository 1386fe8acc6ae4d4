"""fit_mmrm(vcov="empirical") against SAS PROC MIXED's EMPIRICAL option.

Reference: SAS PROC MIXED listings and CSV exports in the R package mmrm's design folder
(openpharma/mmrm, ``design/Robust/empirical_*``, Apache-2.0; see tests/data/SOURCES.md), copied
into ``reference/sas_empirical.json`` with the source of every entry: ``MODEL FEV1 = ARMCD``,
``REPEATED AVISIT / SUBJECT=USUBJID TYPE=...``, REML, ``EMPIRICAL``, ``DDFM=BETWITHIN`` (SAS's
default with EMPIRICAL), ARMCD reference level PBO, on fev_data.

Tolerances. SAS prints estimates, SEs, the covariance matrix and LS means to 4 decimals, t and F
values to 2; its CSV exports carry full digits. SAS stops Newton-Raphson at its relative-Hessian
criterion, up to 1.3e-5 above the exact REML optimum here, which moves its covariance parameters,
and with them the sandwich, by up to 6.3e-5 relative (CSH), its SEs by up to 3.2e-5 and its
estimates by up to 2.8e-5. ``test_sandwich_at_sas_covariance_parameters_reproduces_sas`` shows
that this, not the formula, is the whole gap: evaluated at SAS's printed covariance parameters our
sandwich matches SAS's full digits to 1e-5 (within the rounding of those parameters). So a printed
value must match within half a unit of its last digit plus 1e-4 relative, a full-digit value within
1e-4 relative, and a p value within ``t^2 * 1e-4`` relative (a two-sided tail moves by
``t * delta_t``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import formulaic
import numpy as np
import pandas as pd
import pytest

from studyman.errors import AnalysisError
from studyman.stats import MMRMResult, fit_mmrm
from studyman.stats._mmrm_engine import Engine, build_patterns, empirical_meat
from studyman.stats.covariance import get_structure

DATA = Path(__file__).parents[1] / "data" / "reference"
REFERENCE = json.loads((Path(__file__).parent / "reference" / "sas_empirical.json").read_text())
SAS_FITS: dict[str, dict[str, Any]] = REFERENCE["fits"]
SAS_TYPES = sorted(SAS_FITS)
# SAS's early stop moves quantities by up to 6.3e-5 relative (module docstring)
EARLY_STOP = 1e-4


def _fev() -> pd.DataFrame:
    data = pd.read_csv(DATA / "fev_data.csv")
    # SAS: CLASS ARMCD(ref='PBO'); in formulaic the first category is the reference
    data["ARMCD"] = pd.Categorical(data["ARMCD"], categories=["PBO", "TRT"])
    data["SEX"] = pd.Categorical(data["SEX"], categories=["Male", "Female"])
    return data


def _close_to_printed(value: float, printed: float, decimals: int) -> bool:
    """Within half a unit of SAS's last printed digit plus SAS's early-stop effect."""
    return abs(value - printed) <= 0.5 * 10.0**-decimals + EARLY_STOP * abs(printed)


@pytest.fixture(scope="module")
def empirical_fits() -> dict[str, MMRMResult]:
    data = _fev()
    return {
        sas_type: fit_mmrm(
            data,
            "FEV1 ~ ARMCD",
            subject="USUBJID",
            visit="AVISIT",
            covariance=entry["structure"],
            vcov="empirical",
            df_method="between-within",
        )
        for sas_type, entry in SAS_FITS.items()
    }


@pytest.mark.parametrize("sas_type", SAS_TYPES)
def test_empirical_covariance_matrix_matches_sas(
    empirical_fits: dict[str, MMRMResult], sas_type: str
) -> None:
    result = empirical_fits[sas_type]
    sas = SAS_FITS[sas_type]
    assert result.vcov == "empirical"
    assert result.df_method == "between-within"  # SAS's default with EMPIRICAL
    covariance = result.coefficient_covariance()
    assert list(covariance.index) == REFERENCE["coefficient_order"]
    assert list(covariance.columns) == REFERENCE["coefficient_order"]
    ours = covariance.to_numpy()
    # SAS "Empirical Covariance Matrix for Fixed Effects" (4 decimals) and its CSV (full digits)
    for i in range(2):
        for j in range(2):
            assert _close_to_printed(ours[i, j], sas["covb_printed"][i][j], 4), (i, j)
    np.testing.assert_allclose(ours, np.array(sas["covb"]), rtol=EARLY_STOP)


@pytest.mark.parametrize("sas_type", SAS_TYPES)
def test_empirical_estimates_errors_df_and_t_match_sas(
    empirical_fits: dict[str, MMRMResult], sas_type: str
) -> None:
    table = empirical_fits[sas_type].coefficients
    assert list(table.index) == REFERENCE["coefficient_order"]
    for term, sas in SAS_FITS[sas_type]["coefficients"].items():
        row = table.loc[term]
        # SAS "Solution for Fixed Effects": estimate and SE 4 decimals, t 2 decimals
        assert _close_to_printed(row["estimate"], sas["estimate"], 4), term
        assert _close_to_printed(row["std_error"], sas["std_error"], 4), term
        assert _close_to_printed(row["t_value"], sas["t_value"], 2), term
        # between-within: 197 subjects with an observation minus 2 between-subject columns
        assert row["df"] == sas["df"] == 195, term
        assert row["std_error"] ** 2 == pytest.approx(
            empirical_fits[sas_type].coefficient_covariance().loc[term, term], rel=1e-12
        )


@pytest.mark.parametrize("sas_type", SAS_TYPES)
def test_empirical_type3_f_test_matches_sas(
    empirical_fits: dict[str, MMRMResult], sas_type: str
) -> None:
    sas = SAS_FITS[sas_type]["type3"]
    tests = empirical_fits[sas_type].type3_tests()
    assert list(tests["term"]) == [sas["term"]]
    row = tests.iloc[0]
    assert row["num_df"] == sas["num_df"]
    assert row["den_df"] == sas["den_df"]
    # SAS "Type 3 Tests of Fixed Effects" F value, 2 decimals; for 1 df it is the squared t of
    # the TRT - PBO difference (SAS CSV, full digits)
    assert _close_to_printed(row["f_value"], sas["f_value"], 2)
    t_sas = SAS_FITS[sas_type]["difference"]["t_value"]
    assert row["f_value"] == pytest.approx(t_sas**2, rel=2 * EARLY_STOP)


@pytest.mark.parametrize("sas_type", SAS_TYPES)
def test_empirical_lsmeans_match_sas_at_every_visit(
    empirical_fits: dict[str, MMRMResult], sas_type: str
) -> None:
    lsmeans = empirical_fits[sas_type].lsmeans("ARMCD")
    # the model has no visit term: every visit carries SAS's one LS mean per arm
    assert sorted(set(lsmeans["visit"])) == ["VIS1", "VIS2", "VIS3", "VIS4"]
    assert len(lsmeans) == 8
    for _, row in lsmeans.iterrows():
        sas = SAS_FITS[sas_type]["lsmeans"][row["level"]]
        for column in ("estimate", "std_error", "ci_lower", "ci_upper"):
            assert _close_to_printed(row[column], sas[column], 4), (row["level"], column)
        assert _close_to_printed(row["t_value"], sas["t_value"], 2), row["level"]
        assert row["df"] == sas["df"]


@pytest.mark.parametrize("sas_type", SAS_TYPES)
def test_empirical_lsmean_differences_match_sas(
    empirical_fits: dict[str, MMRMResult], sas_type: str
) -> None:
    diffs = empirical_fits[sas_type].lsmeans_contrasts("ARMCD")
    assert list(diffs["visit"]) == ["VIS1", "VIS2", "VIS3", "VIS4"]
    assert set(diffs["level"]) == {"TRT"}
    assert set(diffs["reference"]) == {"PBO"}
    printed = SAS_FITS[sas_type]["difference_printed"]
    full = SAS_FITS[sas_type]["difference"]
    for _, row in diffs.iterrows():
        # SAS "Differences of Least Squares Means" (printed) and its CSV export (full digits)
        for column in ("estimate", "std_error", "ci_lower", "ci_upper"):
            assert _close_to_printed(row[column], printed[column], 4), column
            assert row[column] == pytest.approx(full[column], rel=EARLY_STOP), column
        assert _close_to_printed(row["t_value"], printed["t_value"], 2)
        assert row["t_value"] == pytest.approx(full["t_value"], rel=EARLY_STOP)
        assert row["df"] == full["df"] == 195
        assert row["p_value"] == pytest.approx(
            full["p_value"], rel=full["t_value"] ** 2 * EARLY_STOP
        )


@pytest.mark.parametrize("sas_type", SAS_TYPES)
def test_empirical_fits_reach_the_optimum_sas_stops_just_short_of(
    empirical_fits: dict[str, MMRMResult], sas_type: str
) -> None:
    # SAS's -2 Res Log Likelihood at its last iteration lies 0 to 1.3e-5 above the optimum
    gap = SAS_FITS[sas_type]["deviance_last_iteration"] - empirical_fits[sas_type].deviance
    assert -1e-7 <= gap <= 2e-5


def _sas_parameters(sas_type: str) -> np.ndarray:
    """SAS's printed covariance parameters in the order of our structure's parameters."""
    printed = SAS_FITS[sas_type]["covariance_parameters"]
    names = get_structure(SAS_FITS[sas_type]["structure"]).parameter_names(4)
    assert names == list(printed), names
    return np.array([printed[name] for name in names], dtype=np.float64)


@pytest.mark.parametrize("sas_type", ["UN", "CSH", "ARH(1)", "ANTE(1)"])
def test_sandwich_at_sas_covariance_parameters_reproduces_sas(sas_type: str) -> None:
    """Evaluated where SAS stopped, the sandwich gives SAS's full digits.

    The structures whose fits show the largest early-stop gaps (up to 6.3e-5 relative at the
    exact optimum) and whose parameters SAS prints to 4-6 significant digits; the rounding of
    those digits alone moves the sandwich by up to about 1e-5.
    """
    data = _fev().dropna(subset=["FEV1"])
    x = np.asarray(formulaic.model_matrix("ARMCD", data), dtype=np.float64)
    y = data["FEV1"].to_numpy(dtype=np.float64)
    subjects = pd.factorize(data["USUBJID"])[0].astype(np.int64)
    visits = pd.factorize(data["AVISIT"], sort=True)[0].astype(np.int64)
    groups = np.zeros(subjects.max() + 1, dtype=np.int64)
    # the patterns hold y itself, so delta is the GLS estimate
    patterns = build_patterns(x, y, subjects, visits, groups, 4)
    structure = get_structure(SAS_FITS[sas_type]["structure"])
    engine = Engine(patterns, structure, 4, 1, y.size, x.shape[1], True)
    phi = _sas_parameters(sas_type)
    evaluation = engine.evaluate(phi)
    assert evaluation.objective == pytest.approx(
        SAS_FITS[sas_type]["deviance_last_iteration"], abs=3e-6
    )
    beta = evaluation.delta
    meat = empirical_meat(engine.sigmas(phi), x, y - x @ beta, subjects, visits, groups)
    sandwich = evaluation.phi_matrix @ meat @ evaluation.phi_matrix
    np.testing.assert_allclose(sandwich, np.array(SAS_FITS[sas_type]["covb"]), rtol=1e-5)
    assert beta[1] == pytest.approx(SAS_FITS[sas_type]["difference"]["estimate"], rel=1e-5)


def test_empirical_sandwich_equals_per_subject_sum_with_groups_and_missing_visits() -> None:
    """The pattern-vectorised sandwich equals its definition summed subject by subject.

    A larger model (visit-varying columns, intermittent missing visits, one covariance matrix
    per arm) than the SAS references; the per-subject sum uses only the reported covariance
    matrices and estimates.
    """
    data = _fev()
    formula = "FEV1 ~ ARMCD * AVISIT + RACE + SEX"
    result = fit_mmrm(
        data,
        formula,
        subject="USUBJID",
        visit="AVISIT",
        covariance="heterogeneous-ar1",
        group="ARMCD",
        vcov="empirical",
        df_method="between-within",
    )
    used = data.dropna(subset=["FEV1"])
    design = formulaic.model_matrix("ARMCD * AVISIT + RACE + SEX", used)
    assert list(design.columns) == list(result.coefficients.index)
    x = np.asarray(design, dtype=np.float64)
    y = used["FEV1"].to_numpy(dtype=np.float64)
    beta = result.coefficients["estimate"].to_numpy()
    visit_levels = ["VIS1", "VIS2", "VIS3", "VIS4"]
    bread = np.zeros((x.shape[1], x.shape[1]))
    meat = np.zeros_like(bread)
    for _, rows in used.groupby("USUBJID", observed=True).indices.items():
        arm = used["ARMCD"].iloc[rows[0]]
        sigma = result.covariance.loc[arm].loc[visit_levels, visit_levels].to_numpy()
        at = [visit_levels.index(v) for v in used["AVISIT"].iloc[rows]]
        w = np.linalg.inv(sigma[np.ix_(at, at)])
        score = x[rows].T @ w @ (y[rows] - x[rows] @ beta)
        bread += x[rows].T @ w @ x[rows]
        meat += np.outer(score, score)
    phi = np.linalg.inv(bread)
    np.testing.assert_allclose(
        result.coefficient_covariance().to_numpy(), phi @ meat @ phi, rtol=1e-8, atol=1e-12
    )
    # between-within df as for the model-based covariance: visit columns get within df
    model = fit_mmrm(
        data,
        formula,
        subject="USUBJID",
        visit="AVISIT",
        covariance="heterogeneous-ar1",
        group="ARMCD",
        df_method="between-within",
    )
    assert result.coefficients["df"].tolist() == model.coefficients["df"].tolist()
    assert result.coefficients["estimate"].tolist() == model.coefficients["estimate"].tolist()
    assert not np.allclose(result.coefficients["std_error"], model.coefficients["std_error"])
    np.testing.assert_allclose(model.coefficient_covariance().to_numpy(), phi, rtol=1e-8)


def test_empirical_covariance_drives_contrasts_f_tests_and_lsmean_differences() -> None:
    result = fit_mmrm(
        _fev(),
        "FEV1 ~ ARMCD * AVISIT + RACE + SEX",
        subject="USUBJID",
        visit="AVISIT",
        vcov="empirical",
        df_method="between-within",
    )
    covariance = result.coefficient_covariance()
    names = list(covariance.index)
    beta = result.coefficients["estimate"].to_numpy()
    last = {"ARMCD[T.TRT]": 1.0, "ARMCD[T.TRT]:AVISIT[T.VIS4]": 1.0}
    l_vec = np.array([last.get(name, 0.0) for name in names])
    row = result.contrast(last).iloc[0]
    assert row["estimate"] == pytest.approx(l_vec @ beta, rel=1e-12)
    assert row["std_error"] == pytest.approx(np.sqrt(l_vec @ covariance.to_numpy() @ l_vec))
    diff = result.lsmeans_contrasts("ARMCD").iloc[-1]
    assert diff["visit"] == "VIS4"
    assert diff["std_error"] == pytest.approx(row["std_error"], rel=1e-10)
    # within-subject df (the contrast involves a visit-varying column): N - subjects - 6
    assert diff["df"] == 537 - 197 - 6
    interaction = [n for n in names if n.startswith("ARMCD[T.TRT]:")]
    l_mat = np.array([[1.0 if n == term else 0.0 for n in names] for term in interaction])
    estimate = l_mat @ beta
    wald = estimate @ np.linalg.solve(l_mat @ covariance.to_numpy() @ l_mat.T, estimate)
    f_test = result.f_test(pd.DataFrame(l_mat, columns=names))
    assert f_test["f_value"] == pytest.approx(wald / 3, rel=1e-8)
    assert f_test["num_df"] == 3
    assert f_test["den_df"] == 537 - 197 - 6
    type3 = result.type3_tests().set_index("term")
    assert type3.loc["ARMCD:AVISIT", "f_value"] == pytest.approx(wald / 3, rel=1e-8)


def test_empirical_with_residual_df_keeps_the_sandwich() -> None:
    data = _fev()
    between = fit_mmrm(
        data,
        "FEV1 ~ ARMCD",
        subject="USUBJID",
        visit="AVISIT",
        covariance="un",
        vcov="empirical",
        df_method="between-within",
    )
    residual = fit_mmrm(
        data,
        "FEV1 ~ ARMCD",
        subject="USUBJID",
        visit="AVISIT",
        covariance="un",
        vcov="empirical",
        df_method="residual",
    )
    assert residual.df_method == "residual"
    assert residual.coefficients["df"].tolist() == [535.0, 535.0]  # N - p
    assert residual.coefficients["std_error"].tolist() == between.coefficients["std_error"].tolist()


def test_model_vcov_is_the_default_and_stays_model_based() -> None:
    data = _fev()
    arguments: dict[str, Any] = {
        "subject": "USUBJID",
        "visit": "AVISIT",
        "covariance": "un",
        "df_method": "between-within",
    }
    default = fit_mmrm(data, "FEV1 ~ ARMCD", **arguments)
    model = fit_mmrm(data, "FEV1 ~ ARMCD", vcov="model", **arguments)
    empirical = fit_mmrm(data, "FEV1 ~ ARMCD", vcov="empirical", **arguments)
    assert default.vcov == model.vcov == "model"
    pd.testing.assert_frame_equal(default.coefficients, model.coefficients, check_exact=True)
    pd.testing.assert_frame_equal(
        default.lsmeans_contrasts("ARMCD"), model.lsmeans_contrasts("ARMCD"), check_exact=True
    )
    # (X' V^-1 X)^-1 from the reported covariance, subject by subject
    used = data.dropna(subset=["FEV1"])
    x = np.asarray(formulaic.model_matrix("ARMCD", used), dtype=np.float64)
    sigma = model.covariance.to_numpy()
    codes = pd.factorize(used["AVISIT"], sort=True)[0]
    information = np.zeros((2, 2))
    for _, rows in used.groupby("USUBJID").indices.items():
        at = codes[rows]
        information += x[rows].T @ np.linalg.solve(sigma[np.ix_(at, at)], x[rows])
    np.testing.assert_allclose(
        model.coefficient_covariance().to_numpy(), np.linalg.inv(information), rtol=1e-9
    )
    # the same fit: estimates identical, standard errors from the sandwich differ
    assert empirical.coefficients["estimate"].tolist() == model.coefficients["estimate"].tolist()
    assert empirical.deviance == model.deviance
    empirical_se = float(empirical.coefficients["std_error"].to_numpy()[1])
    model_se = float(model.coefficients["std_error"].to_numpy()[1])
    assert abs(empirical_se - 0.6396) < 1e-4  # SAS EMPIRICAL (empirical_us.txt)
    assert abs(model_se - empirical_se) > 5e-4  # model-based 0.63891


def test_kenward_roger_default_is_kept_for_the_model_covariance() -> None:
    result = fit_mmrm(_fev(), "FEV1 ~ ARMCD", subject="USUBJID", visit="AVISIT")
    assert result.df_method == "kenward-roger"
    assert result.vcov == "model"


@pytest.mark.parametrize(
    "df_method", ["kenward-roger", "kenward-roger-linear", "satterthwaite", "KR"]
)
def test_empirical_refuses_model_based_df_methods(df_method: str) -> None:
    with pytest.raises(AnalysisError) as caught:
        fit_mmrm(
            _fev(),
            "FEV1 ~ ARMCD",
            subject="USUBJID",
            visit="AVISIT",
            vcov="empirical",
            df_method=df_method,
        )
    message = str(caught.value)
    assert repr(df_method) in message
    assert "vcov='empirical'" in message
    assert "'between-within'" in message
    assert "'residual'" in message


@pytest.mark.parametrize("vcov", ["sandwich", "robust", ""])
def test_unknown_vcov_is_an_analysis_error(vcov: str) -> None:
    with pytest.raises(AnalysisError, match=r"unknown vcov .*'model' or 'empirical'"):
        fit_mmrm(_fev(), "FEV1 ~ ARMCD", subject="USUBJID", visit="AVISIT", vcov=vcov)
