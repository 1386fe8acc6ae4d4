"""A REDCap project in REDCap's own file formats, read into typed, frozen models.

A project directory (``docs/design.md``, "The REDCap project directory") holds ``project.json``,
``data_dictionary.csv``, ``instruments.csv``, ``arms.csv``, ``events.csv``,
``instrument_event_mapping.csv``, ``repeating_instruments.csv``, ``dags.csv`` and ``users.csv``.
:func:`load_redcap_project` reads such a directory; :func:`read_data_dictionary` reads a data
dictionary on its own, with the raw API headers (``field_name,form_name,...``) or the human headers
of REDCap's web download (``"Variable / Field Name","Form Name",...``).

A malformed file raises :class:`~studyman.errors.ProtocolError` naming the file, the line and
column, and what was expected. The files hold definitions, not participant data, so a bad entry
stops the load rather than becoming a finding. ``records.csv`` and ``api_tokens.csv`` are not read
here (they are the emulator's); only their paths are reported.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from studyman.errors import ProtocolError
from studyman.protocol.text_files import TextEncodingError, decode_spreadsheet_csv

__all__ = [
    "DATETIME_VALIDATIONS",
    "DATE_VALIDATIONS",
    "DICTIONARY_COLUMNS",
    "HUMAN_DICTIONARY_HEADERS",
    "NUMBER_VALIDATIONS",
    "USER_COLUMNS",
    "USER_RIGHT_COLUMNS",
    "Arm",
    "Choice",
    "DataAccessGroup",
    "DataDictionary",
    "DictionaryField",
    "Event",
    "FieldType",
    "FormEventMapping",
    "Instrument",
    "ProjectInfo",
    "RedcapProject",
    "RepeatingForm",
    "UserRights",
    "checkbox_column",
    "field_choice_pairs",
    "load_redcap_project",
    "parse_choice_pairs",
    "parse_choices",
    "read_data_dictionary",
]

FieldType = Literal[
    "text",
    "notes",
    "dropdown",
    "radio",
    "checkbox",
    "yesno",
    "truefalse",
    "calc",
    "file",
    "slider",
    "descriptive",
    "sql",
]

DICTIONARY_COLUMNS: tuple[str, ...] = (
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
)

#: The headers of the data dictionary downloaded from REDCap's web page, in column order.
HUMAN_DICTIONARY_HEADERS: tuple[str, ...] = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)

#: Columns a dictionary must have; older REDCap versions stop before the matrix/annotation columns.
_REQUIRED_DICTIONARY_COLUMNS = DICTIONARY_COLUMNS[:5]

USER_RIGHT_COLUMNS: tuple[str, ...] = (
    "design",
    "user_rights",
    "data_access_groups",
    "data_export",
    "reports",
    "stats_and_charts",
    "manage_survey_participants",
    "calendar",
    "data_import_tool",
    "data_comparison_tool",
    "logging",
    "file_repository",
    "data_quality_create",
    "data_quality_execute",
    "api_export",
    "api_import",
    "mobile_app",
    "mobile_app_download_data",
    "record_create",
    "record_rename",
    "record_delete",
    "lock_records_customization",
    "lock_records",
    "lock_records_all_forms",
)

USER_COLUMNS: tuple[str, ...] = (
    "username",
    "email",
    "firstname",
    "lastname",
    "expiration",
    "data_access_group",
    *USER_RIGHT_COLUMNS,
    "forms",
    "forms_export",
)

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: REDCap's text validation types of a date (REDCap exports every one as ``YYYY-MM-DD``).
DATE_VALIDATIONS: frozenset[str] = frozenset({"date_ymd", "date_mdy", "date_dmy"})
#: REDCap's text validation types of a date and time, with or without seconds.
DATETIME_VALIDATIONS: frozenset[str] = frozenset(
    {
        "datetime_ymd",
        "datetime_mdy",
        "datetime_dmy",
        "datetime_seconds_ymd",
        "datetime_seconds_mdy",
        "datetime_seconds_dmy",
    }
)
#: REDCap's text validation types of a number (``integer`` apart), decimal point or comma.
NUMBER_VALIDATIONS: frozenset[str] = frozenset(
    {
        "number",
        "number_1dp",
        "number_2dp",
        "number_3dp",
        "number_4dp",
        "number_comma_decimal",
        "number_1dp_comma_decimal",
        "number_2dp_comma_decimal",
        "number_3dp_comma_decimal",
        "number_4dp_comma_decimal",
    }
)


def _normalise_header(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_HEADER_TO_COLUMN: dict[str, str] = {}
for _raw, _human in zip(DICTIONARY_COLUMNS, HUMAN_DICTIONARY_HEADERS, strict=True):
    _HEADER_TO_COLUMN[_normalise_header(_raw)] = _raw
    _HEADER_TO_COLUMN[_normalise_header(_human)] = _raw
# Variants seen in older REDCap downloads.
_HEADER_TO_COLUMN[_normalise_header("Choices OR Calculations")] = "select_choices_or_calculations"
_HEADER_TO_COLUMN[_normalise_header("Text Validation Type")] = (
    "text_validation_type_or_show_slider_number"
)
_HEADER_TO_COLUMN[_normalise_header("Branching Logic")] = "branching_logic"
_HEADER_TO_COLUMN[_normalise_header("Question Number")] = "question_number"
_HEADER_TO_COLUMN[_normalise_header("Identifier")] = "identifier"
_HEADER_TO_COLUMN[_normalise_header("Required Field")] = "required_field"
_HEADER_TO_COLUMN[_normalise_header("Matrix Ranking")] = "matrix_ranking"


class Choice(BaseModel):
    """One choice of a dropdown, radio, checkbox, yes/no or true/false field."""

    model_config = _FROZEN

    code: str
    label: str


def parse_choices(text: str) -> tuple[Choice, ...]:
    """Parse REDCap's choice string (``"1, Yes | 0, No"``) into choices, in their given order.

    Each choice is split at its first comma; a choice without a comma is its own code and label.
    Blank entries are skipped.
    """
    return tuple(Choice(code=code, label=label) for code, label in parse_choice_pairs(text))


def parse_choice_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """Parse REDCap's choice string as :func:`parse_choices` does, into ``(code, label)`` pairs.

    The plain-tuple form is for code that looks labels up per value (the emulator's exports).
    """
    pairs: list[tuple[str, str]] = []
    for part in text.split("|"):
        entry = part.strip()
        if not entry:
            continue
        code, comma, label = entry.partition(",")
        pairs.append((code.strip(), label.strip() if comma else code.strip()))
    return tuple(pairs)


_YESNO_PAIRS = (("1", "Yes"), ("0", "No"))
_TRUEFALSE_PAIRS = (("1", "True"), ("0", "False"))


def field_choice_pairs(field_type: str, choices_text: str) -> tuple[tuple[str, str], ...]:
    """The ``(code, label)`` choices of a field of *field_type* (yes/no and true/false included).

    Parameters
    ----------
    field_type
        The dictionary's ``field_type``.
    choices_text
        The dictionary's ``select_choices_or_calculations``.

    Returns
    -------
    tuple of (str, str)
        The choices in order; ``()`` for a field type without choices.
    """
    if field_type == "yesno":
        return _YESNO_PAIRS
    if field_type == "truefalse":
        return _TRUEFALSE_PAIRS
    if field_type in ("dropdown", "radio", "checkbox"):
        return parse_choice_pairs(choices_text)
    return ()


def checkbox_column(field_name: str, code: str) -> str:
    """REDCap's flat-export column of checkbox *field_name* for choice *code*.

    REDCap lower-cases the (trimmed) code and replaces every character that is not a letter,
    digit or underscore with ``_``: code ``-1`` of ``field`` exports as ``field____1``.
    """
    return f"{field_name}___{re.sub(r'[^a-z0-9_]', '_', code.strip().lower())}"


class DictionaryField(BaseModel):
    """One row of a REDCap data dictionary, with REDCap's own (raw API) column names.

    The text is kept exactly as REDCap holds it, so that a dictionary read here can be served or
    written back unchanged; the properties interpret it.
    """

    model_config = _FROZEN

    field_name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    form_name: str = Field(pattern=r"^[a-z0-9_]+$")
    section_header: str = ""
    field_type: FieldType
    field_label: str = ""
    select_choices_or_calculations: str = ""
    field_note: str = ""
    text_validation_type_or_show_slider_number: str = ""
    text_validation_min: str = ""
    text_validation_max: str = ""
    identifier: str = ""
    branching_logic: str = ""
    required_field: str = ""
    custom_alignment: str = ""
    question_number: str = ""
    matrix_group_name: str = ""
    matrix_ranking: str = ""
    field_annotation: str = ""

    @property
    def validation(self) -> str:
        """The text validation type (``date_ymd``, ``integer`` ...) of a text field, else ``""``."""
        if self.field_type != "text":
            return ""
        return self.text_validation_type_or_show_slider_number.strip()

    @property
    def choices(self) -> tuple[Choice, ...]:
        """The choices of a categorical field (yes/no and true/false included), else ``()``."""
        pairs = field_choice_pairs(self.field_type, self.select_choices_or_calculations)
        return tuple(Choice(code=code, label=label) for code, label in pairs)

    @property
    def choice_codes(self) -> tuple[str, ...]:
        """The raw codes of :attr:`choices`, in order."""
        return tuple(choice.code for choice in self.choices)

    @property
    def calculation(self) -> str:
        """The formula of a calc field, else ``""``."""
        return self.select_choices_or_calculations if self.field_type == "calc" else ""

    @property
    def is_identifier(self) -> bool:
        """True when the field is flagged as an identifier (PHI)."""
        return self.identifier.strip().lower() == "y"

    @property
    def is_required(self) -> bool:
        """True when the field is required."""
        return self.required_field.strip().lower() == "y"

    @property
    def is_date(self) -> bool:
        """True for a text field validated as a date (any display order)."""
        return self.validation in DATE_VALIDATIONS

    @property
    def is_datetime(self) -> bool:
        """True for a text field validated as a date and time."""
        return self.validation in DATETIME_VALIDATIONS

    @property
    def is_numeric(self) -> bool:
        """True when values are numbers: integer/number text, calc, slider, or coded choices."""
        if self.field_type in ("calc", "slider", "yesno", "truefalse"):
            return True
        if self.field_type == "text":
            return self.validation == "integer" or self.validation in NUMBER_VALIDATIONS
        if self.field_type in ("dropdown", "radio"):
            codes = self.choice_codes
            return bool(codes) and all(re.fullmatch(r"-?[0-9]+", code) for code in codes)
        return False

    def range_min_number(self) -> float | None:
        """The validation minimum as a number (numeric validations only), else None."""
        return _as_number(self.text_validation_min) if self.is_numeric else None

    def range_max_number(self) -> float | None:
        """The validation maximum as a number (numeric validations only), else None."""
        return _as_number(self.text_validation_max) if self.is_numeric else None

    @property
    def export_names(self) -> tuple[str, ...]:
        """The column(s) this field exports as in a flat record export.

        A checkbox gives one ``field___code`` column per choice; a descriptive field gives none.
        """
        if self.field_type == "descriptive":
            return ()
        if self.field_type == "checkbox":
            return tuple(checkbox_column(self.field_name, c) for c in self.choice_codes)
        return (self.field_name,)

    def as_row(self) -> dict[str, str]:
        """The field as one metadata row (raw API column names, REDCap's ``content=metadata``)."""
        return {column: str(getattr(self, column)) for column in DICTIONARY_COLUMNS}


def _as_number(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        return None


class DataDictionary(BaseModel):
    """A REDCap data dictionary: the fields in project order.

    The first field is the record-ID field; form order is the order in which forms first appear.
    """

    model_config = _FROZEN

    fields: tuple[DictionaryField, ...]
    source: str = ""

    @property
    def record_id_field(self) -> str:
        """The record-ID field (the dictionary's first field)."""
        return self.fields[0].field_name if self.fields else ""

    @property
    def field_names(self) -> tuple[str, ...]:
        """All field names in order."""
        return tuple(field.field_name for field in self.fields)

    @property
    def forms(self) -> tuple[str, ...]:
        """Form names in dictionary order."""
        return tuple(dict.fromkeys(field.form_name for field in self.fields))

    def get(self, name: str) -> DictionaryField | None:
        """The field called *name*, or None."""
        return self._by_name().get(name)

    def field(self, name: str) -> DictionaryField:
        """The field called *name*; raises KeyError when absent."""
        return self._by_name()[name]

    def fields_on(self, form: str) -> tuple[DictionaryField, ...]:
        """The fields of *form*, in order."""
        return tuple(field for field in self.fields if field.form_name == form)

    def export_field_names(self) -> tuple[str, ...]:
        """Every flat-export column of the fields (checkboxes expanded), without form status."""
        return tuple(name for field in self.fields for name in field.export_names)

    def as_rows(self) -> list[dict[str, str]]:
        """The dictionary as metadata rows (REDCap's ``content=metadata`` JSON answer)."""
        return [field.as_row() for field in self.fields]

    def to_csv_text(self, *, human_headers: bool = False) -> str:
        """The dictionary as CSV text, raw API headers by default (REDCap-importable)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HUMAN_DICTIONARY_HEADERS if human_headers else DICTIONARY_COLUMNS)
        for field in self.fields:
            writer.writerow([getattr(field, column) for column in DICTIONARY_COLUMNS])
        return buffer.getvalue()

    @classmethod
    def from_rows(
        cls, rows: Iterable[Mapping[str, Any]], *, source: str = "metadata"
    ) -> DataDictionary:
        """Build a dictionary from metadata rows (REDCap's ``content=metadata`` JSON, PyCap's
        ``export_metadata()``); keys may be raw or human headers.

        Raises
        ------
        ProtocolError
            A row is malformed (named as ``row N`` of *source*) or a field name repeats.
        """
        fields: list[DictionaryField] = []
        seen: set[str] = set()
        for number, row in enumerate(rows, start=1):
            values: dict[str, Any] = {}
            for header, value in row.items():
                column = _HEADER_TO_COLUMN.get(_normalise_header(str(header)))
                if column is None:
                    raise ProtocolError(
                        f"unknown data dictionary column {header!r}",
                        file=source,
                        key=f"row {number}",
                    )
                text = "" if value is None else str(value)
                values[column] = text.strip() if column in _STRIPPED else text
            field = _validated(DictionaryField, values, source, number, unit="row")
            if field.field_name in seen:
                raise ProtocolError(
                    f"field {field.field_name!r} repeats: expected unique field names",
                    file=source,
                    key=f"row {number}",
                )
            seen.add(field.field_name)
            fields.append(field)
        return cls(fields=tuple(fields), source=source)

    def _by_name(self) -> dict[str, DictionaryField]:
        return {field.field_name: field for field in self.fields}


# ------------------------------------------------------------------- other project files


class ProjectInfo(BaseModel):
    """``project.json``: REDCap's ``content=project`` answer plus ``redcap_version``.

    Notes
    -----
    Unlike the other models this one keeps keys it does not know: REDCap adds project
    attributes from version to version and a pull must not fail on them.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    project_id: int
    project_title: str
    is_longitudinal: int = 0
    has_repeating_instruments_or_events: int = 0
    missing_data_codes: str = ""
    redcap_version: str = ""

    @property
    def missing_codes(self) -> tuple[Choice, ...]:
        """The project's missing-data codes (``UNK, Unknown | NASK, Not asked``)."""
        return parse_choices(self.missing_data_codes)


class Instrument(BaseModel):
    """One row of ``instruments.csv``."""

    model_config = _FROZEN

    instrument_name: str
    instrument_label: str


class Arm(BaseModel):
    """One REDCap arm (not a treatment arm: those live in the randomization form)."""

    model_config = _FROZEN

    arm_num: int
    name: str


class Event(BaseModel):
    """One REDCap event."""

    model_config = _FROZEN

    event_name: str
    arm_num: int
    unique_event_name: str
    custom_event_label: str = ""
    event_id: int | None = None


class FormEventMapping(BaseModel):
    """One row of the instrument–event mapping."""

    model_config = _FROZEN

    arm_num: int
    unique_event_name: str
    form: str


class RepeatingForm(BaseModel):
    """A repeating instrument (``event_name`` empty in classic projects)."""

    model_config = _FROZEN

    event_name: str = ""
    form_name: str
    custom_form_label: str = ""


class DataAccessGroup(BaseModel):
    """A data access group."""

    model_config = _FROZEN

    data_access_group_name: str
    unique_group_name: str


class UserRights(BaseModel):
    """A user and their rights, as in REDCap's user import CSV.

    ``forms`` and ``forms_export`` map a form to its right. Form rights: 0 no access, 1 view and
    edit, 2 read only, 3 edit survey responses. Export rights: 0 no access, 1 full data set,
    2 de-identified, 3 identifiers removed.
    """

    model_config = _FROZEN

    username: str
    email: str = ""
    firstname: str = ""
    lastname: str = ""
    expiration: str = ""
    data_access_group: str = ""
    design: int = 0
    user_rights: int = 0
    data_access_groups: int = 0
    data_export: int = 0
    reports: int = 0
    stats_and_charts: int = 0
    manage_survey_participants: int = 0
    calendar: int = 0
    data_import_tool: int = 0
    data_comparison_tool: int = 0
    logging: int = 0
    file_repository: int = 0
    data_quality_create: int = 0
    data_quality_execute: int = 0
    api_export: int = 0
    api_import: int = 0
    mobile_app: int = 0
    mobile_app_download_data: int = 0
    record_create: int = 0
    record_rename: int = 0
    record_delete: int = 0
    lock_records_customization: int = 0
    lock_records: int = 0
    lock_records_all_forms: int = 0
    forms: dict[str, int] = Field(default_factory=dict)
    forms_export: dict[str, int] = Field(default_factory=dict)

    def can_view(self, form: str) -> bool:
        """True when the user may open *form* in the web interface."""
        return self.forms.get(form, 0) != 0

    def can_export(self, form: str) -> bool:
        """True when the user may export *form* (any export right but "no access")."""
        return self.forms_export.get(form, 0) != 0

    def rights_row(self) -> dict[str, str]:
        """The user as one row of REDCap's user import CSV."""
        row = {column: str(getattr(self, column)) for column in USER_COLUMNS[:-2]}
        row["forms"] = ",".join(f"{form}:{right}" for form, right in self.forms.items())
        row["forms_export"] = ",".join(
            f"{form}:{right}" for form, right in self.forms_export.items()
        )
        return row


class RedcapProject(BaseModel):
    """A whole REDCap project read from a project directory."""

    model_config = _FROZEN

    directory: str
    project: ProjectInfo
    dictionary: DataDictionary
    instruments: tuple[Instrument, ...]
    arms: tuple[Arm, ...] = ()
    events: tuple[Event, ...] = ()
    mappings: tuple[FormEventMapping, ...] = ()
    repeating: tuple[RepeatingForm, ...] = ()
    dags: tuple[DataAccessGroup, ...] = ()
    users: tuple[UserRights, ...] = ()
    records_file: str | None = None
    tokens_file: str | None = None

    @property
    def is_longitudinal(self) -> bool:
        """True when the project has events."""
        return bool(self.project.is_longitudinal) or bool(self.events)

    @property
    def event_names(self) -> tuple[str, ...]:
        """Unique event names in order."""
        return tuple(event.unique_event_name for event in self.events)

    def forms_at(self, event: str) -> tuple[str, ...]:
        """Forms designated at *event*, in mapping order."""
        return tuple(m.form for m in self.mappings if m.unique_event_name == event)

    def events_of(self, form: str) -> tuple[str, ...]:
        """Events where *form* is designated, in mapping order."""
        return tuple(m.unique_event_name for m in self.mappings if m.form == form)

    def is_repeating(self, form: str, event: str = "") -> bool:
        """True when *form* repeats (at *event*, when given)."""
        return any(
            r.form_name == form and (not event or not r.event_name or r.event_name == event)
            for r in self.repeating
        )

    def user(self, username: str) -> UserRights | None:
        """The user called *username*, or None."""
        return next((user for user in self.users if user.username == username), None)


# ------------------------------------------------------------------- reading


def _read_text(source: str | Path | IO[str] | IO[bytes]) -> tuple[str, str]:
    """Return (text, name) of *source*; UTF-8 (with or without BOM), else Windows-1252."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ProtocolError(
                f"cannot read the file ({error.strerror})", file=str(path)
            ) from None
        name = str(path)
    else:
        raw = source.read()
        name = str(getattr(source, "name", "<buffer>"))
        if isinstance(raw, str):
            return raw.lstrip("\ufeff"), name
        data = raw
    try:
        return decode_spreadsheet_csv(data), name
    except TextEncodingError as problem:
        raise ProtocolError(str(problem), file=name) from None


def read_data_dictionary(source: str | Path | IO[str] | IO[bytes]) -> DataDictionary:
    """Read a REDCap data dictionary CSV (raw API or human web-download headers).

    Parameters
    ----------
    source
        A path, or an open text or binary file.

    Returns
    -------
    DataDictionary
        The fields in file order; the same whichever header style the file used.

    Raises
    ------
    ProtocolError
        A header is not a dictionary column, a required column is missing, a field has an
        unknown type or a malformed name, or a field name repeats. The message names the file,
        the line and the column.
    """
    text, name = _read_text(source)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ProtocolError("empty file: expected a REDCap data dictionary", file=name) from None
    except csv.Error as error:
        raise ProtocolError(f"not a CSV table ({error})", file=name, key="line 1") from None
    columns: list[str] = []
    for position, title in enumerate(header, start=1):
        column = _HEADER_TO_COLUMN.get(_normalise_header(title))
        if column is None:
            raise ProtocolError(
                f"unknown data dictionary column {title!r}: expected REDCap's raw headers "
                f"({', '.join(DICTIONARY_COLUMNS[:3])}, ...) or the web download's "
                f"({', '.join(repr(h) for h in HUMAN_DICTIONARY_HEADERS[:2])}, ...)",
                file=name,
                key=f"line 1, column {position}",
            )
        if column in columns:
            raise ProtocolError(
                f"data dictionary column {column} repeats (columns {columns.index(column) + 1} "
                f"and {position}): expected each column once",
                file=name,
                key=f"line 1, column {position}",
            )
        columns.append(column)
    missing = [column for column in _REQUIRED_DICTIONARY_COLUMNS if column not in columns]
    if missing:
        raise ProtocolError(
            f"missing data dictionary column(s) {', '.join(missing)}", file=name, key="line 1"
        )
    fields: list[DictionaryField] = []
    seen: dict[str, int] = {}
    for line_number, row in _numbered_rows(reader, name):
        if not any(cell.strip() for cell in row):
            continue
        _check_cell_count(row, len(columns), name, line_number)
        values = {column: (row[i] if i < len(row) else "") for i, column in enumerate(columns)}
        values = {
            key: value.strip() if key in _STRIPPED else value for key, value in values.items()
        }
        field = _validated(DictionaryField, values, name, line_number)
        if field.field_name in seen:
            raise ProtocolError(
                f"field {field.field_name!r} repeats (first on line {seen[field.field_name]}): "
                "expected unique field names",
                file=name,
                key=f"line {line_number}",
            )
        seen[field.field_name] = line_number
        fields.append(field)
    if not fields:
        raise ProtocolError("no fields: expected at least the record-ID field", file=name)
    return DataDictionary(fields=tuple(fields), source=name)


_STRIPPED = frozenset(
    {
        "field_name",
        "form_name",
        "field_type",
        "text_validation_type_or_show_slider_number",
        "text_validation_min",
        "text_validation_max",
        "identifier",
        "required_field",
        "matrix_group_name",
        "matrix_ranking",
        "custom_alignment",
    }
)


def _numbered_rows(reader: Any, name: str) -> Iterable[tuple[int, list[str]]]:
    """Yield (line number where the row starts, row) from a csv reader.

    A quote left open at the end of the file (a truncated file) is a ProtocolError naming the
    line where the row starts.
    """
    start = reader.line_num + 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as error:
        raise ProtocolError(
            f"not a well-formed CSV row ({error}): the file is damaged or truncated",
            file=name,
            key=f"line {start}",
        ) from None


def _check_cell_count(row: Sequence[str], columns: int, name: str, line: int) -> None:
    """A row with fewer cells than the header (or more, not blank) is damaged or truncated."""
    if len(row) < columns or any(cell.strip() for cell in row[columns:]):
        raise ProtocolError(
            f"{len(row)} cells for {columns} columns: the file is damaged or truncated "
            "(every row has one cell per header column)",
            file=name,
            key=f"line {line}",
        )


_M = TypeVar("_M", bound=BaseModel)


def _validated(
    model: type[_M], values: Mapping[str, Any], name: str, line: int, *, unit: str = "line"
) -> _M:
    try:
        return model.model_validate(values)
    except PydanticValidationError as error:
        first = error.errors()[0]
        column = ".".join(str(part) for part in first["loc"])
        got = first.get("input")
        got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
        raise ProtocolError(
            f"{_expected_text(first)}{got_text}", file=name, key=f"{unit} {line}, {column}"
        ) from None


def _expected_text(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"expected one of {expected}"
    if kind == "string_pattern_mismatch":
        return "expected a REDCap name (lower-case letters, digits and underscores)"
    if kind == "missing":
        return "missing value: a value is required"
    if kind == "extra_forbidden":
        return "unknown column"
    message = str(error["msg"])
    return "expected " + message[0].lower() + message[1:]


def _read_table(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    text, name = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [column.strip() for column in next(reader)]
    except StopIteration:
        raise ProtocolError(
            f"empty file: expected a header with {', '.join(required)}", file=name
        ) from None
    except csv.Error as error:
        raise ProtocolError(f"not a CSV table ({error})", file=name, key="line 1") from None
    repeated = sorted({column for column in header if column and header.count(column) > 1})
    if repeated:
        raise ProtocolError(
            f"column(s) {', '.join(repeated)} repeat: expected each column once",
            file=name,
            key="line 1",
        )
    missing = [column for column in required if column not in header]
    if missing:
        raise ProtocolError(
            f"missing column(s) {', '.join(missing)}: expected {', '.join(required)}",
            file=name,
            key="line 1",
        )
    rows = []
    for line_number, row in _numbered_rows(reader, name):
        if not any(cell.strip() for cell in row):
            continue
        _check_cell_count(row, len(header), name, line_number)
        rows.append(
            (
                line_number,
                {column: (row[i] if i < len(row) else "") for i, column in enumerate(header)},
            )
        )
    return rows


def _parse_form_rights(text: str, name: str, line: int, column: str) -> dict[str, int]:
    rights: dict[str, int] = {}
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        form, colon, right = entry.partition(":")
        if not colon or not right.strip().isdigit():
            raise ProtocolError(
                f"expected form:right pairs such as 'visit:1,dosing:0', got {entry!r}",
                file=name,
                key=f"line {line}, {column}",
            )
        rights[form.strip()] = int(right)
    return rights


def _models(
    path: Path, model: type[_M], required: Sequence[str], lines: dict[str, list[int]]
) -> tuple[_M, ...]:
    if not path.exists():
        return ()
    rows = _read_table(path, required)
    lines[path.name] = [line for line, _ in rows]
    allowed = set(model.model_fields)
    result = []
    for line, row in rows:
        # Columns a REDCap version adds (e.g. older events' day_offset) are not ours to judge.
        values: dict[str, Any] = {key: value for key, value in row.items() if key in allowed}
        if model is Event and values.get("event_id", "").strip() == "":
            values.pop("event_id", None)
        result.append(_validated(model, values, str(path), line))
    return tuple(result)


def _users(path: Path, lines: dict[str, list[int]]) -> tuple[UserRights, ...]:
    if not path.exists():
        return ()
    users = []
    rows = _read_table(path, ("username",))
    lines[path.name] = [line for line, _ in rows]
    for line, row in rows:
        values: dict[str, Any] = {}
        for column, value in row.items():
            if column in ("forms", "forms_export"):
                values[column] = _parse_form_rights(value, str(path), line, column)
            elif column in USER_RIGHT_COLUMNS:
                values[column] = value.strip() or "0"
            else:
                values[column] = value
        users.append(_validated(UserRights, values, str(path), line))
    return tuple(users)


def load_redcap_project(directory: str | Path) -> RedcapProject:
    """Read a REDCap project directory (the layout of ``docs/design.md``).

    Parameters
    ----------
    directory
        The project directory. ``project.json`` and ``data_dictionary.csv`` are required;
        the other files are optional (a classic project has no arms, events or mappings).

    Raises
    ------
    ProtocolError
        A file is malformed, or the files disagree (a mapping names an unknown event or form,
        a repeating form is not in the dictionary, a user's DAG is not a DAG). The message names
        the file and line.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ProtocolError("not a directory: expected a REDCap project directory", file=str(root))
    project_path = root / "project.json"
    try:
        project_data = json.loads(_read_text(project_path)[0])
    except json.JSONDecodeError as error:
        raise ProtocolError(
            f"not valid JSON ({error.msg})", file=str(project_path), key=f"line {error.lineno}"
        ) from None
    if not isinstance(project_data, dict):
        raise ProtocolError(
            "expected a JSON object (REDCap's project info)", file=str(project_path)
        )
    try:
        project = ProjectInfo.model_validate(project_data)
    except PydanticValidationError as error:
        first = error.errors()[0]
        raise ProtocolError(
            _expected_text(first),
            file=str(project_path),
            key=".".join(str(part) for part in first["loc"]),
        ) from None
    dictionary_path = root / "data_dictionary.csv"
    dictionary = read_data_dictionary(dictionary_path)
    lines: dict[str, list[int]] = {}
    instruments = _models(
        root / "instruments.csv", Instrument, ("instrument_name", "instrument_label"), lines
    )
    if not instruments:
        instruments = tuple(
            Instrument(instrument_name=form, instrument_label=form.replace("_", " ").title())
            for form in dictionary.forms
        )
    redcap = RedcapProject(
        directory=str(root),
        project=project,
        dictionary=dictionary,
        instruments=instruments,
        arms=_models(root / "arms.csv", Arm, ("arm_num", "name"), lines),
        events=_models(
            root / "events.csv", Event, ("event_name", "arm_num", "unique_event_name"), lines
        ),
        mappings=_models(
            root / "instrument_event_mapping.csv",
            FormEventMapping,
            ("arm_num", "unique_event_name", "form"),
            lines,
        ),
        repeating=_models(root / "repeating_instruments.csv", RepeatingForm, ("form_name",), lines),
        dags=_models(
            root / "dags.csv",
            DataAccessGroup,
            ("data_access_group_name", "unique_group_name"),
            lines,
        ),
        users=_users(root / "users.csv", lines),
        records_file=str(root / "records.csv") if (root / "records.csv").exists() else None,
        tokens_file=str(root / "api_tokens.csv") if (root / "api_tokens.csv").exists() else None,
    )
    _check_project(redcap, root, lines)
    return redcap


def _check_project(redcap: RedcapProject, root: Path, lines: dict[str, list[int]]) -> None:
    def line(file: str, index: int) -> str:
        numbers = lines.get(file, [])
        return f"line {numbers[index]}" if index < len(numbers) else ""

    forms = set(redcap.dictionary.forms)
    instrument_names = [i.instrument_name for i in redcap.instruments]
    for position, name in enumerate(instrument_names):
        if name not in forms:
            raise ProtocolError(
                f"instrument {name!r} has no fields in data_dictionary.csv",
                file=str(root / "instruments.csv"),
                key=line("instruments.csv", position),
            )
    for form in redcap.dictionary.forms:
        if form not in instrument_names:
            raise ProtocolError(
                f"form {form!r} of data_dictionary.csv is not listed: expected every form once",
                file=str(root / "instruments.csv"),
            )
    arm_numbers = {arm.arm_num for arm in redcap.arms}
    event_names = set()
    for position, event in enumerate(redcap.events):
        if redcap.arms and event.arm_num not in arm_numbers:
            raise ProtocolError(
                f"event {event.unique_event_name!r} names arm {event.arm_num}, "
                f"expected one of {sorted(arm_numbers)}",
                file=str(root / "events.csv"),
                key=line("events.csv", position),
            )
        if event.unique_event_name in event_names:
            raise ProtocolError(
                f"event {event.unique_event_name!r} repeats",
                file=str(root / "events.csv"),
                key=line("events.csv", position),
            )
        event_names.add(event.unique_event_name)
    for position, mapping in enumerate(redcap.mappings):
        if mapping.unique_event_name not in event_names or mapping.form not in forms:
            raise ProtocolError(
                f"mapping of form {mapping.form!r} to event {mapping.unique_event_name!r}: "
                "expected a form of data_dictionary.csv and an event of events.csv",
                file=str(root / "instrument_event_mapping.csv"),
                key=line("instrument_event_mapping.csv", position),
            )
    for position, repeating in enumerate(redcap.repeating):
        if repeating.form_name not in forms or (
            repeating.event_name and repeating.event_name not in event_names
        ):
            raise ProtocolError(
                f"repeating form {repeating.form_name!r} at event {repeating.event_name!r}: "
                "expected a form of data_dictionary.csv and an event of events.csv",
                file=str(root / "repeating_instruments.csv"),
                key=line("repeating_instruments.csv", position),
            )
    groups = {dag.unique_group_name for dag in redcap.dags}
    for position, user in enumerate(redcap.users):
        if user.data_access_group and user.data_access_group not in groups:
            raise ProtocolError(
                f"user {user.username!r} is in data access group {user.data_access_group!r}, "
                f"expected one of {sorted(groups)}",
                file=str(root / "users.csv"),
                key=line("users.csv", position),
            )
        for column, rights in (("forms", user.forms), ("forms_export", user.forms_export)):
            unknown = sorted(set(rights) - forms)
            if unknown:
                raise ProtocolError(
                    f"user {user.username!r} has rights on unknown form(s) {', '.join(unknown)}",
                    file=str(root / "users.csv"),
                    key=f"{line('users.csv', position)}, {column}",
                )
