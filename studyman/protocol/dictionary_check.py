"""Would REDCap accept this data dictionary? Its upload rules, reported as findings.

REDCap checks a data dictionary when it is uploaded; these are the rules a dictionary written by
hand most often breaks. Errors REDCap refuses to upload are ``major``; what it accepts with a
warning is ``minor``.

Notes
-----
Rules follow REDCap's data dictionary upload page and its documentation: field and form names in
lower-case letters, digits and underscores starting with a letter; a form's fields kept together;
the record-ID field first; choices for categorical fields with unique codes (checkbox codes letters,
digits and underscores only); a formula for every calc field; known validation types with ranges
that parse; ``y`` or blank for identifier and required; no field named like a REDCap system column
(``redcap_...``, ``<form>_complete``); branching logic and calculations that parse and nest at most
:data:`~studyman.protocol.logic.MAX_LOGIC_DEPTH` levels
(:func:`~studyman.protocol.logic.check_logic`, the check validation applies before it runs).
Logic naming unknown fields is checked by :func:`studyman.protocol.conformance.check_conformance`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime

from studyman.findings import Finding
from studyman.protocol.logic import check_logic
from studyman.protocol.redcap_project import (
    DATE_VALIDATIONS,
    DATETIME_VALIDATIONS,
    NUMBER_VALIDATIONS,
    DataDictionary,
    DictionaryField,
)

__all__ = ["VALIDATION_TYPES", "check_dictionary"]

#: Text validation types of REDCap (the built-in ones a dictionary may name).
VALIDATION_TYPES = (
    DATE_VALIDATIONS
    | DATETIME_VALIDATIONS
    | NUMBER_VALIDATIONS
    | frozenset(
        {
            "time",
            "time_mm_ss",
            "time_hh_mm_ss",
            "integer",
            "email",
            "phone",
            "phone_australia",
            "postalcode_australia",
            "postalcode_canada",
            "postalcode_french",
            "postalcode_germany",
            "zipcode",
            "alpha_only",
            "mrn_10d",
            "mrn_generic",
            "ssn",
            "vmrn",
            "signature",
            # legacy names still found in old dictionaries
            "date",
            "datetime",
            "datetime_seconds",
            "int",
            "float",
        }
    )
)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CHECKBOX_CODE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CATEGORICAL = ("radio", "dropdown", "checkbox")


def _finding(
    check: str, severity: str, field: DictionaryField, message: str, value: str, source: str
) -> Finding:
    return Finding(
        f"dictionary.{check}",
        "major" if severity == "major" else "minor",
        message,
        instrument=field.form_name,
        field=field.field_name,
        value=value,
        source=source,
    )


def _range_value_ok(validation: str, text: str) -> bool:
    value = text.strip()
    if not value or value.lower() in ("today", "now"):
        return True
    try:
        if validation.startswith("date"):
            if validation.startswith("datetime"):
                datetime.fromisoformat(value)
            else:
                date.fromisoformat(value)
        elif validation in ("integer", "int"):
            int(value)
        elif validation.startswith("number") or validation == "float":
            float(value.replace(",", "."))
    except ValueError:
        return False
    return True


def check_dictionary(dictionary: DataDictionary) -> list[Finding]:
    """Check *dictionary* against REDCap's upload rules; an empty list means REDCap accepts it.

    Parameters
    ----------
    dictionary
        The data dictionary (from :func:`studyman.protocol.read_data_dictionary`).

    Returns
    -------
    list of Finding
        ``dictionary.*`` findings in dictionary order.
    """
    source = dictionary.source or "data dictionary"
    findings: list[Finding] = []
    forms = dictionary.forms
    system_names = {f"{form}_complete" for form in forms} | {f"{form}_timestamp" for form in forms}
    seen_forms: list[str] = []
    for position, field in enumerate(dictionary.fields):
        findings.extend(_check_one(field, position, system_names, source))
        if not seen_forms or seen_forms[-1] != field.form_name:
            if field.form_name in seen_forms:
                findings.append(
                    _finding(
                        "form_split",
                        "major",
                        field,
                        f"form {field.form_name!r} resumes at {field.field_name!r} after another "
                        "form: REDCap needs each form's fields together",
                        field.form_name,
                        source,
                    )
                )
            seen_forms.append(field.form_name)
    return findings


def _check_one(
    field: DictionaryField, position: int, system_names: set[str], source: str
) -> Iterable[Finding]:
    name = field.field_name
    if len(name) > 100:
        yield _finding(
            "name_length", "major", field, f"{name!r} is longer than 100 characters", name, source
        )
    elif len(name) > 26:
        yield _finding(
            "name_length",
            "minor",
            field,
            f"{name!r} is longer than 26 characters (REDCap warns; some exports truncate)",
            name,
            source,
        )
    if name.startswith("redcap_") or name in system_names:
        yield _finding(
            "reserved_name",
            "major",
            field,
            f"{name!r} is a REDCap system column name",
            name,
            source,
        )
    if position == 0 and field.field_type not in ("text",):
        yield _finding(
            "record_id_type",
            "major",
            field,
            f"the record-ID field {name!r} is {field.field_type}, expected a text field",
            field.field_type,
            source,
        )
    if not field.field_label.strip() and field.field_type != "descriptive":
        yield _finding("label_missing", "major", field, f"{name!r} has no field label", "", source)
    if field.field_type in _CATEGORICAL:
        choices = field.choices
        if not choices:
            yield _finding(
                "choices_missing",
                "major",
                field,
                f"{field.field_type} field {name!r} has no choices",
                field.select_choices_or_calculations,
                source,
            )
        codes = [choice.code for choice in choices]
        repeated = sorted({code for code in codes if codes.count(code) > 1})
        if repeated:
            yield _finding(
                "choices_repeat",
                "major",
                field,
                f"{name!r} repeats choice code(s) {', '.join(repeated)}",
                field.select_choices_or_calculations,
                source,
            )
        if field.field_type == "checkbox":
            bad = [code for code in codes if not _CHECKBOX_CODE.fullmatch(code)]
            if bad:
                yield _finding(
                    "checkbox_code",
                    "major",
                    field,
                    f"checkbox {name!r} has code(s) {', '.join(map(repr, bad))}: expected letters, "
                    "digits and underscores",
                    field.select_choices_or_calculations,
                    source,
                )
    if field.field_type == "calc":
        if not field.calculation.strip():
            yield _finding(
                "calc_missing", "major", field, f"calc field {name!r} has no formula", "", source
            )
        if field.text_validation_type_or_show_slider_number.strip():
            yield _finding(
                "calc_validation",
                "minor",
                field,
                f"calc field {name!r} has a validation type (REDCap ignores it)",
                field.text_validation_type_or_show_slider_number,
                source,
            )
        if field.calculation.count("(") != field.calculation.count(")"):
            yield _finding(
                "calc_parentheses",
                "major",
                field,
                f"the formula of {name!r} has unbalanced parentheses",
                field.calculation,
                source,
            )
    if field.branching_logic.count("(") != field.branching_logic.count(")"):
        yield _finding(
            "logic_parentheses",
            "major",
            field,
            f"the branching logic of {name!r} has unbalanced parentheses",
            field.branching_logic,
            source,
        )
    yield from _check_logic(field, source)
    if field.field_type == "text" and field.validation:
        validation = field.validation
        if validation not in VALIDATION_TYPES:
            yield _finding(
                "validation_unknown",
                "major",
                field,
                f"{name!r} has unknown validation type {validation!r}",
                validation,
                source,
            )
        else:
            for label, bound in (
                ("min", field.text_validation_min),
                ("max", field.text_validation_max),
            ):
                if not _range_value_ok(validation, bound):
                    yield _finding(
                        "validation_range",
                        "major",
                        field,
                        f"{name!r} validation {label} {bound!r} is not a valid {validation} value",
                        bound,
                        source,
                    )
            low, high = field.range_min_number(), field.range_max_number()
            if low is not None and high is not None and low > high:
                yield _finding(
                    "validation_range",
                    "major",
                    field,
                    f"{name!r} validation min {low:g} is above max {high:g}",
                    f"{field.text_validation_min}..{field.text_validation_max}",
                    source,
                )
    for column, value in (
        ("identifier", field.identifier),
        ("required_field", field.required_field),
    ):
        if value.strip().lower() not in ("", "y"):
            yield _finding(
                "flag_value",
                "major",
                field,
                f"{name!r} {column} is {value!r}: expected 'y' or blank",
                value,
                source,
            )


def _check_logic(field: DictionaryField, source: str) -> Iterable[Finding]:
    """Logic that validation could not evaluate (the same check it applies before running)."""
    for column, text in (
        ("branching logic", field.branching_logic),
        ("formula", field.calculation if field.field_type == "calc" else ""),
    ):
        # unbalanced parentheses have their own finding above
        if not text.strip() or text.count("(") != text.count(")"):
            continue
        problem = check_logic(text)
        if problem is not None:
            yield _finding(
                "logic_invalid",
                "major",
                field,
                f"the {column} of {field.field_name!r} cannot be evaluated: {problem}",
                text,
                source,
            )
