"""Kenward-Roger for every covariance structure against SAS PROC MIXED (DDFM=KR, KR(LINEAR)).

Reference numbers: SAS PROC MIXED listings and ODS data sets kept by the R package mmrm
(openpharma/mmrm, Apache-2.0; see tests/data/SOURCES.md), copied into
reference/sas_kr_structures.json with the file each number comes from. Model, on fev_data:
``MODEL FEV1 = ARMCD / ddfm=kr; REPEATED AVISIT / subject=USUBJID type=<TYPE>`` (REML), i.e.
``fit_mmrm(fev_data, "FEV1 ~ ARMCD", subject="USUBJID", visit="AVISIT", covariance=<case>)``.

Tolerances. A number SAS printed with ``d`` decimals is matched to half a unit of its last digit
(``0.5 * 10**-d``; df printed as integers to 0.5); its -2 Res Log Likelihood is printed to 8
decimals. Full-precision numbers (ODS data sets; the values quoted in mmrm's
tests/testthat/test-kenwardroger.R) are matched to 1e-5 relative where SAS reached the optimum.

SAS stops iterating once its relative Hessian criterion ``g' H^-1 g / |f|`` is below 1e-8, which
can leave its -2RLL up to ``|f| * criterion / 2`` (about 2e-5 here) above the optimum. For AR(1),
CS and TOEPH it stopped within 1e-8 of our optimum; for ARH(1), CSH, ANTE(1), TOEP and UN between
7e-7 and 1.3e-5 above it, which moves its covariance parameters by up to 3e-3 of their standard
errors, its estimates by up to 2e-3 of theirs and its KR standard errors and df by up to 1.2e-4
and 4e-4 relative. For those the tests show where the gap comes from instead of only widening the
tolerance: the distance between SAS's covariance parameters and ours matches the -2RLL gap, and
our objective and Kenward-Roger computation evaluated at SAS's printed covariance parameters
reproduce SAS's -2RLL, estimates, standard errors, df, LS means and F tests to within the
rounding of those printed parameters. For TOEP (whose residual variance SAS profiles out) the df
needs SAS's own parametrisation of the information matrix, see
test_sas_toeplitz_information_is_that_of_its_profiled_parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import formulaic
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from studyman.stats import MMRMResult, fit_mmrm
from studyman.stats._mmrm_engine import Engine, build_patterns, satterthwaite_1d
from studyman.stats.covariance import get_structure

FloatArray = npt.NDArray[np.float64]

HERE = Path(__file__).parent
DATA = HERE.parent / "data" / "reference"
REFERENCE = json.loads((HERE / "reference" / "sas_kr_structures.json").read_text())
CASES: dict[str, Any] = REFERENCE["cases"]
STRUCTURES = list(CASES)
# SAS's last iterate is our optimum to its printed -2RLL digits
CONVERGED = ["ar1", "compound-symmetry", "heterogeneous-toeplitz"]
STOPPED_SHORT = [
    "heterogeneous-ar1",
    "heterogeneous-compound-symmetry",
    "ante-dependence",
    "toeplitz",
    "unstructured",
]
DF_METHODS = {"kr": "kenward-roger", "kr_linear": "kenward-roger-linear"}
TERMS = ["Intercept", "ARMCD[T.TRT]"]
# contrasts of (Intercept, TRT - PBO): LS means and the difference
LSMEAN_VECTORS = {"PBO": np.array([1.0, 0.0]), "TRT": np.array([1.0, 1.0])}
DIFFERENCE = np.array([0.0, 1.0])
# SAS TYPE= structures whose residual variance SAS profiles out of the likelihood
# ("Residual Variance Method: Profile"): index of the residual variance among our parameters
# and of the parameters SAS optimises as ratios to it
PROFILED = {"ar1": (0, ()), "compound-symmetry": (1, (0,)), "toeplitz": (0, (1, 2, 3))}


def _half_unit(printed: str) -> float:
    """Half a unit of the last digit SAS printed."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0**-decimals


def _fev() -> pd.DataFrame:
    return pd.read_csv(DATA / "fev_data.csv")


@pytest.fixture(scope="module")
def fits() -> dict[tuple[str, str], MMRMResult]:
    data = _fev()
    return {
        (case, key): fit_mmrm(
            data,
            "FEV1 ~ ARMCD",
            subject="USUBJID",
            visit="AVISIT",
            covariance=case,
            df_method=method,
        )
        for case in STRUCTURES
        for key, method in DF_METHODS.items()
    }


