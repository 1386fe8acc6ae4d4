"""AESI: suicidality (C-SSRS)."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
    _KEY,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _codes,
    _count_table,
    _denominators,
    _group_table,
    _member,
)
from studyman.reporting.sections.shared import _adverse_events, _safety_form, _visit_labels

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "aesi-suicidality"
TITLE = "AESI: suicidality (C-SSRS)"
TABLE_IDS: tuple[str, ...] = (
    "aesi-suicidality.participants-with-suicidality-findings",
    "aesi-suicidality.c-ssrs-since-last-visit-by-visit",
)


def suicidality_section(inputs: DsmbInputs) -> Section:
    """AESI suicidality: C-SSRS since last visit over time, PHQ-9 item 9, suicidality AEs."""
    protocol = inputs.protocol
    spec = protocol.cssrs
    found = _safety_form(inputs, spec.since_last_form, SECTION_ID, TITLE)
    if isinstance(found, Section):
        return found
    frame, groups = found
    labels = _visit_labels(protocol)
    ideation = pd.Series(False, index=frame.index)
    for f in spec.gate_fields:
        if f in frame.columns:
            ideation |= (_codes(frame[f]) == "1").fillna(False)
    serious_ideation = pd.Series(False, index=frame.index)
    for f in spec.safety_action_required_ideation:
        if f in frame.columns:
            serious_ideation |= (_codes(frame[f]) == "1").fillna(False)
    behaviour = pd.Series(False, index=frame.index)
    for f in spec.behaviour_fields:
        if f in frame.columns:
            behaviour |= (_codes(frame[f]) == "1").fillna(False)
    flags = pd.DataFrame(
        {
            _KEY: frame[_KEY].astype(str),
            "event": frame[_EVENT].astype(str),
            "ideation": ideation,
            "serious_ideation": serious_ideation,
            "behaviour": behaviour,
        }
    )
    present = set(flags["event"].unique().tolist())
    order = [v.event for v in protocol.visits if v.event in present]
    rows: list[list[str]] = []
    curve_rows = []
    for event in order:
        at = flags[flags["event"] == event]
        row = [labels.get(event, event)]
        for label, ids in groups:
            sub = at[_member(at[_KEY], ids)]
            n = len(sub)
            ide = int(sub["ideation"].sum())
            ser = int((sub["serious_ideation"] | sub["behaviour"]).sum())
            row.append(f"{n}: {ide} / {ser}")
            curve_rows.append(
                {
                    "event": labels.get(event, event),
                    "order": order.index(event),
                    "group": label,
                    "assessed": n,
                    "ideation": ide,
                    "serious": ser,
                }
            )
        rows.append(row)
    per_participant = flags.groupby(_KEY)[["ideation", "serious_ideation", "behaviour"]].any()
    summary_rows = [
        (
            "Any suicidal ideation (since-last-visit C-SSRS)",
            lambda ids: int(
                per_participant["ideation"].reindex(ids.astype(str)).fillna(False).sum()
            ),
        ),
        (
            "Ideation type 4 or 5",
            lambda ids: int(
                per_participant["serious_ideation"].reindex(ids.astype(str)).fillna(False).sum()
            ),
        ),
        (
            "Any suicidal behaviour",
            lambda ids: int(
                per_participant["behaviour"].reindex(ids.astype(str)).fillna(False).sum()
            ),
        ),
    ]
    phq = inputs.table("phq9")
    if phq is not None and "phq9_9" in phq.columns:
        item9 = phq[(pd.to_numeric(phq["phq9_9"], errors="coerce") >= 1).fillna(False).to_numpy()]
        item9_ids = set(item9[_KEY].astype(str))
        summary_rows.append(
            (
                "PHQ-9 item 9 scored 1 or more (any visit)",
                lambda ids: len(item9_ids & set(ids.astype(str))),
            )
        )
    events = _adverse_events(inputs)
    if events is not None:
        aesi = _codes(events[protocol.adverse_events.aesi_field]) == "1"
        aesi_ids = set(events.loc[aesi.fillna(False).to_numpy(), _KEY].astype(str))
        summary_rows.append(
            (
                "Adverse event recorded as suicidality AESI",
                lambda ids: len(aesi_ids & set(ids.astype(str))),
            )
        )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        tables=(
            ReportTable(
                "Participants with suicidality findings",
                _count_table(summary_rows, groups, first="Participants with"),
                "Safety population",
                _denominators(groups),
            ),
            _group_table(
                "C-SSRS since last visit by visit",
                rows,
                "Visit",
                groups,
                "Safety population",
                note="Cells: assessed: any ideation / ideation type 4–5 or any behaviour.",
            ),
        ),
        figures=(
            FigureData(
                kind="cssrs",
                title="C-SSRS since last visit: participants with findings by visit",
                data={"curve": pd.DataFrame(curve_rows)},
                caption="Percentage of participants assessed at each visit.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, suicidality_section)
