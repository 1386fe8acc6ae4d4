"""Reconciliation checks: what a study records twice must agree, or a site is asked why.

The same fact often sits on two forms: a participant withdrawn for an adverse event has an
adverse event whose action withdrew study treatment; a death in the disposition form has an
adverse event of fatal outcome, and that event a date of death; study treatment starts on or
after randomisation; a deviation of a category the protocol declares major is recorded as
major. Where the two disagree, every output would count the fact differently depending on the
form it reads, so these checks turn the disagreement into a site query instead
(``finding_kind`` ``site_query``; the catalogue entries are in
:mod:`studyman.validation.catalogue`, kind ``reconciliation``).

Notes
-----
* The adverse-event action (``adverse_events.action_field``) acts on the adjunct, and a blinded
  view merges its codes (``blinding.masked_codes``): the two action checks need the unmasked
  action and the arm, so they run only in an unblinded run (``needs_arm``), and only for
  participants of an arm that receives the adjunct (nobody else can have it withdrawn).
  Without ``action_field`` and ``treatment_withdrawn_action_code`` in the protocol they do not
  run.
* A fatal adverse event in a participant whose disposition records no death is
  ``AE-FATAL-NO-DEATH`` (:mod:`~studyman.validation.protocol_checks.safety`); this module adds
  the reverse (a death without a fatal adverse event) and the missing date of death.
* "Study treatment given" is the protocol's exposure logs (``treatment.sessions``, and
  ``treatment.doses`` where the run sees the dosing log): a row whose given field is yes.
* A disposition not yet recorded (an ongoing participant) disagrees with nothing.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from studyman.findings import FINDING_COLUMNS
from studyman.validation.protocol_checks.view import (
    Emitter,
    ProtocolCheckInput,
    StudyView,
    format_day,
    parse_dates,
)
from studyman.validation.records import isin, text

__all__ = ["RECONCILIATION_CHECK_IDS", "run_reconciliation_checks"]

#: The checks of this module (their catalogue entries have kind ``reconciliation``).
RECONCILIATION_CHECK_IDS: Final = (
    "REC-DS-AE-NO-WITHDRAWAL",
    "REC-WITHDRAWAL-NO-DS-AE",
    "REC-DEATH-NO-FATAL-AE",
    "REC-FATAL-NO-DEATH-DATE",
    "REC-TREATMENT-BEFORE-RAND",
    "REC-DV-MAJOR-NOT-RECORDED",
)


def run_reconciliation_checks(records: pd.DataFrame, inputs: ProtocolCheckInput) -> pd.DataFrame:
    """Run the reconciliation checks on flat *records* (the action checks only when unblinded).

    Parameters
    ----------
    records
        Flat records (text values), in the run's view.
    inputs
        The protocol, dictionary and, in an unblinded run, the arms.

    Returns
    -------
    pandas.DataFrame
        Findings with :data:`studyman.findings.FINDING_COLUMNS` (``source`` ``reconciliation``).
    """
    view = StudyView(records, inputs)
    out = Emitter(view)
    _deaths(view, out)
    _treatment_start(view, out)
    _major_deviations(view, out)
    if inputs.arms is not None:
        _withdrawals(view, out)
    frame = out.frame()
    if frame.empty:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    frame["source"] = "reconciliation"
    return frame


def _labels(view: StudyView) -> dict[str, str]:
    return {str(code.code): code.label for code in view.protocol.disposition.codes}


def _ae_rows(view: StudyView) -> np.ndarray:
    return np.asarray(view.rows_of(view.protocol.adverse_events.form), dtype=bool)


def _deaths(view: StudyView, out: Emitter) -> None:
    ds = view.protocol.disposition
    ae = view.protocol.adverse_events
    status, _, death_date = view.disposition
    death_codes = [str(code.code) for code in ds.codes if code.death]
    rows = _ae_rows(view)
    outcome = text(view.records, ae.outcome_field)
    fatal_rows = rows & (outcome == str(ae.fatal_outcome_code))
    with_fatal = set(view.ids[fatal_rows])
    dead = set(status.index[status.isin(death_codes)]) | set(death_date.index[death_date.notna()])
    no_fatal = sorted(rid for rid in dead if rid not in with_fatal)
    labels = _labels(view)
    out.participants(
        "REC-DEATH-NO-FATAL-AE",
        no_fatal,
        event=ds.event,
        instrument=ds.form,
        field=ds.status_field,
        values=[str(status.get(rid, "")) for rid in no_fatal],
        messages=[
            f"Disposition records a death ({labels.get(str(status.get(rid, '')), 'date of death')}"
            f"{', ' + format_day(death_date.get(rid)) if pd.notna(death_date.get(rid)) else ''})"
            " but no adverse event has a fatal outcome"
            for rid in no_fatal
        ],
    )
    dated = set(death_date.index[death_date.notna()])
    undated = sorted(rid for rid in with_fatal if rid not in dated)
    out.participants(
        "REC-FATAL-NO-DEATH-DATE",
        undated,
        event=ds.event,
        instrument=ds.form,
        field=ds.death_date_field,
        values=[str(status.get(rid, "")) for rid in undated],
        messages="An adverse event has a fatal outcome but no date of death is recorded",
    )


def _treatment_start(view: StudyView, out: Emitter) -> None:
    treatment = view.protocol.treatment
    rand_date = view.rand_date
    randomized = view.randomized
    rand_date = rand_date[rand_date.notna() & randomized.reindex(rand_date.index, fill_value=False)]
    if rand_date.empty:
        return
    per_row = view.per_row(rand_date)
    for log in (treatment.sessions, treatment.doses):
        if log is None or log.date_field not in view.records.columns:
            continue
        rows = np.asarray(view.rows_of(log.form), dtype=bool)
        if not rows.any():
            continue
        given = text(view.records, log.given_field) == "1"
        day = parse_dates(text(view.records, log.date_field))
        early = rows & given & (day < per_row).fillna(False).to_numpy(dtype=bool)
        out.rows(
            "REC-TREATMENT-BEFORE-RAND",
            early,
            instrument=log.form,
            field=log.date_field,
            value=text(view.records, log.date_field),
            message=lambda found: [
                f"Study treatment given before randomisation ({format_day(per_row.iloc[i])})"
                for i in found
            ],
        )


def _major_deviations(view: StudyView, out: Emitter) -> None:
    dv = view.protocol.deviations
    major = [str(category.code) for category in dv.categories if category.major]
    if not major or dv.category_field not in view.records.columns:
        return
    rows = np.asarray(view.rows_of(dv.form), dtype=bool)
    category = text(view.records, dv.category_field)
    recorded = text(view.records, dv.major_field)
    names = {str(category.code): category.name for category in dv.categories}
    wrong = rows & isin(category, major) & (recorded != "1")
    out.rows(
        "REC-DV-MAJOR-NOT-RECORDED",
        wrong,
        instrument=dv.form,
        field=dv.major_field,
        value=recorded,
        message=lambda found: [
            f"Deviation category {names.get(str(category[i]), category[i])} is major per the "
            "protocol, but the deviation is not recorded as major"
            for i in found
        ],
    )


def _withdrawals(view: StudyView, out: Emitter) -> None:
    protocol = view.protocol
    ae = protocol.adverse_events
    ds = protocol.disposition
    arms = view.inputs.arms
    if arms is None or ae.action_field is None or ae.treatment_withdrawn_action_code is None:
        return
    if ae.action_field not in view.records.columns:
        return
    adjunct_arms = {str(arm.code) for arm in protocol.arms.items if arm.receives_adjunct}
    arm_of = arms.astype(str)
    status, _, _ = view.disposition
    ae_codes = [str(code.code) for code in ds.codes if code.adverse_event]
    death_codes = [str(code.code) for code in ds.codes if code.death]
    labels = _labels(view)
    rows = _ae_rows(view)
    withdrawn_rows = rows & (
        text(view.records, ae.action_field) == str(ae.treatment_withdrawn_action_code)
    )
    withdrawn = set(view.ids[withdrawn_rows])

    # disposition "adverse event", but no adverse event withdrew the (adjunct) study treatment
    for_ae = status.index[status.isin(ae_codes)]
    missing = sorted(
        rid for rid in for_ae if arm_of.get(rid, "") in adjunct_arms and rid not in withdrawn
    )
    out.participants(
        "REC-DS-AE-NO-WITHDRAWAL",
        missing,
        event=ds.event,
        instrument=ds.form,
        field=ds.status_field,
        values=[str(status[rid]) for rid in missing],
        messages="Disposition reason is adverse event, but no adverse event records study "
        "treatment withdrawn",
    )

    # an adverse event withdrew study treatment, and the participant left the study early for
    # another reason (completing the study without the adjunct agrees with the disposition)
    completed = [str(code.code) for code in ds.codes if code.completed]
    per_row = view.per_row(status).fillna("").astype(str).to_numpy(dtype=object)
    other = (per_row != "") & ~isin(per_row, [*ae_codes, *death_codes, *completed])
    mismatch = withdrawn_rows & other
    out.rows(
        "REC-WITHDRAWAL-NO-DS-AE",
        mismatch,
        instrument=ae.form,
        field=ae.action_field,
        value=text(view.records, ae.action_field),
        message=lambda found: [
            "Study treatment withdrawn for this adverse event, but the disposition reason is "
            f"{labels.get(str(per_row[i]), per_row[i])}, not adverse event"
            for i in found
        ],
    )
