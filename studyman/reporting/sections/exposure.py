"""Exposure and adherence: CBT sessions and doses."""

from __future__ import annotations

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _group_table,
    _groups,
    _missing,
    _pct,
    _safety,
)
from studyman.reporting.sections.shared import _continuous_rows

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "exposure"
TITLE = "Exposure and adherence"
TABLE_IDS: tuple[str, ...] = (
    "exposure.cbt-sessions-attended",
    "exposure.adjunct-doses-taken",
)


def exposure_section(inputs: DsmbInputs) -> Section:
    """Exposure and adherence: CBT sessions attended; adjunct doses in a closed session only."""
    protocol = inputs.protocol
    missing = _missing(inputs, ("cbt_sessions",))
    safety = _safety(inputs)
    groups = _groups(inputs, safety)
    tables: list[ReportTable] = []
    paragraphs: list[str] = []
    if not missing:
        subjects = inputs.subjects()
        attended = subjects["cbt_attended"]
        planned = protocol.treatment.cbt_sessions_planned
        threshold = protocol.treatment.adherence_threshold
        rows = _continuous_rows("CBT sessions attended", attended, groups)
        adherent = [
            f"  Adherent (≥{threshold:.0%} of {planned} sessions)",
            *[
                _pct(int((attended.reindex(ids) >= threshold * planned).sum()), len(ids))
                for _, ids in groups
            ],
        ]
        rows.append(adherent)
        tables.append(
            _group_table("CBT sessions attended", rows, "Exposure", groups, "Safety population")
        )
    dosing = inputs.table("dosing")
    if not inputs.closed:
        paragraphs.append(
            "Adjunct dosing is recorded on an unblinded form; it is summarised in the closed "
            "session only."
        )
    elif dosing is None:
        paragraphs.append("The snapshot has no 'dosing' form: adjunct doses are not shown.")
    else:
        doses = inputs.subjects()["doses"].astype(int)
        rows = _continuous_rows("Adjunct doses taken", doses.reindex(safety).fillna(0), groups)
        rows.append(
            [
                "  Participants with any dose",
                *[
                    _pct(int((doses.reindex(ids).fillna(0) > 0).sum()), len(ids))
                    for _, ids in groups
                ],
            ]
        )
        tables.append(
            _group_table("Adjunct doses taken", rows, "Exposure", groups, "Safety population")
        )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=tuple(paragraphs),
        tables=tuple(tables),
        missing=missing,
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, exposure_section)
