"""Flat REDCap records as the checks read them, and findings built from row masks.

The checks work on one frame of flat records (REDCap's ``type=flat`` export: one row per record,
event and repeat instance). :func:`flat_records_from_tables` builds that frame from a snapshot's
per-instrument tables, so a live export and a snapshot are checked by the same code.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from studyman.findings import FINDING_COLUMNS
from studyman.validation.catalogue import CheckDefinition
from studyman.validation.dictionary import DataDictionary

__all__ = [
    "DAG",
    "EVENT",
    "INSTANCE",
    "REPEAT",
    "clear_caches",
    "dates",
    "findings_from_mask",
    "flat_records_from_tables",
    "form_present",
    "isin",
    "matches",
    "normalise_records",
    "numbers",
    "text",
    "text_tables",
    "to_numbers",
]

EVENT = "redcap_event_name"
REPEAT = "redcap_repeat_instrument"
INSTANCE = "redcap_repeat_instance"
DAG = "redcap_data_access_group"

BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]


_TEXT_FLAG = "studyman.validation.text"
# Per-run caches keyed by frame identity; each entry keeps its frame alive, so an id is never
# reused for another frame while the entry exists. run_checks clears them at start and end.
_FORM_CACHE: dict[tuple[int, str], tuple[pd.DataFrame, BoolArray]] = {}
_NUMBER_CACHE: dict[tuple[int, str], tuple[pd.DataFrame, npt.NDArray[np.float64]]] = {}
_DATE_CACHE: dict[tuple[int, str], tuple[pd.DataFrame, pd.Series]] = {}


def clear_caches() -> None:
    """Forget the per-frame caches (call when a run ends)."""
    _FORM_CACHE.clear()
    _NUMBER_CACHE.clear()
    _DATE_CACHE.clear()


def isin(values: ObjectArray, options: object) -> BoolArray:
    """Elementwise membership of text *values* in *options* (fast for a few options)."""
    choices = [str(option) for option in options]  # type: ignore[attr-defined]
    if len(choices) <= 8:
        out = np.zeros(len(values), dtype=bool)
        for choice in choices:
            out |= values == choice
        return out
    return np.asarray(pd.Series(values, dtype=object).isin(set(choices)).to_numpy(), dtype=bool)


_NUMBER_PATTERN = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def matches(values: ObjectArray, pattern: str) -> BoolArray:
    """Whether each text value fully matches the regular expression *pattern* (RE2 syntax).

    Runs in Arrow's compute kernels rather than a Python loop; blanks never match.
    """
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    array = pa.array(values, type=pa.string(), from_pandas=True)
    found = pc.match_substring_regex(array, f"^(?:{pattern})$")
    return np.asarray(
        np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool) & (values != ""), dtype=bool
    )


def to_numbers(values: ObjectArray) -> npt.NDArray[np.float64]:
    """Text values as floats: NaN unless the whole value is a decimal number (``1.5``, ``-2``,
    ``1e3``); surrounding blanks, commas, ``inf`` and ``nan`` are not numbers."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.float64)
    array = pa.array(values, type=pa.string(), from_pandas=True)
    numeric = pc.match_substring_regex(array, _NUMBER_PATTERN)
    cast = pc.cast(pc.if_else(numeric, array, pa.scalar(None, pa.string())), pa.float64())
    return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)


def numbers(frame: pd.DataFrame, column: str) -> npt.NDArray[np.float64]:
    """The column as floats (NaN when blank or not a number); cached per frame and column."""
    key = (id(frame), column)
    cached = _NUMBER_CACHE.get(key)
    if cached is not None and cached[0] is frame:
        return cached[1]
    out = to_numbers(text(frame, column))
    _NUMBER_CACHE[key] = (frame, out)
    return out


def dates(frame: pd.DataFrame, column: str) -> pd.Series:
    """The column as timestamps (NaT when blank or not a real date); cached per frame and column."""
    key = (id(frame), column)
    cached = _DATE_CACHE.get(key)
    if cached is not None and cached[0] is frame:
        return cached[1]
    values = text(frame, column)
    out = pd.Series(pd.NaT, index=range(len(values)), dtype="datetime64[ns]")
    filled = values != ""
    if filled.any():
        parsed = pd.to_datetime(
            pd.Series(values[filled], dtype=object), format="ISO8601", errors="coerce"
        )
        out[filled] = parsed.to_numpy(dtype="datetime64[ns]")
    _DATE_CACHE[key] = (frame, out)
    return out


