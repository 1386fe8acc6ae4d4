"""Firth logistic regression against R (base-R Firth checked against brglm2; logistf's method)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.stats.firth import fit_firth_logistic

REFERENCE = Path(__file__).parent / "reference"
CASES = json.loads((REFERENCE / "firth_logistic.json").read_text(encoding="utf-8"))["cases"]


def _design(name: str) -> tuple[pd.DataFrame, pd.Series]:
    data = pd.read_csv(REFERENCE / f"firth_{name}.csv")
    design = pd.DataFrame(
        {
            "(Intercept)": 1.0,
            "ARMCBT + adjunct": (data["ARM"] == "CBT + adjunct").astype(float),
            "BASE": data["BASE"].astype(float),
            "STRATSEVsevere": (data["STRATSEV"] == "severe").astype(float),
        }
    )
    return design, data["RESPONDER"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_estimates_profile_intervals_and_plr_p_values_match_r(case: dict[str, object]) -> None:
    design, response = _design(str(case["name"]))
    fit = fit_firth_logistic(design, response)
    reference = case["coefficients"]
    assert isinstance(reference, dict)
    for term, expected in reference.items():
        row = fit.coefficients.loc[term]
        # R: firth_fit() (= brglm2::brglmFit type "AS_mean" to 1e-7), profile_ci(), plr_p()
        for column in ("estimate", "std_error", "ci_lower", "ci_upper", "p_value"):
            assert row[column] == pytest.approx(expected[column], rel=1e-6, abs=1e-8), (
                term,
                column,
            )
    assert fit.penalised_loglik == pytest.approx(case["penalised_loglik"], rel=1e-9)
    assert fit.events == case["events"]


def test_separated_data_get_finite_estimates_where_ml_diverges() -> None:
    import statsmodels.api as sm

    design, response = _design("separated")
    assert response[design["ARMCBT + adjunct"] == 0].sum() == 0  # no event in the reference arm
    fit = fit_firth_logistic(design, response)
    arm = fit.coefficients.loc["ARMCBT + adjunct"]
    assert np.isfinite(arm[["estimate", "ci_lower", "ci_upper"]].to_numpy(dtype=float)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels may warn of separation; the size tells
        ml = sm.GLM(response, design, family=sm.families.Binomial()).fit()
    assert abs(ml.params["ARMCBT + adjunct"]) > 5 * abs(arm["estimate"])


def test_profile_interval_is_asymmetric_unlike_wald() -> None:
    design, response = _design("sparse")
    arm = fit_firth_logistic(design, response).coefficients.loc["ARMCBT + adjunct"]
    upper, lower = arm["ci_upper"] - arm["estimate"], arm["estimate"] - arm["ci_lower"]
    assert upper > 1.2 * lower


def test_a_response_that_is_not_binary_is_refused() -> None:
    design, response = _design("sparse")
    with pytest.raises(ValueError, match="0/1"):
        fit_firth_logistic(design, response * 2)


def test_an_exactly_singular_information_far_out_is_minus_infinity_without_a_warning() -> None:
    """Far out on a profile the weights underflow to 0: the penalised likelihood is -inf there
    (not a log-of-zero warning, which a run under warnings-as-errors would die of)."""
    import warnings

    import numpy as np

    from studyman.stats.firth import _penalised_loglik

    x = np.column_stack([np.ones(6), [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _penalised_loglik(np.array([800.0, 800.0]), x, y) == -np.inf
        assert np.isfinite(_penalised_loglik(np.array([0.1, 0.2]), x, y))
