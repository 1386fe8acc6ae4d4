"""Serious adverse events tabulated by system organ class and preferred term (pooled in the open
session, by arm in the closed one)."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _denominators,
    _groups,
    _header,
    _member,
    _pct,
)
from studyman.reporting.sections.executive_summary import safety_ids
from studyman.reporting.sections.shared import _adverse_events_or_unavailable

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "sae-terms"
TITLE = "Serious adverse events by system organ class and preferred term"
TABLE_IDS: tuple[str, ...] = ("sae-terms.participants-with-a-serious-adverse-event-by-soc-and-pt",)

ANY = "Any serious treatment-emergent adverse event"


def sae_terms_section(inputs: DsmbInputs) -> Section:
    """Participants with a serious TEAE, overall, by SOC and by PT within SOC (n, %)."""
    events = _adverse_events_or_unavailable(inputs, SECTION_ID, TITLE)
    if isinstance(events, Section):
        return events
    key = inputs.protocol.study.record_id_field
    serious = events[events["serious"].to_numpy(bool)]
    frame = pd.DataFrame(
        {
            "id": serious[key].astype(str).to_numpy(),
            "SOC": serious["SOC"].astype(str).to_numpy(),
            "PT": serious["PT"].astype(str).to_numpy(),
        }
    )
    groups = _groups(inputs, safety_ids(inputs))
    # participants per (SOC), (SOC, PT) and overall, in each group: one pass per group
    per_group: list[tuple[pd.Series, pd.Series, int]] = []
    for _, ids in groups:
        mine = frame[_member(frame["id"], ids)]
        per_group.append(
            (
                mine.groupby("SOC")["id"].nunique(),
                mine.groupby(["SOC", "PT"])["id"].nunique(),
                int(mine["id"].nunique()),
            )
        )
    total_soc, total_pt, _ = per_group[-1]
    rows = [
        [ANY, *[_pct(n, len(ids)) for (_, _, n), (_, ids) in zip(per_group, groups, strict=True)]]
    ]
    for soc in sorted(total_soc.index, key=lambda s: (-int(total_soc[s]), s)):
        rows.append(
            [
                soc,
                *[
                    _pct(int(c.get(soc, 0)), len(ids))
                    for (c, _, _), (_, ids) in zip(per_group, groups, strict=True)
                ],
            ]
        )
        terms = total_pt.loc[soc]
        for pt in sorted(terms.index, key=lambda p: (-int(terms[p]), p)):
            rows.append(
                [
                    f"  {pt}",
                    *[
                        _pct(int(c.get((soc, pt), 0)), len(ids))
                        for (_, c, _), (_, ids) in zip(per_group, groups, strict=True)
                    ],
                ]
            )
    table = pd.DataFrame(
        rows,
        columns=[
            "System organ class / preferred term",
            *[_header(label, len(ids)) for label, ids in groups],
        ],
    )
    n_events = int(_member(frame["id"], groups[-1][1]).sum())
    n_participants = per_group[-1][2]
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{n_events} serious treatment-emergent adverse event{'' if n_events == 1 else 's'} "
            f"in {n_participants} participant{'' if n_participants == 1 else 's'} of the safety "
            "population, by the study coding list's system organ class and preferred term.",
        ),
        tables=(
            ReportTable(
                "Participants with a serious adverse event by SOC and PT",
                table,
                "Safety population",
                _denominators(groups),
                note="A participant is counted once per row however many events they had; "
                "classes and terms in decreasing order of the total count.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, sae_terms_section)
