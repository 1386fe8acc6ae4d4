"""Linear mixed model with a random intercept and slope per participant (statsmodels MixedLM).

A thin wrapper that checks the data, tries statsmodels' optimisers in a fixed order until one
converges cleanly, and reports fixed-effect standard errors the way lme4, nlme and SAS do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm

from studyman.errors import AnalysisError
from studyman.stats._secondary_frame import (
    FloatArray,
    build_model_frame,
    coefficient_table,
    describe_rows,
    group_codes,
)

__all__ = ["RandomSlopeResult", "fit_random_slope"]

# Tried in this order; L-BFGS is fast and reliable here, the derivative-free ones are fallbacks
# (statsmodels' default BFGS stalls on the antidepressant data).
_OPTIMISERS = ("lbfgs", "powell", "nm")


@dataclass(frozen=True, eq=False)
class RandomSlopeResult:
    """A fitted linear mixed model with a correlated random intercept and slope.

    Attributes
    ----------
    coefficients
        One row per fixed-effect term: ``estimate, std_error, z_value, p_value, ci_lower,
        ci_upper`` (Wald, normal reference, 95 %).
    covariance
        Covariance of the fixed effects, ``(Σ X_i' V_i⁻¹ X_i)⁻¹`` at the estimated variances.
    random_effects_covariance
        2 × 2 covariance of (intercept, slope), indexed ``["Intercept", time]``.
    residual_variance
        The residual (within-participant) variance.
    loglik
        The maximised log-likelihood: REML (as ``logLik()`` of an lmer REML fit) or ML.
    method
        ``"REML"`` or ``"ML"``.
    optimiser
        The statsmodels optimiser that produced the fit.
    converged
        ``True`` only when an optimiser converged without a warning.
    message
        What converged, or every optimiser's failure.
    n_observations, n_groups, n_dropped
        Rows used, participants, and rows left out because a value was missing.
    """

    coefficients: pd.DataFrame
    covariance: pd.DataFrame
    random_effects_covariance: pd.DataFrame
    residual_variance: float
    loglik: float
    method: str
    optimiser: str
    converged: bool
    message: str
    n_observations: int
    n_groups: int
    n_dropped: int


def fit_random_slope(
    data: pd.DataFrame,
    formula: str,
    *,
    group: str,
    time: str,
    method: Literal["REML", "ML"] = "REML",
) -> RandomSlopeResult:
    """Fit ``formula`` with a random intercept and a random slope on ``time`` per participant.

    Parameters
    ----------
    data
        One row per participant-visit.
    formula
        Fixed effects (formulaic), e.g. ``"CHANGE ~ THERAPY * WEEK + BASVAL"``.
    group
        Column with the participant id.
    time
        Numeric column (e.g. weeks since randomisation) whose slope varies by participant.
    method
        ``"REML"`` (default, as ``lmer``) or ``"ML"``.

    Returns
    -------
    RandomSlopeResult

    Raises
    ------
    AnalysisError
        When ``time`` is not numeric, a participant id is missing, the outcome is not numeric
        or the design is rank-deficient (naming rows or terms).

    Notes
    -----
    Model: ``y_ij = x_ij' beta + b_0i + b_1i t_ij + e_ij`` with ``(b_0i, b_1i) ~ N(0, G)``
    (unstructured 2 × 2) and ``e_ij ~ N(0, sigma**2)``: ``lme4::lmer(y ~ ... + (time |
    id))``.  Fitted by statsmodels ``MixedLM`` (REML by default), trying L-BFGS, then Powell,
    then Nelder–Mead, and keeping the first that converges without a warning.

    Fixed-effect standard errors are the generalised-least-squares ones,
    ``(Σ X_i' V_i⁻¹ X_i)⁻¹`` with ``V_i = Z_i G Z_i' + sigma**2 I`` at the estimates, as lme4
    (``vcov()``), nlme and SAS PROC MIXED report them.  statsmodels' own ``bse`` comes from the
    Hessian in all parameters jointly and differs by ~0.2 % on the reference data.  Wald
    statistics use the normal distribution (lmer prints t values without df; for
    Satterthwaite df use the MMRM).  Rows with a missing outcome, covariate or time are
    dropped and counted in ``n_dropped``.
    """
    if not data.index.is_unique:
        data = data.reset_index(drop=True)
    if time not in data.columns:
        raise AnalysisError(f"time column {time} not in the data")
    raw_time = data[time]
    numeric_time = pd.to_numeric(raw_time, errors="coerce")
    bad = raw_time.notna() & numeric_time.isna()
    if bad.any():
        raise AnalysisError(
            f"time column {time} is not numeric in row(s) "
            f"{describe_rows(list(data.index[bad.to_numpy()]))}"
        )
    present = numeric_time.notna().to_numpy()
    frame = build_model_frame(
        data.loc[present].assign(**{time: numeric_time[present].astype(float)}),
        formula,
        outcome_kind="continuous",
        group=group,
    )
    n_dropped = frame.n_dropped + int((~present).sum())
    time_values = numeric_time.loc[frame.index].to_numpy(dtype=float)
    random_design = np.column_stack([np.ones_like(time_values), time_values])
    codes, labels = group_codes(frame.groups)
    reml = method == "REML"

    failures: list[str] = []
    fit = None
    used = _OPTIMISERS[-1]
    for optimiser in _OPTIMISERS:
        model = sm.MixedLM(frame.outcome, frame.design, groups=codes, exog_re=random_design)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                attempt = model.fit(reml=reml, method=optimiser, maxiter=2000)
            except (np.linalg.LinAlgError, ValueError) as error:
                failures.append(f"{optimiser}: {error}")
                continue
        problems = [str(warning.message) for warning in caught]
        fit, used = attempt, optimiser
        if attempt.converged and not problems:
            failures.clear()
            break
        failures.append(f"{optimiser}: {'; '.join(problems) or 'did not converge'}")
    if fit is None:
        raise AnalysisError(f"mixed model {formula!r} could not be fitted: {' | '.join(failures)}")
    converged = not failures
    message = f"converged ({used})" if converged else "did not converge: " + " | ".join(failures)

    g_matrix = np.asarray(fit.cov_re, dtype=float)
    residual_variance = float(fit.scale)
    beta = np.asarray(fit.fe_params, dtype=float)
    covariance = _gls_covariance(frame.design, random_design, codes, g_matrix, residual_variance)
    if np.min(np.linalg.eigvalsh(g_matrix)) < 1e-8 * max(float(np.max(np.diag(g_matrix))), 1.0):
        message += "; random-effects covariance is singular (at the boundary)"
    names = frame.term_names
    effect_names = ["Intercept", time]
    return RandomSlopeResult(
        coefficients=coefficient_table(names, beta, covariance),
        covariance=pd.DataFrame(covariance, index=list(names), columns=list(names)),
        random_effects_covariance=pd.DataFrame(g_matrix, index=effect_names, columns=effect_names),
        residual_variance=residual_variance,
        loglik=float(fit.llf),
        method=method,
        optimiser=used,
        converged=converged,
        message=message,
        n_observations=int(frame.outcome.size),
        n_groups=len(labels),
        n_dropped=n_dropped,
    )


def _gls_covariance(
    design: FloatArray,
    random_design: FloatArray,
    codes: np.ndarray,
    g_matrix: FloatArray,
    residual_variance: float,
) -> FloatArray:
    """``(Σ X_i' V_i⁻¹ X_i)⁻¹`` by the Woodbury identity, all participants at once."""
    # V_i⁻¹ = (I - Z_i (σ² G⁻¹ + Z_i'Z_i)⁻¹ Z_i') / σ²; with G possibly singular use
    # V_i⁻¹ = (I - Z_i G (σ² I + Z_i'Z_i G)⁻¹ Z_i') / σ², which needs no inverse of G.
    n_groups = int(codes.max()) + 1
    q = random_design.shape[1]
    ztz = np.zeros((n_groups, q, q))
    ztx = np.zeros((n_groups, q, design.shape[1]))
    np.add.at(ztz, codes, random_design[:, :, None] * random_design[:, None, :])
    np.add.at(ztx, codes, random_design[:, :, None] * design[:, None, :])
    inner = residual_variance * np.eye(q)[None, :, :] + ztz @ g_matrix[None, :, :]
    correction = np.sum(
        np.transpose(ztx, (0, 2, 1)) @ (g_matrix[None, :, :] @ np.linalg.solve(inner, ztx)),
        axis=0,
    )
    information = (design.T @ design - correction) / residual_variance
    covariance: FloatArray = np.linalg.inv(information)
    return 0.5 * (covariance + covariance.T)
