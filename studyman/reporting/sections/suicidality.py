"""AESI: suicidality (C-SSRS)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
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
    _pct,
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


#: A score flag's comparison (``protocol.models.Operator``) on a column of values.
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}


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
            inputs.key: frame[inputs.key].astype(str),
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
        # one row per measure under the visit, percentages of those assessed at it (a cell
        # such as "61: 3 / 0" said too little)
        assessed = [labels.get(event, event)]
        any_ideation = ["  Any suicidal ideation"]
        serious = ["  Ideation type 4–5 or any behaviour"]
        for label, ids in groups:
            sub = at[_member(at[inputs.key], ids)]
            n = len(sub)
            ide = int(sub["ideation"].sum())
            ser = int((sub["serious_ideation"] | sub["behaviour"]).sum())
            assessed.append(f"{n} assessed")
            any_ideation.append(_pct(ide, n))
            serious.append(_pct(ser, n))
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
        rows += [assessed, any_ideation, serious]
    per_participant = flags.groupby(inputs.key)[["ideation", "serious_ideation", "behaviour"]].any()
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
    # the scales' suicidality flags: those that call for a since-last-visit C-SSRS
    for scoring in protocol.scoring:
        scale = inputs.table(scoring.instrument)
        for flag in scoring.flags:
            if (
                flag.requires_instrument != spec.since_last_form
                or scale is None
                or flag.field not in scale.columns
            ):
                continue
            values = pd.to_numeric(scale[flag.field], errors="coerce")
            hit = _OPERATORS[flag.op](values, flag.value).fillna(False).to_numpy(bool)
            flagged = set(scale.loc[hit, inputs.key].astype(str))
            summary_rows.append(
                (
                    f"{flag.label} (any visit)",
                    (lambda found: lambda ids: len(found & set(ids.astype(str))))(flagged),
                )
            )
    events = _adverse_events(inputs)
    if events is not None:
        aesi = _codes(events[protocol.adverse_events.aesi_field]) == "1"
        aesi_ids = set(events.loc[aesi.fillna(False).to_numpy(), inputs.key].astype(str))
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
                "Visit: finding",
                groups,
                "Safety population",
                note="Percentages of the participants assessed at the visit.",
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
