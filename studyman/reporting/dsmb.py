"""The DSMB report's orchestration: which sections, in which order, the open session's gate,
table ids and the report as data.

The sections themselves live one per module in :mod:`studyman.reporting.sections` (the
adverse-events tables in ``sections/adverse_events.py``, ...); their shared types and inputs in
:mod:`studyman.reporting.sections.base`. :func:`build_sections` runs every builder of
:data:`SECTION_BUILDERS` on one :class:`DsmbInputs` and, in an open session, withholds any
table that names a participant (:func:`withhold_listings`). :func:`report_data` gives every
table as data, under the ids of :func:`table_ids`. Nothing here reads a file, draws or renders.

An open session is computed with ``arms=None``: every table has one pooled ``Total`` column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from studyman.facts import StudyFacts, cut_tables
from studyman.reporting.sections import (
    adverse_events,
    ae_dot_chart,
    amendments,
    baseline,
    conmeds,
    data_entry,
    data_quality,
    definitions,
    deviations,
    discontinuations,
    efficacy,
    eligibility,
    enrolment,
    executive_summary,
    exposure,
    inclusion,
    interim,
    liver,
    narratives,
    primary_outcome,
    recommendations,
    retention,
    sae_terms,
    screen_failures,
    serious_events,
    status,
    suicidality,
    summary,
    time_to_event,
    timeline,
    timeliness,
    unblinding,
    vital_signs,
    withdrawal,
)
from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    subjects_table,
)

__all__ = [
    "SECTIONS",
    "SECTION_BUILDERS",
    "TOTAL",
    "DsmbInputs",
    "FigureData",
    "ReportTable",
    "Section",
    "SectionSpec",
    "build_sections",
    "cut_tables",
    "report_data",
    "subjects_table",
    "table_id",
    "table_ids",
]


#: Every section of the report, in its order: the spec (anchor, heading, table ids, builder)
#: that each module of :mod:`studyman.reporting.sections` declares.
SECTIONS: tuple[SectionSpec, ...] = (
    executive_summary.SPEC,
    summary.SPEC,
    definitions.SPEC,
    status.SPEC,
    recommendations.SPEC,
    amendments.SPEC,
    enrolment.SPEC,
    timeline.SPEC,
    screen_failures.SPEC,
    eligibility.SPEC,
    baseline.SPEC,
    inclusion.SPEC,
    retention.SPEC,
    deviations.SPEC,
    unblinding.SPEC,
    data_quality.SPEC,
    data_entry.SPEC,
    exposure.SPEC,
    adverse_events.SPEC,
    serious_events.SPEC,
    sae_terms.SPEC,
    ae_dot_chart.SPEC,
    time_to_event.SPEC,
    discontinuations.SPEC,
    suicidality.SPEC,
    withdrawal.SPEC,
    liver.SPEC,
    narratives.SPEC,
    vital_signs.SPEC,
    conmeds.SPEC,
    timeliness.SPEC,
    efficacy.SPEC,
    primary_outcome.SPEC,
    interim.SPEC,
)

SECTION_BUILDERS: tuple[Callable[[DsmbInputs], Section], ...] = tuple(
    spec.build for spec in SECTIONS
)

_HEADINGS: dict[str, tuple[str, str]] = {
    spec.build.__name__: (spec.id, spec.title) for spec in SECTIONS
}


def _participant_ids(inputs: DsmbInputs) -> frozenset[str]:
    ids: set[str] = set()
    for frame in inputs.tables.values():
        if inputs.key in frame.columns:
            ids.update(str(value) for value in frame[inputs.key].dropna())
    return frozenset(ids)


def withhold_listings(section: Section, participant_ids: frozenset[str]) -> Section:
    """The open session's gate: *section* without any table that names a participant.

    A per-participant listing (a ``Participant`` column, or any cell holding a record ID) of
    events whose frequency may differ by arm lets a reader of the open session infer who is in
    which arm; the open session gives pooled counts only, the closed report the listings.
    """
    kept: list[ReportTable] = []
    withheld: list[str] = []
    for table in section.tables:
        frame = table.frame
        names = "Participant" in frame.columns
        if not names and participant_ids and not frame.empty:
            cells = frame.astype("string").to_numpy().ravel()
            names = any(str(cell) in participant_ids for cell in cells)
        if names:
            withheld.append(table.title)
        else:
            kept.append(table)
    if not withheld:
        return section
    note = (
        f"{'; '.join(withheld)}: in the closed report only. The open session gives pooled "
        "counts; a listing of participants could let its readers infer allocation."
    )
    return dataclasses.replace(section, tables=tuple(kept), paragraphs=(*section.paragraphs, note))


def build_sections(inputs: DsmbInputs) -> list[Section]:
    """Every section of the report, in order.

    A section whose form lacks a field it needs (an older data dictionary, a renamed field)
    says which field is missing; the other sections are still produced. In an open session
    no table names a participant (:func:`withhold_listings`).
    """
    sections = []
    ids = frozenset() if inputs.closed else _participant_ids(inputs)
    for builder in SECTION_BUILDERS:
        try:
            section = builder(inputs)
            sections.append(section if inputs.closed else withhold_listings(section, ids))
        except KeyError as error:
            section_id, title = _HEADINGS.get(
                builder.__name__, (builder.__name__, builder.__name__)
            )
            sections.append(
                Section(
                    id=section_id,
                    title=title,
                    paragraphs=(
                        f"This section could not be produced: the field {error} is missing "
                        "from the snapshot.",
                    ),
                    missing=(str(error).strip("'"),),
                )
            )
    return sections


def _slug(text: str) -> str:
    words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
    return "-".join(words) or "table"


def table_id(section: Section, table: ReportTable) -> str:
    """A table's stable id: its section's id and the slug of its title (``adverse-events.
    overview-of-adverse-events``); the same in the HTML (anchor) and the report's JSON."""
    return f"{section.id}.{_slug(table.title)}"


