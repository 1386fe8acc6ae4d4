"""REDCap's log (``content=log``) as a snapshot table, and its blinded view.

A pull exports the project's log through PyCap's ``export_logging`` and stores it as the table
:data:`LOG_TABLE` (``_log``), listed in the manifest and covered by its hash like every table.
Besides REDCap's four columns (``timestamp``, ``username``, ``action``, ``details``) each row
carries what it is about, read from the text:

* ``record``: the record REDCap names in the action (``Update record 101-0001 (week_4_arm_1)``);
  deliberately not the record-ID field's name, so that no reader of the instrument tables
  takes a log row for a participant's data (a deleted record's history stays history);
* ``redcap_event_name``: the event in the action's parentheses (its unique name or its label);
* ``forms``: the forms whose fields the details list (``field = 'value', ...``, a form's
  ``<form>_complete`` included), comma-separated in dictionary order.

Rows about no record (exports, design changes) keep empty ``forms``. The blinded view
(:func:`blind_log`) keeps only the rows about forms a blinded reader may see: never a row naming
an unblinded form's field or a masked field, nor a row about no form.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["LOG_COLUMNS", "LOG_TABLE", "RECORD", "blind_log", "log_table"]

#: The snapshot table that holds the log.
LOG_TABLE = "_log"
#: REDCap's columns of a ``content=log`` export, in order.
LOG_COLUMNS = ("timestamp", "username", "action", "details")
_EVENT = "redcap_event_name"
#: The column of the record a log row is about.
RECORD = "record"

_ACTION = re.compile(
    r"^(?:Create|Update|Created|Updated|Delete|Deleted|Lock/Unlock|Lock|Unlock)\s+record\s+"
    r"(?P<record>[^\s(][^\s]*)(?:\s+\((?P<event>[^()]*(?:\([^()]*\))?[^()]*)\))?\s*$",
    re.IGNORECASE,
)
_FIELD = re.compile(r"(?:^|,\s*)([A-Za-z][A-Za-z0-9_]*)(?:\([^)]*\))?\s*=\s*(?:'(?:[^']|'')*'|\S*)")


def _fields_named(details: str) -> list[str]:
    """The field names a log row's details list (``name = 'value'``, ``name(code) = checked``)."""
    return _FIELD.findall(details)


def log_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    field_forms: Mapping[str, str],
    events: Sequence[Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """The log export *rows* as the snapshot table :data:`LOG_TABLE`.

    Parameters
    ----------
    rows
        REDCap's ``content=log`` rows (``timestamp``, ``username``, ``action``, ``details``).
    field_forms
        Field name → form name (the data dictionary).
    events
        The project's events (``unique_event_name``, ``event_name``), to read an event named by
        its label; None for a classic project.

    Returns
    -------
    pandas.DataFrame
        One row per log entry, oldest first: REDCap's columns (``timestamp`` as a time), then
        ``record``, ``redcap_event_name`` and ``forms`` (empty when the row names none).
    """
    labels: dict[str, str] = {}
    for declared in events or ():
        unique = str(declared.get("unique_event_name", "") or "")
        if unique:
            labels[unique] = unique
            label = str(declared.get("event_name", "") or "")
            if label:
                labels.setdefault(label, unique)
    forms_in_order = list(dict.fromkeys(field_forms.values()))
    rank = {form: i for i, form in enumerate(forms_in_order)}
    data: dict[str, list[Any]] = {name: [] for name in (*LOG_COLUMNS, RECORD, _EVENT)}
    data["forms"] = []
    for row in rows:
        values = {name: str(row.get(name, "") or "") for name in LOG_COLUMNS}
        for name in LOG_COLUMNS:
            data[name].append(values[name])
        match = _ACTION.match(values["action"].strip())
        record = match.group("record") if match else ""
        event_text = (match.group("event") or "").strip() if match else ""
        event = labels.get(event_text, event_text if not labels else "")
        forms: set[str] = set()
        if record:
            for name in _fields_named(values["details"]):
                if name in field_forms:
                    forms.add(field_forms[name])
                elif name.endswith("_complete") and name[: -len("_complete")] in rank:
                    forms.add(name[: -len("_complete")])
        data[RECORD].append(record or None)
        data[_EVENT].append(event or None)
        data["forms"].append(",".join(sorted(forms, key=lambda f: rank.get(f, len(rank)))))
    frame = pd.DataFrame(data)
    for name in (*LOG_COLUMNS[1:], RECORD, _EVENT, "forms"):
        frame[name] = frame[name].astype("string")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], errors="coerce", format="mixed")
    # REDCap answers newest first; the table reads oldest first (stable for equal times)
    return frame.iloc[::-1].sort_values("timestamp", kind="stable").reset_index(drop=True)


def blind_log(
    frame: pd.DataFrame, hidden_forms: Collection[str], masked_fields: Collection[str]
) -> pd.DataFrame:
    """The rows of a :data:`LOG_TABLE` a blinded reader may see.

    A row is kept when it is about at least one form, none of them hidden, and its details name
    no masked field: a row of the dosing log, or one quoting a masked field's value, would tell
    the allocation; a row about no form (an export, a design change) is not data-entry history.
    """
    if frame.empty or "forms" not in frame.columns:
        return frame
    hidden = set(hidden_forms)
    forms = frame["forms"].astype(object).fillna("").astype(str)
    # few distinct form lists: judge each once
    verdict = {f: bool(f) and not set(f.split(",")) & hidden for f in pd.unique(forms)}
    keep = np.array(forms.map(verdict).to_numpy(dtype=bool), dtype=bool)  # a writable copy
    masked = set(masked_fields)
    if masked:
        details = frame["details"].astype("string").fillna("")
        for name in sorted(masked):
            # a plain substring search first; only those rows are parsed
            found = details.str.contains(name, regex=False).fillna(False).to_numpy(bool)
            for i in np.flatnonzero(found & keep):
                if name in _fields_named(str(details.iat[int(i)])):
                    keep[i] = False
    return frame.loc[keep].reset_index(drop=True)