# --- what we compute, in the layout of the reference file -------------------------------------


@dataclass(frozen=True)
class Numbers:
    """-2RLL and the tables SAS prints, for one df method."""

    deviance: float
    fixed: dict[str, tuple[float, float, float]]
    lsmeans: dict[str, tuple[float, float, float]]
    type3: tuple[float, float, float]
    difference: tuple[float, float, float]


def _triple(row: Any) -> tuple[float, float, float]:
    estimate, std_error, df = row[["estimate", "std_error", "df"]].to_numpy(dtype=np.float64)
    return float(estimate), float(std_error), float(df)


def _from_result(result: MMRMResult) -> Numbers:
    fixed = {term: _triple(result.coefficients.loc[term]) for term in TERMS}
    means = result.lsmeans("ARMCD")
    # FEV1 ~ ARMCD: the LS means are the same at every visit
    first_visit = means[means["visit"] == means["visit"].iloc[0]].set_index("level")
    lsmeans = {level: _triple(first_visit.loc[level]) for level in LSMEAN_VECTORS}
    test = result.type3_tests().set_index("term").loc["ARMCD"]
    num_df, den_df, f_value = test[["num_df", "den_df", "f_value"]].to_numpy(dtype=np.float64)
    return Numbers(
        result.deviance,
        fixed,
        lsmeans,
        (float(num_df), float(den_df), float(f_value)),
        fixed["ARMCD[T.TRT]"],
    )


class AtParameters:
    """Our objective and Kenward-Roger computation at given covariance parameters (not fitted)."""

    def __init__(self, case: str) -> None:
        data = _fev().dropna(subset=["FEV1"])
        x = np.asarray(formulaic.model_matrix("ARMCD", data), dtype=np.float64)
        y = data["FEV1"].to_numpy(dtype=np.float64)
        subjects = pd.factorize(data["USUBJID"])[0].astype(np.int64)
        visits = pd.factorize(data["AVISIT"], sort=True)[0].astype(np.int64)
        groups = np.zeros(subjects.max() + 1, dtype=np.int64)
        # the patterns hold y itself, so the engine's delta is the GLS estimate
        patterns = build_patterns(x, y, subjects, visits, groups, 4)
        self.case = case
        self.engine = Engine(patterns, get_structure(case), 4, 1, y.size, x.shape[1], True)

    def parameter_covariance(self, phi: FloatArray, *, profiled: bool) -> FloatArray:
        """Twice the inverse observed information (Hessian of -2RLL), as SAS's ASYCOV.

        With ``profiled`` and a structure SAS profiles, the Hessian is taken in SAS's own
        parameters (the residual variance and ratios to it) and mapped back by the delta method;
        at an optimum this changes nothing, elsewhere the gradient adds a term.
        """
        evaluation = self.engine.evaluate(phi, order=2)
        assert evaluation.hessian is not None
        assert evaluation.gradient is not None
        hessian, gradient = evaluation.hessian, evaluation.gradient
        if not profiled or self.case not in PROFILED:
            return np.asarray(2.0 * np.linalg.inv(hessian), dtype=np.float64)
        residual, ratios = PROFILED[self.case]
        # theta_k = psi_residual * psi_k for the ratios, theta_residual = psi_residual
        jacobian = np.eye(phi.size)
        for k in ratios:
            jacobian[k, residual] = phi[k] / phi[residual]
            jacobian[k, k] = phi[residual]
        hessian_psi = jacobian.T @ hessian @ jacobian
        for k in ratios:
            hessian_psi[residual, k] += gradient[k]
            hessian_psi[k, residual] += gradient[k]
        return np.asarray(2.0 * jacobian @ np.linalg.inv(hessian_psi) @ jacobian.T)

    def numbers(self, phi: FloatArray, *, linear: bool, profiled: bool = True) -> Numbers:
        evaluation = self.engine.evaluate(phi, order=2)
        assert evaluation.q_mats is not None
        theta_cov = self.parameter_covariance(phi, profiled=profiled)
        theta_cov = 0.5 * (theta_cov + theta_cov.T)
        phi_matrix = evaluation.phi_matrix
        sums = self.engine.kenward_roger_sums(phi, evaluation, theta_cov, linear=linear)
        adjusted = phi_matrix + 2.0 * phi_matrix @ sums @ phi_matrix
        beta = evaluation.delta

        def row(l_vec: FloatArray) -> tuple[float, float, float]:
            df = satterthwaite_1d(l_vec, phi_matrix, evaluation.q_mats, theta_cov)  # type: ignore[arg-type]
            return float(l_vec @ beta), float(np.sqrt(l_vec @ adjusted @ l_vec)), df

        fixed = {term: row(np.eye(2)[i]) for i, term in enumerate(TERMS)}
        difference = row(DIFFERENCE)
        return Numbers(
            evaluation.objective,
            fixed,
            {level: row(vector) for level, vector in LSMEAN_VECTORS.items()},
            (1.0, difference[2], (difference[0] / difference[1]) ** 2),
            difference,
        )