def table_ids(sections: Sequence[Section]) -> list[list[str]]:
    """:func:`table_id` of every table, section by section, made unique by a ``-2``, ``-3``
    suffix when two tables of a section share a title."""
    seen: dict[str, int] = {}
    result: list[list[str]] = []
    for section in sections:
        ids = []
        for table in section.tables:
            identifier = table_id(section, table)
            seen[identifier] = seen.get(identifier, 0) + 1
            ids.append(identifier if seen[identifier] == 1 else f"{identifier}-{seen[identifier]}")
        result.append(ids)
    return result


def _footnote(table: ReportTable) -> str:
    parts = []
    if table.denominators:
        parts.append(
            f"Denominators ({table.population or 'participants'}): "
            + "; ".join(f"{label} N = {n}" for label, n in table.denominators)
            + "."
        )
    if table.note:
        parts.append(table.note)
    return " ".join(parts)


def report_data(sections: Sequence[Section], facts: StudyFacts) -> dict[str, Any]:
    """The report as data: ``{"facts": headline, "tables": [{"id", "title", "columns", "rows",
    "footnote"}]}``, every table as shown (cells as text), in report order.

    The open session's sections are already pooled and its facts blinded, so nothing in it is
    per arm.
    """
    tables: list[dict[str, Any]] = []
    for section, identifiers in zip(sections, table_ids(sections), strict=True):
        for table, identifier in zip(section.tables, identifiers, strict=True):
            frame = table.frame
            tables.append(
                {
                    "id": identifier,
                    "title": table.title,
                    "columns": [str(column) for column in frame.columns],
                    "rows": [
                        ["" if value is None else str(value) for value in row]
                        for row in frame.itertuples(index=False, name=None)
                    ],
                    "footnote": _footnote(table),
                }
            )
    return {"facts": facts.headline(), "tables": tables}
