"""Typing REDCap values by the project's data dictionary.

REDCap exports every value as text. This module decides, from the data dictionary alone, the
type of every column of the flat record export and casts the text into it. A value that does not
cast never raises: the typed cell becomes missing, the original text is kept in a
``<field>__raw`` column beside it, and a :class:`~studyman.findings.Finding` says where it was.

Column types (pandas dtypes, chosen so that a Parquet round trip restores them exactly):

* record ID, text, notes, file, sql, other validations: ``string``, anything;
* ``integer`` validation, slider: ``Int64`` (``-12``);
* ``number``, ``number_Ndp``, calc: ``Float64`` (``-1.5``, ``2``, ``1e3``);
* ``number*_comma_decimal``: ``Float64`` (``1,54``; a decimal point is accepted too);
* ``date_ymd`` / ``_mdy`` / ``_dmy``: ``datetime64[us]`` (``YYYY-MM-DD``, as REDCap exports);
* ``datetime*`` with or without seconds, survey ``<form>_timestamp``: ``datetime64[us]``
  (``YYYY-MM-DD HH:MM[:SS]``);
* ``time`` / ``time_hh_mm_ss`` / ``time_mm_ss``: ``timedelta64[us]`` since midnight, or a
  duration (``HH:MM`` / ``HH:MM:SS`` / ``MM:SS``);
* yesno, truefalse, each checkbox column ``x___code``: ``Int64`` (``0``, ``1``);
* radio, dropdown: ``string``, one of the choice codes (codes stay codes: labels are the
  dictionary's business);
* ``<form>_complete``: ``Int64`` (``0``, ``1``, ``2``); ``redcap_repeat_instance``: ``Int64``.

Surrounding blanks are ignored for numbers, dates and times.

Missing-data codes (the project setting ``missing_data_codes``) may stand in any field: such a
cell is missing in the typed column and the code is kept in a ``<field>__missing`` column, so
that a code never breaks numeric casting and is never mistaken for a wrong value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from studyman.findings import Finding
from studyman.protocol.redcap_project import checkbox_column, parse_choice_pairs

__all__ = [
    "MISSING_SUFFIX",
    "RAW_SUFFIX",
    "ArrowCast",
    "CastKind",
    "ColumnSpec",
    "FieldSpec",
    "ProjectDictionary",
    "arrow_to_pandas",
    "cast_array",
    "cast_column",
    "parse_choice_codes",
    "parse_missing_data_codes",
]

RAW_SUFFIX = "__raw"
MISSING_SUFFIX = "__missing"

#: Columns REDCap adds to a flat export that are not fields of the dictionary.
KEY_COLUMNS = (
    "redcap_event_name",
    "redcap_repeat_instrument",
    "redcap_repeat_instance",
)
RECORD_LEVEL_COLUMNS = ("redcap_data_access_group", "redcap_survey_identifier")


class CastKind(StrEnum):
    """How one export column is typed."""

    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    NUMBER_COMMA = "number_comma"
    DATE = "date"
    DATETIME = "datetime"
    TIME_HM = "time_hh_mm"
    TIME_HMS = "time_hh_mm_ss"
    TIME_MS = "time_mm_ss"
    BINARY = "binary"
    CHOICE = "choice"
    STATUS = "status"
    INSTANCE = "instance"
    SURVEY_TIMESTAMP = "survey_timestamp"


_DTYPES: dict[CastKind, str] = {
    CastKind.TEXT: "string",
    CastKind.CHOICE: "string",
    CastKind.INTEGER: "Int64",
    CastKind.BINARY: "Int64",
    CastKind.STATUS: "Int64",
    CastKind.INSTANCE: "Int64",
    CastKind.NUMBER: "Float64",
    CastKind.NUMBER_COMMA: "Float64",
    CastKind.DATE: "datetime64[us]",
    CastKind.DATETIME: "datetime64[us]",
    CastKind.SURVEY_TIMESTAMP: "datetime64[us]",
    CastKind.TIME_HM: "timedelta64[us]",
    CastKind.TIME_HMS: "timedelta64[us]",
    CastKind.TIME_MS: "timedelta64[us]",
}

_PATTERNS: dict[CastKind, re.Pattern[str]] = {
    CastKind.INTEGER: re.compile(r"[-+]?\d{1,18}"),
    CastKind.NUMBER: re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"),
    CastKind.NUMBER_COMMA: re.compile(r"[-+]?(?:\d+[.,]?\d*|[.,]\d+)"),
    CastKind.DATE: re.compile(r"\d{4}-\d{2}-\d{2}"),
    CastKind.DATETIME: re.compile(r"\d{4}-\d{2}-\d{2} (?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?"),
    CastKind.SURVEY_TIMESTAMP: re.compile(
        r"\d{4}-\d{2}-\d{2} (?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?"
    ),
    CastKind.TIME_HM: re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d"),
    CastKind.TIME_HMS: re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"),
    CastKind.TIME_MS: re.compile(r"[0-5]\d:[0-5]\d"),
    CastKind.BINARY: re.compile(r"[01]"),
    CastKind.STATUS: re.compile(r"[012]"),
    CastKind.INSTANCE: re.compile(r"[1-9]\d{0,17}"),
}

_EXPECTED: dict[CastKind, str] = {
    CastKind.INTEGER: "an integer",
    CastKind.NUMBER: "a number with a decimal point",
    CastKind.NUMBER_COMMA: "a number (decimal comma or point)",
    CastKind.DATE: "a date YYYY-MM-DD",
    CastKind.DATETIME: "a date-time YYYY-MM-DD HH:MM[:SS]",
    CastKind.SURVEY_TIMESTAMP: "a survey time stamp YYYY-MM-DD HH:MM[:SS]",
    CastKind.TIME_HM: "a time HH:MM",
    CastKind.TIME_HMS: "a time HH:MM:SS",
    CastKind.TIME_MS: "a duration MM:SS",
    CastKind.BINARY: "0 or 1",
    CastKind.STATUS: "a form status 0, 1 or 2",
    CastKind.INSTANCE: "a positive repeat instance number",
    CastKind.CHOICE: "one of the field's choice codes",
}

_NUMBER_VALIDATION = re.compile(r"number(?:_\d+dp)?")
_NUMBER_COMMA_VALIDATION = re.compile(r"number(?:_\d+dp)?_comma_decimal")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One data-dictionary field, as far as typing needs it.

    Attributes
    ----------
    name, form, field_type, validation
        ``field_name``, ``form_name``, ``field_type`` and
        ``text_validation_type_or_show_slider_number`` of the dictionary.
    choices
        The choice codes of a radio, dropdown or checkbox field, in dictionary order.
    """

    name: str
    form: str
    field_type: str
    validation: str
    choices: tuple[str, ...]

    @property
    def kind(self) -> CastKind:
        """The cast of this field's column (checkbox: of each ``x___code`` column)."""
        field_type = self.field_type
        validation = self.validation
        if field_type in {"yesno", "truefalse", "checkbox"}:
            return CastKind.BINARY
        if field_type in {"radio", "dropdown"}:
            return CastKind.CHOICE if self.choices else CastKind.TEXT
        if field_type == "calc":
            return CastKind.NUMBER
        if field_type == "slider":
            return CastKind.INTEGER
        if field_type != "text":
            return CastKind.TEXT
        if validation == "integer":
            return CastKind.INTEGER
        if _NUMBER_COMMA_VALIDATION.fullmatch(validation):
            return CastKind.NUMBER_COMMA
        if _NUMBER_VALIDATION.fullmatch(validation):
            return CastKind.NUMBER
        if validation.startswith("date_"):
            return CastKind.DATE
        if validation.startswith("datetime_"):
            return CastKind.DATETIME
        return {
            "time": CastKind.TIME_HM,
            "time_hh_mm_ss": CastKind.TIME_HMS,
            "time_mm_ss": CastKind.TIME_MS,
        }.get(validation, CastKind.TEXT)


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of the flat export: which field and form it belongs to and how it is typed.

    ``field`` is the dictionary field (the base name for a checkbox column); ``form`` is empty for
    key and record-level columns.
    """

    column: str
    field: str
    form: str
    kind: CastKind
    choices: tuple[str, ...] = ()
    is_checkbox: bool = False

    @property
    def dtype(self) -> str:
        """The pandas dtype of the typed column."""
        return _DTYPES[self.kind]


def parse_choice_codes(choices: str) -> tuple[str, ...]:
    """Return the codes of a REDCap choice list ``"1, Yes | 0, No"`` (text before each comma).

    The codes of :func:`studyman.protocol.redcap_project.parse_choice_pairs`, without blank
    ones: a blank cell is missing, never a code.
    """
    return tuple(code for code, _ in parse_choice_pairs(choices) if code)


def parse_missing_data_codes(setting: str | None) -> tuple[str, ...]:
    """Return the codes of the setting ``missing_data_codes`` (``"UNK, Unknown | NASK, ..."``)."""
    return parse_choice_codes(setting or "")


class ProjectDictionary:
    """The data dictionary of a project, indexed for typing and splitting the flat export.

    Parameters
    ----------
    rows
        The dictionary as REDCap's ``content=metadata`` answers it: one mapping per field with the
        raw API keys (``field_name``, ``form_name``, ``field_type``,
        ``select_choices_or_calculations``, ``text_validation_type_or_show_slider_number``, ...).
        Descriptive fields are ignored (REDCap never exports them).
    """

    def __init__(self, rows: Sequence[Mapping[str, str]]) -> None:
        fields: list[FieldSpec] = []
        for row in rows:
            field_type = str(row.get("field_type", "") or "").strip()
            if field_type == "descriptive":
                continue
            choices_text = str(row.get("select_choices_or_calculations", "") or "")
            is_coded = field_type in {"radio", "dropdown", "checkbox"}
            fields.append(
                FieldSpec(
                    name=str(row["field_name"]).strip(),
                    form=str(row.get("form_name", "") or "").strip(),
                    field_type=field_type,
                    validation=str(
                        row.get("text_validation_type_or_show_slider_number", "") or ""
                    ).strip(),
                    choices=parse_choice_codes(choices_text) if is_coded else ("0", "1"),
                )
            )
        self.fields: tuple[FieldSpec, ...] = tuple(fields)
        self.by_name: dict[str, FieldSpec] = {field.name: field for field in fields}
        self.forms: tuple[str, ...] = tuple(dict.fromkeys(field.form for field in fields))
        self.record_id_field: str = fields[0].name if fields else "record_id"

    def column_spec(self, column: str) -> ColumnSpec | None:
        """Return how export column *column* is typed (None: the dictionary does not know it)."""
        if column == self.record_id_field:
            return ColumnSpec(column, column, "", CastKind.TEXT)
        if column in ("redcap_event_name", "redcap_repeat_instrument", *RECORD_LEVEL_COLUMNS):
            return ColumnSpec(column, column, "", CastKind.TEXT)
        if column == "redcap_repeat_instance":
            return ColumnSpec(column, column, "", CastKind.INSTANCE)
        field = self.by_name.get(column)
        if field is not None:
            if field.field_type == "checkbox":
                return None  # a checkbox is exported only as x___code columns
            choices = field.choices if field.kind in {CastKind.CHOICE, CastKind.BINARY} else ()
            return ColumnSpec(column, field.name, field.form, field.kind, choices)
        if "___" in column:
            base = column.split("___", 1)[0]
            field = self.by_name.get(base)
            if field is not None and field.field_type == "checkbox":
                return ColumnSpec(column, base, field.form, CastKind.BINARY, is_checkbox=True)
        for suffix, kind in (
            ("_complete", CastKind.STATUS),
            ("_timestamp", CastKind.SURVEY_TIMESTAMP),
        ):
            if column.endswith(suffix) and column.removesuffix(suffix) in self.forms:
                return ColumnSpec(column, column, column.removesuffix(suffix), kind)
        return None

    def default_columns(self, form: str) -> list[str]:
        """Export columns of *form* as REDCap would write them (used when no data came back)."""
        columns: list[str] = []
        for field in self.fields:
            if field.form != form or field.name == self.record_id_field:
                continue
            if field.field_type == "checkbox":
                columns.extend(checkbox_column(field.name, code) for code in field.choices)
            else:
                columns.append(field.name)
        columns.append(f"{form}_complete")
        return columns


_ARROW_TYPES: dict[CastKind, pa.DataType] = {
    CastKind.TEXT: pa.string(),
    CastKind.CHOICE: pa.string(),
    CastKind.INTEGER: pa.int64(),
    CastKind.BINARY: pa.int64(),
    CastKind.STATUS: pa.int64(),
    CastKind.INSTANCE: pa.int64(),
    CastKind.NUMBER: pa.float64(),
    CastKind.NUMBER_COMMA: pa.float64(),
    CastKind.DATE: pa.timestamp("us"),
    CastKind.DATETIME: pa.timestamp("us"),
    CastKind.SURVEY_TIMESTAMP: pa.timestamp("us"),
    CastKind.TIME_HM: pa.duration("us"),
    CastKind.TIME_HMS: pa.duration("us"),
    CastKind.TIME_MS: pa.duration("us"),
}

_PANDAS_TYPES: dict[pa.DataType, Any] = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.string(): pd.StringDtype(),
    pa.large_string(): pd.StringDtype(),
}


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Convert a typed arrow table to pandas with the dtypes of the table at the top."""
    frame: pd.DataFrame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    return frame


