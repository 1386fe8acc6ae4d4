"""Multiple imputation for the missing-data sensitivity analyses.

Under MAR and reference-based assumptions (jump to reference, copy reference), followed by an
ANCOVA at the analysis visit in each imputed data set and Rubin's rules; delta adjustment for the
tipping-point grid. Imputations come from chains of fixed length, each chain an independent
task run through an :class:`~studyman.analysis.executor.Executor` with its own seed spawned from
the plan seed, so the result does not depend on the executor.

Notes
-----
Imputation model. The outcomes at the K post-baseline visits of participant *i* are multivariate
normal, ``y_i ~ N(B' x_i, Σ)``, with ``x_i`` the intercept, the experimental-arm indicator,
the baseline value and the stratification dummies, each coefficient free by visit (so arm × visit
and baseline × visit as in the primary MMRM) and Σ unstructured and common to both arms. This is
the model of rbmi's ``method_bayes`` (Carpenter, Roger and Kenward 2013) and of SAS PROC MI MCMC.

Posterior draws. Data augmentation (Tanner and Wong 1987; Schafer 1997, ch. 5) with the
Jeffreys prior ``p(B, Σ) ∝ |Σ|^{-(K+1)/2}``: given completed data, ``Σ ~ InvWishart(S, n − p)``
with S the residual cross-products, then ``vec(B) ~ N(vec(B̂), Σ ⊗ (X'X)⁻¹)``; given the
parameters, the missing outcomes are drawn from their conditional normal given the observed ones.
Chains start from a common deterministic point near the posterior mode (conditional-mean
iterations); each chain gives ``chain_length`` imputations, the first after ``burn_in``
iterations and the others ``thin`` iterations apart (lag-5 autocorrelation is negligible when
the fraction of missing information is moderate; rbmi's quickstart uses the same spacing).

Reference-based imputation. The intercurrent event is the participant's treatment
discontinuation from the data (:mod:`studyman.analysis.intercurrent`): it takes effect from the
first analysis visit whose target date is after the last study treatment received
(:attr:`ImputationData.event_index`). For an experimental-arm participant with such an event, the
marginal mean is the reference-arm mean for that participant's covariates from that visit on
(jump to reference; the own-arm mean before it) or at every visit (copy reference); the
imputation is the conditional normal of the missing given the observed outcomes under that mean
and the common Σ (Carpenter, Roger and Kenward 2013, section 4). Observed values after the event
are kept and condition the imputation (retrieved dropouts: treatment policy). Missing values of
a participant without an intercurrent event (intermittent misses, a withdrawal without treatment
discontinuation, visits not yet due at the cut-off) and of reference-arm participants are imputed
under MAR.

Fallback (documented for data without discontinuation dates, such as the R reference inputs):
when :attr:`ImputationData.event_index` is None, the event is dropout, the visit after the last
observed outcome, and copy reference applies to every experimental-arm participant, as before
the data carried the event; a discontinued participant without a date (event index given as
:data:`DROPOUT`) takes the dropout rule alone.

Analysis and pooling. ANCOVA of the outcome at the analysis visit on the arm indicator, baseline
and strata in each imputed data set (complete-data df n − p); Rubin's rules with the
Barnard–Rubin (1999) small-sample degrees of freedom, as SAS PROC MIANALYZE (EDF=) and rbmi.

Delta adjustment (tipping point). ``delta`` is added to the *imputed* values at the analysis
visit of experimental-arm participants (positive = worse on HAM-D), on the same MAR
imputations for every delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from studyman.analysis.executor import (
    Executor,
    SerialExecutor,
    single_threaded_blas,
    spawn_seeds,
)
from studyman.errors import AnalysisError

__all__ = [
    "DROPOUT",
    "ImputationData",
    "ImputationMethod",
    "MIResult",
    "PooledEstimate",
    "ancova",
    "prepare_imputation_data",
    "rubin_pool",
    "run_multiple_imputation",
]

ImputationMethod = Literal["mar", "jump_to_reference", "copy_reference"]
FloatArray = NDArray[np.float64]

DROPOUT = -1
"""Event index of a participant who discontinued treatment on an unknown date: the dropout rule
(the visit after the last observed outcome) stands in for the event."""


@dataclass(frozen=True)
class ImputationData:
    """Outcomes in wide form and the imputation-model design.

    Attributes
    ----------
    subjects
        Participant identifiers, in row order.
    visits
        Visit labels (columns of *outcome*), in time order.
    outcome
        ``n × K`` outcomes, NaN where missing.
    design
        ``n × p`` covariates (intercept first, then the arm indicator, then the rest).
    arm_column
        Column of *design* holding the experimental-arm indicator (1 experimental, 0 reference).
    design_names
        Names of the design columns.
    event_index
        Per participant, the index into *visits* of the first visit after the intercurrent
        event (treatment discontinuation), ``K`` without an event in the analysis window,
        :data:`DROPOUT` when the event has no date; None when the data carry no events (the
        dropout rule for everyone, see the module notes).
    """

    subjects: tuple[str, ...]
    visits: tuple[int, ...]
    outcome: FloatArray
    design: FloatArray
    arm_column: int
    design_names: tuple[str, ...]
    event_index: NDArray[np.int64] | None = None

    @property
    def experimental(self) -> NDArray[np.bool_]:
        """Participants in the experimental arm."""
        return np.asarray(self.design[:, self.arm_column] == 1.0, dtype=np.bool_)

    @property
    def dropout_index(self) -> NDArray[np.int64]:
        """Index of the first visit after the last observed one (K when the last is observed)."""
        observed = ~np.isnan(self.outcome)
        k = observed.shape[1]
        last = np.where(observed.any(axis=1), k - 1 - np.argmax(observed[:, ::-1], axis=1), -1)
        return (last + 1).astype(np.int64)

    @property
    def reference_from(self) -> NDArray[np.int64]:
        """Index of the first visit under the reference-based assumption (``K``: none).

        The data's intercurrent event when :attr:`event_index` is given (the dropout index for
        an undated one), else the dropout index.
        """
        if self.event_index is None:
            return self.dropout_index
        return np.where(self.event_index == DROPOUT, self.dropout_index, self.event_index).astype(
            np.int64
        )

    def with_events(self, first_visit_after: dict[str, int | None]) -> ImputationData:
        """These data with intercurrent events: participant → ``AVISITN`` of the first visit
        after the event, or None for an event without a date (the dropout rule); participants
        not listed have no event.

        Raises
        ------
        AnalysisError
            A visit that is not among :attr:`visits`.
        """
        k = len(self.visits)
        index = np.full(len(self.subjects), k, dtype=np.int64)
        for row, subject in enumerate(self.subjects):
            if subject not in first_visit_after:
                continue
            visit = first_visit_after[subject]
            if visit is None:
                index[row] = DROPOUT
            elif visit in self.visits:
                index[row] = self.visits.index(visit)
            else:
                raise AnalysisError(
                    f"intercurrent event of {subject}: visit {visit} is not among the analysis "
                    f"visits {self.visits}"
                )
        return replace(self, event_index=index)


def prepare_imputation_data(
    long: pd.DataFrame,
    *,
    subject: str,
    visit: str,
    outcome: str,
    arm: str,
    experimental: str,
    baseline: str,
    covariates: Sequence[str] = (),
    visits: Sequence[int] | None = None,
) -> ImputationData:
    """Build :class:`ImputationData` from one row per participant and visit.

    Parameters
    ----------
    long
        Rows with *subject*, *visit*, *outcome* (may be missing or absent for a visit), *arm*,
        *baseline* and *covariates* (constant within participant).
    experimental
        The *arm* value of the experimental arm; any other value is the reference.
    covariates
        Categorical covariates (stratification factors), coded as treatment dummies.
    visits
        The analysis visits in order; default: the sorted distinct values of *visit*.

    Raises
    ------
    AnalysisError
        A column is missing, a participant has conflicting arm or baseline values, or has no
        baseline.
    """
    needed = [subject, visit, outcome, arm, baseline, *covariates]
    absent = [name for name in needed if name not in long.columns]
    if absent:
        raise AnalysisError(f"imputation data lack column(s) {', '.join(absent)}")
    visit_order = sorted(long[visit].dropna().unique()) if visits is None else list(visits)
    per_subject = long[[subject, arm, baseline, *covariates]].drop_duplicates()
    conflicting = per_subject[subject][per_subject[subject].duplicated()].unique()
    if len(conflicting):
        raise AnalysisError(
            "participant(s) with more than one arm, baseline or stratum: "
            + ", ".join(map(str, conflicting[:10]))
        )
    per_subject = per_subject.sort_values(subject).reset_index(drop=True)
    if per_subject[baseline].isna().any():
        missing = per_subject.loc[per_subject[baseline].isna(), subject].tolist()
        raise AnalysisError(
            f"participant(s) without a baseline value ({baseline}): "
            + ", ".join(map(str, missing[:10]))
        )
    wide = (
        long[long[visit].isin(visit_order)]
        .pivot_table(index=subject, columns=visit, values=outcome, aggfunc="first")
        .reindex(index=per_subject[subject], columns=visit_order)
    )
    columns: list[FloatArray] = [
        np.ones(len(per_subject)),
        np.asarray(per_subject[arm] == experimental, dtype=np.float64),
        per_subject[baseline].to_numpy(dtype=np.float64),
    ]
    names = ["intercept", "arm", baseline]
    for covariate in covariates:
        levels = sorted(per_subject[covariate].astype(str).unique())
        for level in levels[1:]:
            columns.append((per_subject[covariate].astype(str) == level).to_numpy(np.float64))
            names.append(f"{covariate}[{level}]")
    return ImputationData(
        subjects=tuple(per_subject[subject].astype(str)),
        visits=tuple(int(v) for v in visit_order),
        outcome=wide.to_numpy(dtype=np.float64),
        design=np.column_stack(columns),
        arm_column=1,
        design_names=tuple(names),
    )


@dataclass(frozen=True)
class _Missing:
    """Rows with at least one missing outcome and their missingness mask."""

    rows: NDArray[np.int64]
    mask: NDArray[np.bool_]


def _missing(missing_mask: NDArray[np.bool_]) -> _Missing:
    rows = np.flatnonzero(missing_mask.any(axis=1))
    return _Missing(rows=rows, mask=missing_mask[rows])


def _conditional_draw(
    completed: FloatArray,
    mean: FloatArray,
    sigma: FloatArray,
    missing: _Missing,
    rng: np.random.Generator | None,
) -> None:
    """Replace missing values in *completed* by draws (or means when *rng* is None), in place.

    Notes
    -----
    With P = Σ⁻¹, the missing outcomes given the observed ones are normal with covariance
    P_MM⁻¹ and mean μ_M − P_MM⁻¹ P_MO (y_O − μ_O). All participants are handled at once: each
    gets the K × K matrix A equal to P on its missing block and the identity elsewhere, so that
    A⁻¹ and its Cholesky factor hold P_MM⁻¹ and its factor on that block (batched LAPACK).
    """
    if len(missing.rows) == 0:
        return
    mask = missing.mask
    k = mask.shape[1]
    precision = np.linalg.inv(sigma)
    both = mask[:, :, None] & mask[:, None, :]
    blocks = np.where(both, precision[None, :, :], 0.0)
    blocks[:, np.arange(k), np.arange(k)] += np.where(mask, 0.0, 1.0)
    covariance = np.linalg.inv(blocks)
    mu = mean[missing.rows]
    residual = np.where(mask, 0.0, completed[missing.rows] - mu)
    pulled = np.where(mask, residual @ precision, 0.0)
    values = mu - np.einsum("nij,nj->ni", covariance, pulled)
    if rng is not None:
        factor = np.linalg.cholesky(covariance)
        noise = np.where(mask, rng.standard_normal(mask.shape), 0.0)
        values = values + np.einsum("nij,nj->ni", factor, noise)
    target = completed[missing.rows]
    target[mask] = values[mask]
    completed[missing.rows] = target


def _fit_complete(
    design: FloatArray, completed: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Least squares of completed outcomes: B̂, residual cross-products S, and (X'X)⁻¹."""
    xtx_inverse = np.asarray(np.linalg.inv(design.T @ design), dtype=np.float64)
    coefficients = xtx_inverse @ design.T @ completed
    residuals = completed - design @ coefficients
    return coefficients, residuals.T @ residuals, xtx_inverse


