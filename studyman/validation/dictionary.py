"""The data dictionary as the checks need it: fields, forms, choices, validation and logic.

Accepts the dictionary as a table with REDCap's raw API headers (``field_name, form_name, ...``)
or the human headers of the file downloaded from REDCap's web page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from studyman.errors import ValidationError
from studyman.protocol.logic import check_logic
from studyman.protocol.redcap_project import DICTIONARY_COLUMNS, checkbox_column

# REDCap's choice parsing is the protocol layer's; ``parse_choices`` is this module's name for it.
from studyman.protocol.redcap_project import field_choice_pairs as parse_choices

__all__ = ["DataDictionary", "DictionaryField", "dictionary_from_frame", "parse_choices"]

#: REDCap's raw API dictionary columns, in order (the protocol layer's ``DICTIONARY_COLUMNS``).
RAW_HEADERS: tuple[str, ...] = DICTIONARY_COLUMNS

_CHOICE_TYPES = frozenset({"radio", "dropdown", "yesno", "truefalse", "checkbox"})


@dataclass(frozen=True, slots=True)
class DictionaryField:
    """One field of the data dictionary."""

    name: str
    form: str
    field_type: str
    label: str
    choices: tuple[tuple[str, str], ...]
    calculation: str
    validation: str
    minimum: str
    maximum: str
    branching: str
    required: bool

    @property
    def codes(self) -> frozenset[str]:
        """The valid raw codes of a multiple-choice field."""
        return frozenset(code for code, _ in self.choices)

    @property
    def is_choice(self) -> bool:
        """Whether the field stores one of a fixed set of codes (radio, dropdown, yes/no...)."""
        return self.field_type in _CHOICE_TYPES and self.field_type != "checkbox"

    @property
    def columns(self) -> tuple[str, ...]:
        """The flat-export columns of the field (one per code for a checkbox)."""
        if self.field_type == "checkbox":
            return tuple(checkbox_column(self.name, code) for code, _ in self.choices)
        return (self.name,)

    @property
    def holds_data(self) -> bool:
        """Whether the field holds a value (not descriptive, not a file)."""
        return self.field_type not in ("descriptive", "file")


@dataclass(frozen=True)
class DataDictionary:
    """The fields of a REDCap project, in dictionary order."""

    fields: tuple[DictionaryField, ...]

    @property
    def record_id_field(self) -> str:
        """The record-ID field (the first field of the dictionary)."""
        return self.fields[0].name

    @cached_property
    def by_name(self) -> Mapping[str, DictionaryField]:
        """Fields by name."""
        return {field.name: field for field in self.fields}

    @cached_property
    def forms(self) -> tuple[str, ...]:
        """Form names in dictionary order."""
        return tuple(dict.fromkeys(field.form for field in self.fields))

    def form_fields(self, form: str) -> tuple[DictionaryField, ...]:
        """The fields of *form*, in order."""
        return tuple(field for field in self.fields if field.form == form)

    @cached_property
    def comma_decimal_fields(self) -> frozenset[str]:
        """Fields validated with a comma as decimal separator."""
        return frozenset(
            field.name for field in self.fields if field.validation.endswith("comma_decimal")
        )


def dictionary_from_frame(
    frame: pd.DataFrame, *, source: str = "data dictionary"
) -> DataDictionary:
    """Build a :class:`DataDictionary` from a dictionary table (raw or human headers).

    Raises
    ------
    ValidationError
        When the table lacks the dictionary's columns or has no field, or when a field's
        branching logic or formula cannot be evaluated
        (:func:`studyman.protocol.logic.check_logic`).
    """
    if frame.shape[1] < 12:
        raise ValidationError(
            f"{source}: expected REDCap's data dictionary columns (field_name, form_name, ...), "
            f"found {list(frame.columns)}"
        )
    table = frame.iloc[:, : len(RAW_HEADERS)].copy()
    table.columns = list(RAW_HEADERS[: table.shape[1]])
    table = table.astype(object).where(table.notna(), "")
    fields: list[DictionaryField] = []
    for row in table.to_dict("records"):
        name = str(row["field_name"]).strip()
        if not name:
            continue
        field_type = str(row["field_type"]).strip().lower()
        choices_text = str(row["select_choices_or_calculations"])
        fields.append(
            DictionaryField(
                name=name,
                form=str(row["form_name"]).strip(),
                field_type=field_type,
                label=re.sub(r"<[^>]+>", "", str(row["field_label"])).strip(),
                choices=parse_choices(field_type, choices_text),
                calculation=choices_text.strip() if field_type == "calc" else "",
                validation=str(row["text_validation_type_or_show_slider_number"]).strip().lower(),
                minimum=str(row["text_validation_min"]).strip(),
                maximum=str(row["text_validation_max"]).strip(),
                branching=str(row["branching_logic"]).strip(),
                required=str(row["required_field"]).strip().lower() == "y",
            )
        )
    if not fields:
        raise ValidationError(f"{source}: the data dictionary lists no field")
    for spec in fields:  # protocol check reports the same (dictionary.logic_invalid)
        for column, logic in (("branching logic", spec.branching), ("formula", spec.calculation)):
            problem = check_logic(logic) if logic else None
            if problem is not None:
                raise ValidationError(f"{source}: the {column} of {spec.name!r}: {problem}")
    return DataDictionary(tuple(fields))


def dictionary_from_rows(rows: Sequence[Mapping[str, str]]) -> DataDictionary:
    """Build a :class:`DataDictionary` from metadata rows as the API returns them."""
    return dictionary_from_frame(pd.DataFrame(list(rows)))
