"""Protocol checks of safety: ``AE-*`` (adverse events and their reporting clocks), ``CSR-*``
(C-SSRS), ``LIV-*`` (liver) and ``COWS-*`` (withdrawal).

Notes
-----
The SAE clock runs from the awareness date-time to the report date-time, in hours. The other
reporting clocks (SUSARs to the regulator, suicide deaths to the DSMB, unanticipated problems to
the IRB) follow :mod:`studyman.protocol.clocks`: a late report, or no report once the deadline
has passed at the data cut, is a finding named by the clock's id.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from studyman.protocol.clocks import (
    clock_applies,
    clock_reading_time,
    clock_report_field,
    clock_start,
    clock_status,
)
from studyman.validation.protocol_checks.view import (
    Emitter,
    StudyView,
)
from studyman.validation.records import dates as column_dates
from studyman.validation.records import isin, text
from studyman.validation.records import numbers as column_numbers

__all__ = ["check_adverse_events", "check_cssrs", "check_liver_and_withdrawal"]


def _late_messages(hours: np.ndarray, limit: int) -> Callable[[np.ndarray], list[str]]:
    def messages(picked: np.ndarray) -> list[str]:
        return [f"SAE reported {hours[i]:.1f} h after awareness (limit {limit} h)" for i in picked]

    return messages


#: Check ids (late report, missing report) of each reporting-clock case. ``serious`` keeps the
#: SAE clock's historical id; its missing report is ``AE-SAE-DATES``.
CLOCK_CHECKS: dict[str, tuple[str, str | None]] = {
    "serious": ("AE-SAE-LATE", None),
    "susar_fatal_life_threatening": ("AE-CLOCK-SUSAR-FLT-LATE", "AE-CLOCK-SUSAR-FLT-MISSING"),
    "susar_other": ("AE-CLOCK-SUSAR-LATE", "AE-CLOCK-SUSAR-MISSING"),
    "suicide_death": ("AE-CLOCK-SUICIDE-DEATH-LATE", "AE-CLOCK-SUICIDE-DEATH-MISSING"),
    "unanticipated_problem": ("AE-CLOCK-UP-LATE", "AE-CLOCK-UP-MISSING"),
}


def _reporting_clocks(view: StudyView, out: Emitter, rows: np.ndarray, serious: np.ndarray) -> None:
    """One late-report and one missing-report check per reporting clock.

    The ``serious`` clock (SAE to the sponsor) keeps its historical rule: hours from awareness
    to the report above the smallest ``serious`` limit (a missing report or awareness date is
    ``AE-SAE-DATES``). Every other clock follows :mod:`studyman.protocol.clocks`: day 0 is the
    awareness date-time (onset for a non-serious event), read at the end of the data-cut day; a
    report more than the limit after day 0 is late, no report when the deadline has passed is
    missing. Clocks the protocol cannot assess (no expectedness, judgement or report field
    mapped) are skipped. None of this reads the arm.
    """
    ae = view.protocol.adverse_events
    records = view.records
    sae_clocks = [c for c in view.protocol.reporting_clocks if c.applies_to == "serious"]
    if sae_clocks:
        limit = min(clock.limit_hours for clock in sae_clocks)
        field = clock_report_field(sae_clocks[0], ae) or ae.report_field
        hours = (
            column_dates(records, field) - column_dates(records, ae.awareness_field)
        ).dt.total_seconds() / 3600.0
        out.rows(
            "AE-SAE-LATE",
            rows & serious & (hours > limit).fillna(False).to_numpy(dtype=bool),
            instrument=ae.form,
            field=field,
            value=text(records, field),
            message=_late_messages(hours.to_numpy(dtype=np.float64, na_value=np.nan), limit),
        )
    as_of = clock_reading_time(view.inputs.data_cut)
    start = clock_start(
        column_dates(records, ae.awareness_field), column_dates(records, ae.start_field), serious
    )

    def codes(name: str) -> np.ndarray:
        return text(records, name)

    for clock in view.protocol.reporting_clocks:
        late_id, missing_id = CLOCK_CHECKS[clock.applies_to]
        field = clock_report_field(clock, ae)
        applies = clock_applies(clock, ae, codes)
        if clock.applies_to == "serious" or field is None or applies is None:
            continue
        clock_hours, status = clock_status(
            start, column_dates(records, field), clock.limit_hours, as_of
        )
        due = rows & applies
        deadline = (start + pd.to_timedelta(clock.limit_hours, unit="h")).dt.strftime(
            "%Y-%m-%d %H:%M"
        )
        late_messages = [
            f"{clock.id}: report to the {clock.recipient} sent {h:.1f} h after awareness, "
            f"{h - clock.limit_hours:.1f} h over the {clock.limit_hours} h limit"
            for h in clock_hours
        ]
        out.rows(
            late_id,
            due & (status == "late"),
            instrument=ae.form,
            field=field,
            value=text(records, field),
            message=np.asarray(late_messages, dtype=object),
        )
        if missing_id is None:
            continue
        missing_messages = [
            f"{clock.id}: no report to the {clock.recipient} although due by {d} "
            f"({clock.limit_hours} h after awareness)"
            for d in deadline.fillna("")
        ]
        out.rows(
            missing_id,
            due & (status == "missing"),
            instrument=ae.form,
            field=field,
            value=None,
            message=np.asarray(missing_messages, dtype=object),
        )


def check_cssrs(view: StudyView, out: Emitter) -> None:
    """Raise the ``CSR-*`` findings."""
    cssrs = view.protocol.cssrs
    records = view.records
    form = cssrs.since_last_form
    rows = view.rows_of(form)
    if not rows.any():
        return
    gates = np.vstack([text(records, name) for name in cssrs.gate_fields])
    gates_no = np.all(gates == "0", axis=0)
    for name in cssrs.follow_up_ideation_fields:
        values = text(records, name)
        out.rows(
            "CSR-SKIP",
            rows & gates_no & (values != ""),
            instrument=form,
            field=name,
            value=values,
            message=f"{name} answered although {' and '.join(cssrs.gate_fields)} are No",
        )
    need = np.zeros(len(records), dtype=bool)
    for name in (*cssrs.safety_action_required_ideation, *cssrs.behaviour_fields):
        need |= text(records, name) == "1"
    action = text(records, cssrs.safety_action_field)
    out.rows(
        "CSR-SAFETY",
        rows & need & (action != "1"),
        instrument=form,
        field=cssrs.safety_action_field,
        value=action,
        message="Ideation type 4-5 or suicidal behaviour reported without a safety action",
    )


def check_adverse_events(view: StudyView, out: Emitter) -> None:
    """Raise the ``AE-*`` findings, reporting clocks included."""
    ae = view.protocol.adverse_events
    records = view.records
    rows = view.rows_of(ae.form)
    if not rows.any():
        return
    start_text = text(records, ae.start_field)
    end_text = text(records, ae.end_field)
    start = column_dates(records, ae.start_field)
    end = column_dates(records, ae.end_field)
    out.rows(
        "AE-END-BEFORE-START",
        rows & (end < start).fillna(False).to_numpy(dtype=bool),
        instrument=ae.form,
        field=ae.end_field,
        value=end_text,
        message="End date before onset date",
    )
    outcome = text(records, ae.outcome_field)
    recovered = isin(outcome, [str(c) for c in ae.recovered_outcome_codes])
    ongoing = isin(outcome, [str(c) for c in ae.ongoing_outcome_codes])
    out.rows(
        "AE-OUTCOME-END",
        rows & ((recovered & (end_text == "")) | (ongoing & (end_text != ""))),
        instrument=ae.form,
        field=ae.outcome_field,
        value=outcome,
        message=np.where(
            recovered,
            "Outcome recovered without an end date",
            "Outcome ongoing but an end date is recorded",
        ).astype(object),
    )
    serious = text(records, ae.serious_field) == "1"
    spec = view.inputs.dictionary.by_name.get(ae.serious_criteria_field)
    if spec is not None:
        ticked = np.zeros(len(records), dtype=bool)
        for column in spec.columns:
            ticked |= text(records, column) == "1"
        out.rows(
            "AE-SERIOUS-CRITERION",
            rows & serious & ~ticked,
            instrument=ae.form,
            field=ae.serious_criteria_field,
            value=None,
            message="Serious adverse event without a seriousness criterion",
        )
    aware_text = text(records, ae.awareness_field)
    report_text = text(records, ae.report_field)
    out.rows(
        "AE-SAE-DATES",
        rows & serious & ((aware_text == "") | (report_text == "")),
        instrument=ae.form,
        field=np.where(aware_text == "", ae.awareness_field, ae.report_field).astype(object),
        value=None,
        message="Serious adverse event without awareness or report date and time",
    )
    _reporting_clocks(view, out, rows, serious)
    severity = text(records, ae.severity_field)
    related = text(records, ae.related_field)
    missing = rows & ((severity == "") | (related == ""))
    out.rows(
        "AE-MISSING",
        missing,
        instrument=ae.form,
        field=np.where(severity == "", ae.severity_field, ae.related_field).astype(object),
        value=None,
        message="Severity or relatedness missing",
    )
    consent = view.per_row(view.consent)
    out.rows(
        "AE-BEFORE-CONSENT",
        rows & (start < consent).fillna(False).to_numpy(dtype=bool),
        instrument=ae.form,
        field=ae.start_field,
        value=start_text,
        message="Onset before informed consent (record it as medical history)",
    )
    status, _, death_date = view.disposition
    death_codes = {str(code.code) for code in view.protocol.disposition.codes if code.death}
    dead = set(status.index[status.isin(list(death_codes))]) | set(
        death_date.index[death_date.notna()]
    )
    fatal = rows & (outcome == str(ae.fatal_outcome_code)) & ~isin(view.ids, list(dead))
    out.rows(
        "AE-FATAL-NO-DEATH",
        fatal,
        instrument=ae.form,
        field=ae.outcome_field,
        value=outcome,
        message="Fatal outcome but no death in the disposition form",
    )
    term = pd.Series(text(records, ae.term_field), dtype=object).str.strip().str.lower()
    key = pd.DataFrame({"id": view.ids, "term": term, "start": start_text})
    duplicate = (
        rows
        & key.duplicated(keep="first").to_numpy()
        & (term != "").to_numpy()
        & (start_text != "")
    )
    duplicate &= (
        pd.Series(rows).groupby([key["id"], key["term"], key["start"]]).transform("sum").to_numpy()
        > 1
    )
    out.rows(
        "AE-DUPLICATE",
        duplicate,
        instrument=ae.form,
        field=ae.term_field,
        value=text(records, ae.term_field),
        message="Same term and onset date as another adverse event of this participant",
    )
    soc_of = {str(term.code): str(term.soc) for term in ae.coding_list}
    pt = text(records, ae.pt_field)
    soc = text(records, ae.soc_field)
    expected_soc = np.full(len(records), "", dtype=object)
    for index in np.flatnonzero(rows & (pt != "")):
        expected_soc[index] = soc_of.get(pt[index], "")
    out.rows(
        "AE-CODING",
        rows & (pt != "") & (soc != "") & (expected_soc != "") & (expected_soc != soc),
        instrument=ae.form,
        field=ae.soc_field,
        value=soc,
        message=np.array(
            [f"The coding list puts this term in SOC {e}" for e in expected_soc], dtype=object
        ),
    )


def check_liver_and_withdrawal(view: StudyView, out: Emitter) -> None:
    """Raise the ``LIV-*`` and ``COWS-*`` findings."""
    liver = view.protocol.liver
    records = view.records
    rows = view.rows_of(liver.form)
    if rows.any():
        ratio = {test.id: column_numbers(records, test.field) / test.uln for test in liver.tests}
        field_of = {test.id: test.field for test in liver.tests}
        hys = liver.hys_law
        with np.errstate(invalid="ignore"):
            transaminase = np.zeros(len(records), dtype=bool)
            for test_id in hys.transaminases:
                transaminase |= ratio[test_id] > hys.transaminase_multiple
            bilirubin = ratio[hys.bilirubin] > hys.bilirubin_multiple
            alp_ok = ~(ratio[hys.alp] > hys.alp_max_multiple)
            alert = np.zeros(len(records), dtype=bool)
            for test_id in hys.transaminases:
                alert |= ratio[test_id] > liver.transaminase_alert_multiple
        bili_text = text(records, field_of[hys.bilirubin])
        out.rows(
            "LIV-HYS",
            rows & transaminase & bilirubin & alp_ok,
            instrument=liver.form,
            field=field_of[hys.bilirubin],
            value=bili_text,
            message=(
                "Potential Hy's law case: transaminase > 3x "
                "ULN and bilirubin > 2x ULN, ALP not > 2x ULN"
            ),
        )
        first = liver.tests[0]
        transaminase_field = np.where(
            ratio[hys.transaminases[0]] > liver.transaminase_alert_multiple,
            field_of[hys.transaminases[0]],
            field_of[hys.transaminases[-1]],
        ).astype(object)
        out.rows(
            "LIV-ALT",
            rows & alert,
            instrument=liver.form,
            field=transaminase_field,
            value=text(records, first.field),
            message=f"ALT or AST above {liver.transaminase_alert_multiple:g}x ULN",
        )
    withdrawal = view.protocol.withdrawal
    if withdrawal is None:
        return  # the protocol declares no withdrawal scale
    ae = view.protocol.adverse_events
    rows = view.rows_of(withdrawal.instrument) & isin(view.events, list(withdrawal.events))
    if not rows.any():
        return
    total_text = text(records, withdrawal.total_field)
    high = rows & (column_numbers(records, withdrawal.total_field) >= withdrawal.aesi_threshold)
    withdrawal_codes = [str(a.code) for a in ae.aesi if a.name == "withdrawal"]
    ae_rows = view.rows_of(ae.form)
    aesi = text(records, ae.aesi_field)
    with_aesi = set(view.ids[ae_rows & isin(aesi, withdrawal_codes)])
    out.rows(
        "COWS-AESI",
        high & ~isin(view.ids, list(with_aesi)),
        instrument=withdrawal.instrument,
        field=withdrawal.total_field,
        value=total_text,
        message=(
            f"COWS total at or above {withdrawal.aesi_threshold:g} "
            "without a withdrawal adverse event of special interest"
        ),
    )
