"""The DSMB report as one self-contained, printable HTML document (Jinja2).

Figures are embedded as base64 PNG, the style sheet is inline and nothing is fetched from
anywhere, so the file opens the same offline, in a browser or in WeasyPrint. The ``@page`` rules
put the session, the data cut-off and "Page x of y" on every printed page.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from studyman.reporting.dsmb import ReportTable, Section, table_ids

__all__ = ["AUTHOR", "ReportHeader", "render_html"]

#: The report's author: a centre, never a person.
AUTHOR = "Data Coordinating Centre"
_TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class ReportHeader:
    """What the title page and every page header say.

    Attributes
    ----------
    session
        ``"open"`` or ``"closed"``.
    cutoff
        The data cut-off (ISO date).
    study_id, study_title
        From the protocol.
    provenance
        (label, value) rows of the title page: snapshot hash, plan version, studyman version...
    studyman_version
        The package version.
    """

    session: str
    cutoff: str
    study_id: str
    study_title: str
    provenance: tuple[tuple[str, str], ...]
    studyman_version: str


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


#: Listing columns whose short values must not wrap (an "Arm / B" cell doubled every row).
_NOWRAP_COLUMNS = frozenset({"Arm", "Participant"})


def _cell(text: str, first: bool, nowrap: bool = False) -> dict[str, str]:
    stripped = text.lstrip(" ")
    depth = len(text) - len(stripped)
    cls = ""
    if first and depth >= 4:
        cls = "indent2"
    elif first and depth >= 2:
        cls = "indent"
    elif nowrap:
        cls = "nowrap"
    return {"text": stripped, "cls": cls}


def _table(table: ReportTable, number: int, identifier: str) -> dict[str, object]:
    frame = table.frame
    nowrap = [str(column) in _NOWRAP_COLUMNS for column in frame.columns]
    rows = [
        [
            _cell("" if value is None else str(value), i == 0, nowrap[i])
            for i, value in enumerate(row)
        ]
        for row in frame.itertuples(index=False, name=None)
    ]
    denominators = "; ".join(f"{label} N = {n}" for label, n in table.denominators)
    return {
        "id": identifier,
        "number": number,
        "title": table.title,
        "columns": [str(c) for c in frame.columns],
        "rows": rows,
        "population": table.population or "participants",
        "denominators": denominators,
        "note": table.note,
    }


def render_html(
    header: ReportHeader, sections: Sequence[Section], figures: Sequence[Sequence[bytes]]
) -> str:
    """Render the report.

    Parameters
    ----------
    header
        Title-page and page-header facts.
    sections
        The computed sections.
    figures
        For each section, the PNG bytes of its figures (same order as ``section.figures``).
    """
    closed = header.session == "closed"
    table_number = 0
    figure_number = 0
    context_sections = []
    identifiers = table_ids(sections)
    for section, pngs, ids in zip(sections, figures, identifiers, strict=True):
        tables = []
        for table, identifier in zip(section.tables, ids, strict=True):
            table_number += 1
            tables.append(_table(table, table_number, identifier))
        section_figures = []
        for spec, png in zip(section.figures, pngs, strict=True):
            figure_number += 1
            section_figures.append(
                {
                    "number": figure_number,
                    "title": spec.title,
                    "caption": spec.caption,
                    "png": base64.b64encode(png).decode("ascii"),
                }
            )
        context_sections.append(
            {
                "id": section.id,
                "title": section.title,
                "paragraphs": section.paragraphs,
                "missing": section.missing,
                "tables": tables,
                "figures": section_figures,
            }
        )
    session_text = (
        "Closed session: results by arm, for the members of the DSMB and the unblinded "
        "statistician only. Do not copy or forward."
        if closed
        else "Open session: all results pooled over the arms; may be seen by the investigators "
        "and the sponsor."
    )
    template = _environment().get_template("dsmb.html.j2")
    return template.render(
        author=AUTHOR,
        session_label=header.session.upper(),
        closed=closed,
        accent="#a01c1c" if closed else "#1f5a96",
        session_text=session_text,
        cutoff=header.cutoff,
        study_id=header.study_id,
        study_title=header.study_title,
        provenance=header.provenance,
        studyman_version=header.studyman_version,
        sections=context_sections,
    )
