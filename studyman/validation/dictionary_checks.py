"""REDCap's Data Quality rules B-I, driven by the data dictionary.

One pass per form: the rows holding that form are selected once, branching logic is evaluated
once per field over all of them (vectorised), and every rule is a boolean mask over those rows.

Notes
-----
* Blank required fields (rule B) are reported only where branching logic shows the field and the
  form holds data; rule A (every blank) is not run, it is a census rather than a check.
* Type (C) follows REDCap's validation patterns; ``number_Ndp`` requires exactly N decimals, as
  REDCap's own regular expressions do; an impossible date (``2025-02-30``) is a type error.
* Range (D) is checked only on values of the right type; date limits compare ISO dates.
* Outliers (E), a central review signal, use robust statistics instead of REDCap's "2 SD from
  the mean" (which flags about 5 % of any field by construction): per event (visit) and per site
  against the rest, a value's distance from the median of the other sites' values at that
  visit, in units of their scaled median absolute deviation (1.4826 MAD, a standard deviation for
  normal data; 1.2533 times the mean absolute deviation when the MAD is 0), is its modified
  z-score; beyond 3.5 it is flagged (Iglewicz and Hoaglin, 1993), so a clean field raises about
  0.05 % of its values, and a site whose values are shifted against the others stands out. The
  reference is every site's values when the other sites have fewer than 10, and nothing is
  flagged at a visit with fewer than 10 values. Sites are the data access groups (one group
  without them). A decimal ``number`` field whose values are all positive (laboratory values,
  weights: measurements that spread multiplicatively) is compared on the log scale; integers
  (ages, counts, rates, scores) on their own scale. Integer and number fields at
  visits only (not repeating logs, whose values, such as doses of different medicines, are not
  comparable); values outside the validation range are left out (rule D reports them). The
  message gives the distance and the median.
* A calculated field (H) agrees when stored and recomputed values are both blank, or differ by no
  more than half a unit in the stored value's last decimal place; formulas that use ``"today"``
  are skipped (their value depends on the day REDCap saved the form).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Final

import numpy as np
import pandas as pd

from studyman.findings import FINDING_COLUMNS
from studyman.validation.catalogue import check_by_id
from studyman.validation.dictionary import DataDictionary, DictionaryField
from studyman.validation.logic import EvaluationContext, LogicExpression, compile_logic
from studyman.validation.records import (
    EVENT,
    INSTANCE,
    REPEAT,
    BoolArray,
    ObjectArray,
    findings_from_mask,
    form_present,
    isin,
    matches,
    text,
    to_numbers,
)

__all__ = ["run_dictionary_checks", "valid_type_mask"]

_PATTERNS: Final[dict[str, str]] = {
    "integer": r"[-+]?\d+",
    "number": r"[-+]?(\d+(\.\d*)?|\.\d+)",
    "number_comma_decimal": r"[-+]?(\d+(,\d*)?|,\d+)",
    "date_ymd": r"\d{4}-\d{2}-\d{2}",
    "date_mdy": r"\d{4}-\d{2}-\d{2}",
    "date_dmy": r"\d{4}-\d{2}-\d{2}",
    "datetime_ymd": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}",
    "datetime_mdy": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}",
    "datetime_dmy": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}",
    "datetime_seconds_ymd": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
    "datetime_seconds_mdy": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
    "datetime_seconds_dmy": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
    "time": r"([01]\d|2[0-3]):[0-5]\d",
    "time_mm_ss": r"[0-5]\d:[0-5]\d",
    "email": r"[^@\s]+@[^@\s]+\.[^@\s]+",
    "phone": r"\(?\d{3}\)?[-. ]?\d{3}[-. ]?\d{4}",
    "zipcode": r"\d{5}(-\d{4})?",
    "alpha_only": r"[A-Za-z]+",
}
for _places in range(1, 5):
    _PATTERNS[f"number_{_places}dp"] = rf"[-+]?\d+\.\d{{{_places}}}"
    _PATTERNS[f"number_{_places}dp_comma_decimal"] = rf"[-+]?\d+,\d{{{_places}}}"

_NUMERIC_PREFIXES: Final = ("integer", "number")


def _is_numeric(validation: str) -> bool:
    return validation.startswith(_NUMERIC_PREFIXES)


def _is_temporal(validation: str) -> bool:
    return validation.startswith(("date", "datetime"))


def _to_float(values: ObjectArray, comma: bool = False) -> np.ndarray:
    if comma:
        values = np.asarray([value.replace(",", ".") for value in values], dtype=object)
    return to_numbers(values)


def valid_type_mask(values: ObjectArray, validation: str) -> BoolArray:
    """True where a non-blank value matches REDCap's *validation* type (unknown types pass)."""
    pattern = _PATTERNS.get(validation)
    nonblank = values != ""
    if pattern is None:
        return np.asarray(nonblank, dtype=bool)
    result = matches(values, pattern)
    if _is_temporal(validation) and result.any():
        candidates = pd.Series(values[result], dtype=object)
        parsed = pd.to_datetime(candidates, format="ISO8601", errors="coerce")
        result[np.flatnonzero(result)] = parsed.notna().to_numpy()
    return np.asarray(result & nonblank, dtype=bool)


