"""DSMB safety reports: section tables, figures, self-contained HTML and PDF.

The public entry point is :func:`render_dsmb_report` (snapshot in, ``dsmb-<session>-<cutoff>``
HTML and PDF out). The pieces are usable alone: :func:`build_sections` computes every section
from snapshot tables (pure), :func:`draw_figure` draws one figure as PNG, :func:`render_html`
and :func:`html_to_pdf` render.
"""

from __future__ import annotations

from studyman.reporting.dsmb import (
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    build_sections,
    cut_tables,
)
from studyman.reporting.figures import draw_figure
from studyman.reporting.html import AUTHOR, ReportHeader, render_html
from studyman.reporting.pdf import html_to_pdf
from studyman.reporting.report import (
    DsmbReport,
    arm_codes,
    read_randomization_list,
    render_dsmb_report,
)

__all__ = [
    "AUTHOR",
    "DsmbInputs",
    "DsmbReport",
    "FigureData",
    "ReportHeader",
    "ReportTable",
    "Section",
    "arm_codes",
    "build_sections",
    "cut_tables",
    "draw_figure",
    "html_to_pdf",
    "read_randomization_list",
    "render_dsmb_report",
    "render_html",
]
