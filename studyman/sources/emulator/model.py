"""The REDCap project the emulator serves, as plain frozen data.

A :class:`Project` holds what REDCap keeps about a project (metadata, events, arms, mappings,
repeating settings, data access groups, users) and the records it starts with. It is built from a
project directory (:mod:`studyman.sources.emulator.project_dir`) or an ODM file
(:mod:`studyman.sources.emulator.odm`); the record store copies the records and never changes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# REDCap's column tables and choice parsing are shared with the protocol layer's reader of project
# files; the emulator's ``parse_choices`` is the plain ``(code, label)`` form.
from studyman.protocol.redcap_project import (
    DICTIONARY_COLUMNS,
    USER_COLUMNS,
    USER_RIGHT_COLUMNS,
    checkbox_column,
    field_choice_pairs,
)
from studyman.protocol.redcap_project import parse_choice_pairs as parse_choices

__all__ = [
    "DICTIONARY_COLUMNS",
    "EMULATOR_REDCAP_VERSION",
    "USER_COLUMNS",
    "USER_RIGHT_COLUMNS",
    "Arm",
    "DataAccessGroup",
    "Event",
    "Field",
    "Instrument",
    "Project",
    "RepeatingSetting",
    "User",
    "UserRole",
    "parse_choices",
    "unique_event_name",
]


#: The REDCap version the emulator answers as (``content=version``) for a project it created.
EMULATOR_REDCAP_VERSION = "14.5.0"


def unique_event_name(event_name: str, arm_num: int) -> str:
    """REDCap's unique event name: lower case, non-alphanumerics to ``_``, 18 characters, arm.

    Notes
    -----
    REDCap also de-duplicates clashing names with a letter suffix; the emulator only derives a name
    when a project file gives none, so clashes are left to the file.
    """
    cleaned = "".join(c if c.isalnum() and c.isascii() else "_" for c in event_name.lower())
    return f"{cleaned[:18].rstrip('_') or 'event'}_arm_{arm_num}"


@dataclass(frozen=True)
class Field:
    """One data dictionary row (every column kept as REDCap's text)."""

    field_name: str
    form_name: str
    field_type: str
    field_label: str = ""
    section_header: str = ""
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
    def choices(self) -> tuple[tuple[str, str], ...]:
        """Codes and labels of a multiple-choice field (yesno and truefalse included)."""
        return field_choice_pairs(self.field_type, self.select_choices_or_calculations)

    @property
    def export_names(self) -> tuple[str, ...]:
        """Column names in a flat export (checkbox ``x___code``; none for descriptive fields)."""
        if self.field_type == "descriptive":
            return ()
        if self.field_type == "checkbox":
            return tuple(checkbox_column(self.field_name, code) for code, _ in self.choices)
        return (self.field_name,)

    def as_metadata(self) -> dict[str, object]:
        """The field as one row of REDCap's metadata export."""
        return {name: str(getattr(self, name)) for name in DICTIONARY_COLUMNS}


@dataclass(frozen=True)
class Instrument:
    """A form (instrument): unique name, label, and whether it is enabled as a survey."""

    instrument_name: str
    instrument_label: str
    is_survey: bool = False


@dataclass(frozen=True)
class Arm:
    """A REDCap arm."""

    arm_num: int
    name: str


@dataclass(frozen=True)
class Event:
    """A REDCap event (longitudinal projects only)."""

    event_name: str
    arm_num: int
    unique_event_name: str
    custom_event_label: str = ""
    event_id: int = 0


@dataclass(frozen=True)
class RepeatingSetting:
    """A repeating instrument (``form_name`` set) or repeating event (``form_name`` empty)."""

    event_name: str
    form_name: str
    custom_form_label: str = ""


@dataclass(frozen=True)
class DataAccessGroup:
    """A data access group: its display name and unique name."""

    data_access_group_name: str
    unique_group_name: str
    data_access_group_id: int = 0


@dataclass(frozen=True)
class User:
    """A project user and their rights, in REDCap's user export columns.

    ``rights`` holds the integer rights by column name; ``forms`` and ``forms_export`` map a form to
    its data entry right and its export right (0 no access, 1 full data set, 2 de-identified,
    3 remove identifiers). A form missing from ``forms_export`` is exportable (right 1).
    """

    username: str
    email: str = ""
    firstname: str = ""
    lastname: str = ""
    expiration: str = ""
    data_access_group: str = ""
    rights: Mapping[str, int] = field(default_factory=dict)
    forms: Mapping[str, int] = field(default_factory=dict)
    forms_export: Mapping[str, int] = field(default_factory=dict)
    role: str = ""

    def right(self, name: str) -> int:
        """An integer right such as ``api_export`` (0 when not given)."""
        return int(self.rights.get(name, 0))

    def can_export_form(self, form: str) -> bool:
        """Whether the user's export right on *form* is anything but 0 (no access)."""
        return int(self.forms_export.get(form, 1)) != 0

    def can_edit_form(self, form: str) -> bool:
        """Whether the user may enter data on *form*.

        REDCap's data entry rights: 0 no access, 2 read only, 1 view and edit, 3 edit survey
        responses too; only 1 and 3 allow writing.
        """
        return int(self.forms.get(form, 1)) in (1, 3)


@dataclass(frozen=True)
class UserRole:
    """A user role: its unique name (``U-573AEYRNR8``), label and rights (as :class:`User`'s).

    A user assigned to a role (``User.role``) has the role's rights, not their own.
    """

    unique_role_name: str
    role_label: str
    rights: Mapping[str, int] = field(default_factory=dict)
    forms: Mapping[str, int] = field(default_factory=dict)
    forms_export: Mapping[str, int] = field(default_factory=dict)


#: A flat stored row: export column name → value (raw codes, blanks omitted).
Row = dict[str, str]


@dataclass(frozen=True)
class Project:
    """Everything the emulator serves about one REDCap project.

    ``records`` are flat export rows (raw values, as in REDCap's raw CSV export) in export order;
    ``record_dags`` maps a record to its data access group's unique name.
    """

    info: Mapping[str, object]
    fields: tuple[Field, ...]
    instruments: tuple[Instrument, ...]
    arms: tuple[Arm, ...] = ()
    events: tuple[Event, ...] = ()
    mappings: tuple[tuple[int, str, str], ...] = ()
    repeating: tuple[RepeatingSetting, ...] = ()
    dags: tuple[DataAccessGroup, ...] = ()
    users: tuple[User, ...] = ()
    roles: tuple[UserRole, ...] = ()
    records: tuple[Mapping[str, str], ...] = ()
    tokens: Mapping[str, str] = field(default_factory=dict)
    redcap_version: str = EMULATOR_REDCAP_VERSION

    @property
    def record_id_field(self) -> str:
        """The record-ID field: the first field of the dictionary."""
        return self.fields[0].field_name if self.fields else "record_id"

    @property
    def is_longitudinal(self) -> bool:
        """Whether the project has events."""
        return bool(self.events)

    @property
    def has_repeating(self) -> bool:
        """Whether any instrument or event repeats."""
        return bool(self.repeating)

    def __repr__(self) -> str:
        # Tokens stay out of every repr.
        title = self.info.get("project_title", "")
        return f"Project(title={title!r}, fields={len(self.fields)}, records={len(self.records)})"