def _decimals_of(values: ObjectArray) -> np.ndarray:
    return np.array(
        [len(value.split(".", 1)[1]) if "." in value else 0 for value in values], dtype=np.float64
    )


def _check(check_id: str) -> Callable[..., pd.DataFrame]:
    check = check_by_id(check_id)
    if check is None:  # pragma: no cover - the catalogue is part of the package
        raise KeyError(check_id)

    def make(frame: pd.DataFrame, mask: BoolArray, **kwargs: object) -> pd.DataFrame:
        return findings_from_mask(check, frame, mask, **kwargs)  # type: ignore[arg-type]

    return make


def run_dictionary_checks(
    records: pd.DataFrame,
    dictionary: DataDictionary,
    *,
    missing_codes: frozenset[str] = frozenset(),
    today: datetime | None = None,
    source: str = "",
) -> pd.DataFrame:
    """Run REDCap's Data Quality rules B-I over flat *records*.

    Parameters
    ----------
    records
        Flat records with normalised key columns (see ``records.normalise_records``).
    dictionary
        The project's data dictionary.
    missing_codes
        The project's missing-data codes (rule I; such values are exempt from rules B-G).
    today
        The reference date for ``"today"`` in logic (the data cut-off).
    source
        Written to the findings' ``source`` column.

    Returns
    -------
    pandas.DataFrame
        Findings with :data:`studyman.findings.FINDING_COLUMNS`.
    """
    context = EvaluationContext(
        records=records,
        record_id_field=dictionary.record_id_field,
        today=today or datetime(2000, 1, 1),
        missing_codes=missing_codes,
        comma_decimal_fields=dictionary.comma_decimal_fields,
    )
    parts: list[pd.DataFrame] = []
    id_field = dictionary.record_id_field
    codes = np.array(sorted(missing_codes), dtype=object)
    for form in dictionary.forms:
        rows = form_present(records, dictionary, form)
        if not rows.any():
            continue
        frame = records.loc[rows, _needed_columns(records, dictionary, form)].reset_index(drop=True)
        for field in dictionary.form_fields(form):
            if not field.holds_data or field.name == id_field:
                continue
            parts.extend(_field_findings(frame, field, context, codes, id_field, source))
    if not parts:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    return pd.concat([part for part in parts if not part.empty] or parts, ignore_index=True)


def _needed_columns(records: pd.DataFrame, dictionary: DataDictionary, form: str) -> list[str]:
    """Key columns, the data access group (rule E compares sites), the form's columns and every
    column its logic refers to."""
    wanted = [dictionary.record_id_field, EVENT, REPEAT, INSTANCE, f"{form}_complete"]
    wanted.append("redcap_data_access_group")
    for spec in dictionary.form_fields(form):
        wanted.extend(spec.columns)
        for logic in (spec.branching, spec.calculation):
            if logic:
                wanted.extend(reference.column for reference in compile_logic(logic).fields)
    present = set(records.columns)
    return [column for column in dict.fromkeys(wanted) if column in present]


def _visible(frame: pd.DataFrame, field: DictionaryField, context: EvaluationContext) -> BoolArray:
    if not field.branching:
        return np.ones(len(frame), dtype=bool)
    expression: LogicExpression = compile_logic(field.branching)
    return expression.mask(frame, context)


