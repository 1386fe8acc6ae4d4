"""Model frames and coefficient tables shared by the secondary and adverse-event models.

Private to ``studyman.stats``: the GLMM, count-model, GEE and MixedLM wrappers all turn a data
frame and a formula into numeric arrays the same way, check the data the same way, and report
coefficients in the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from formulaic import Formula, model_matrix
from scipy import stats

from studyman.errors import AnalysisError

FloatArray = npt.NDArray[np.float64]
OutcomeKind = Literal["binary", "count", "continuous"]

#: The columns of every coefficient table, in order (``statistic`` is renamed per model).
COEFFICIENT_COLUMNS = ("estimate", "std_error", "z_value", "p_value", "ci_lower", "ci_upper")

_MAX_ROWS_NAMED = 10


def describe_rows(labels: Sequence[object]) -> str:
    """Name at most ten row labels, then say how many more there are."""
    shown = ", ".join(str(label) for label in labels[:_MAX_ROWS_NAMED])
    extra = len(labels) - _MAX_ROWS_NAMED
    return f"{shown} and {extra} more" if extra > 0 else shown


@dataclass(frozen=True, eq=False)
class ModelFrame:
    """Numeric arrays for one model, with the rows used.

    Attributes
    ----------
    outcome
        The outcome, one value per row used.
    design
        The fixed-effects design matrix (rows used × terms).
    term_names
        Column names of ``design`` in formulaic's spelling (``ARM[T.CBT+ADJ]``).
    offset
        The linear-predictor offset per row (zeros when none was given).
    groups
        The group label of each row (``None`` when the model has no grouping).
    index
        The labels of the rows used, from the input data frame.
    n_dropped
        Rows left out because the outcome, a covariate or the offset was missing.
    outcome_name
        The name of the outcome column.
    """

    outcome: FloatArray
    design: FloatArray
    term_names: tuple[str, ...]
    offset: FloatArray
    groups: npt.NDArray[np.object_] | None
    index: pd.Index
    n_dropped: int
    outcome_name: str


def _check_columns(data: pd.DataFrame, columns: Sequence[str], formula: str) -> None:
    missing = [column for column in columns if column not in data.columns]
    if missing:
        raise AnalysisError(
            f"formula {formula!r}: column(s) {', '.join(missing)} not in the data "
            f"(columns are: {', '.join(map(str, data.columns))})"
        )


def build_model_frame(
    data: pd.DataFrame,
    formula: str,
    *,
    outcome_kind: OutcomeKind,
    group: str | None = None,
    offset: str | None = None,
    exposure: str | None = None,
) -> ModelFrame:
    """Check the data and build the arrays for ``formula``.

    Parameters
    ----------
    data
        One row per observation.
    formula
        A formulaic (Wilkinson) formula ``outcome ~ terms``.
    outcome_kind
        ``"binary"`` (0/1), ``"count"`` (non-negative integers) or ``"continuous"``.
    group
        Column holding the cluster (participant) label; it may not be missing.
    offset
        Column added to the linear predictor as is (already on the link scale).
    exposure
        Column of positive exposures (for example days at risk); ``log(exposure)`` is added to
        the linear predictor.

    Returns
    -------
    ModelFrame
        The rows with outcome, covariates and offset all present.  Rows are named by the data
        frame's index labels in messages (by position when the labels are not unique).

    Raises
    ------
    AnalysisError
        When a column is absent, the outcome is not numeric or not of ``outcome_kind``, a group
        label or exposure is missing or invalid, the outcome does not vary, or the design is
        rank-deficient; the message names the rows or terms.
    """
    if offset is not None and exposure is not None:
        raise AnalysisError("give either offset= or exposure=, not both")
    parsed = Formula(formula)
    if not hasattr(parsed, "lhs"):
        raise AnalysisError(f"formula {formula!r} has no outcome: write it as 'outcome ~ terms'")
    outcome_names = sorted(parsed.lhs.required_variables)
    if len(outcome_names) != 1:
        raise AnalysisError(f"formula {formula!r}: expected exactly one outcome variable")
    outcome_name = outcome_names[0]
    extra = [name for name in (group, offset, exposure) if name is not None]
    _check_columns(data, [*sorted(parsed.required_variables), *extra], formula)

    # Row labels name rows in messages; duplicated labels cannot, so fall back to positions.
    frame = data.copy() if data.index.is_unique else data.reset_index(drop=True)
    raw = frame[outcome_name]
    numeric = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & numeric.isna()
    if bad.any():
        raise AnalysisError(
            f"outcome {outcome_name} is not numeric in row(s) "
            f"{describe_rows(list(frame.index[bad.to_numpy()]))}"
        )
    frame[outcome_name] = numeric.astype(float)

    if group is not None:
        missing_group = frame[group].isna().to_numpy()
        if missing_group.any():
            raise AnalysisError(
                f"group column {group} is missing in row(s) "
                f"{describe_rows(list(frame.index[missing_group]))}: every row needs a "
                "participant id"
            )

    shift_column = offset if offset is not None else exposure
    if shift_column is not None:
        shift = pd.to_numeric(frame[shift_column], errors="coerce")
        bad_shift = frame[shift_column].notna() & shift.isna()
        if exposure is not None:
            bad_shift |= shift.notna() & (shift <= 0)
        if bad_shift.any():
            what = "a positive number" if exposure is not None else "numeric"
            raise AnalysisError(
                f"{'exposure' if exposure is not None else 'offset'} column {shift_column} is "
                f"not {what} in row(s) {describe_rows(list(frame.index[bad_shift.to_numpy()]))}"
            )
        frame[shift_column] = shift.astype(float)

    y_frame, x_frame = model_matrix(formula, frame)
    used = x_frame.index.intersection(y_frame.index)
    if shift_column is not None:
        used = used[frame.loc[used, shift_column].notna().to_numpy()]
    n_dropped = len(frame) - len(used)
    if len(used) == 0:
        raise AnalysisError(f"formula {formula!r}: no row has all variables present")

    outcome = y_frame.loc[used].to_numpy(dtype=float)[:, 0]
    design = x_frame.loc[used].to_numpy(dtype=float)
    term_names = tuple(str(name) for name in x_frame.columns)
    _check_outcome(outcome, outcome_kind, outcome_name, used)
    _check_rank(design, term_names, formula)

    if shift_column is None:
        shift_values = np.zeros(len(used))
    else:
        shift_values = frame.loc[used, shift_column].to_numpy(dtype=float)
        if exposure is not None:
            shift_values = np.log(shift_values)
    groups = None if group is None else frame.loc[used, group].to_numpy(dtype=object)
    return ModelFrame(
        outcome=outcome,
        design=design,
        term_names=term_names,
        offset=shift_values,
        groups=groups,
        index=used,
        n_dropped=int(n_dropped),
        outcome_name=outcome_name,
    )


def _check_outcome(outcome: FloatArray, kind: OutcomeKind, name: str, index: pd.Index) -> None:
    if kind == "binary":
        bad = ~np.isin(outcome, (0.0, 1.0))
        if bad.any():
            raise AnalysisError(
                f"outcome {name} must be 0 or 1; row(s) {describe_rows(list(index[bad]))} are not"
            )
        if np.all(outcome == outcome[0]):
            raise AnalysisError(
                f"outcome {name} is {int(outcome[0])} in every row: a binary model cannot be fitted"
            )
    elif kind == "count":
        bad = (outcome < 0) | (outcome != np.floor(outcome))
        if bad.any():
            raise AnalysisError(
                f"outcome {name} must be a non-negative whole count; row(s) "
                f"{describe_rows(list(index[bad]))} are not"
            )
        if np.all(outcome == 0):
            raise AnalysisError(
                f"outcome {name} is 0 in every row: a rate model cannot be fitted (no events)"
            )
    elif np.all(outcome == outcome[0]):
        raise AnalysisError(f"outcome {name} does not vary: the model cannot be fitted")


def _check_rank(design: FloatArray, term_names: tuple[str, ...], formula: str) -> None:
    """Raise naming the terms that are linear combinations of the terms before them."""
    n_columns = design.shape[1]
    if np.linalg.matrix_rank(design) == n_columns:
        return
    dependent: list[str] = []
    kept: list[int] = []
    for column in range(n_columns):
        candidate = [*kept, column]
        if np.linalg.matrix_rank(design[:, candidate]) == len(candidate):
            kept = candidate
        else:
            dependent.append(term_names[column])
    raise AnalysisError(
        f"formula {formula!r}: the design is rank-deficient; term(s) {', '.join(dependent)} "
        "are linear combinations of earlier terms (or have no observations): drop them"
    )


def group_codes(groups: npt.NDArray[np.object_] | None) -> tuple[npt.NDArray[np.intp], pd.Index]:
    """Integer code per row and the group labels, sorted when the labels can be ordered."""
    if groups is None:
        raise AnalysisError("the model needs a group (participant) column")
    series = pd.Series(groups)
    try:
        codes, labels = pd.factorize(series, sort=True)
    except TypeError:
        # Labels of mixed types (e.g. 7 and "S01-0007") cannot be sorted: keep first-seen order.
        codes, labels = pd.factorize(series, sort=False)
    return np.asarray(codes, dtype=np.intp), pd.Index(labels)


def coefficient_table(
    term_names: Sequence[str],
    estimate: FloatArray,
    covariance: FloatArray,
    *,
    statistic: str = "z_value",
    df: float | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per term: estimate, standard error, Wald statistic, p-value and CI.

    With ``df=None`` the reference distribution is the standard normal (z); otherwise Student t
    with ``df`` degrees of freedom.
    """
    std_error = np.sqrt(np.diag(covariance))
    value = estimate / std_error
    if df is None:
        p_value = 2.0 * stats.norm.sf(np.abs(value))
        quantile = float(stats.norm.ppf(0.5 + level / 2.0))
    else:
        p_value = 2.0 * stats.t.sf(np.abs(value), df)
        quantile = float(stats.t.ppf(0.5 + level / 2.0, df))
    table = pd.DataFrame(
        {
            "estimate": estimate,
            "std_error": std_error,
            statistic: value,
            "p_value": p_value,
            "ci_lower": estimate - quantile * std_error,
            "ci_upper": estimate + quantile * std_error,
        },
        index=pd.Index(list(term_names), name="term"),
    )
    return table
