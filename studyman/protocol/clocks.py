"""Reporting clocks: which adverse events a clock applies to, and whether each report was on time.

One place for the rules, used by the validation checks and by the DSMB report.

Notes
-----
* The cases of ``applies_to`` are defined in :class:`studyman.protocol.models.ReportingClock`:
  ``serious``; SUSAR = serious AND suspected (relatedness in ``related_codes``) AND unexpected
  (``expected_field`` No), fatal or life-threatening when a ``fatal_or_life_threatening_criteria``
  box is ticked or the outcome is fatal; ``suicide_death`` = fatal outcome AND the AESI named
  ``suicidality``; ``unanticipated_problem`` = the investigator's judgement field is Yes.
* Day 0 is the site's awareness date-time. A non-serious event has no awareness date on the form
  (the field shows only for serious events), so its clock (an unanticipated problem need not be
  serious) runs from the onset date at 00:00, the earliest the site can have known. A serious
  event without an awareness date cannot be timed (the SAE date check reports it).
* A report dated after the as-of time (the data cut) counts as not yet sent. Without a report,
  a clock whose deadline (day 0 + limit) is before the as-of time is ``missing``, otherwise
  ``not_yet_due``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd

from studyman.protocol.models import AdverseEvents, ReportingClock
from studyman.protocol.redcap_project import checkbox_column

__all__ = [
    "CLOCK_STATUSES",
    "ClockStatus",
    "clock_applies",
    "clock_reading_time",
    "clock_report_field",
    "clock_start",
    "clock_status",
    "clock_unassessable_reason",
]

ClockStatus = Literal["on_time", "late", "missing", "not_yet_due", "no_start"]
CLOCK_STATUSES: tuple[ClockStatus, ...] = ("on_time", "late", "missing", "not_yet_due", "no_start")

#: Raw REDCap codes of a column as text ("" when blank or absent), one per adverse event.
CodeGetter = Callable[[str], np.ndarray]


def clock_report_field(clock: ReportingClock, adverse_events: AdverseEvents) -> str | None:
    """The field holding when *clock*'s report was sent, or ``None`` when the study has none."""
    if clock.report_field is not None:
        return clock.report_field
    if clock.applies_to == "serious":
        return adverse_events.report_field
    return None


def _suicidality_code(adverse_events: AdverseEvents) -> int | None:
    for aesi in adverse_events.aesi:
        if aesi.name == "suicidality":
            return aesi.code
    return None


def clock_unassessable_reason(clock: ReportingClock, adverse_events: AdverseEvents) -> str | None:
    """Why *clock* cannot be assessed with the protocol's field mappings, or ``None``."""
    if clock_report_field(clock, adverse_events) is None:
        return f"no report date field for the {clock.recipient} is mapped (report_field)"
    if clock.applies_to.startswith("susar") and adverse_events.expected_field is None:
        return "expectedness is not recorded (adverse_events.expected_field)"
    if clock.applies_to == "unanticipated_problem" and adverse_events.unanticipated_field is None:
        return "unanticipated problems are not recorded (adverse_events.unanticipated_field)"
    if clock.applies_to == "suicide_death" and _suicidality_code(adverse_events) is None:
        return "the protocol has no AESI named 'suicidality'"
    return None


def clock_applies(
    clock: ReportingClock, adverse_events: AdverseEvents, codes: CodeGetter
) -> np.ndarray | None:
    """Which adverse events *clock* applies to (boolean per event), or ``None`` if unassessable.

    Parameters
    ----------
    clock
        The reporting clock.
    adverse_events
        The protocol's adverse-event mapping.
    codes
        Column name -> raw REDCap codes as text (``""`` when blank), one value per event;
        checkbox boxes are asked for by their export column (``ae_ser_crit___1``).
    """
    ae = adverse_events
    if clock_unassessable_reason(clock, ae) is not None:
        return None

    def equals(column: str, code: object) -> np.ndarray:
        return np.asarray(codes(column) == str(code), dtype=bool)

    serious = equals(ae.serious_field, 1)
    if clock.applies_to == "serious":
        return serious
    fatal = equals(ae.outcome_field, ae.fatal_outcome_code)
    if clock.applies_to == "suicide_death":
        suicide: np.ndarray = equals(ae.aesi_field, _suicidality_code(ae)) & fatal
        return suicide
    if clock.applies_to == "unanticipated_problem":
        return equals(ae.unanticipated_field or "", 1)
    related = np.isin(codes(ae.related_field), [str(code) for code in ae.related_codes])
    susar = np.asarray(serious & related & equals(ae.expected_field or "", 0), dtype=bool)
    grave = fatal.copy()
    for code in ae.fatal_or_life_threatening_criteria:
        grave |= equals(checkbox_column(ae.serious_criteria_field, str(code)), 1)
    if clock.applies_to == "susar_fatal_life_threatening":
        chosen: np.ndarray = susar & grave
    else:
        chosen = susar & ~grave
    return chosen


def clock_reading_time(data_cut: date) -> pd.Timestamp:
    """When the clocks are read: the end of the data-cut day (midnight after it)."""
    return pd.Timestamp(data_cut) + pd.Timedelta(days=1)


def clock_start(aware: pd.Series, onset: pd.Series, serious: np.ndarray) -> pd.Series:
    """Day 0 of each event's clocks: awareness; the onset date for a non-serious event."""
    start = pd.Series(pd.to_datetime(aware).to_numpy(), dtype="datetime64[ns]")
    fallback = pd.Series(pd.to_datetime(onset).to_numpy(), dtype="datetime64[ns]")
    return start.where(np.asarray(serious, dtype=bool), fallback)


def clock_status(
    start: pd.Series, sent: pd.Series, limit_hours: float, as_of: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """Hours from day 0 to the report, and each event's :data:`ClockStatus`.

    Parameters
    ----------
    start
        Day 0 of each event (:func:`clock_start`); ``NaT`` when unknown.
    sent
        When the report was sent (``NaT`` when blank).
    limit_hours
        The clock's limit.
    as_of
        The time the clocks are read at (reports dated later count as not yet sent).

    Returns
    -------
    tuple of numpy.ndarray
        Hours (``nan`` without a report or day 0) and status per event.
    """
    start = pd.Series(pd.to_datetime(start).to_numpy(), dtype="datetime64[ns]")
    sent = pd.Series(pd.to_datetime(sent).to_numpy(), dtype="datetime64[ns]")
    sent = sent.where(sent <= as_of)
    hours = ((sent - start).dt.total_seconds() / 3600.0).to_numpy(dtype=np.float64, na_value=np.nan)
    has_start = start.notna().to_numpy()
    has_report = sent.notna().to_numpy()
    deadline = start + pd.to_timedelta(limit_hours, unit="h")
    overdue = (deadline < as_of).to_numpy(dtype=bool, na_value=False)
    status = np.full(len(start), "no_start", dtype=object)
    status[has_start & has_report & (hours <= limit_hours)] = "on_time"
    status[has_start & has_report & (hours > limit_hours)] = "late"
    status[has_start & ~has_report & overdue] = "missing"
    status[has_start & ~has_report & ~overdue] = "not_yet_due"
    return hours, status
