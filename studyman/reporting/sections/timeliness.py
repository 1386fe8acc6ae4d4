"""SAE reporting timeliness."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.protocol.clocks import (
    clock_applies,
    clock_reading_time,
    clock_report_field,
    clock_start,
    clock_status,
    clock_unassessable_reason,
)
from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _codes,
    _fmt_num,
)
from studyman.reporting.sections.shared import (
    _adverse_events_or_unavailable,
    _arm_column,
    _fmt_date,
)

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "timeliness"
TITLE = "SAE reporting timeliness"
TABLE_IDS: tuple[str, ...] = (
    "timeliness.reporting-clocks",
    "timeliness.late-missing-or-undated-reports",
)


def reporting_timeliness_section(inputs: DsmbInputs) -> Section:
    """Safety reporting timeliness against every protocol clock (from site awareness).

    Notes
    -----
    Which events each clock applies to, and its day 0, follow :mod:`studyman.protocol.clocks`
    (the same rules as the validation checks): SAE = serious; SUSAR = serious, suspected and
    unexpected (fatal or life-threatening by the death/life-threatening criteria or a fatal
    outcome); suicide death = fatal outcome with the suicidality AESI; unanticipated problem = the
    investigator's judgement. Each event is on time, late, missing (no report although the
    deadline passed before the end of the cut-off day) or not yet due. Counts are pooled over
    arms in both sessions: the table reads no arm.
    """
    protocol = inputs.protocol
    ae_spec = protocol.adverse_events
    events = _adverse_events_or_unavailable(inputs, SECTION_ID, TITLE)
    if isinstance(events, Section):
        return events
    as_of = clock_reading_time(inputs.cutoff)
    aware = pd.to_datetime(events[ae_spec.awareness_field])
    start = clock_start(
        aware,
        pd.to_datetime(events[ae_spec.start_field]),
        events["serious"].to_numpy(dtype=bool),
    )

    def codes(name: str) -> np.ndarray:
        if name not in events.columns:
            return np.full(len(events), "", dtype=object)
        return np.asarray(_codes(events[name]).fillna("").to_numpy(dtype=object), dtype=object)

    rows = []
    late_rows = []
    for clock in protocol.reporting_clocks:
        field = clock_report_field(clock, ae_spec)
        applies = clock_applies(clock, ae_spec, codes)
        reason = clock_unassessable_reason(clock, ae_spec)
        if field is None or applies is None or field not in events.columns:
            rows.append(
                {
                    "Clock": clock.label,
                    "Limit (hours)": str(clock.limit_hours),
                    "Cases": "not assessable",
                    "On time": "–",
                    "Late": "–",
                    "Missing (past due)": "–",
                    "Not yet due": "–",
                    "Median hours": "–",
                    "Note": reason or f"the snapshot has no '{field}' column",
                }
            )
            continue
        sent = pd.to_datetime(events[field])
        hours, status = clock_status(start, sent, clock.limit_hours, as_of)
        picked = np.flatnonzero(applies)
        h = pd.Series(hours[picked], dtype="float64")
        st = status[picked]
        no_start = int((st == "no_start").sum())
        rows.append(
            {
                "Clock": clock.label,
                "Limit (hours)": str(clock.limit_hours),
                "Cases": str(len(picked)),
                "On time": str(int((st == "on_time").sum())),
                "Late": str(int((st == "late").sum())),
                "Missing (past due)": str(int((st == "missing").sum())),
                "Not yet due": str(int((st == "not_yet_due").sum())),
                "Median hours": _fmt_num(float(h.median()), 1) if h.notna().any() else "–",
                "Note": f"{no_start} without an awareness date" if no_start else "",
            }
        )
        for index in picked[np.isin(status[picked], ["late", "missing", "no_start"])]:
            late_rows.append(
                {
                    "Clock": clock.label,
                    "Participant": str(events.loc[index, inputs.key]),
                    **(
                        {"Arm": _arm_column(inputs, events.loc[[index], inputs.key])[0]}
                        if inputs.closed
                        else {}
                    ),
                    "Preferred term": str(events.loc[index, "PT"]),
                    "Aware": _fmt_date(aware[index]),
                    "Reported": _fmt_date(sent[index]),
                    "Hours": _fmt_num(float(hours[index]), 1),
                    "Status": {"late": "late", "missing": "missing", "no_start": "undated"}[
                        str(status[index])
                    ],
                }
            )
    clocks = pd.DataFrame(rows)
    if "Note" in clocks.columns and not clocks["Note"].astype(bool).any():
        clocks = clocks.drop(columns="Note")  # no column of empty cells
    tables = [
        ReportTable(
            "Reporting clocks",
            clocks,
            note=(
                "Day 0 is the site's awareness date and time, not the onset (the onset date for "
                "a non-serious unanticipated problem). Missing: no report although the deadline "
                f"passed by the end of {inputs.cutoff.isoformat()}; not yet due: the deadline "
                "falls after it."
            ),
        )
    ]
    if late_rows:
        tables.append(ReportTable("Late, missing or undated reports", pd.DataFrame(late_rows)))
    return Section(id=SECTION_ID, title=TITLE, tables=tuple(tables))


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, reporting_timeliness_section)