def _field_findings(
    frame: pd.DataFrame,
    field: DictionaryField,
    context: EvaluationContext,
    codes: ObjectArray,
    id_field: str,
    source: str,
) -> list[pd.DataFrame]:
    out: list[pd.DataFrame] = []
    common: dict[str, object] = {
        "record_id_field": id_field,
        "instrument": field.form,
        "source": source,
    }
    visible = _visible(frame, field, context)
    label = field.label or field.name

    if field.field_type == "checkbox":
        ticked = np.zeros(len(frame), dtype=bool)
        for (code, _), column in zip(field.choices, field.columns, strict=True):
            values = text(frame, column)
            ticked |= values == "1"
            invalid = (values != "") & (values != "0") & (values != "1") & ~isin(values, codes)
            out.append(
                _check("DQ-G")(
                    frame,
                    invalid,
                    field=column,
                    value=values,
                    message=f"{label}: checkbox {code} holds a value other than 0 or 1",
                    **common,
                )
            )
        if field.required:
            out.append(
                _check("DQ-B")(
                    frame,
                    visible & ~ticked,
                    field=field.name,
                    value=None,
                    message=f"{label}: required, no box ticked",
                    **common,
                )
            )
        out.append(
            _check("DQ-F")(
                frame,
                ~visible & ticked,
                field=field.name,
                value=None,
                message=f"{label}: boxes ticked although branching logic hides the field",
                **common,
            )
        )
        return out

    values = text(frame, field.name)
    blank = values == ""
    is_code = isin(values, codes) if len(codes) else np.zeros(len(values), dtype=bool)
    checked = ~blank & ~is_code

    if len(codes):
        out.append(
            _check("DQ-I")(
                frame,
                is_code,
                field=field.name,
                value=values,
                message=f"{label}: holds a missing-data code",
                **common,
            )
        )

    if field.field_type == "calc":
        out.append(_calc_findings(frame, field, context, values, common, label))
        return out

    if field.required:
        out.append(
            _check("DQ-B")(
                frame,
                visible & blank,
                field=field.name,
                value=values,
                message=f"{label}: required but blank",
                **common,
            )
        )
    out.append(
        _check("DQ-F")(
            frame,
            ~visible & checked,
            field=field.name,
            value=values,
            message=f"{label}: holds a value although branching logic hides the field",
            **common,
        )
    )

    if field.is_choice:
        invalid = checked & ~isin(values, np.array(sorted(field.codes), dtype=object))
        out.append(
            _check("DQ-G")(
                frame,
                invalid,
                field=field.name,
                value=values,
                message=f"{label}: not one of the codes {', '.join(sorted(field.codes))}",
                **common,
            )
        )
        return out

    validation = field.validation
    if field.field_type != "text" or not validation:
        return out
    valid = valid_type_mask(values, validation) | ~checked
    out.append(
        _check("DQ-C")(
            frame,
            ~valid,
            field=field.name,
            value=values,
            message=f"{label}: not a valid {validation} value",
            **common,
        )
    )
    typed = checked & valid
    if _is_numeric(validation):
        numbers = _to_float(values, comma=validation.endswith("comma_decimal"))
        in_range = _range_numeric(frame, field, numbers, typed, values, common, label)
        out.append(in_range)
        # values already out of range are not part of the outlier statistics
        outside = _outside_numeric(field, numbers)
        out.append(
            _outliers(
                frame,
                numbers,
                typed & ~outside,
                values,
                common,
                label,
                field.name,
                measured=validation.startswith("number"),
            )
        )
    elif _is_temporal(validation):
        out.append(_range_dates(frame, field, values, typed, common, label))
    return out


def _outside_numeric(field: DictionaryField, numbers: np.ndarray) -> BoolArray:
    """Numbers below the field's minimum or above its maximum (an unparseable limit is no limit)."""
    low = pd.to_numeric(pd.Series([field.minimum]), errors="coerce").iloc[0]
    high = pd.to_numeric(pd.Series([field.maximum]), errors="coerce").iloc[0]
    outside = np.zeros(len(numbers), dtype=bool)
    with np.errstate(invalid="ignore"):
        if not pd.isna(low):
            outside |= numbers < float(low)
        if not pd.isna(high):
            outside |= numbers > float(high)
    return outside


def _range_numeric(
    frame: pd.DataFrame,
    field: DictionaryField,
    numbers: np.ndarray,
    typed: BoolArray,
    values: ObjectArray,
    common: dict[str, object],
    label: str,
) -> pd.DataFrame:
    outside = _outside_numeric(field, numbers)
    limits = f"{field.minimum or '-inf'} to {field.maximum or 'inf'}"
    return _check("DQ-D")(
        frame,
        outside & typed,
        field=field.name,
        value=values,
        message=f"{label}: outside the range {limits}",
        **common,
    )


