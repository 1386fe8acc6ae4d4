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
    _scale_label,
)
from studyman.reporting.sections.shared import _continuous_rows

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "exposure"
TITLE = "Exposure and adherence"
TABLE_IDS: tuple[str, ...] = (
    "exposure.sessions-attended",
    "exposure.doses-taken",
)


def exposure_section(inputs: DsmbInputs) -> Section:
    """Exposure and adherence: treatment sessions attended; doses taken (a closed session only
    when the dosing log is an unblinded form; "Does not apply" when the protocol declares
    none)."""
    protocol = inputs.protocol
    treatment = protocol.treatment
    missing = _missing(inputs, (treatment.sessions.form,))
    safety = _safety(inputs)
    groups = _groups(inputs, safety)
    tables: list[ReportTable] = []
    paragraphs: list[str] = []
    if not missing:
        subjects = inputs.subjects()
        attended = subjects["sessions"]
        planned = treatment.cbt_sessions_planned
        threshold = treatment.adherence_threshold
        rows = _continuous_rows("Sessions attended", attended, groups)
        adherent = [
            f"  Adherent (≥{threshold:.0%} of {planned} sessions)",
            *[
                _pct(int((attended.reindex(ids) >= threshold * planned).sum()), len(ids))
                for _, ids in groups
            ],
        ]
        rows.append(adherent)
        tables.append(
            _group_table(
                "Sessions attended",
                rows,
                "Exposure",
                groups,
                "Safety population",
                note=f"From the '{_scale_label(protocol, treatment.sessions.form)}' form.",
            )
        )
    doses_log = treatment.doses
    if doses_log is None:
        paragraphs.append(
            "Does not apply: the protocol declares no dosing log (doses taken are not shown)."
        )
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=tuple(paragraphs),
            tables=tuple(tables),
            missing=missing,
        )
    dosing = inputs.table(doses_log.form)
    dosing_label = _scale_label(protocol, doses_log.form)
    if not inputs.closed and doses_log.form in protocol.blinding.unblinded_forms:
        paragraphs.append(
            f"Doses are recorded on an unblinded form ('{dosing_label}'); they are summarised "
            "in the closed session only."
        )
    elif dosing is None:
        paragraphs.append(
            f"The snapshot has no '{doses_log.form}' form: doses taken are not shown."
        )
    else:
        doses = inputs.subjects()["doses"].astype(int)
        rows = _continuous_rows("Doses taken", doses.reindex(safety).fillna(0), groups)
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
            _group_table(
                "Doses taken",
                rows,
                "Exposure",
                groups,
                "Safety population",
                note=f"From the '{dosing_label}' form.",
            )
        )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=tuple(paragraphs),
        tables=tuple(tables),
        missing=missing,
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, exposure_section)
