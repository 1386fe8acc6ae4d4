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
from typing import Any, cast

import numpy as np
import pandas as pd

from studyman.findings import Finding

__all__ = [
    "MISSING_SUFFIX",
    "RAW_SUFFIX",
    "CastKind",
    "ColumnSpec",
    "FieldSpec",
    "ProjectDictionary",
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
    CastKind.DATETIME: re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?"),
    CastKind.SURVEY_TIMESTAMP: re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?"),
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
    """Return the codes of a REDCap choice list ``"1, Yes | 0, No"`` (text before each comma)."""
    codes: list[str] = []
    for part in choices.split("|"):
        code = part.split(",", 1)[0].strip()
        if code:
            codes.append(code)
    return tuple(codes)


def parse_missing_data_codes(setting: str | None) -> tuple[str, ...]:
    """Return the codes of the setting ``missing_data_codes`` (``"UNK, Unknown | NASK, ..."``)."""
    return parse_choice_codes(setting or "")


def _checkbox_export_name(field: str, code: str) -> str:
    # REDCap lower-cases the code and turns anything but letters, digits and '_' into '_'.
    return f"{field}___{re.sub(r'[^a-z0-9_]', '_', code.lower())}"


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
                columns.extend(_checkbox_export_name(field.name, code) for code in field.choices)
            else:
                columns.append(field.name)
        columns.append(f"{form}_complete")
        return columns


@dataclass(frozen=True, slots=True)
class CastResult:
    """A typed column, plus the text of the cells that did not cast and of missing-data codes."""

    typed: pd.Series
    raw: pd.Series | None
    missing: pd.Series | None
    failed: np.ndarray  # boolean mask of cells that did not cast


def _convert(kind: CastKind, text: pd.Series) -> pd.Series:
    """Convert cells already known to match the kind's pattern (others are <NA>)."""
    if kind in {CastKind.INTEGER, CastKind.BINARY, CastKind.STATUS, CastKind.INSTANCE}:
        return pd.to_numeric(text.str.lstrip("+"), errors="coerce").astype("Int64")
    if kind is CastKind.NUMBER:
        return pd.to_numeric(text, errors="coerce").astype("Float64")
    if kind is CastKind.NUMBER_COMMA:
        return pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce").astype(
            "Float64"
        )
    if kind is CastKind.DATE:
        return pd.to_datetime(text, format="%Y-%m-%d", errors="coerce").astype("datetime64[us]")
    if kind in {CastKind.DATETIME, CastKind.SURVEY_TIMESTAMP}:
        padded = text.where(text.str.len() != 16, text + ":00")
        return pd.to_datetime(padded, format="%Y-%m-%d %H:%M:%S", errors="coerce").astype(
            "datetime64[us]"
        )
    if kind is CastKind.TIME_HM:
        return pd.to_timedelta(text + ":00", errors="coerce").astype("timedelta64[us]")
    if kind is CastKind.TIME_HMS:
        return pd.to_timedelta(text, errors="coerce").astype("timedelta64[us]")
    if kind is CastKind.TIME_MS:
        return pd.to_timedelta("00:" + text, errors="coerce").astype("timedelta64[us]")
    return text.astype("string")


def cast_column(
    values: pd.Series, spec: ColumnSpec, missing_codes: Sequence[str] = ()
) -> CastResult:
    """Cast one column of export text (blank = ``""``) by *spec*.

    Parameters
    ----------
    values
        The cells as REDCap exported them; blanks are empty strings.
    spec
        The column's type (:meth:`ProjectDictionary.column_spec`).
    missing_codes
        The project's missing-data codes; they are never applied to key columns.

    Returns
    -------
    CastResult
        The typed column (missing where blank, a missing-data code, or not castable), the raw text
        of non-castable cells (None when every cell cast), the missing-data codes (None when none
        occurs) and the mask of non-castable cells.

    Notes
    -----
    Dates are checked as calendar dates (``2021-02-30`` does not cast). A survey time stamp
    ``[not completed]`` is REDCap's own marker, read as missing without a finding.
    """
    text = values.astype("string").fillna("")
    blank = (text == "").to_numpy(dtype=bool)
    is_missing_code = np.zeros(len(text), dtype=bool)
    if missing_codes and spec.form:
        is_missing_code = text.isin(list(missing_codes)).to_numpy(dtype=bool)
    if spec.kind is CastKind.SURVEY_TIMESTAMP:
        blank |= (text == "[not completed]").to_numpy(dtype=bool)
    present = ~blank & ~is_missing_code
    if not present.any():
        # Nothing to cast (an empty or all-blank column): skip the string machinery.
        missing = None
        if is_missing_code.any():
            missing = text.where(is_missing_code).astype("string").reset_index(drop=True)
        return CastResult(
            typed=pd.Series(pd.NA, index=range(len(text)), dtype=cast(Any, _DTYPES[spec.kind])),
            raw=None,
            missing=missing,
            failed=np.zeros(len(text), dtype=bool),
        )
    candidate = text.where(present)
    if spec.kind not in {CastKind.TEXT, CastKind.CHOICE}:
        # Surrounding blanks never change a number, date or code REDCap would accept.
        candidate = candidate.str.strip()
    if spec.kind is CastKind.TEXT:
        typed = candidate.astype("string")
        failed = np.zeros(len(text), dtype=bool)
    elif spec.kind is CastKind.CHOICE:
        ok = candidate.isin(list(spec.choices)).fillna(False).to_numpy(dtype=bool)
        failed = present & ~ok
        typed = candidate.where(ok).astype("string")
    else:
        pattern = _PATTERNS[spec.kind]
        matches = (
            candidate.str.fullmatch(pattern.pattern).fillna(False).to_numpy(dtype=bool) & present
        )
        typed = _convert(spec.kind, candidate.where(matches))
        converted = typed.notna().to_numpy(dtype=bool)
        failed = present & ~converted
    raw = None
    if failed.any():
        raw = text.where(failed).astype("string")
    missing = None
    if is_missing_code.any():
        missing = text.where(is_missing_code).astype("string")
    return CastResult(
        typed=typed.reset_index(drop=True),
        raw=_reset(raw),
        missing=_reset(missing),
        failed=failed,
    )


def _reset(series: pd.Series | None) -> pd.Series | None:
    return None if series is None else series.reset_index(drop=True)


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