def _range_dates(
    frame: pd.DataFrame,
    field: DictionaryField,
    values: ObjectArray,
    typed: BoolArray,
    common: dict[str, object],
    label: str,
) -> pd.DataFrame:
    outside = np.zeros(len(values), dtype=bool)
    as_text = values.astype(str)
    for limit, below in ((field.minimum, True), (field.maximum, False)):
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?", limit or ""):
            outside |= (as_text < limit) if below else (as_text > limit)
    return _check("DQ-D")(
        frame,
        outside & typed,
        field=field.name,
        value=values,
        message=f"{label}: outside the range {field.minimum or '-'} to {field.maximum or '-'}",
        **common,
    )


#: modified z-score beyond which rule E flags a value (Iglewicz and Hoaglin, 1993)
_ROBUST_LIMIT: Final = 3.5
#: fewest values at a visit (and in another-sites reference) for the robust statistics
_ROBUST_MIN: Final = 10


def _robust_scale(reference: np.ndarray, center: float) -> float:
    deviations = np.abs(reference - center)
    scale = 1.4826 * float(np.median(deviations))
    if scale == 0:
        scale = 1.2533 * float(np.mean(deviations))
    return scale


def _outliers(
    frame: pd.DataFrame,
    numbers: np.ndarray,
    typed: BoolArray,
    values: ObjectArray,
    common: dict[str, object],
    label: str,
    name: str,
    measured: bool = False,
) -> pd.DataFrame:
    # visits only: a repeating log (medications, sessions) mixes what is not comparable
    present = typed & ~np.isnan(numbers) & (text(frame, REPEAT) == "")
    flagged = np.zeros(len(numbers), dtype=bool)
    message = np.full(len(numbers), "", dtype=object)
    # positive decimal measurements (laboratory values, weights) spread multiplicatively
    positive = measured and bool(present.any()) and bool((numbers[present] > 0).all())
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.log(numbers) if positive else numbers
    if present.sum() >= _ROBUST_MIN:
        events = text(frame, EVENT)
        groups = (
            text(frame, "redcap_data_access_group")
            if "redcap_data_access_group" in frame.columns
            else np.full(len(frame), "", dtype=object)
        )
        for event in pd.unique(events[present]):
            at = present & (events == event)
            if at.sum() < _ROBUST_MIN:
                continue
            for group in pd.unique(groups[at]):
                own = at & (groups == group)
                rest = at & (groups != group)
                reference = scaled[rest] if rest.sum() >= _ROBUST_MIN else scaled[at]
                center = float(np.median(reference))
                scale = _robust_scale(reference, center)
                if scale == 0:
                    continue
                score = (scaled - center) / scale
                median = float(np.exp(center)) if positive else center
                hits = own & (np.abs(np.nan_to_num(score)) > _ROBUST_LIMIT)
                flagged |= hits
                for index in np.flatnonzero(hits):
                    side = "above" if score[index] > 0 else "below"
                    message[index] = (
                        f"{label}: {abs(score[index]):.1f} robust SD {side} the median "
                        f"{median:.4g} at this visit{' (log scale)' if positive else ''} (review)"
                    )
    return _check("DQ-E")(
        frame,
        flagged,
        field=name,
        value=values,
        message=message,
        **common,
    )


def _calc_findings(
    frame: pd.DataFrame,
    field: DictionaryField,
    context: EvaluationContext,
    stored: ObjectArray,
    common: dict[str, object],
    label: str,
) -> pd.DataFrame:
    expression = compile_logic(field.calculation)
    if expression.uses_today:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    computed = expression.evaluate(frame, context).number
    stored_numbers = _to_float(stored)
    stored_blank = stored == ""
    computed_blank = np.isnan(computed)
    both = ~stored_blank & ~computed_blank
    differs = np.zeros(len(stored), dtype=bool)
    if both.any():
        tolerance = 0.5 * np.power(10.0, -_decimals_of(stored[both])) + 1e-9
        with np.errstate(invalid="ignore"):
            differs[both] = np.abs(computed[both] - stored_numbers[both]) > tolerance
    wrong = np.where(
        stored_blank | computed_blank,
        stored_blank != computed_blank,
        differs | np.isnan(stored_numbers),
    )
    message = np.full(len(stored), "", dtype=object)
    for index in np.flatnonzero(wrong):
        value = computed[index]
        expected = "blank" if np.isnan(value) else f"{value:g}"
        message[index] = f"{label}: stored value differs from its formula (expected {expected})"
    return _check("DQ-H")(
        frame,
        np.asarray(wrong, dtype=bool),
        field=field.name,
        value=stored,
        message=message,
        **common,
    )