def _flatten(numbers: Numbers) -> dict[str, float]:
    out = {"deviance": numbers.deviance}
    for table in ("fixed", "lsmeans"):
        for key, values in getattr(numbers, table).items():
            for name, value in zip(("estimate", "std_error", "df"), values, strict=True):
                out[f"{table}/{key}/{name}"] = value
    out["type3/den_df"], out["type3/f_value"] = numbers.type3[1], numbers.type3[2]
    for name, value in zip(("estimate", "std_error", "df"), numbers.difference, strict=True):
        out[f"difference/{name}"] = value
    return out


def _sas_values(case: str, key: str) -> dict[str, tuple[float, float]]:
    """SAS's numbers for one df method as ``name -> (value, half unit of its rounding)``."""
    reference = CASES[case]
    out: dict[str, tuple[float, float]] = {
        "deviance": (float(reference["deviance"]), _half_unit(reference["deviance"]))
    }
    printed = reference[key]
    if "fixed" in printed:
        for table in ("fixed", "lsmeans"):
            for name, values in printed[table].items():
                for quantity, text in zip(("estimate", "std_error", "df"), values, strict=True):
                    out[f"{table}/{name}/{quantity}"] = (float(text), _half_unit(text))
        _, den_df, f_value = printed["type3"]
        out["type3/den_df"] = (float(den_df), _half_unit(den_df))
        out["type3/f_value"] = (float(f_value), _half_unit(f_value))
    else:  # toeplitz structures: estimates from the run with the same fit (see the JSON)
        for table, values in reference["estimates"].items():
            for name, text in values.items():
                out[f"{table}/{name}/estimate"] = (float(text), _half_unit(text))
    for quantity in ("estimate", "std_error", "df"):
        value = printed["difference"][quantity]
        if value is not None:
            out[f"difference/{quantity}"] = (float(value), 0.0)
    return out


def _sas_parameters(case: str, names: list[str]) -> FloatArray:
    printed = {ours: float(text) for _, ours, text in CASES[case]["covariance_parameters"]}
    return np.array([printed[name] for name in names])


def _parameter_half_units(case: str, names: list[str]) -> FloatArray:
    printed = {ours: text for _, ours, text in CASES[case]["covariance_parameters"]}
    return np.array([_half_unit(printed[name]) for name in names])


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", STRUCTURES)
def test_deviance_equals_sas_or_lies_below_by_what_its_criterion_allows(
    fits: dict[tuple[str, str], MMRMResult], case: str
) -> None:
    reference = CASES[case]
    sas = float(reference["deviance"])
    ours = fits[(case, "kr")].deviance
    assert fits[(case, "kr")].covariance_structure == case
    assert fits[(case, "kr")].converged
    assert ours == pytest.approx(sas, rel=1e-6)  # the project's requirement
    # never above SAS's last iterate (its -2RLL printed to 8 decimals) ...
    assert ours <= sas + 1e-8
    # ... and below it by at most |f| * criterion / 2, the criterion printed to 8 decimals
    criterion = float(reference["convergence_criterion"]) + 0.5e-8
    assert sas - ours <= 0.5 * criterion * abs(sas)
    if case in CONVERGED:
        assert sas - ours <= 1e-8
    else:
        assert sas - ours > 5e-7  # SAS stopped 7e-7 (TOEP) to 1.3e-5 (ANTE(1)) short


