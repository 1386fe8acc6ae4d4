"""Mixed model for repeated measures (MMRM) matching SAS PROC MIXED's ``REPEATED`` statement.

``fit_mmrm`` fits ``y = X beta + e`` with ``e`` independent between subjects and a visit-by-visit
covariance within subject (unstructured by default), by REML or ML, and returns an
:class:`MMRMResult` with Satterthwaite, Kenward-Roger, residual or between-within degrees of
freedom, least-squares means, their differences, arbitrary contrasts and Type III F tests, all
from the model-based or the empirical (sandwich, SAS ``EMPIRICAL``) covariance of the estimates.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import formulaic
import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.linalg
from scipy import stats

from studyman.errors import AnalysisError
from studyman.stats._mmrm_engine import (
    Engine,
    Evaluation,
    InfeasibleParametersError,
    build_patterns,
    empirical_meat,
    kenward_roger_f,
    newton_fit,
    satterthwaite_1d,
    satterthwaite_f,
    t_summary,
)
from studyman.stats.covariance import CovarianceStructure, get_structure

__all__ = ["MMRMConvergenceError", "MMRMResult", "fit_mmrm"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DfMethod = Literal[
    "satterthwaite", "kenward-roger", "kenward-roger-linear", "residual", "between-within"
]
_DF_METHODS: dict[str, str] = {
    "satterthwaite": "satterthwaite",
    "satterth": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kr": "kenward-roger",
    "kenward-roger-linear": "kenward-roger-linear",
    "kr-linear": "kenward-roger-linear",
    "residual": "residual",
    "between-within": "between-within",
    "betwithin": "between-within",
    "bw": "between-within",
}
_VCOV_METHODS = ("model", "empirical")
# SAS PROC MIXED allows EMPIRICAL only with DDFM=BETWITHIN (its default then) or RESIDUAL
_EMPIRICAL_DF_METHODS = ("between-within", "residual")
_ESTIMATE_COLUMNS = ["estimate", "std_error", "df", "t_value", "p_value", "ci_lower", "ci_upper"]


class MMRMConvergenceError(AnalysisError):
    """No requested covariance structure converged; ``attempts`` says why for each one.

    Attributes
    ----------
    attempts
        ``(structure, reason)`` for every structure tried, in order.
    """

    def __init__(self, message: str, attempts: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True, eq=False)
class _Inference:
    """Everything the result's methods need; arrays are never exposed."""

    beta: FloatArray
    phi_matrix: FloatArray
    phi_adjusted: FloatArray | None
    phi_empirical: FloatArray | None
    q_mats: FloatArray
    theta_cov: FloatArray
    df_method: str
    residual_df: float
    between_df: float
    within_df: float
    within_columns: npt.NDArray[np.bool_]
    column_names: tuple[str, ...]
    model_spec: Any
    factor_levels: Mapping[str, tuple[Any, ...]]
    covariate_means: Mapping[str, float]
    visit: str
    visit_levels: tuple[Any, ...]
    term_columns: Mapping[str, tuple[int, ...]]
    term_variables: Mapping[str, tuple[str, ...]]

    def covariance_for_tests(self) -> FloatArray:
        if self.phi_empirical is not None:
            return self.phi_empirical
        if self.phi_adjusted is not None:
            return self.phi_adjusted
        return self.phi_matrix

    def test_1d(self, l_vec: FloatArray) -> tuple[float, float, float]:
        estimate = float(l_vec @ self.beta)
        cov = self.covariance_for_tests()
        std_error = float(np.sqrt(l_vec @ cov @ l_vec))
        return estimate, std_error, self.df_1d(l_vec)

    def df_1d(self, l_vec: FloatArray) -> float:
        method = self.df_method
        if method in {"satterthwaite", "kenward-roger", "kenward-roger-linear"}:
            # for one contrast the Kenward-Roger df (with Theta from the unadjusted Phi)
            # reduces to the Satterthwaite formula
            return satterthwaite_1d(l_vec, self.phi_matrix, self.q_mats, self.theta_cov)
        if method == "residual":
            return self.residual_df
        involved = np.abs(l_vec) > 1e-12
        return self.within_df if bool(np.any(involved & self.within_columns)) else self.between_df

    def test_f(self, l_mat: FloatArray) -> tuple[float, float, float]:
        ell = float(l_mat.shape[0])
        if self.df_method in {"kenward-roger", "kenward-roger-linear"}:
            assert self.phi_adjusted is not None
            f_value, df = kenward_roger_f(
                l_mat, self.beta, self.phi_matrix, self.phi_adjusted, self.q_mats, self.theta_cov
            )
            return ell, df, f_value
        if self.df_method == "satterthwaite":
            f_value, df = satterthwaite_f(
                l_mat, self.beta, self.phi_matrix, self.q_mats, self.theta_cov
            )
            return ell, df, f_value
        estimate = l_mat @ self.beta
        cov = self.covariance_for_tests()
        f_value = float(estimate @ np.linalg.solve(l_mat @ cov @ l_mat.T, estimate) / ell)
        if self.df_method == "residual":
            return ell, self.residual_df, f_value
        involved = np.any(np.abs(l_mat) > 1e-12, axis=0)
        within = bool(np.any(involved & self.within_columns))
        return ell, self.within_df if within else self.between_df, f_value

    @functools.cached_property
    def grid(self) -> tuple[pd.DataFrame, FloatArray]:
        """Reference grid over all model factors (covariates at their means) and its design."""
        names = list(self.factor_levels)
        combos = list(itertools.product(*(self.factor_levels[name] for name in names)))
        frame = pd.DataFrame(combos, columns=names)
        for name in names:
            frame[name] = pd.Categorical(frame[name], categories=list(self.factor_levels[name]))
        for name, mean in self.covariate_means.items():
            frame[name] = mean
        design = self.model_spec.get_model_matrix(frame)
        x = np.asarray(design[list(self.column_names)], dtype=np.float64)
        return frame, x