def text(frame: pd.DataFrame, column: str) -> ObjectArray:
    """The column as an array of strings (``""`` for blank); blanks when the column is absent."""
    if column not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    series = frame[column]
    if frame.attrs.get(_TEXT_FLAG) and series.dtype == object:
        return np.asarray(series.to_numpy(), dtype=object)
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        try:
            arrow = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return np.asarray(series.to_numpy(dtype=object, na_value=""), dtype=object)
        filled = pc.fill_null(arrow, "")
        return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=object)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        formatted = series.dt.strftime("%Y-%m-%d")
        return np.asarray(formatted.fillna("").to_numpy(dtype=object), dtype=object)
    values = series.to_numpy(dtype=object)
    if series.dtype == object:
        filled = np.asarray(series.where(series.notna(), "").to_numpy(dtype=object), dtype=object)
        if pd.api.types.infer_dtype(filled, skipna=False) in ("string", "empty"):
            return filled
    out = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out[index] = ""
        elif isinstance(value, float) and value.is_integer():
            out[index] = str(int(value))
        else:
            out[index] = str(value)
    return out


def normalise_records(frame: pd.DataFrame, record_id_field: str) -> pd.DataFrame:
    """Return *frame* with the key columns present as strings (``""`` for blank), row order kept.

    A classic project gains an empty ``redcap_event_name``; a project without repeating forms
    gains empty repeat columns. Other columns are left as they are.
    """
    source = frame.reset_index(drop=True)
    columns = {column: text(source, column) for column in source.columns}
    for column in (record_id_field, EVENT, REPEAT, INSTANCE):
        if column not in columns:
            columns[column] = np.full(len(source), "", dtype=object)
    columns[record_id_field] = np.array(
        [value.strip() for value in columns[record_id_field]], dtype=object
    )
    records = pd.DataFrame(columns, dtype=object)
    records.attrs[_TEXT_FLAG] = True
    return records


def form_present(records: pd.DataFrame, dictionary: DataDictionary, form: str) -> BoolArray:
    """Rows that hold data of *form*: a repeat row of that form, or a base row with any value.

    A base row counts when a field of the form is non-blank (a checkbox when a box is ticked) or
    the form status is Unverified or Complete; REDCap exports status ``0`` on every event where
    the form is designated, so Incomplete alone does not mean data were entered.
    """
    key = (id(records), form)
    cached = _FORM_CACHE.get(key)
    if cached is not None and cached[0] is records:
        return cached[1]
    result = _form_present(records, dictionary, form)
    _FORM_CACHE[key] = (records, result)
    return result


def _form_present(records: pd.DataFrame, dictionary: DataDictionary, form: str) -> BoolArray:
    repeat = text(records, REPEAT)
    if (repeat == form).any():
        return np.asarray(repeat == form, dtype=bool)
    present = np.zeros(len(records), dtype=bool)
    for field in dictionary.form_fields(form):
        if (
            not field.holds_data
            or field.field_type == "calc"
            or field.name == dictionary.record_id_field
        ):
            continue
        for column in field.columns:
            if column not in records.columns:
                continue
            values = text(records, column)
            present |= (values == "1") if field.field_type == "checkbox" else (values != "")
    status = text(records, f"{form}_complete")
    present |= (status == "1") | (status == "2")
    return np.asarray(present & (repeat == ""), dtype=bool)


def findings_from_mask(
    check: CheckDefinition,
    records: pd.DataFrame,
    mask: BoolArray,
    *,
    record_id_field: str,
    instrument: str | ObjectArray,
    field: str | ObjectArray,
    value: ObjectArray | None,
    message: str | ObjectArray,
    source: str = "",
) -> pd.DataFrame:
    """One finding per row of *records* selected by *mask*, as a findings table."""
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return pd.DataFrame(columns=FINDING_COLUMNS)

    def pick(item: str | ObjectArray) -> ObjectArray | str:
        return item if isinstance(item, str) else item[rows]

    return pd.DataFrame(
        {
            "check_id": check.check_id,
            "severity": check.severity,
            "message": pick(message),
            "record_id": text(records, record_id_field)[rows],
            "event": text(records, EVENT)[rows],
            "instrument": pick(instrument),
            "instance": text(records, INSTANCE)[rows],
            "field": pick(field),
            "value": "" if value is None else value[rows],
            "source": source,
        },
        columns=FINDING_COLUMNS,
        dtype=object,
    )