@dataclass(frozen=True, slots=True)
class ArrowCast:
    """A typed column, plus the text of the cells that did not cast and of missing-data codes."""

    typed: pa.Array
    raw: pa.Array | None
    missing: pa.Array | None
    failed: np.ndarray  # boolean mask of cells that did not cast


@dataclass(frozen=True, slots=True)
class CastResult:
    """:class:`ArrowCast` as pandas Series."""

    typed: pd.Series
    raw: pd.Series | None
    missing: pd.Series | None
    failed: np.ndarray


def _mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _digits(text: pa.Array, start: int, stop: int) -> pa.Array:
    return pc.cast(pc.utf8_slice_codeunits(text, start, stop), pa.int64())


def _convert_arrow(kind: CastKind, text: pa.Array) -> pa.Array:
    """Convert cells already known to match the kind's pattern (others are null)."""
    if kind in {CastKind.INTEGER, CastKind.BINARY, CastKind.STATUS, CastKind.INSTANCE}:
        return pc.cast(pc.utf8_ltrim(text, "+"), pa.int64())
    if kind is CastKind.NUMBER:
        return pc.cast(text, pa.float64())
    if kind is CastKind.NUMBER_COMMA:
        return pc.cast(pc.replace_substring(text, ",", "."), pa.float64())
    if kind is CastKind.DATE:
        stamp = pc.strptime(text, format="%Y-%m-%d", unit="us", error_is_null=True)
        # strptime rolls 2021-02-30 over to March: only dates that print back are dates.
        same = pc.equal(pc.strftime(stamp, format="%Y-%m-%d"), text)
        return pc.if_else(same, stamp, pa.scalar(None, pa.timestamp("us")))
    if kind in {CastKind.DATETIME, CastKind.SURVEY_TIMESTAMP}:
        padded = pc.if_else(
            pc.equal(pc.utf8_length(text), 16), pc.binary_join_element_wise(text, ":00", ""), text
        )
        stamp = pc.strptime(padded, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
        same = pc.equal(pc.strftime(stamp, format="%Y-%m-%d"), pc.utf8_slice_codeunits(text, 0, 10))
        return pc.if_else(same, stamp, pa.scalar(None, pa.timestamp("us")))
    if kind in {CastKind.TIME_HM, CastKind.TIME_HMS, CastKind.TIME_MS}:
        if kind is CastKind.TIME_MS:
            seconds = pc.add(pc.multiply(_digits(text, 0, 2), 60), _digits(text, 3, 5))
        else:
            seconds = pc.multiply(
                pc.add(pc.multiply(_digits(text, 0, 2), 60), _digits(text, 3, 5)), 60
            )
            if kind is CastKind.TIME_HMS:
                seconds = pc.add(seconds, _digits(text, 6, 8))
        return pc.cast(pc.multiply(seconds, 1_000_000), pa.duration("us"))
    return text


def cast_array(
    values: pa.Array | pa.ChunkedArray, spec: ColumnSpec, missing_codes: Sequence[str] = ()
) -> ArrowCast:
    """Cast one column of export text (an arrow string array, blank = ``""``) by *spec*.

    Parameters
    ----------
    values
        The cells as REDCap exported them; blanks are empty strings (nulls count as blank).
    spec
        The column's type (:meth:`ProjectDictionary.column_spec`).
    missing_codes
        The project's missing-data codes; they are never applied to key columns.

    Returns
    -------
    ArrowCast
        The typed column (null where blank, a missing-data code, or not castable), the raw text
        of non-castable cells (None when every cell cast), the missing-data codes (None when none
        occurs) and the mask of non-castable cells.

    Notes
    -----
    Dates are checked as calendar dates (``2021-02-30`` does not cast). A survey time stamp
    ``[not completed]`` is REDCap's own marker, read as missing without a finding. Surrounding
    blanks are ignored for numbers, dates, times and status values.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    text = pc.fill_null(pc.cast(values, pa.string()), "")
    length = len(text)
    target = _ARROW_TYPES[spec.kind]
    blank = pc.equal(text, "")
    if spec.kind is CastKind.SURVEY_TIMESTAMP:
        blank = pc.or_(blank, pc.equal(text, "[not completed]"))
    if missing_codes and spec.form:
        is_code = pc.is_in(text, value_set=pa.array(list(missing_codes), pa.string()))
    else:
        is_code = pa.array(np.zeros(length, dtype=bool))
    present = pc.and_(pc.invert(blank), pc.invert(is_code))
    null_text = pa.scalar(None, pa.string())
    missing = pc.if_else(is_code, text, null_text) if pc.any(is_code).as_py() else None
    if not pc.any(present).as_py():
        return ArrowCast(pa.nulls(length, target), None, missing, np.zeros(length, dtype=bool))
    if spec.kind is CastKind.TEXT:
        typed = pc.if_else(present, text, null_text)
        failed_array = pa.array(np.zeros(length, dtype=bool))
    elif spec.kind is CastKind.CHOICE:
        ok = pc.and_(present, pc.is_in(text, value_set=pa.array(list(spec.choices), pa.string())))
        typed = pc.if_else(ok, text, null_text)
        failed_array = pc.and_(present, pc.invert(ok))
    else:
        stripped = pc.utf8_trim_whitespace(text)
        ok = pc.and_(
            present, pc.match_substring_regex(stripped, f"^(?:{_PATTERNS[spec.kind].pattern})$")
        )
        typed = _convert_arrow(spec.kind, pc.if_else(ok, stripped, null_text))
        failed_array = pc.and_(present, pc.is_null(typed))
    failed = _mask(failed_array)
    raw = pc.if_else(failed_array, text, null_text) if failed.any() else None
    return ArrowCast(typed, raw, missing, failed)


def cast_column(
    values: pd.Series, spec: ColumnSpec, missing_codes: Sequence[str] = ()
) -> CastResult:
    """Cast one pandas column of export text by *spec* (see :func:`cast_array`)."""
    text = values.astype("string").fillna("")
    result = cast_array(pa.array(text.tolist(), pa.string()), spec, missing_codes)
    columns = {"typed": result.typed}
    if result.raw is not None:
        columns["raw"] = result.raw
    if result.missing is not None:
        columns["missing"] = result.missing
    frame = arrow_to_pandas(pa.table(columns))
    return CastResult(
        typed=frame["typed"],
        raw=frame.get("raw"),
        missing=frame.get("missing"),
        failed=result.failed,
    )


def cast_finding(
    spec: ColumnSpec,
    value: str,
    *,
    record_id: str,
    event: str,
    instrument: str,
    instance: str,
    source: str,
) -> Finding:
    """Return the finding for one cell that did not cast."""
    expected = _EXPECTED.get(spec.kind, "a valid value")
    return Finding(
        check_id=f"cast.{spec.kind.value}",
        severity="major",
        message=(
            f"record {record_id}: {spec.column} = {value!r} is not {expected}; "
            f"kept as text in {spec.column}{RAW_SUFFIX}"
        ),
        record_id=record_id,
        event=event,
        instrument=instrument,
        instance=instance,
        field=spec.column,
        value=value,
        source=source,
    )