@dataclass(frozen=True, eq=False)
class MMRMResult:
    """A fitted MMRM.

    Attributes
    ----------
    formula, subject, visit, group
        The model as requested.
    method
        ``"reml"`` or ``"ml"``.
    df_method
        Degrees-of-freedom method used for every test.
    vcov
        Covariance of the fixed-effect estimates used for every standard error and test:
        ``"model"`` (``(X' V^-1 X)^-1``, Kenward-Roger-adjusted with a Kenward-Roger df method) or
        ``"empirical"`` (the sandwich estimator, SAS ``EMPIRICAL``).
    covariance_structure
        The structure actually used (the first of the requested one and the fallbacks that
        converged).
    fallback_reason
        ``None`` when the requested structure was used, else why each earlier one failed.
    coefficients
        One row per design column (formulaic names), columns ``estimate, std_error, df, t_value,
        p_value, ci_lower, ci_upper``.
    covariance
        The estimated visit-by-visit covariance matrix (rows indexed by group and visit when a
        separate matrix is fitted per group).
    covariance_parameters
        The structure's own parameters (SAS names) with standard errors from the inverse observed
        information.
    deviance, aic, bic
        ``-2 log L`` (restricted for REML) on SAS's scale; AIC ``= deviance + 2 d`` and BIC
        ``= deviance + d log(n_subjects)`` with ``d`` the covariance parameters (REML) or all
        parameters (ML), as SAS PROC MIXED.
    converged
        Always ``True`` for a returned result: a fit that did not converge raises
        :class:`MMRMConvergenceError` (or is replaced by a fallback).
    n_subjects, n_observations, n_dropped, dropped_rows
        Subjects and rows analysed; rows dropped for a missing outcome or covariate and their index
        labels.
    iterations
        Newton iterations of the fit that was used.
    """

    formula: str
    subject: str
    visit: str
    group: str | None
    method: str
    df_method: str
    vcov: str
    covariance_structure: str
    fallback_reason: str | None
    coefficients: pd.DataFrame
    covariance: pd.DataFrame
    covariance_parameters: pd.DataFrame
    deviance: float
    aic: float
    bic: float
    converged: bool
    n_subjects: int
    n_observations: int
    n_dropped: int
    dropped_rows: tuple[Any, ...]
    iterations: int
    _inference: _Inference = field(repr=False)

    @property
    def log_likelihood(self) -> float:
        """The (restricted) log-likelihood, ``-deviance / 2``."""
        return -0.5 * self.deviance

    def __repr__(self) -> str:
        return (
            f"<MMRMResult {self.formula!r}: {self.covariance_structure}, "
            f"{self.method.upper()}, {self.df_method} df, {self.vcov} covariance; "
            f"{self.n_subjects} subjects, {self.n_observations} observations; "
            f"-2 log L {self.deviance:.4f}>"
        )

    def summary(self) -> str:
        """A plain-text report in the order of SAS PROC MIXED's listing.

        Model information, fit statistics, covariance parameter estimates, the fixed-effect
        solution and the Type III tests, each with the method that produced it.
        """
        likelihood = "-2 Res Log Likelihood" if self.method == "reml" else "-2 Log Likelihood"
        lines = [
            f"MMRM  {self.formula}",
            f"Subject {self.subject}, visit {self.visit}"
            + (f", a covariance matrix per {self.group}" if self.group else ""),
            f"Covariance structure   {self.covariance_structure}"
            + (f" (fallback: {self.fallback_reason})" if self.fallback_reason else ""),
            f"Estimation             {self.method.upper()}, Newton-Raphson, "
            f"{self.iterations} iterations, converged",
            f"Degrees of freedom     {self.df_method}",
            f"Fixed-effect SEs       {self.vcov}",
            f"Subjects {self.n_subjects}, observations used {self.n_observations}, "
            f"rows dropped (missing outcome or covariate) {self.n_dropped}",
            "",
            f"{likelihood:<24}{self.deviance:.4f}",
            f"{'AIC':<24}{self.aic:.4f}",
            f"{'BIC':<24}{self.bic:.4f}",
            "",
            "Covariance parameter estimates",
            self.covariance_parameters.to_string(float_format=lambda v: f"{v:.6g}"),
            "",
            "Solution for fixed effects",
            self.coefficients.to_string(float_format=lambda v: f"{v:.6g}"),
            "",
            "Type III tests of fixed effects",
            self.type3_tests().to_string(index=False, float_format=lambda v: f"{v:.6g}"),
        ]
        return "\n".join(lines)

    def coefficient_covariance(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effect estimates behind every SE and test (SAS COVB).

        The empirical (sandwich) matrix when fitted with ``vcov="empirical"``, the
        Kenward-Roger-adjusted one with a Kenward-Roger df method, else ``(X' V^-1 X)^-1``.
        """
        inf = self._inference
        names = list(inf.column_names)
        return pd.DataFrame(inf.covariance_for_tests().copy(), index=names, columns=names)

    def contrast(self, weights: Any, *, level: float = 0.95) -> pd.DataFrame:
        """Estimate linear combinations of the coefficients, one t test per row.

        Parameters
        ----------
        weights
            A vector or matrix with one column per coefficient, a mapping from coefficient name
            to weight, or a DataFrame whose columns are coefficient names.
        level
            Confidence level of the intervals.
        """
        l_mat = self._as_matrix(weights)
        rows = [self._row(l_vec, level) for l_vec in l_mat]
        return pd.DataFrame(rows, columns=_ESTIMATE_COLUMNS)

    def f_test(self, weights: Any) -> pd.Series:
        """Joint F test of ``L beta = 0`` with the result's df method (KR-scaled for KR)."""
        l_mat = _row_basis(self._as_matrix(weights))
        num_df, den_df, f_value = self._inference.test_f(l_mat)
        p_value = float(stats.f.sf(f_value, num_df, den_df))
        return pd.Series(
            {"num_df": num_df, "den_df": den_df, "f_value": f_value, "p_value": p_value}
        )

    def type3_tests(self) -> pd.DataFrame:
        """Type III F tests of every model term except the intercept.

        Notes
        -----
        Each term's hypothesis is built on the reference grid (every combination of the model's
        factors, covariates at their means): the term's interaction contrasts among cell means
        averaged with equal weights over the other factors; a covariate enters through its slope.
        This is SAS's Type III for the models MMRMs use (and emmeans' ``joint_tests``).
        """
        inf = self._inference
        frame, x_grid = inf.grid
        rows = []
        for term, variables in inf.term_variables.items():
            if not variables:
                continue
            l_mat = self._term_hypothesis(frame, x_grid, variables)
            if l_mat.shape[0] == 0:
                continue
            num_df, den_df, f_value = inf.test_f(l_mat)
            rows.append(
                {
                    "term": term,
                    "num_df": num_df,
                    "den_df": den_df,
                    "f_value": f_value,
                    "p_value": float(stats.f.sf(f_value, num_df, den_df)),
                }
            )
        return pd.DataFrame(rows, columns=["term", "num_df", "den_df", "f_value", "p_value"])

    def lsmeans(self, factor: str, *, level: float = 0.95) -> pd.DataFrame:
        """Least-squares means of each level of ``factor`` at each visit.

        Notes
        -----
        As SAS ``LSMEANS factor*visit`` and emmeans: other factors weighted equally, covariates at
        their mean over the analysed rows.
        """
        vectors = self._lsmean_vectors(factor)
        rows = []
        for (visit_level, factor_level), l_vec in vectors.items():
            rows.append([visit_level, factor_level, *self._row(l_vec, level)])
        return pd.DataFrame(rows, columns=["visit", "level", *_ESTIMATE_COLUMNS])

    def lsmeans_contrasts(
        self, factor: str, *, reference: Any = None, level: float = 0.95
    ) -> pd.DataFrame:
        """Each level of ``factor`` minus the reference level at each visit, in visit order.

        Parameters
        ----------
        factor
            A factor of the model (e.g. the treatment arm).
        reference
            The reference level; by default the factor's first level (its reference in the design).
        level
            Confidence level of the intervals.
        """
        inf = self._inference
        levels = self._factor_levels(factor)
        ref = levels[0] if reference is None else reference
        if ref not in levels:
            raise AnalysisError(f"level {ref!r} is not a level of {factor!r}: {list(levels)}")
        vectors = self._lsmean_vectors(factor)
        rows = []
        for visit_level in inf.visit_levels:
            for factor_level in levels:
                if factor_level == ref:
                    continue
                l_vec = vectors[(visit_level, factor_level)] - vectors[(visit_level, ref)]
                rows.append([visit_level, factor_level, ref, *self._row(l_vec, level)])
        return pd.DataFrame(rows, columns=["visit", "level", "reference", *_ESTIMATE_COLUMNS])

    # --- helpers ------------------------------------------------------------------------------

    def _row(self, l_vec: FloatArray, level: float) -> list[float]:
        estimate, std_error, df = self._inference.test_1d(l_vec)
        t_value, p_value, lower, upper = t_summary(estimate, std_error, df, level)
        return [estimate, std_error, df, t_value, p_value, lower, upper]

    def _factor_levels(self, factor: str) -> tuple[Any, ...]:
        inf = self._inference
        if factor not in inf.factor_levels:
            known = ", ".join(sorted(inf.factor_levels))
            raise AnalysisError(f"{factor!r} is not a factor of the model; factors: {known}")
        return inf.factor_levels[factor]

    def _lsmean_vectors(self, factor: str) -> dict[tuple[Any, Any], FloatArray]:
        inf = self._inference
        levels = self._factor_levels(factor)
        frame, x_grid = inf.grid
        out: dict[tuple[Any, Any], FloatArray] = {}
        for visit_level in inf.visit_levels:
            at_visit = np.asarray(frame[inf.visit] == visit_level)
            for factor_level in levels:
                if factor == inf.visit and factor_level != visit_level:
                    continue
                chosen = at_visit & np.asarray(frame[factor] == factor_level)
                out[(visit_level, factor_level)] = x_grid[chosen].mean(axis=0)
        return out

    def _term_hypothesis(
        self, frame: pd.DataFrame, x_grid: FloatArray, variables: tuple[str, ...]
    ) -> FloatArray:
        inf = self._inference
        factors = [v for v in variables if v in inf.factor_levels]
        covariates = [v for v in variables if v in inf.covariate_means]
        effect = x_grid
        if covariates:
            # mixed partial difference in the covariates (the model is linear in each of them)
            effect = np.zeros_like(x_grid)
            for subset in itertools.product([0, 1], repeat=len(covariates)):
                shifted = frame.copy()
                for name, bump in zip(covariates, subset, strict=True):
                    shifted[name] = inf.covariate_means[name] + bump
                design = inf.model_spec.get_model_matrix(shifted)
                x_shift = np.asarray(design[list(inf.column_names)], dtype=np.float64)
                sign = (-1) ** (len(covariates) - sum(subset))
                effect = effect + sign * x_shift
        cells = list(itertools.product(*(inf.factor_levels[f] for f in factors)))
        cell_means = np.empty((len(cells), x_grid.shape[1]))
        for index, cell in enumerate(cells):
            chosen = np.ones(len(frame), dtype=bool)
            for name, value in zip(factors, cell, strict=True):
                chosen &= np.asarray(frame[name] == value)
            cell_means[index] = effect[chosen].mean(axis=0)
        contrast: FloatArray = np.ones((1, 1))
        for name in factors:
            n_levels = len(inf.factor_levels[name])
            diff = np.hstack([-np.ones((n_levels - 1, 1)), np.eye(n_levels - 1)])
            contrast = np.asarray(np.kron(contrast, diff), dtype=np.float64)
        return _row_basis(contrast @ cell_means)

    def _as_matrix(self, weights: Any) -> FloatArray:
        names = list(self._inference.column_names)
        if isinstance(weights, pd.DataFrame):
            unknown = [c for c in weights.columns if c not in names]
            if unknown:
                raise AnalysisError(f"contrast names unknown coefficients: {unknown}")
            return np.asarray(weights.reindex(columns=names, fill_value=0.0), dtype=np.float64)
        if isinstance(weights, Mapping):
            unknown = [c for c in weights if c not in names]
            if unknown:
                raise AnalysisError(f"contrast names unknown coefficients: {unknown}")
            return np.array([[float(weights.get(n, 0.0)) for n in names]])
        l_mat = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if l_mat.ndim != 2 or l_mat.shape[1] != len(names):
            raise AnalysisError(
                f"contrast needs {len(names)} weights per row (one per coefficient), "
                f"got shape {np.shape(weights)}"
            )
        return l_mat


def _row_basis(l_mat: FloatArray) -> FloatArray:
    """An orthonormal basis of the row space of ``l_mat`` (same hypothesis, full row rank)."""
    if l_mat.size == 0:
        return l_mat
    _, s, vt = np.linalg.svd(l_mat, full_matrices=False)
    rank = int(np.sum(s > 1e-9 * max(float(s[0]), 1e-300)))
    return np.asarray(vt[:rank], dtype=np.float64)


# --- data preparation ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Prepared:
    data: pd.DataFrame
    outcome: str
    rhs: str
    visit_levels: tuple[Any, ...]
    group_levels: tuple[Any, ...]
    n_dropped: int
    dropped_rows: tuple[Any, ...]


def _name_rows(index: pd.Index, limit: int = 10) -> str:
    labels = [str(v) for v in index[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ", ".join(labels) + more


def _natural_key(value: Any) -> tuple[Any, ...]:
    """Sort key putting ``VIS2`` before ``VIS10`` (numbers keep their numeric order)."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (0, float(value))
    parts = re.split(r"(\d+)", str(value))
    return (1, *((0, int(part)) if part.isdigit() else (1, part) for part in parts))


def _is_factor(series: pd.Series) -> bool:
    return bool(
        isinstance(series.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(series)
        or not pd.api.types.is_numeric_dtype(series)
    )


def _prepare(
    data: pd.DataFrame, formula: str, subject: str, visit: str, group: str | None
) -> tuple[_Prepared, list[str]]:
    if "~" not in formula:
        raise AnalysisError(f"formula {formula!r} has no '~' (expected 'outcome ~ terms')")
    lhs, rhs = (part.strip() for part in formula.split("~", 1))
    if lhs not in data.columns:
        raise AnalysisError(
            f"the outcome {lhs!r} (left of '~' in {formula!r}) is not a column of the data"
        )
    for role, name in (("subject", subject), ("visit", visit), ("group", group)):
        if name is not None and name not in data.columns:
            raise AnalysisError(f"the {role} column {name!r} is not a column of the data")
    try:
        needed = sorted(formulaic.Formula(rhs).required_variables)
    except Exception as exc:  # formulaic raises several types for a bad formula
        raise AnalysisError(f"cannot parse the model formula {formula!r}: {exc}") from exc
    missing_columns = [name for name in needed if name not in data.columns]
    if missing_columns:
        raise AnalysisError(f"formula {formula!r} names columns not in the data: {missing_columns}")

    # only the columns the model uses (copying the whole frame costs time on wide data)
    used = list(dict.fromkeys([lhs, subject, visit, *needed, *([group] if group else [])]))
    frame = data.loc[:, used].copy()
    no_subject = frame.index[frame[subject].isna()]
    if len(no_subject):
        raise AnalysisError(
            f"missing subject id ({subject!r}) in rows {_name_rows(no_subject)}; "
            "every row must belong to a subject"
        )
    no_visit = frame.index[frame[visit].isna()]
    if len(no_visit):
        raise AnalysisError(f"missing visit ({visit!r}) in rows {_name_rows(no_visit)}")
    duplicated = frame.duplicated([subject, visit], keep=False)
    if bool(duplicated.any()):
        rows = frame.index[duplicated]
        first = frame.loc[rows[0]]
        raise AnalysisError(
            f"subject {first[subject]!r} has visit {first[visit]!r} more than once "
            f"(rows {_name_rows(rows)}); each subject may have each visit once"
        )
    outcome = frame[lhs]
    if not pd.api.types.is_numeric_dtype(outcome) or pd.api.types.is_bool_dtype(outcome):
        coerced = pd.to_numeric(outcome, errors="coerce")
        bad = frame.index[coerced.isna() & outcome.notna()]
        raise AnalysisError(
            f"the outcome {lhs!r} is not numeric: non-numeric values in rows {_name_rows(bad)}"
            if len(bad)
            else f"the outcome {lhs!r} is not numeric (dtype {outcome.dtype})"
        )

    if isinstance(frame[visit].dtype, pd.CategoricalDtype):
        visit_levels = tuple(frame[visit].cat.categories)
    else:
        visit_levels = tuple(sorted(frame[visit].unique(), key=_natural_key))
    frame[visit] = pd.Categorical(frame[visit], categories=list(visit_levels))

    model_columns = [c for c in needed if c != visit]
    incomplete = frame[lhs].isna() | frame[model_columns].isna().any(axis=1)
    if group is not None:
        incomplete |= frame[group].isna()
    dropped = frame.index[incomplete]
    frame = frame.loc[~incomplete]
    if frame.empty:
        raise AnalysisError("no row has the outcome and every covariate of the model")
    for name in model_columns:
        series = frame[name]
        if _is_factor(series) and not isinstance(series.dtype, pd.CategoricalDtype):
            # levels seen in the analysed rows, sorted (R's default order); explicit categories
            # also spare formulaic a slow path
            frame[name] = pd.Categorical(series, categories=sorted(series.unique()))
    counts = frame[visit].value_counts()
    empty = [level for level in visit_levels if counts.get(level, 0) == 0]
    if empty:
        raise AnalysisError(
            f"visit level(s) {empty} of {visit!r} have no observations with a non-missing "
            "outcome; remove the level or the visit"
        )
    group_levels: tuple[Any, ...] = ()
    if group is not None:
        per_subject = frame.groupby(subject, observed=True, sort=False)[group].nunique()
        varying = per_subject.index[per_subject > 1]
        if len(varying):
            raise AnalysisError(
                f"the group {group!r} changes within subject(s) {_name_rows(varying)}; "
                "a covariance group must be constant within subject"
            )
        per_group = frame.groupby([group, visit], observed=False).size()
        unseen = [f"{key[0]}/{key[1]}" for key, count in per_group.items() if count == 0]  # type: ignore[index]
        if unseen:
            raise AnalysisError(
                f"with a covariance per {group!r}, every group needs observations at every visit; "
                f"none at (group/visit): {unseen}"
            )
        if isinstance(frame[group].dtype, pd.CategoricalDtype):
            group_levels = tuple(
                c for c in frame[group].cat.categories if bool((frame[group] == c).any())
            )
        else:
            group_levels = tuple(sorted(frame[group].unique()))
    return (
        _Prepared(frame, lhs, rhs, visit_levels, group_levels, len(dropped), tuple(dropped)),
        needed,
    )


def _aliased_columns(x: FloatArray) -> list[int]:
    """Columns that are (numerically) linear combinations of earlier ones, as R's ``lm``."""
    r_mat = scipy.linalg.qr(x, mode="r")[0]
    norms = np.linalg.norm(x, axis=0)
    diag = np.abs(np.diag(r_mat))[: x.shape[1]]
    if diag.size < x.shape[1]:
        diag = np.concatenate([diag, np.zeros(x.shape[1] - diag.size)])
    return [j for j in range(x.shape[1]) if norms[j] == 0 or diag[j] <= 1e-7 * norms[j]]


def _start_covariance(
    residuals: FloatArray,
    subject_codes: IntArray,
    visit_codes: IntArray,
    n_subjects: int,
    n_visits: int,
) -> FloatArray:
    wide = np.full((n_subjects, n_visits), np.nan)
    wide[subject_codes, visit_codes] = residuals
    sample = np.array(pd.DataFrame(wide).cov(min_periods=2), dtype=np.float64)
    variances = np.diag(sample).copy()
    fallback = float(np.nanmean(variances)) if np.any(np.isfinite(variances)) else 1.0
    variances[~np.isfinite(variances) | (variances <= 0)] = max(fallback, 1e-8)
    sample[~np.isfinite(sample)] = 0.0
    np.fill_diagonal(sample, variances)
    eigval, eigvec = np.linalg.eigh(sample)
    floor = 1e-3 * float(np.max(eigval))
    if float(eigval[0]) < floor:
        sample = (eigvec * np.maximum(eigval, floor)) @ eigvec.T
    return np.asarray(0.5 * (sample + sample.T), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class _StructureFit:
    structure: CovarianceStructure
    engine: Engine
    phi: FloatArray
    evaluation: Evaluation
    iterations: int


def fit_mmrm(
    data: pd.DataFrame,
    formula: str,
    *,
    subject: str,
    visit: str,
    covariance: str = "unstructured",
    method: Literal["reml", "ml"] = "reml",
    df_method: str = "kenward-roger",
    group: str | None = None,
    fallbacks: Sequence[str] = (),
    max_iterations: int = 50,
    vcov: str = "model",
) -> MMRMResult:
    """Fit a mixed model for repeated measures (generalised least squares, as SAS PROC MIXED).

    Parameters
    ----------
    data
        One row per subject and visit (long format). Rows with a missing outcome or covariate are
        dropped and counted (``n_dropped``).
    formula
        ``"outcome ~ terms"`` in formulaic (patsy) syntax, e.g.
        ``"FEV1 ~ ARMCD * AVISIT + RACE + SEX"``. Non-numeric and categorical columns are factors
        with treatment coding, the first category being the reference: give a column a
        ``pd.Categorical`` dtype to choose the order of its levels.
    subject
        Column identifying the subject (observations of different subjects are independent).
    visit
        Column identifying the visit; it indexes the covariance matrix and is a factor in the
        formula. Its order is that of its categories, else the sorted distinct values.
    covariance
        ``unstructured`` (SAS ``UN``), ``toeplitz`` (``TOEP``), ``heterogeneous-toeplitz``
        (``TOEPH``), ``ar1`` (``AR(1)``), ``heterogeneous-ar1`` (``ARH(1)``),
        ``compound-symmetry`` (``CS``), ``heterogeneous-compound-symmetry`` (``CSH``) or
        ``ante-dependence`` (``ANTE(1)``).
    method
        ``reml`` (default) or ``ml``.
    df_method
        ``kenward-roger`` (default), ``kenward-roger-linear``, ``satterthwaite``, ``residual`` or
        ``between-within``. With ``vcov="empirical"`` give ``between-within`` (SAS's default
        with EMPIRICAL) or ``residual``: the others derive their df from the model-based
        covariance.
    group
        Column whose levels get separate covariance matrices (SAS ``GROUP=``); constant within
        subject.
    fallbacks
        Structures tried in order when the previous one does not converge.
    max_iterations
        Newton iterations allowed per structure.
    vcov
        Covariance of the fixed-effect estimates used for every standard error, t and F test,
        least-squares mean and contrast: ``"model"`` (default; ``(X' V^-1 X)^-1``,
        Kenward-Roger-adjusted with a Kenward-Roger df method) or ``"empirical"`` (the sandwich
        estimator, SAS PROC MIXED's ``EMPIRICAL`` option; see Notes). Recorded as
        ``MMRMResult.vcov``.

    Returns
    -------
    MMRMResult

    Raises
    ------
    AnalysisError
        For unusable data (missing subject ids, a subject with the same visit twice, a visit with no
        observations, a non-numeric outcome, a rank-deficient design); the message names rows or
        terms. Also for an unknown ``vcov`` or a ``df_method`` that does not go with it.
    MMRMConvergenceError
        When neither the structure nor any fallback converges.

    Notes
    -----
    The objective is SAS's: ``-2 l_R = (N - p) log 2 pi + sum_i log|Sigma_i|
    + log|sum_i X_i' Sigma_i^-1 X_i| + sum_i r_i' Sigma_i^-1 r_i`` (``N log 2 pi`` and no
    determinant of the information for ML). It is maximised by Newton-Raphson with the exact
    observed information, over the structure's own (SAS) parameters, aggregating subjects by
    missingness pattern. The covariance of the variance parameters is twice the inverse of the
    Hessian of ``-2 l`` (the inverse *observed* information), as SAS and R mmrm use.

    Kenward-Roger (Kenward & Roger 1997) adjusts the fixed-effect covariance with the first (and,
    for non-linear structures, second) derivatives of the covariance in the structure's own
    parameters; for ``unstructured`` these are its elements, which is SAS's ``DDFM=KR`` and R
    mmrm's "Kenward-Roger-Linear". ``kenward-roger-linear`` drops the second-derivative term for
    every structure. Satterthwaite follows SAS/lmerTest (eigen-decomposition for F tests).
    Between-within gives a contrast within-subject df ``N - n_subjects - p_within`` when it
    involves a column that varies within subject, else ``n_subjects - p_between``.

    ``vcov="empirical"`` replaces the model-based covariance of the estimates by the classical
    sandwich (Liang & Zeger 1986) ``Phi (sum_i X_i' V_i^-1 r_i r_i' V_i^-1 X_i) Phi`` with
    ``Phi = (X' V^-1 X)^-1`` and ``r_i = y_i - X_i beta-hat``, without small-sample correction
    (CR0), which is SAS's ``EMPIRICAL``. The estimates and the covariance parameters are
    unchanged. It stays consistent when the covariance structure is misspecified (the mean model
    being right and subjects independent), but with missing outcomes it is valid only when they
    are missing completely at random (MCAR): its expectations are taken over the missingness,
    which under MAR depends on the outcomes, and under MAR the GLS estimates themselves are
    consistent only with a correct covariance structure (Kenward & Molenberghs 1998). With few
    subjects it is anti-conservative (standard errors too small, no df correction), so prefer the
    model-based covariance with Kenward-Roger df in small trials. The df come from
    ``between-within`` (default, as SAS) or ``residual``; Satterthwaite and Kenward-Roger are
    derived from the model-based covariance and are refused, as SAS does. Validated against SAS
    PROC MIXED ``EMPIRICAL`` (fev_data; ``tests/stats/test_mmrm_empirical.py``).

    Validated against SAS PROC MIXED (fev_data, Satterthwaite; antidepressant trial, DDFM=KR;
    see ``tests/stats/test_mmrm.py``), SAS DDFM=KR and KR(LINEAR) for every other structure
    (``tests/stats/test_mmrm_sas_structures.py``), nlme::gls for the other structures and ML,
    and lmerTest for Satterthwaite Type III F tests. SAS stops at a relative-Hessian criterion
    slightly before the optimum, so its printed covariance, SEs and df can differ from ours by
    about 1e-4 relative; evaluated at SAS's printed covariance parameters, our formulas give
    SAS's numbers.

    Examples
    --------
    >>> data["SEX"] = pd.Categorical(data["SEX"], categories=["Male", "Female"])  # doctest: +SKIP
    >>> result = fit_mmrm(  # doctest: +SKIP
    ...     data, "FEV1 ~ ARMCD * AVISIT + RACE + SEX", subject="USUBJID", visit="AVISIT"
    ... )
    >>> result.lsmeans_contrasts("ARMCD")  # TRT - PBO at each visit  # doctest: +SKIP
    """
    method_key = method.lower()
    if method_key not in {"reml", "ml"}:
        raise AnalysisError(f"method must be 'reml' or 'ml', got {method!r}")
    vcov_key = str(vcov).lower()
    if vcov_key not in _VCOV_METHODS:
        raise AnalysisError(f"unknown vcov {vcov!r}; use 'model' or 'empirical'")
    df_key = _DF_METHODS.get(df_method.lower().replace("_", "-").replace(" ", "-"))
    if df_key is None:
        raise AnalysisError(
            f"unknown df_method {df_method!r}; use one of {sorted(set(_DF_METHODS.values()))}"
        )
    if vcov_key == "empirical" and df_key not in _EMPIRICAL_DF_METHODS:
        raise AnalysisError(
            f"df_method {df_method!r} cannot be combined with vcov='empirical': its df are "
            "derived from the model-based covariance; use df_method 'between-within' (SAS's "
            "DDFM=BW, its default with EMPIRICAL) or 'residual', or "
            "vcov='model' for Kenward-Roger or Satterthwaite"
        )
    structures = [get_structure(covariance), *(get_structure(name) for name in fallbacks)]

    prepared, needed = _prepare(data, formula, subject, visit, group)
    frame = prepared.data
    try:
        design = formulaic.model_matrix(prepared.rhs, frame, na_action="raise")
    except Exception as exc:  # formulaic raises several types for unusable terms
        raise AnalysisError(f"cannot build the design of {formula!r}: {exc}") from exc
    column_names = tuple(str(c) for c in design.columns)
    x = np.asarray(design, dtype=np.float64)
    aliased = _aliased_columns(x)
    if aliased:
        names = [column_names[j] for j in aliased]
        raise AnalysisError(
            f"the design of {formula!r} is rank deficient: {names} are linear combinations of "
            "earlier terms (a level or combination without observations?); drop or merge them"
        )
    y = np.asarray(frame[prepared.outcome], dtype=np.float64)
    n_obs, p = x.shape

    subject_codes_raw, subject_ids = pd.factorize(frame[subject])
    subject_codes = subject_codes_raw.astype(np.int64)
    n_subjects = len(subject_ids)
    visit_codes = np.asarray(frame[visit].cat.codes, dtype=np.int64)
    n_visits = len(prepared.visit_levels)
    if group is not None:
        group_codes_rows = np.asarray(
            pd.Categorical(frame[group], categories=list(prepared.group_levels)).codes,
            dtype=np.int64,
        )
        subject_groups = np.zeros(n_subjects, dtype=np.int64)
        subject_groups[subject_codes] = group_codes_rows
        n_groups = len(prepared.group_levels)
    else:
        subject_groups = np.zeros(n_subjects, dtype=np.int64)
        n_groups = 1

    # ordinary least squares only centres the outcome (the GLS fit corrects it exactly); the
    # design has full rank here, so the normal equations are safe and cheap
    beta_ols = np.asarray(scipy.linalg.solve(x.T @ x, x.T @ y, assume_a="pos"), dtype=np.float64)
    residuals = y - x @ beta_ols
    patterns = build_patterns(x, residuals, subject_codes, visit_codes, subject_groups, n_visits)
    starts = []
    for g in range(n_groups):
        in_group = subject_groups[subject_codes] == g
        starts.append(
            _start_covariance(
                residuals[in_group],
                subject_codes[in_group],
                visit_codes[in_group],
                n_subjects,
                n_visits,
            )
        )

    attempts: list[tuple[str, str]] = []
    chosen: _StructureFit | None = None
    for structure in structures:
        engine = Engine(patterns, structure, n_visits, n_groups, n_obs, p, method_key == "reml")
        phi0 = np.concatenate([structure.start(s) for s in starts])
        try:
            outcome = newton_fit(engine, phi0, max_iterations=max_iterations)
        except InfeasibleParametersError:
            attempts.append((structure.name, "the starting values are not positive definite"))
            continue
        if outcome.converged:
            chosen = _StructureFit(
                structure, engine, outcome.phi, outcome.evaluation, outcome.iterations
            )
            break
        attempts.append((structure.name, outcome.message))
    if chosen is None:
        detail = "; ".join(f"{name}: {why}" for name, why in attempts)
        raise MMRMConvergenceError(
            f"the MMRM {formula!r} did not converge with any covariance structure tried ({detail})",
            tuple(attempts),
        )

    return _build_result(
        chosen,
        prepared,
        needed,
        design,
        column_names,
        x,
        beta_ols,
        subject_codes,
        n_subjects,
        df_key,
        method_key,
        attempts,
        formula,
        subject,
        visit,
        group,
        vcov_key=vcov_key,
        y=y,
        visit_codes=visit_codes,
        subject_groups=subject_groups,
    )


def _build_result(
    fit: _StructureFit,
    prepared: _Prepared,
    needed: list[str],
    design: Any,
    column_names: tuple[str, ...],
    x: FloatArray,
    beta_ols: FloatArray,
    subject_codes: IntArray,
    n_subjects: int,
    df_key: str,
    method_key: str,
    attempts: list[tuple[str, str]],
    formula: str,
    subject: str,
    visit: str,
    group: str | None,
    *,
    vcov_key: str,
    y: FloatArray,
    visit_codes: IntArray,
    subject_groups: IntArray,
) -> MMRMResult:
    engine, evaluation, phi = fit.engine, fit.evaluation, fit.phi
    assert evaluation.hessian is not None
    assert evaluation.q_mats is not None
    theta_cov = 2.0 * np.linalg.inv(evaluation.hessian)
    theta_cov = 0.5 * (theta_cov + theta_cov.T)
    beta = beta_ols + evaluation.delta
    phi_matrix = evaluation.phi_matrix
    phi_adjusted = None
    if df_key in {"kenward-roger", "kenward-roger-linear"}:
        sums = engine.kenward_roger_sums(
            phi, evaluation, theta_cov, linear=df_key == "kenward-roger-linear"
        )
        phi_adjusted = phi_matrix + 2.0 * phi_matrix @ sums @ phi_matrix
    phi_empirical = None
    if vcov_key == "empirical":
        meat = empirical_meat(
            engine.sigmas(phi), x, y - x @ beta, subject_codes, visit_codes, subject_groups
        )
        sandwich = phi_matrix @ meat @ phi_matrix
        phi_empirical = 0.5 * (sandwich + sandwich.T)
    n_obs, p = x.shape

    # between-within: which columns vary within subject
    order = np.argsort(subject_codes, kind="stable")
    sorted_codes = subject_codes[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_codes) != 0])
    x_sorted = x[order]
    col_max = np.maximum.reduceat(x_sorted, starts, axis=0)
    col_min = np.minimum.reduceat(x_sorted, starts, axis=0)
    within_columns = np.any(col_max - col_min > 1e-12, axis=0)
    p_within = int(np.sum(within_columns))
    between_df = float(n_subjects - (p - p_within))
    within_df = float(n_obs - n_subjects - p_within)

    frame = prepared.data
    factor_levels: dict[str, tuple[Any, ...]] = {}
    covariate_means: dict[str, float] = {}
    for name in needed:
        series = frame[name]
        if name == visit:
            factor_levels[name] = prepared.visit_levels
        elif _is_factor(series):
            if isinstance(series.dtype, pd.CategoricalDtype):
                factor_levels[name] = tuple(series.cat.categories)
            else:
                factor_levels[name] = tuple(sorted(series.unique()))
        else:
            covariate_means[name] = float(series.mean())
    if visit not in factor_levels:
        factor_levels[visit] = prepared.visit_levels

    spec = design.model_spec
    term_columns: dict[str, tuple[int, ...]] = {}
    term_variables: dict[str, tuple[str, ...]] = {}
    for term, indices in spec.term_indices.items():
        name = str(term)
        term_columns[name] = tuple(int(i) for i in indices)
        term_variables[name] = tuple(sorted(spec.term_variables[term]))

    inference = _Inference(
        beta=beta,
        phi_matrix=phi_matrix,
        phi_adjusted=phi_adjusted,
        phi_empirical=phi_empirical,
        q_mats=evaluation.q_mats,
        theta_cov=theta_cov,
        df_method=df_key,
        residual_df=float(n_obs - p),
        between_df=between_df,
        within_df=within_df,
        within_columns=within_columns,
        column_names=column_names,
        model_spec=spec,
        factor_levels=factor_levels,
        covariate_means=covariate_means,
        visit=visit,
        visit_levels=prepared.visit_levels,
        term_columns=term_columns,
        term_variables=term_variables,
    )
    rows = []
    for j in range(p):
        l_vec = np.zeros(p)
        l_vec[j] = 1.0
        estimate, std_error, df = inference.test_1d(l_vec)
        rows.append([estimate, std_error, df, *t_summary(estimate, std_error, df)])
    coefficients = pd.DataFrame(rows, columns=_ESTIMATE_COLUMNS, index=list(column_names))
    coefficients.index.name = "term"

    structure = fit.structure
    m = engine.n_visits
    sigmas = engine.sigmas(phi)
    visit_index = list(prepared.visit_levels)
    if group is None:
        covariance = pd.DataFrame(sigmas[0], index=visit_index, columns=visit_index)
    else:
        blocks = [pd.DataFrame(s, index=visit_index, columns=visit_index) for s in sigmas]
        covariance = pd.concat(blocks, keys=list(prepared.group_levels), names=[group, visit])
    names = structure.parameter_names(m)
    if group is not None:
        names = [f"{level}: {n}" for level in prepared.group_levels for n in names]
    covariance_parameters = pd.DataFrame(
        {"estimate": phi, "std_error": np.sqrt(np.maximum(np.diag(theta_cov), 0.0))},
        index=names,
    )
    covariance_parameters.index.name = "parameter"

    deviance = float(evaluation.objective)
    n_params = engine.q + (p if method_key == "ml" else 0)
    reason = None
    if attempts:
        reason = "; ".join(f"{name} did not converge: {why}" for name, why in attempts)
    return MMRMResult(
        formula=formula,
        subject=subject,
        visit=visit,
        group=group,
        method=method_key,
        df_method=df_key,
        vcov=vcov_key,
        covariance_structure=structure.name,
        fallback_reason=reason,
        coefficients=coefficients,
        covariance=covariance,
        covariance_parameters=covariance_parameters,
        deviance=deviance,
        aic=deviance + 2.0 * n_params,
        bic=deviance + n_params * float(np.log(n_subjects)),
        converged=True,
        n_subjects=n_subjects,
        n_observations=n_obs,
        n_dropped=prepared.n_dropped,
        dropped_rows=prepared.dropped_rows,
        iterations=fit.iterations,
        _inference=inference,
    )
