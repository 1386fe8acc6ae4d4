"""Protocol checks of disposition: ``DS-*`` (data after withdrawal or death, completion,
deaths)."""

from __future__ import annotations

import pandas as pd

from studyman.validation.protocol_checks.view import (
    Emitter,
    StudyView,
)
from studyman.validation.records import dates as column_dates
from studyman.validation.records import text

__all__ = ["check_disposition"]


def check_disposition(view: StudyView, out: Emitter) -> None:
    """Raise the ``DS-*`` findings."""
    records = view.records
    dictionary = view.inputs.dictionary
    left = view.per_row(view.left_study)
    # assessments and treatment; eligibility is confirmed before randomisation, never after
    after_leaving = [
        name
        for name in view.assessment_date_fields()
        if name != view.protocol.eligibility.date_field
    ]
    for name in after_leaving:
        if name not in dictionary.by_name or name not in records.columns:
            continue
        values = text(records, name)
        after = (column_dates(records, name) > left).fillna(False).to_numpy(dtype=bool)
        out.rows(
            "DS-DATA-AFTER",
            after,
            instrument=dictionary.by_name[name].form,
            field=name,
            value=values,
            message="Dated after the participant withdrew, was lost or died",
        )
    ds = view.protocol.disposition
    status, _, death = view.disposition
    completed = {str(code.code) for code in ds.codes if code.completed}
    final_visits = [v for v in view.protocol.visits if v.window is not None and v.date_field]
    if final_visits:
        final = final_visits[-1]
        final_dates = view.value(final.event, final.date_field)
        have_final = set(final_dates.index[final_dates != ""])
        no_final = [
            rid for rid in status.index[status.isin(list(completed))] if rid not in have_final
        ]
        out.participants(
            "DS-COMPLETED-NO-FINAL",
            no_final,
            event=ds.event,
            instrument=ds.form,
            field=ds.status_field,
            values=[status[rid] for rid in no_final],
            messages=f"Completed without the final visit ({final.label})",
        )
    death_codes = {str(code.code) for code in ds.codes if code.death}
    no_date = [
        rid
        for rid in status.index[status.isin(list(death_codes))]
        if pd.isna(death.get(rid, pd.NaT))
    ]
    out.participants(
        "DS-DEATH-DATE",
        no_date,
        event=ds.event,
        instrument=ds.form,
        field=ds.death_date_field,
        values=[status[rid] for rid in no_date],
        messages="Death recorded without a date of death",
    )
