"""Protocol checks of dates, visits and windows: ``DAT-*`` and ``VIS-*``.

Notes
-----
* Study days count from the randomisation date (baseline = day 0), as the protocol states.
* A visit is overdue when the data cut is past the end of its window, the participant was
  randomised, the visit form holds no row at that event, and the participant had not left the
  study (disposition other than completed dated on or before the window's end).
* Dates that are not real dates are ignored by date-order checks (the dictionary check reports
  them), so one bad value never raises.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.validation.protocol_checks.view import (
    Emitter,
    StudyView,
    format_day,
)
from studyman.validation.records import dates as column_dates
from studyman.validation.records import isin, text

__all__ = ["check_dates", "check_visits"]


def check_dates(view: StudyView, out: Emitter) -> None:
    """Raise ``DAT-FUTURE``, ``DAT-BEFORE-CONSENT`` and ``DAT-RAND-ORDER``."""
    records = view.records
    dictionary = view.inputs.dictionary
    cut = pd.Timestamp(view.inputs.data_cut)
    consent = view.per_row(view.consent)
    assessments = set(view.assessment_date_fields())
    for spec in dictionary.fields:
        if not spec.validation.startswith(("date", "datetime")) or spec.name not in records.columns:
            continue
        values = text(records, spec.name)
        parsed = column_dates(records, spec.name)
        future = (parsed.dt.normalize() > cut).fillna(False).to_numpy(dtype=bool)
        out.rows(
            "DAT-FUTURE",
            future,
            instrument=spec.form,
            field=spec.name,
            value=values,
            message=f"{spec.label or spec.name}: after the data cut-off {cut:%Y-%m-%d}",
        )
        if spec.name in assessments:
            before = (parsed.dt.normalize() < consent).fillna(False).to_numpy(dtype=bool) & ~future
            out.rows(
                "DAT-BEFORE-CONSENT",
                before,
                instrument=spec.form,
                field=spec.name,
                value=values,
                message=f"{spec.label or spec.name}: before informed consent",
            )
    # randomisation before consent or eligibility
    rand = view.rand_date
    elig = view.date(view.protocol.eligibility.event, view.protocol.eligibility.date_field)
    ids = rand.index[rand.notna()]
    bad: list[str] = []
    rand_values: list[str] = []
    messages: list[str] = []
    rand_of = rand.to_dict()
    references = (("consent", view.consent.to_dict()), ("eligibility confirmation", elig.to_dict()))
    for record_id in ids:
        day = rand_of[record_id]
        for label, other in references:
            reference = other.get(record_id, pd.NaT)
            if not pd.isna(reference) and day < reference:
                bad.append(record_id)
                rand_values.append(format_day(day))
                messages.append(
                    f"Randomised on {format_day(day)}, before {label} on {format_day(reference)}"
                )
                break
    out.participants(
        "DAT-RAND-ORDER",
        bad,
        event=view.randomization_event,
        instrument=view.form_of(view.protocol.randomization.date_field),
        field=view.protocol.randomization.date_field,
        values=rand_values,
        messages=messages,
    )


def check_visits(view: StudyView, out: Emitter) -> None:
    """Raise ``VIS-WINDOW``, ``VIS-OVERDUE`` and ``DAT-VISIT-ORDER``."""
    protocol = view.protocol
    records = view.records
    cut = pd.Timestamp(view.inputs.data_cut)
    rand = view.rand_date
    rand_row = view.per_row(rand)
    left = view.left_study
    scheduled = [v for v in protocol.visits if v.window is not None and v.date_field]
    previous_dates: pd.Series | None = None
    for visit in scheduled:
        field_name = visit.date_field
        form = (
            view.inputs.dictionary.by_name[field_name].form
            if field_name in view.inputs.dictionary.by_name
            else ""
        )
        at_event = view.base & (view.events == visit.event)
        values = text(records, field_name)
        parsed = column_dates(records, field_name)
        study_day = (parsed - rand_row).dt.days
        outside = at_event & (
            (study_day < visit.window.start) | (study_day > visit.window.end)
        ).fillna(False).to_numpy(dtype=bool)
        messages = np.full(len(records), "", dtype=object)
        days = study_day.to_numpy(dtype=np.float64, na_value=np.nan)
        for index in np.flatnonzero(outside):
            messages[index] = (
                f"{visit.label}: study day {int(days[index])} outside the window "
                f"{visit.window.start} to {visit.window.end}"
            )
        out.rows(
            "VIS-WINDOW", outside, instrument=form, field=field_name, value=values, message=messages
        )
        # order against the previous scheduled visit
        dates_here = view.date(visit.event, field_name)
        if previous_dates is not None:
            earlier = previous_dates.reindex(dates_here.index)
            wrong = dates_here.notna() & earlier.notna() & (dates_here <= earlier)
            wrong_ids = set(dates_here.index[wrong.to_numpy(dtype=bool)])
            mask = at_event & isin(view.ids, list(wrong_ids))
            out.rows(
                "DAT-VISIT-ORDER",
                mask,
                instrument=form,
                field=field_name,
                value=values,
                message=f"{visit.label}: dated on or before the previous scheduled visit",
            )
            previous_dates = dates_here.combine_first(previous_dates)
        else:
            previous_dates = dates_here
        # overdue: window closed, no visit row, randomised and still in the study
        if visit.kind in ("screening", "baseline"):
            continue
        visit_rows = view.rows_of(form) & at_event if form else at_event
        seen = set(view.ids[visit_rows])
        due = rand + pd.to_timedelta(visit.window.end, unit="D")
        randomized = view.randomized.reindex(rand.index).fillna(False).astype(bool)
        overdue = []
        due_of = due.to_dict()
        left_of = left.to_dict()
        for record_id in rand.index[rand.notna() & randomized.to_numpy(dtype=bool)]:
            if record_id in seen:
                continue
            end = due_of[record_id]
            if end >= cut:
                continue
            gone = left_of.get(record_id, pd.NaT)
            if not pd.isna(gone) and gone <= end:
                continue
            overdue.append(record_id)
        out.participants(
            "VIS-OVERDUE",
            overdue,
            event=visit.event,
            instrument=form,
            field=field_name,
            messages=f"{visit.label}: overdue (window closed, no visit recorded)",
        )
