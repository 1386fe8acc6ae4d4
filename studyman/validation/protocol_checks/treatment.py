"""Protocol checks of treatment: ``CM-*`` (concomitant medications), ``ADH-*`` (adherence)
and ``ARM-*`` (the allocation, unblinded runs only)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.validation.protocol_checks.view import (
    Emitter,
    StudyView,
    parse_numbers,
)
from studyman.validation.records import dates as column_dates
from studyman.validation.records import isin, text

__all__ = ["check_adherence", "check_arms", "check_conmeds"]


def check_conmeds(view: StudyView, out: Emitter) -> None:
    """Raise the ``CM-*`` findings."""
    cm = view.protocol.concomitant_medications
    records = view.records
    rows = view.rows_of(cm.form)
    if not rows.any():
        return
    start_text = text(records, cm.start_field)
    stop_text = text(records, cm.stop_field)
    start = column_dates(records, cm.start_field)
    stop = column_dates(records, cm.stop_field)
    out.rows(
        "CM-STOP-BEFORE-START",
        rows & (stop < start).fillna(False).to_numpy(dtype=bool),
        instrument=cm.form,
        field=cm.stop_field,
        value=stop_text,
        message="Stop date before start date",
    )
    klass = text(records, cm.class_field)
    rules = {str(c.code): c.rule for c in cm.classes}
    names = {str(c.code): c.name for c in cm.classes}
    rule = np.array([rules.get(code, "") for code in klass], dtype=object)
    # prohibited from the screening visit on
    screening_event = cm.prohibited_from_event
    first_day = (
        view.date(screening_event, view.protocol.enrolment.screening_date_field)
        if screening_event
        else pd.Series(dtype="datetime64[ns]")
    )
    from_day = view.per_row(first_day.combine_first(view.consent))
    during = (stop.isna() | (stop >= from_day)).fillna(True).to_numpy(dtype=bool)
    out.rows(
        "CM-PROHIBITED",
        rows & (rule == "prohibited") & during,
        instrument=cm.form,
        field=cm.class_field,
        value=klass,
        message=np.array(
            [f"Prohibited medication class: {names.get(code, code)}" for code in klass],
            dtype=object,
        ),
    )
    rand = view.per_row(view.rand_date)
    stable = rows & (rule == "stable_dose")
    started_after = (start > rand).fillna(False).to_numpy(dtype=bool)
    # a new antidepressant: none of the same name before randomisation
    name = pd.Series(text(records, cm.name_field), dtype=object).str.strip().str.lower()
    frame = pd.DataFrame(
        {
            "id": view.ids,
            "name": name,
            "after": started_after,
            "stable": stable,
            "dose": text(records, cm.dose_field),
        }
    )
    before_names = set(
        zip(
            frame.loc[frame["stable"] & ~frame["after"], "id"],
            frame.loc[frame["stable"] & ~frame["after"], "name"],
            strict=True,
        )
    )
    continuing = np.zeros(len(records), dtype=bool)
    ids_of_rows = view.ids
    names_of_rows = name.to_numpy(dtype=object)
    for index in np.flatnonzero(stable):
        continuing[index] = (ids_of_rows[index], names_of_rows[index]) in before_names
    out.rows(
        "CM-NEW-AD",
        stable & started_after & ~continuing,
        instrument=cm.form,
        field=cm.start_field,
        value=start_text,
        message="Antidepressant started after randomisation",
    )
    end_event = cm.stable_dose.until_event
    end_day = view.per_row(view.date(end_event, view.protocol.visit_form.date_field))
    within = (start <= end_day).fillna(True).to_numpy(dtype=bool)
    out.rows(
        "CM-DOSE-CHANGE",
        stable & started_after & continuing & within,
        instrument=cm.form,
        field=cm.dose_field,
        value=text(records, cm.dose_field),
        message="Antidepressant dose changed during the stable-dose period",
    )
    dose = text(records, cm.dose_field)
    unit = text(records, cm.unit_field)
    freq = text(records, cm.frequency_field)
    incomplete = rows & ((dose == "") | (unit == "") | (freq == ""))
    field_names = np.where(
        dose == "", cm.dose_field, np.where(unit == "", cm.unit_field, cm.frequency_field)
    ).astype(object)
    out.rows(
        "CM-INCOMPLETE",
        incomplete,
        instrument=cm.form,
        field=field_names,
        value=None,
        message="Dose, unit or frequency missing",
    )


def check_adherence(view: StudyView, out: Emitter) -> None:
    """Raise the ``ADH-*`` findings."""
    treatment = view.protocol.treatment
    sessions = treatment.sessions
    records = view.records
    rows = view.rows_of(sessions.form)
    end_visit = view.value(treatment.end_of_treatment_event, view.protocol.visit_form.date_field)
    finished = set(end_visit.index[end_visit != ""])
    if not finished:
        return
    attended = pd.Series(
        view.ids[rows & (text(records, sessions.given_field) == "1")], dtype=object
    )
    counts = attended.value_counts()
    needed = treatment.adherence_threshold * treatment.cbt_sessions_planned
    low = sorted(rid for rid in finished if counts.get(rid, 0) < needed)
    out.participants(
        "ADH-CBT",
        low,
        event=treatment.end_of_treatment_event,
        instrument=sessions.form,
        field=sessions.given_field,
        values=[str(int(counts.get(rid, 0))) for rid in low],
        messages=(
            f"Fewer than {needed:g} of {treatment.cbt_sessions_planned} CBT sessions attended "
            "by the end of treatment (review)"
        ),
    )


def check_arms(view: StudyView, out: Emitter) -> None:
    """Raise the ``ARM-*`` findings (unblinded runs only)."""
    arms = view.inputs.arms
    if arms is None:
        return
    protocol = view.protocol
    listed = {str(record_id) for record_id in arms.index}
    randomized = view.randomized
    without_arm = sorted(
        str(rid) for rid in randomized.index[randomized.to_numpy()] if str(rid) not in listed
    )
    out.participants(
        "ARM-LIST-MISSING",
        without_arm,
        event=view.randomization_event,
        instrument=protocol.arms.form,
        field=protocol.arms.field,
        messages="Randomised, but the randomisation list gives no arm for this participant",
    )
    in_snapshot = {str(rid) for rid in view.ids}
    unknown = sorted(rid for rid in listed if rid not in in_snapshot)
    out.participants(
        "ARM-LIST-UNKNOWN",
        unknown,
        event=view.randomization_event,
        instrument=protocol.arms.form,
        field=protocol.arms.field,
        values=[str(arms[rid]) for rid in unknown],
        messages="Listed in the randomisation list, but not a record of the snapshot",
    )
    no_adjunct = {str(arm.code) for arm in protocol.arms.items if not arm.receives_adjunct}
    dosing_forms = [
        form for form in protocol.blinding.unblinded_forms if form != protocol.arms.form
    ]
    arm_of_row = (
        pd.Series(view.ids, dtype=object).map(arms.astype(object)).fillna("").to_numpy(dtype=object)
    )
    for form in dosing_forms:
        rows = view.rows_of(form)
        out.rows(
            "ARM-ADJUNCT-WRONG-ARM",
            rows & isin(arm_of_row, list(no_adjunct)),
            instrument=form,
            field="",
            value=None,
            message=(
                "Adjunct dosing recorded for a participant allocated to an arm without the adjunct"
            ),
        )
    strata = view.inputs.strata
    if strata is None:
        return
    factors = protocol.randomization.stratification
    derived: dict[str, str] = {}
    site = view.site
    parts: dict[str, pd.Series] = {}
    for factor in factors:
        if factor.source == "site":
            parts[factor.id] = site
        elif factor.field:
            scores = view.value(factor.event or view.randomization_event, factor.field)
            numbers = pd.Series(parse_numbers(scores.to_numpy()), index=scores.index)
            names = {}
            for record_id, score in numbers.items():
                level = next(
                    (
                        lv
                        for lv in factor.levels
                        if not np.isnan(score)
                        and (lv.min is None or score >= lv.min)
                        and (lv.max is None or score <= lv.max)
                    ),
                    None,
                )
                if level is not None:
                    names[str(record_id)] = level.name
            parts[factor.id] = pd.Series(names, dtype=object)
    for record_id in strata.index:
        values = {key: series.get(record_id) for key, series in parts.items()}
        if any(
            value is None or (isinstance(value, float) and np.isnan(value))
            for value in values.values()
        ):
            continue
        try:
            derived[str(record_id)] = protocol.randomization.stratum_format.format(**values)
        except (KeyError, IndexError):
            continue
    wrong = [
        rid
        for rid in strata.index
        if str(rid) in derived and str(strata[rid]) != derived[str(rid)] and str(strata[rid])
    ]
    out.participants(
        "ARM-STRATUM",
        wrong,
        event=view.randomization_event,
        instrument=protocol.arms.form,
        field=protocol.randomization.stratum_field,
        values=[str(strata[rid]) for rid in wrong],
        messages=[f"Stratum {strata[rid]} recorded, {derived[str(rid)]} derived" for rid in wrong],
    )