@pytest.mark.parametrize("case", CONVERGED)
@pytest.mark.parametrize("key", list(DF_METHODS))
def test_converged_structures_match_sas_to_its_printed_digits(
    fits: dict[tuple[str, str], MMRMResult], case: str, key: str
) -> None:
    ours = _flatten(_from_result(fits[(case, key)]))
    for name, (value, half_unit) in _sas_values(case, key).items():
        if half_unit > 0:
            # printed by SAS: within its rounding (plus 1e-9 for the float in the listing)
            assert abs(ours[name] - value) <= half_unit + 1e-9, (name, ours[name], value)
        else:
            # full precision: 1e-5 relative (measured: 3.9e-6 for the TOEPH df, else <= 1e-6)
            assert ours[name] == pytest.approx(value, rel=1e-5), name


@pytest.mark.parametrize("case", CONVERGED)
def test_converged_structures_match_sas_covariance_parameters(
    fits: dict[tuple[str, str], MMRMResult], case: str
) -> None:
    # printed rounding, plus 1e-4 standard errors: a last iterate within 1e-8 of the optimum's
    # -2RLL may lie up to sqrt(1e-8) standard errors from it (TOEPH Var(1): 86.1623 printed,
    # 86.16237 here)
    parameters = fits[(case, "kr")].covariance_parameters
    names = list(parameters.index)
    sas = _sas_parameters(case, names)
    half_units = _parameter_half_units(case, names)
    allowance = half_units + 1e-4 * parameters["std_error"].to_numpy()
    assert np.all(np.abs(parameters["estimate"].to_numpy() - sas) <= allowance)


# Where SAS stopped short, our optimum differs from its numbers by more than their rounding.
# Largest differences beyond the rounding measured (KR or KR-linear, any table): standard errors
# 1.2e-4 relative (CSH), df 4.0e-4 (ANTE(1)), estimates 2.1e-3 of their standard error (CSH
# intercept). The bounds below pin those sizes; test_sas_numbers_are_reproduced_at_sas_parameters
# shows they are entirely due to where SAS stopped.
STOPPED_SHORT_ALLOWANCE = {"std_error": 2e-4, "df": 5e-4, "estimate_in_se": 3e-3}


@pytest.mark.parametrize("case", STOPPED_SHORT)
@pytest.mark.parametrize("key", list(DF_METHODS))
def test_stopped_short_structures_match_sas_within_the_shift_of_its_early_stop(
    fits: dict[tuple[str, str], MMRMResult], case: str, key: str
) -> None:
    ours = _flatten(_from_result(fits[(case, key)]))
    difference_se = ours["difference/std_error"]
    for name, (value, half_unit) in _sas_values(case, key).items():
        if name == "deviance":
            continue  # test_deviance_equals_sas_or_lies_below_by_what_its_criterion_allows
        quantity = name.rsplit("/", 1)[1]
        if quantity == "estimate":
            std_error = ours.get(name.replace("estimate", "std_error"), difference_se)
            allowance = STOPPED_SHORT_ALLOWANCE["estimate_in_se"] * std_error
        elif quantity == "f_value":
            # F = t^2 moves by twice the relative moves of the standard error and the estimate
            t_value = np.sqrt(value)
            allowance = (
                value
                * 2
                * (
                    STOPPED_SHORT_ALLOWANCE["std_error"]
                    + STOPPED_SHORT_ALLOWANCE["estimate_in_se"] / t_value
                )
            )
        else:
            key_name = "df" if quantity in {"df", "den_df"} else "std_error"
            allowance = STOPPED_SHORT_ALLOWANCE[key_name] * abs(value)
        assert abs(ours[name] - value) <= half_unit + allowance, (name, ours[name], value)


@pytest.mark.parametrize("case", STRUCTURES)
def test_covariance_parameters_differ_from_sas_by_the_deviance_gap(
    fits: dict[tuple[str, str], MMRMResult], case: str
) -> None:
    """Near the optimum ``f(theta) - f_min = d' C^-1 d`` with ``C`` the parameters' covariance
    (twice the inverse Hessian of ``f = -2RLL``): the distance of SAS's printed parameters from
    ours, in that metric, must equal how far SAS's -2RLL lies above ours, plus the rounding of
    the printed parameters."""
    result = fits[(case, "kr")]
    names = list(result.covariance_parameters.index)
    ours = result.covariance_parameters["estimate"].to_numpy()
    evaluator = AtParameters(case)
    covariance = evaluator.parameter_covariance(ours, profiled=False)
    precision = np.linalg.inv(covariance)
    shift = _sas_parameters(case, names) - ours
    distance = float(shift @ precision @ shift)
    gap = float(CASES[case]["deviance"]) - result.deviance
    # rounding: each printed parameter is off by up to half a unit, at most sum(h_i / sd_i) in
    # standard-deviation units
    half_units = _parameter_half_units(case, names)
    rounding = float(np.sum(half_units * np.sqrt(np.diag(precision))))
    assert abs(np.sqrt(distance) - np.sqrt(max(gap, 0.0))) <= rounding, (distance, gap)