def _typed_to_text(series: pd.Series, validation: str, field_type: str) -> ObjectArray:
    """REDCap's text for a typed snapshot column (the inverse of the snapshot's casting)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if validation.startswith("datetime_seconds"):
            pattern = "%Y-%m-%d %H:%M:%S"
        elif validation.startswith("datetime"):
            pattern = "%Y-%m-%d %H:%M"
        else:
            pattern = "%Y-%m-%d"
        formatted = series.dt.strftime(pattern)
        return np.asarray(
            formatted.astype(object).where(formatted.notna(), "").to_numpy(), dtype=object
        )
    if pd.api.types.is_float_dtype(series.dtype):
        places = 0
        if validation.startswith("number_") and validation[7:8].isdigit():
            places = int(validation[7])
        comma = validation.endswith("comma_decimal")
        out = np.empty(len(series), dtype=object)
        for index, value in enumerate(series.to_numpy(dtype=np.float64, na_value=np.nan)):
            if np.isnan(value):
                out[index] = ""
            elif places:
                out[index] = f"{value:.{places}f}"
            elif float(value).is_integer():
                out[index] = str(int(value))
            else:
                out[index] = repr(float(value))
            if comma:
                out[index] = out[index].replace(".", ",")
        return out
    return text(pd.DataFrame({"column": series}), "column")


def text_tables(
    tables: Mapping[str, pd.DataFrame], dictionary: DataDictionary
) -> dict[str, pd.DataFrame]:
    """Typed snapshot tables back to REDCap text, restoring values kept in ``__raw``/``__missing``.

    A value that did not cast (kept in ``<field>__raw``) and a missing-data code (kept in
    ``<field>__missing``) take their cell back, so the checks see exactly what REDCap held.
    """
    spec_of = {column: spec for spec in dictionary.fields for column in spec.columns}
    converted: dict[str, pd.DataFrame] = {}
    for name, table in tables.items():
        if name.startswith("_"):
            continue
        columns: dict[str, ObjectArray] = {}
        for column in table.columns:
            if (
                column.endswith(("__raw", "__missing"))
                and column.rsplit("__", 1)[0] in table.columns
            ):
                continue
            spec = spec_of.get(column)
            values = _typed_to_text(
                table[column], spec.validation if spec else "", spec.field_type if spec else ""
            )
            for suffix in ("__missing", "__raw"):
                extra = f"{column}{suffix}"
                if extra in table.columns:
                    kept = text(table, extra)
                    values = np.where(kept != "", kept, values).astype(object)
            columns[column] = values
        converted[name] = pd.DataFrame(columns, dtype=object)
    return converted


def flat_records_from_tables(
    tables: Mapping[str, pd.DataFrame], record_id_field: str
) -> pd.DataFrame:
    """Rebuild flat records from per-instrument tables (a snapshot's layout).

    Non-repeating instruments are joined on record and event (and on the n-th occurrence of that
    pair, so a row exported twice stays two rows, as in the export); repeating instruments add
    their own rows with ``redcap_repeat_instrument`` set. Record-level columns (data access
    group, survey identifier) are taken from the first table that has them.
    """
    occurrence = "__occurrence__"
    keys = [record_id_field, EVENT, occurrence]
    record_level = ("redcap_data_access_group", "redcap_survey_identifier")
    base: pd.DataFrame | None = None
    repeated: list[pd.DataFrame] = []
    for name, table in tables.items():
        frame = table.reset_index(drop=True).copy()
        for column in (record_id_field, EVENT, REPEAT, INSTANCE):
            if column not in frame.columns:
                frame[column] = ""
            frame[column] = text(frame, column)
        for column in frame.columns:
            if frame[column].dtype != object:
                frame[column] = text(frame, column)
        repeat_rows = frame[REPEAT] != ""
        if repeat_rows.any():
            repeat_part = frame.loc[repeat_rows].copy()
            repeat_part[REPEAT] = name
            repeated.append(repeat_part)
        plain = frame.loc[~repeat_rows].drop(columns=[REPEAT, INSTANCE])
        if plain.empty:
            continue
        plain[occurrence] = plain.groupby([record_id_field, EVENT]).cumcount()
        if base is None:
            base = plain
            continue
        shared = [c for c in record_level if c in plain.columns and c in base.columns]
        merged = base.merge(plain.drop(columns=shared), on=keys, how="outer")
        for column in shared:
            fill = merged[keys].merge(plain[[*keys, column]], on=keys, how="left")[column]
            merged[column] = merged[column].where(merged[column].notna(), fill.to_numpy())
        base = merged
    parts = []
    if base is not None:
        base = base.drop(columns=[occurrence])
        base[REPEAT] = ""
        base[INSTANCE] = ""
        parts.append(base)
    parts.extend(repeated)
    if not parts:
        return pd.DataFrame(columns=[record_id_field, EVENT, REPEAT, INSTANCE])
    flat = pd.concat(parts, ignore_index=True, sort=False)
    return normalise_records(flat.astype(object).where(flat.notna(), ""), record_id_field)
