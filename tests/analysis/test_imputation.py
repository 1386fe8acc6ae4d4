"""Multiple imputation (MAR, jump to reference, copy reference), Rubin's rules, tipping point.

Reference values on the antidepressant data (tests/data/reference/antidepressant.csv):
- MI under MAR, SAS (PROC MI + ANCOVA at week 6 + PROC MIANALYZE), as published by the DIA
  missing-data working group: PLACEBO − DRUG 2.79516, SE 1.11445, df 144.2.
- Jump to reference, R rbmi (``method_bayes``, strategy "JR" from the first missing visit,
  ``ancova`` on BASVAL, Rubin's rules): PLACEBO − DRUG 2.169, SE 1.120, 95 % CI −0.044 to 4.383.
Both references are Monte-Carlo results themselves. Our estimates are DRUG − PLACEBO.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.analysis.imputation import (
    ImputationData,
    prepare_imputation_data,
    rubin_pool,
    run_multiple_imputation,
)
from studyman.errors import AnalysisError

DATA = Path(__file__).resolve().parents[1] / "data" / "reference" / "antidepressant.csv"
IMPUTATIONS = 100
# Imputations behind the references: SAS's MI count is not published with the number; its df
# (144.2 with complete-data df 169) implies a between-imputation term estimated from many
# imputations, taken here as 100. rbmi's quickstart draws 150 samples.
SAS_IMPUTATIONS = 100
RBMI_IMPUTATIONS = 150


def _data() -> ImputationData:
    return prepare_imputation_data(
        pd.read_csv(DATA),
        subject="PATIENT",
        visit="VISIT",
        outcome="CHANGE",
        arm="THERAPY",
        experimental="DRUG",
        baseline="BASVAL",
    )


def _monte_carlo_tolerances(
    between: float, std_error: float, reference_m: int
) -> tuple[float, float]:
    """Three Monte-Carlo standard errors of the difference between our result and the reference.

    Estimate: each MI estimate has MC variance B/M, so the difference has B/M + B/M_ref.
    Standard error: SE = sqrt(W + (1 + 1/M) B) and var(B̂) ≈ 2B²/(M − 1), so by the delta
    method sd(SE) ≈ (1 + 1/M) · B · sqrt(2/(M − 1)) / (2 SE), for each side.
    """
    estimate_mc = math.sqrt(between / IMPUTATIONS + between / reference_m)
    se_mc = math.sqrt(
        sum(
            ((1 + 1 / m) * between * math.sqrt(2 / (m - 1)) / (2 * std_error)) ** 2
            for m in (IMPUTATIONS, reference_m)
        )
    )
    return 3 * estimate_mc, 3 * se_mc


def test_mi_under_mar_matches_sas_within_monte_carlo_error() -> None:
    result = run_multiple_imputation(
        _data(), method="mar", imputations=IMPUTATIONS, seed=20261125, burn_in=30
    )
    pooled = result.pooled[0.0]
    estimate_tol, se_tol = _monte_carlo_tolerances(
        pooled.between, pooled.std_error, SAS_IMPUTATIONS
    )
    # With B ≈ 0.16: estimate tolerance ≈ 3 × 0.054 = 0.16, SE tolerance ≈ 3 × 0.0135 = 0.04.
    assert estimate_tol < 0.25
    assert se_tol < 0.06
    assert -pooled.estimate == pytest.approx(2.79516, abs=estimate_tol)  # SAS MI, MAR
    assert pooled.std_error == pytest.approx(1.11445, abs=se_tol)  # SAS MIANALYZE
    assert pooled.df == pytest.approx(144.2, abs=15)  # Barnard–Rubin df, SAS 144.2
    assert pooled.monte_carlo_error == pytest.approx(math.sqrt(pooled.between / IMPUTATIONS))


def test_jump_to_reference_matches_rbmi_within_monte_carlo_error() -> None:
    result = run_multiple_imputation(
        _data(), method="jump_to_reference", imputations=IMPUTATIONS, seed=20261125, burn_in=30
    )
    pooled = result.pooled[0.0]
    estimate_tol, se_tol = _monte_carlo_tolerances(
        pooled.between, pooled.std_error, RBMI_IMPUTATIONS
    )
    assert estimate_tol < 0.25
    assert se_tol < 0.06
    assert -pooled.estimate == pytest.approx(2.169, abs=estimate_tol)  # rbmi J2R
    assert pooled.std_error == pytest.approx(1.120, abs=se_tol)  # rbmi J2R
    assert -pooled.ci_upper == pytest.approx(-0.044, abs=estimate_tol + 2 * se_tol)
    assert pooled.p_value == pytest.approx(0.055, abs=0.03)


def test_reference_based_estimates_shrink_the_effect_towards_zero() -> None:
    data = _data()
    estimates = {
        method: run_multiple_imputation(data, method=method, imputations=30, seed=5, burn_in=20)
        .pooled[0.0]
        .estimate
        for method in ("mar", "copy_reference", "jump_to_reference")
    }
    # J2R removes the drug effect after dropout entirely, CR partly (Carpenter et al. 2013).
    assert estimates["mar"] < estimates["copy_reference"] < estimates["jump_to_reference"] < 0


def test_tipping_point_grid_moves_estimate_by_delta_times_share_imputed() -> None:
    data = _data()
    result = run_multiple_imputation(
        data, method="mar", imputations=10, seed=3, burn_in=10, deltas=(0.0, 2.0, 4.0)
    )
    share = float(np.mean(np.isnan(data.outcome[:, -1]) & data.experimental))
    base = result.pooled[0.0].estimate
    # Delta added to imputed experimental-arm values shifts the ANCOVA difference by about
    # delta × (imputed share of the arm); exact in the absence of covariate imbalance.
    assert result.pooled[4.0].estimate > result.pooled[2.0].estimate > base
    shift_per_point = (result.pooled[4.0].estimate - base) / 4.0
    arm_share = share / float(np.mean(data.experimental))
    assert shift_per_point == pytest.approx(arm_share, rel=0.25)
    assert result.pooled[4.0].p_value > result.pooled[0.0].p_value


def test_rubin_pool_reproduces_hand_computation() -> None:
    pooled = rubin_pool([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], complete_df=20.0)
    # Q̄ = 2, W̄ = 0.5, B = 1, T = 0.5 + 4/3; λ = (4/3)/T
    total = 0.5 + 4 / 3
    lam = (4 / 3) / total
    df_old = 2 / lam**2
    df_obs = 21 / 23 * 20 * (1 - lam)
    assert pooled.estimate == 2.0
    assert pooled.std_error == pytest.approx(math.sqrt(total))
    assert pooled.df == pytest.approx(1 / (1 / df_old + 1 / df_obs))


def test_single_arm_data_are_refused() -> None:
    long = pd.read_csv(DATA)
    long = long[long["THERAPY"] == "DRUG"]
    data = prepare_imputation_data(
        long,
        subject="PATIENT",
        visit="VISIT",
        outcome="CHANGE",
        arm="THERAPY",
        experimental="DRUG",
        baseline="BASVAL",
    )
    with pytest.raises(AnalysisError, match="both arms"):
        run_multiple_imputation(data, method="mar", imputations=2, seed=1)


def test_missing_column_is_named() -> None:
    with pytest.raises(AnalysisError, match="BASELINE"):
        prepare_imputation_data(
            pd.read_csv(DATA),
            subject="PATIENT",
            visit="VISIT",
            outcome="CHANGE",
            arm="THERAPY",
            experimental="DRUG",
            baseline="BASELINE",
        )