def _envelope(
    evaluator: AtParameters, phi: FloatArray, half_units: FloatArray, *, linear: bool
) -> dict[str, float]:
    """How much each number can move when every printed parameter moves by half a unit."""
    centre = _flatten(evaluator.numbers(phi, linear=linear))
    total = dict.fromkeys(centre, 0.0)
    for i, step in enumerate(half_units):
        moves = dict.fromkeys(centre, 0.0)
        for sign in (1.0, -1.0):
            shifted = phi.copy()
            shifted[i] += sign * step
            moved = _flatten(evaluator.numbers(shifted, linear=linear))
            for name in centre:
                moves[name] = max(moves[name], abs(moved[name] - centre[name]))
        for name in centre:
            total[name] += moves[name]
    return total


@pytest.mark.parametrize("case", STRUCTURES)
def test_sas_numbers_are_reproduced_at_sas_parameters(
    fits: dict[tuple[str, str], MMRMResult], case: str
) -> None:
    """Our objective, estimates, KR standard errors and df at SAS's printed covariance parameters
    equal SAS's numbers within the rounding of those parameters: the differences at our optimum
    come from where SAS stopped, not from the formulas."""
    names = list(fits[(case, "kr")].covariance_parameters.index)
    phi = _sas_parameters(case, names)
    half_units = _parameter_half_units(case, names)
    evaluator = AtParameters(case)
    for key in DF_METHODS:
        linear = key == "kr_linear"
        ours = _flatten(evaluator.numbers(phi, linear=linear))
        envelope = _envelope(evaluator, phi, half_units, linear=linear)
        for name, (value, half_unit) in _sas_values(case, key).items():
            tolerance = half_unit + envelope[name] + 1e-9 * abs(value)
            assert abs(ours[name] - value) <= tolerance, (key, name, ours[name], value)


def test_sas_toeplitz_information_is_that_of_its_profiled_parameters() -> None:
    """SAS profiles the TOEP residual variance out and optimises ratios to it; its covariance of
    the covariance parameters is the inverse Hessian in those parameters. At SAS's last iterate
    (7e-7 above the optimum) the gradient makes that differ from the Hessian in the Toeplitz
    elements: only the former reproduces SAS's KR df (160.027408337368, mmrm's
    test-kenwardroger.R)."""
    case = "toeplitz"
    evaluator = AtParameters(case)
    names = get_structure(case).parameter_names(4)
    phi = _sas_parameters(case, names)
    sas_std_error = CASES[case]["kr"]["difference"]["std_error"]
    sas_df = CASES[case]["kr"]["difference"]["df"]
    profiled = evaluator.numbers(phi, linear=False, profiled=True).difference
    natural = evaluator.numbers(phi, linear=False, profiled=False).difference
    assert profiled[2] == pytest.approx(sas_df, rel=2e-6)  # measured 1.2e-6
    assert abs(natural[2] / sas_df - 1) > 5e-5  # measured 6.7e-5
    # the standard error hardly depends on it: both within 2e-7 relative
    assert profiled[1] == pytest.approx(sas_std_error, rel=5e-7)
    assert natural[1] == pytest.approx(sas_std_error, rel=5e-7)
    # at the optimum the gradient vanishes and the parametrisation does not matter
    fit = fit_mmrm(_fev(), "FEV1 ~ ARMCD", subject="USUBJID", visit="AVISIT", covariance=case)
    optimum = fit.covariance_parameters["estimate"].to_numpy()
    at_optimum = [
        evaluator.numbers(optimum, linear=False, profiled=flag).difference[2]
        for flag in (True, False)
    ]
    # (our optimum's gradient is not exactly zero either: 2.5e-8 relative measured)
    assert at_optimum[0] == pytest.approx(at_optimum[1], rel=1e-6)
    assert fit.coefficients.loc["ARMCD[T.TRT]", "df"] == pytest.approx(at_optimum[1], rel=1e-10)