def _starting_values(data: ImputationData, iterations: int = 30) -> tuple[FloatArray, FloatArray]:
    """Deterministic start near the posterior mode: conditional-mean fill and refit, repeated."""
    missing = np.isnan(data.outcome)
    completed = data.outcome.copy()
    column_means = np.nanmean(np.where(missing, np.nan, data.outcome), axis=0)
    completed[missing] = np.take(column_means, np.nonzero(missing)[1])
    missing_rows = _missing(missing)
    n, p = data.design.shape
    coefficients, cross, _ = _fit_complete(data.design, completed)
    sigma = cross / (n - p)
    for _ in range(iterations):
        _conditional_draw(completed, data.design @ coefficients, sigma, missing_rows, None)
        coefficients, cross, _ = _fit_complete(data.design, completed)
        sigma = cross / (n - p)
    return coefficients, sigma


def _draw_parameters(
    design: FloatArray, completed: FloatArray, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """One posterior draw of (B, Σ) given completed data (Jeffreys prior)."""
    n, p = design.shape
    k = completed.shape[1]
    coefficients, cross, xtx_inverse = _fit_complete(design, completed)
    # Σ ~ InvWishart(n − p, S) by Bartlett's decomposition of Σ⁻¹ ~ Wishart(n − p, S⁻¹):
    # Σ⁻¹ = (C A)(C A)ᵀ with C = chol(S⁻¹), A lower triangular, A_ii² ~ χ²(n − p − i),
    # A_ij ~ N(0, 1) below the diagonal; then R = (C A)⁻ᵀ is a square root of Σ.
    bartlett = np.tril(rng.standard_normal((k, k)), -1)
    bartlett[np.diag_indices(k)] = np.sqrt(rng.chisquare(n - p - np.arange(k)))
    lower = np.linalg.cholesky(np.linalg.inv(cross)) @ bartlett
    root = np.linalg.inv(lower).T
    sigma = root @ root.T
    left = np.linalg.cholesky(xtx_inverse)
    noise = rng.standard_normal(coefficients.shape)
    return coefficients + left @ noise @ root.T, sigma


def ancova(design: FloatArray, response: FloatArray, column: int) -> tuple[float, float, float]:
    """OLS of *response* on *design*: estimate and variance of coefficient *column*, residual df.

    Raises
    ------
    AnalysisError
        The design is rank-deficient or leaves no residual degrees of freedom.
    """
    n, p = design.shape
    if n <= p or np.linalg.matrix_rank(design) < p:
        raise AnalysisError(
            f"ANCOVA design is rank-deficient or too small ({n} participants, {p} terms)"
        )
    xtx_inverse = np.linalg.inv(design.T @ design)
    coefficients = xtx_inverse @ design.T @ response
    residual = response - design @ coefficients
    variance = float(residual @ residual) / (n - p)
    return float(coefficients[column]), variance * float(xtx_inverse[column, column]), float(n - p)


@dataclass(frozen=True)
class PooledEstimate:
    """Rubin's rules result for one quantity.

    Attributes
    ----------
    estimate, std_error, df, t_value, p_value, ci_lower, ci_upper
        Pooled estimate and its inference (Barnard–Rubin df).
    within, between
        Mean within-imputation variance W̄ and between-imputation variance B.
    imputations
        Number of imputations M.
    monte_carlo_error
        Monte-Carlo standard error of the pooled estimate, sqrt(B / M).
    """

    estimate: float
    std_error: float
    df: float
    t_value: float
    p_value: float
    ci_lower: float
    ci_upper: float
    within: float
    between: float
    imputations: int
    monte_carlo_error: float


def rubin_pool(
    estimates: Sequence[float],
    variances: Sequence[float],
    complete_df: float,
    confidence_level: float = 0.95,
) -> PooledEstimate:
    """Combine per-imputation estimates with Rubin's rules and Barnard–Rubin degrees of freedom.

    Notes
    -----
    ``T = W̄ + (1 + 1/M) B``; ``ν_old = (M − 1) / λ²`` with ``λ = (1 + 1/M) B / T``;
    ``ν_obs = (ν_com + 1) / (ν_com + 3) · ν_com · (1 − λ)``; ``ν = 1 / (1/ν_old + 1/ν_obs)``
    (Barnard and Rubin 1999), as SAS PROC MIANALYZE with EDF= and rbmi.
    """
    q = np.asarray(estimates, dtype=np.float64)
    u = np.asarray(variances, dtype=np.float64)
    m = len(q)
    if m < 2:
        raise AnalysisError("Rubin's rules need at least two imputations")
    estimate = float(q.mean())
    within = float(u.mean())
    between = float(q.var(ddof=1))
    total = within + (1 + 1 / m) * between
    fraction = (1 + 1 / m) * between / total if total > 0 else 0.0
    if fraction > 0:
        df_old = (m - 1) / fraction**2
        df_obs = (complete_df + 1) / (complete_df + 3) * complete_df * (1 - fraction)
        df = 1 / (1 / df_old + 1 / df_obs)
    else:
        df = complete_df
    std_error = float(np.sqrt(total))
    t_value = estimate / std_error
    quantile = float(stats.t.ppf(0.5 + confidence_level / 2, df))
    return PooledEstimate(
        estimate=estimate,
        std_error=std_error,
        df=float(df),
        t_value=float(t_value),
        p_value=float(2 * stats.t.sf(abs(t_value), df)),
        ci_lower=estimate - quantile * std_error,
        ci_upper=estimate + quantile * std_error,
        within=within,
        between=between,
        imputations=m,
        monte_carlo_error=float(np.sqrt(between / m)),
    )


@dataclass(frozen=True)
class _Task:
    data: ImputationData
    method: ImputationMethod
    seed: np.random.SeedSequence
    start_coefficients: FloatArray
    start_sigma: FloatArray
    burn_in: int
    thin: int
    count: int
    analysis_index: int
    deltas: tuple[float, ...]


def _imputation_means(data: ImputationData, coefficients: FloatArray, method: str) -> FloatArray:
    own = data.design @ coefficients
    if method == "mar":
        return own
    reference_design = data.design.copy()
    reference_design[:, data.arm_column] = 0.0
    reference = reference_design @ coefficients
    experimental = data.experimental
    start = data.reference_from
    k = data.outcome.shape[1]
    if method == "copy_reference":
        # with the data's events, only participants with an event in the window copy the
        # reference (the others are MAR); the fallback copies it for every experimental one
        affected = experimental if data.event_index is None else experimental & (start < k)
        return np.where(affected[:, None], reference, own)
    # jump to reference: own-arm mean before the event, reference mean from it on
    after = np.arange(k)[None, :] >= start[:, None]
    return np.where(experimental[:, None] & after, reference, own)


def _run_chain(task: _Task) -> list[list[tuple[float, float, float]]]:
    """One data-augmentation chain giving ``task.count`` imputations, each analysed per delta.

    ``burn_in`` iterations before the first imputation, ``thin`` between later ones.
    """
    with single_threaded_blas():
        return _chain_results(task)


def _chain_results(task: _Task) -> list[list[tuple[float, float, float]]]:
    data = task.data
    rng = np.random.default_rng(task.seed)
    missing = np.isnan(data.outcome)
    missing_rows = _missing(missing)
    augmented = data.outcome.copy()
    coefficients, sigma = task.start_coefficients, task.start_sigma
    imputed = missing[:, task.analysis_index] & data.experimental
    results = []
    for index in range(task.count):
        for _ in range(task.burn_in if index == 0 else task.thin):
            _conditional_draw(augmented, data.design @ coefficients, sigma, missing_rows, rng)
            coefficients, sigma = _draw_parameters(data.design, augmented, rng)
        completed = augmented.copy()
        means = _imputation_means(data, coefficients, task.method)
        _conditional_draw(completed, means, sigma, missing_rows, rng)
        response = completed[:, task.analysis_index]
        per_delta = []
        for delta in task.deltas:
            shifted = response + np.where(imputed, delta, 0.0)
            per_delta.append(ancova(data.design, shifted, data.arm_column))
        results.append(per_delta)
    return results


@dataclass(frozen=True)
class MIResult:
    """Pooled results of a multiple-imputation analysis, one per delta (``0.0`` without a grid).

    Attributes
    ----------
    method
        ``mar``, ``jump_to_reference`` or ``copy_reference``.
    visit
        The analysis visit.
    pooled
        Delta → pooled arm difference (experimental − reference).
    per_imputation
        One row per imputation and delta: ``imputation, delta, estimate, variance, df``.
    """

    method: str
    visit: int
    pooled: dict[float, PooledEstimate]
    per_imputation: pd.DataFrame = field(repr=False)


def run_multiple_imputation(
    data: ImputationData,
    *,
    method: ImputationMethod,
    imputations: int,
    seed: int,
    analysis_visit: int | None = None,
    deltas: Sequence[float] = (0.0,),
    burn_in: int = 25,
    thin: int = 5,
    chain_length: int = 10,
    executor: Executor | None = None,
    confidence_level: float = 0.95,
) -> MIResult:
    """Multiply impute, analyse each data set by ANCOVA at one visit, and pool.

    Parameters
    ----------
    data
        Wide outcomes and design from :func:`prepare_imputation_data`.
    method
        ``mar``, ``jump_to_reference`` or ``copy_reference``.
    imputations
        Number of imputations M (one independent chain each).
    seed
        Plan seed; imputation *j* uses the *j*-th ``SeedSequence`` spawned from it.
    analysis_visit
        Visit of the ANCOVA; default the last.
    deltas
        Delta adjustments of imputed experimental-arm values at that visit (tipping point).
    burn_in
        Data-augmentation iterations before a chain's first imputation.
    thin
        Iterations between successive imputations of one chain.
    chain_length
        Imputations per chain (per task); fixed, so the result does not depend on the executor.
    executor
        Where the imputations run; default in this process.

    Returns
    -------
    MIResult
        Rubin's-rules estimates of experimental − reference for every delta.

    Raises
    ------
    AnalysisError
        Too few participants for the imputation model, or an arm without participants.
    """
    n, p = data.design.shape
    k = data.outcome.shape[1]
    experimental = data.experimental
    if experimental.all() or not experimental.any():
        raise AnalysisError("multiple imputation needs participants in both arms")
    if n - p < k + 1:
        raise AnalysisError(
            f"too few participants ({n}) for an imputation model with {p} terms and {k} visits"
        )
    unobserved = [bool(e) for e in np.isnan(data.outcome).all(axis=0).ravel()]
    if any(unobserved):
        empty = [str(v) for v, e in zip(data.visits, unobserved, strict=True) if e]
        raise AnalysisError(f"no observed outcome at visit(s) {', '.join(empty)}")
    visit = data.visits[-1] if analysis_visit is None else analysis_visit
    if visit not in data.visits:
        raise AnalysisError(f"analysis visit {visit} is not among the visits {data.visits}")
    start_coefficients, start_sigma = _starting_values(data)
    # The split into chains is fixed by M alone (never by the number of workers), so every
    # executor computes exactly the same draws.
    counts = [
        min(chain_length, imputations - start) for start in range(0, imputations, chain_length)
    ]
    tasks = [
        _Task(
            data=data,
            method=method,
            seed=child,
            start_coefficients=start_coefficients,
            start_sigma=start_sigma,
            burn_in=burn_in,
            thin=thin,
            count=count,
            analysis_index=data.visits.index(visit),
            deltas=tuple(float(d) for d in deltas),
        )
        for child, count in zip(spawn_seeds(seed, len(counts)), counts, strict=True)
    ]
    runner = executor if executor is not None else SerialExecutor()
    outcomes = [imputation for chain in runner.map(_run_chain, tasks) for imputation in chain]
    rows = [
        (j, delta, estimate, variance, df)
        for j, per_delta in enumerate(outcomes)
        for delta, (estimate, variance, df) in zip(tasks[0].deltas, per_delta, strict=True)
    ]
    table = pd.DataFrame(rows, columns=["imputation", "delta", "estimate", "variance", "df"])
    pooled = {}
    for delta in tasks[0].deltas:
        group = table[table["delta"] == delta]
        pooled[delta] = rubin_pool(
            group["estimate"].tolist(),
            group["variance"].tolist(),
            float(group["df"].iloc[0]),
            confidence_level,
        )
    return MIResult(method=method, visit=visit, pooled=pooled, per_imputation=table)
