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
from studyman.reporting.sections.adverse_events import adverse_events_section
from studyman.reporting.sections.base import (
    _KEY,
    TOTAL,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    subjects_table,
)
from studyman.reporting.sections.baseline import baseline_section
from studyman.reporting.sections.conmeds import conmeds_section
from studyman.reporting.sections.data_quality import data_quality_section
from studyman.reporting.sections.definitions import definitions_section
from studyman.reporting.sections.deviations import deviations_section
from studyman.reporting.sections.discontinuations import discontinuation_section
from studyman.reporting.sections.efficacy import efficacy_section
from studyman.reporting.sections.enrolment import enrolment_section
from studyman.reporting.sections.exposure import exposure_section
from studyman.reporting.sections.liver import liver_section
from studyman.reporting.sections.retention import retention_section
from studyman.reporting.sections.screen_failures import screen_failure_section
from studyman.reporting.sections.serious_events import serious_events_section
from studyman.reporting.sections.status import study_status_section
from studyman.reporting.sections.suicidality import suicidality_section
from studyman.reporting.sections.summary import summary_section
from studyman.reporting.sections.timeliness import reporting_timeliness_section
from studyman.reporting.sections.withdrawal import withdrawal_section

__all__ = [
    "SECTION_BUILDERS",
    "TOTAL",
    "DsmbInputs",
    "FigureData",
    "ReportTable",
    "Section",
    "build_sections",
    "cut_tables",
    "report_data",
    "subjects_table",
    "table_id",
    "table_ids",
]


SECTION_BUILDERS: tuple[Callable[[DsmbInputs], Section], ...] = (
    summary_section,
    definitions_section,
    study_status_section,
    enrolment_section,
    screen_failure_section,
    baseline_section,
    retention_section,
    deviations_section,
    data_quality_section,
    exposure_section,
    adverse_events_section,
    serious_events_section,
    discontinuation_section,
    suicidality_section,
    withdrawal_section,
    liver_section,
    conmeds_section,
    reporting_timeliness_section,
    efficacy_section,
)


_HEADINGS: dict[str, tuple[str, str]] = {
    "summary_section": ("summary", "Summary and protocol synopsis"),
    "definitions_section": ("definitions", "Definitions"),
    "study_status_section": ("status", "Study status"),
    "enrolment_section": ("enrolment", "Enrolment against target"),
    "screen_failure_section": ("screen-failures", "Screen failures"),
    "baseline_section": ("baseline", "Baseline characteristics"),
    "retention_section": ("retention", "Retention and visit completion"),
    "deviations_section": ("deviations", "Protocol deviations"),
    "data_quality_section": ("data-quality", "Data quality and timeliness"),
    "exposure_section": ("exposure", "Exposure and adherence"),
    "adverse_events_section": ("adverse-events", "Adverse events"),
    "serious_events_section": ("sae", "Serious adverse events and deaths"),
    "discontinuation_section": ("discontinuations", "Discontinuations due to adverse events"),
    "suicidality_section": ("aesi-suicidality", "AESI: suicidality (C-SSRS)"),
    "withdrawal_section": ("aesi-withdrawal", "AESI: withdrawal (COWS)"),
    "liver_section": ("aesi-liver", "AESI: liver injury and Hy's law"),
    "conmeds_section": ("conmeds", "Concomitant medications of interest"),
    "reporting_timeliness_section": ("timeliness", "SAE reporting timeliness"),
    "efficacy_section": ("efficacy", "Efficacy"),
}


def _participant_ids(inputs: DsmbInputs) -> frozenset[str]:
    ids: set[str] = set()
    for frame in inputs.tables.values():
        if _KEY in frame.columns:
            ids.update(str(value) for value in frame[_KEY].dropna())
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
