"""Protocol checks of the data's structure: ``STR-*`` (duplicate rows, record IDs and
sites, unenrolled participants, forms at events, completeness)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.validation.protocol_checks.view import (
    Emitter,
    StudyView,
)
from studyman.validation.records import EVENT, INSTANCE, REPEAT, isin, text

__all__ = ["check_structure"]


def check_structure(view: StudyView, out: Emitter) -> None:
    """Raise the ``STR-*`` findings."""
    records = view.records
    protocol = view.protocol
    keys = [view.id_field, EVENT, REPEAT, INSTANCE]
    duplicated = records.duplicated(subset=keys, keep="first").to_numpy()
    out.rows(
        "STR-DUP",
        duplicated,
        instrument="",
        field=view.id_field,
        value=view.ids,
        message="Duplicate row for this record, event and instance",
    )
    pattern = protocol.study.record_id_pattern
    site_ids = {site.id for site in protocol.sites}
    dag_of = {site.id: site.dag for site in protocol.sites}
    unique_ids = pd.unique(view.ids)
    bad: list[str] = []
    messages: list[str] = []
    matches = (
        pd.Series(unique_ids, dtype=object).str.fullmatch(pattern).fillna(False).tolist()
        if pattern
        else None
    )
    dags: dict[str, str] | None = None
    if "redcap_data_access_group" in records.columns:
        dag_values = text(records, "redcap_data_access_group")
        dags = {}
        for record_id, dag in zip(view.ids, dag_values, strict=True):
            if dag and record_id not in dags:
                dags[record_id] = dag
    for position, record_id in enumerate(unique_ids):
        prefix = record_id.split("-", 1)[0]
        if matches is not None and not bool(matches[position]):
            bad.append(record_id)
            messages.append(f"Record ID {record_id!r} does not match the pattern {pattern}")
        elif prefix not in site_ids:
            bad.append(record_id)
            messages.append(f"Record ID {record_id!r} names no study site")
        elif dags is not None and record_id in dags and dags[record_id] != dag_of[prefix]:
            bad.append(record_id)
            messages.append(
                f"Record ID {record_id!r} is in data access group {dags[record_id]}, "
                f"expected {dag_of[prefix]}"
            )
    out.participants(
        "STR-SITE", bad, event="", instrument="", field=view.id_field, values=bad, messages=messages
    )
    # data for participants without a participant (screening) record
    screening = view.visit("screening")
    participant_form = view.inputs.dictionary.by_name[view.id_field].form
    present = view.rows_of(participant_form)
    if screening is not None:
        present &= view.events == screening.event
    enrolled = set(view.ids[present])
    orphans = [record_id for record_id in unique_ids if record_id not in enrolled]
    out.participants(
        "STR-UNENROLLED",
        orphans,
        event="",
        instrument=participant_form,
        field=view.id_field,
        values=orphans,
        messages="Data recorded for a participant with no participant (screening) form",
    )
    # forms at events the schedule does not allow
    allowed: dict[str, set[str]] = {}
    for visit in protocol.visits:
        for form in visit.instruments:
            allowed.setdefault(form, set()).add(visit.event)
    for form, events in allowed.items():
        rows = view.rows_of(form)
        if not rows.any():
            continue
        wrong = rows & ~isin(view.events, list(events))
        out.rows(
            "STR-EVENT",
            wrong,
            instrument=form,
            field="",
            value=view.events,
            message=f"Form {form} entered at an event where the schedule does not include it",
        )
    # form marked Complete with required fields blank
    dictionary = view.inputs.dictionary
    from studyman.validation.logic import EvaluationContext, compile_logic

    context = EvaluationContext(records=records, record_id_field=view.id_field)
    for form in dictionary.forms:
        status = text(records, f"{form}_complete")
        complete = status == "2"
        if not complete.any():
            continue
        rows = view.rows_of(form) & complete
        blank_required = np.zeros(len(records), dtype=bool)
        for spec in dictionary.form_fields(form):
            if (
                not spec.required
                or spec.field_type in ("calc", "descriptive", "file")
                or spec.name == view.id_field
            ):
                continue
            if spec.field_type == "checkbox":
                blank = ~np.logical_or.reduce(
                    [text(records, column) == "1" for column in spec.columns]
                )
            else:
                blank = text(records, spec.name) == ""
            if spec.branching:
                blank &= compile_logic(spec.branching).mask(records, context)
            blank_required |= blank
        out.rows(
            "STR-COMPLETE",
            rows & blank_required,
            instrument=form,
            field=f"{form}_complete",
            value=status,
            message=f"Form {form} marked Complete with required fields blank",
        )
