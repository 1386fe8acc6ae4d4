"""Kaplan–Meier estimates with numbers at risk: time to the first serious adverse event, to the
first adverse event of special interest and to study discontinuation (pooled in the open
session, by arm in the closed one)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from studyman.analysis.models import kaplan_meier
from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _groups,
    _member,
)
from studyman.reporting.sections.executive_summary import randomised_ids, safety_ids

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "time-to-event"
TITLE = "Time to first serious adverse event, first AESI and study discontinuation"
TABLE_IDS: tuple[str, ...] = ("time-to-event.kaplan-meier-estimates-and-numbers-at-risk",)

SAE = "First serious adverse event"
AESI = "First adverse event of special interest"
DISCONTINUATION = "Study discontinuation"


@dataclass(frozen=True)
class Endpoint:
    """One time-to-event endpoint: per participant of *population*, days from randomisation to
    the event or to censoring, and whether the event happened."""

    name: str
    population: str
    times: pd.Series
    events: pd.Series


def _days(later: pd.Series, earlier: pd.Series) -> pd.Series:
    delta = pd.to_datetime(later) - pd.to_datetime(earlier)
    return (delta.dt.days.astype(float)).clip(lower=0)


def endpoints(inputs: DsmbInputs) -> list[Endpoint]:
    """The three endpoints, from the facts.

    Notes
    -----
    Time origin: randomisation. Serious adverse event and AESI: the first treatment-emergent one
    (its start date), in the safety population; censored when the participant left the study
    (disposition date) or at the cut-off. Discontinuation: the disposition date of a
    participant who discontinued the study (the cut-off when the date is missing), among the
    randomised; censored at completion or at the cut-off.
    """
    facts = inputs.facts()
    subjects = facts.subjects
    cutoff = pd.Timestamp(inputs.cutoff)
    rand = pd.to_datetime(subjects["randomisation_date"])
    left = pd.to_datetime(subjects["disposition_date"]).where(subjects["disposition_code"].notna())
    end = left.where(left < cutoff, cutoff).fillna(cutoff)
    teae = facts.adverse_events[facts.adverse_events["teae"].astype(bool).to_numpy()]
    result: list[Endpoint] = []
    safety = safety_ids(inputs)
    for name, flag in ((SAE, "serious"), (AESI, "aesi")):
        chosen = teae[teae[flag].astype(bool).to_numpy()]
        first = pd.to_datetime(chosen["start"]).groupby(chosen["subject"].astype(str)).min()
        ids = safety
        event_date = first.reindex(ids)
        happened = event_date.notna()
        when = event_date.where(happened, end.reindex(ids))
        result.append(
            Endpoint(
                name,
                "Safety population",
                _days(when, rand.reindex(ids)),
                pd.Series(happened.to_numpy(bool), index=ids),
            )
        )
    ids = randomised_ids(inputs)
    stopped = subjects["discontinued_study"].reindex(ids).fillna(False).to_numpy(bool)
    stop_date = pd.to_datetime(subjects["disposition_date"]).reindex(ids).fillna(cutoff)
    when = stop_date.where(stopped, end.reindex(ids))
    result.append(
        Endpoint(
            DISCONTINUATION,
            "Randomised",
            _days(when, rand.reindex(ids)),
            pd.Series(stopped, index=ids),
        )
    )
    return result


def landmarks(inputs: DsmbInputs) -> list[int]:
    """The days the numbers at risk are shown at: 0 and each scheduled visit's target day."""
    days = {0}
    days.update(
        visit.target_day
        for visit in inputs.protocol.scheduled_visits
        if visit.target_day is not None and visit.target_day > 0
    )
    return sorted(days)


def _survival_at(curve: pd.DataFrame, day: float) -> float:
    """The Kaplan–Meier estimate at *day* (a step function; 1 before the first event)."""
    before = curve[curve["time"] <= day]
    return 1.0 if before.empty else float(before["survival"].iloc[-1])


def time_to_event_section(inputs: DsmbInputs) -> Section:
    """Kaplan–Meier curves and a table of events, numbers at risk and the estimate."""
    days = landmarks(inputs)
    last = days[-1]
    rows: list[list[str]] = []
    curves: list[pd.DataFrame] = []
    at_risk: list[pd.DataFrame] = []
    for endpoint in endpoints(inputs):
        for label, members in _groups(inputs, endpoint.times.index):
            times = endpoint.times[_member(endpoint.times.index, members)]
            events = endpoint.events.reindex(times.index).to_numpy(bool)
            values = times.to_numpy(float)
            curve = (
                kaplan_meier(values.tolist(), events.tolist())
                if len(values)
                else pd.DataFrame(columns=["time", "survival"])
            )
            risk = [int((values >= day).sum()) for day in days]
            estimate = 1.0 - _survival_at(curve, last)
            rows.append(
                [
                    endpoint.name,
                    label,
                    str(len(values)),
                    str(int(events.sum())),
                    *[str(n) for n in risk],
                    f"{100.0 * estimate:.1f}%" if len(values) else "–",
                ]
            )
            if label != TOTAL or not inputs.closed:
                curves.append(
                    pd.DataFrame(
                        {
                            "endpoint": endpoint.name,
                            "group": label,
                            # from day 0 to the last follow-up (censored or not)
                            "time": [
                                0.0,
                                *curve["time"].astype(float),
                                float(values.max()) if len(values) else 0.0,
                            ],
                            "survival": [
                                1.0,
                                *curve["survival"].astype(float),
                                _survival_at(curve, float("inf")),
                            ],
                        }
                    )
                )
                at_risk.append(
                    pd.DataFrame(
                        {"endpoint": endpoint.name, "group": label, "day": days, "at_risk": risk}
                    )
                )
    table = pd.DataFrame(
        rows,
        columns=[
            "Endpoint",
            "Group",
            "N",
            "Events",
            *[f"Day {day}" for day in days],
            f"% with event by day {last}",
        ],
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            "Kaplan–Meier estimates from randomisation (statsmodels' product-limit estimate). "
            "Serious adverse events and AESIs: the first treatment-emergent one, in the safety "
            "population; discontinuation: leaving the study other than by completing it, among "
            "the randomised. Participants without the event are censored when they left the "
            "study or at the data cut-off.",
        ),
        tables=(
            ReportTable(
                "Kaplan–Meier estimates and numbers at risk",
                table,
                note="Day columns: numbers at risk, the participants followed to that day "
                "without the event (days from randomisation: the scheduled visits' target days). "
                f"% with event by day {last}: one minus the Kaplan–Meier estimate. A "
                "discontinuation without a recorded date counts at the cut-off.",
            ),
        ),
        figures=(
            FigureData(
                kind="kaplan_meier",
                title="Time to first serious adverse event, first AESI and study discontinuation",
                data={
                    "curves": pd.concat(curves, ignore_index=True)
                    if curves
                    else pd.DataFrame(columns=["endpoint", "group", "time", "survival"]),
                    "at_risk": pd.concat(at_risk, ignore_index=True)
                    if at_risk
                    else pd.DataFrame(columns=["endpoint", "group", "day", "at_risk"]),
                },
                caption="Proportion free of the event (Kaplan–Meier), with the numbers at risk "
                "under each panel.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, time_to_event_section)
