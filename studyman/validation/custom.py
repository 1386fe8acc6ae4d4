"""Custom checks written in REDCap's logic syntax (like REDCap's custom data-quality rules).

A study keeps them in a YAML file beside its protocol (``protocols/<study>/checks.yaml``)::

    checks:
      - id: CUS-BP
        severity: major
        form: vital_signs          # rows holding this form are checked
        field: vs_sbp              # the field a query points at
        logic: "[vs_sbp] <> '' and [vs_dbp] <> '' and [vs_sbp] <= [vs_dbp]"
        message: Systolic pressure not above diastolic
        reference: protocol section 8.2

A row where the logic is true raises a finding. A rule that does not parse is one
:class:`~studyman.errors.ValidationError` naming the file, the check and the position.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from studyman.errors import ProtocolError, ValidationError
from studyman.findings import FINDING_COLUMNS
from studyman.protocol.text_files import read_yaml
from studyman.validation.catalogue import CATALOGUE, CheckDefinition
from studyman.validation.dictionary import DataDictionary
from studyman.validation.logic import EvaluationContext, LogicExpression, compile_logic
from studyman.validation.records import findings_from_mask, form_present, text

__all__ = ["CustomCheck", "load_custom_checks", "parse_custom_checks", "run_custom_checks"]

_KEYS: Final = frozenset(
    {"id", "severity", "form", "field", "logic", "message", "description", "reference"}
)


@dataclass(frozen=True)
class CustomCheck:
    """A custom check: its catalogue entry, the form it applies to and its compiled logic."""

    definition: CheckDefinition
    form: str
    field: str
    message: str
    expression: LogicExpression


def parse_custom_checks(
    entries: Any, *, source: str = "checks.yaml", dictionary: DataDictionary | None = None
) -> tuple[CustomCheck, ...]:
    """Validate and compile custom check entries (the ``checks`` list of the YAML file).

    Raises
    ------
    ValidationError
        On a malformed entry, a duplicate or built-in id, an unknown form or field, or logic that
        does not parse (the message names the check and the position in its expression).
    """
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ValidationError(f"{source}: 'checks' must be a list of checks")
    builtin = {check.check_id for check in CATALOGUE}
    seen: set[str] = set()
    checks: list[CustomCheck] = []
    for index, entry in enumerate(entries):
        where = f"{source}: checks[{index}]"
        if not isinstance(entry, dict):
            raise ValidationError(f"{where}: expected a mapping with id, severity, logic, message")
        unknown = set(entry) - _KEYS
        if unknown:
            raise ValidationError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        check_id = str(entry.get("id", "")).strip()
        if not check_id:
            raise ValidationError(f"{where}: 'id' is required")
        where = f"{source}: custom check {check_id}"
        if check_id in builtin or check_id in seen:
            raise ValidationError(f"{where}: the id is already used; choose another")
        seen.add(check_id)
        severity = str(entry.get("severity", "major"))
        if severity not in ("critical", "major", "minor"):
            raise ValidationError(
                f"{where}: severity must be critical, major or minor, not {severity!r}"
            )
        logic = entry.get("logic")
        message = entry.get("message")
        if not isinstance(logic, str) or not logic.strip():
            raise ValidationError(f"{where}: 'logic' (REDCap logic text) is required")
        if not isinstance(message, str) or not message.strip():
            raise ValidationError(f"{where}: 'message' is required")
        try:
            expression = compile_logic(logic)
        except ValidationError as error:
            raise ValidationError(f"{where}: {error}") from None
        form = str(entry.get("form", "") or "")
        field = str(entry.get("field", "") or "")
        if dictionary is not None:
            if form and form not in dictionary.forms:
                raise ValidationError(f"{where}: unknown form {form!r}")
            for name in [field, *(ref.name for ref in expression.fields)]:
                if name and name not in dictionary.by_name and not name.endswith("_complete"):
                    raise ValidationError(f"{where}: unknown field [{name}] in the data dictionary")
        definition = CheckDefinition(
            check_id=check_id,
            severity=severity,  # type: ignore[arg-type]
            description=str(entry.get("description", message)),
            reference=str(entry.get("reference", source)),
            kind="custom",
        )
        checks.append(CustomCheck(definition, form, field, message.strip(), expression))
    return tuple(checks)


def load_custom_checks(
    path: str | Path, dictionary: DataDictionary | None = None
) -> tuple[CustomCheck, ...]:
    """Read custom checks from a YAML file (see the module docstring for its layout)."""
    file = Path(path)
    try:
        _, data = read_yaml(file, what="custom checks")
    except ProtocolError as error:
        # one line naming the file and the line/key (repeated key, syntax, encoding)
        raise ValidationError(str(error)) from None
    if data is None:
        return ()
    if not isinstance(data, dict) or set(data) - {"checks"}:
        raise ValidationError(f"{file}: expected one top-level key 'checks'")
    return parse_custom_checks(data.get("checks"), source=str(file), dictionary=dictionary)


def run_custom_checks(
    records: pd.DataFrame,
    checks: tuple[CustomCheck, ...],
    dictionary: DataDictionary,
    *,
    today: datetime,
    missing_codes: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """Evaluate every custom check on the rows holding its form (base rows when no form)."""
    context = EvaluationContext(
        records=records,
        record_id_field=dictionary.record_id_field,
        today=today,
        missing_codes=missing_codes,
        comma_decimal_fields=dictionary.comma_decimal_fields,
    )
    parts: list[pd.DataFrame] = []
    for check in checks:
        if check.form:
            rows = form_present(records, dictionary, check.form)
        else:
            rows = text(records, "redcap_repeat_instrument") == ""
        if not rows.any():
            continue
        subset = records.loc[rows].reset_index(drop=True)
        hit = check.expression.mask(subset, context)
        parts.append(
            findings_from_mask(
                check.definition,
                subset,
                np.asarray(hit, dtype=bool),
                record_id_field=dictionary.record_id_field,
                instrument=check.form,
                field=check.field,
                value=text(subset, check.field) if check.field else None,
                message=check.message,
                source="custom",
            )
        )
    parts = [part for part in parts if not part.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FINDING_COLUMNS)
