"""The closed DSMB report's AE dot chart: per preferred term, each arm's incidence (left panel)
and the risk difference with its 95% interval (right panel), terms in the same rows.

:func:`draw_ae_dot_chart` returns PNG bytes like every figure kind of the report;
:func:`ae_dot_chart_svg` the same drawing as SVG text (a vector figure for a reader who zooms).
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from studyman.protocol.models import Protocol
from studyman.reporting.figure_style import COLOURS, STYLE
from studyman.reporting.sections.base import FigureData

__all__ = ["ae_dot_chart_svg", "draw_ae_dot_chart"]

_COLOURS = COLOURS
_MARKERS = ("o", "s", "D", "^", "v")
_STYLE: Any = {
    **STYLE,
    "svg.fonttype": "none",  # labels stay text in the SVG (searchable, read aloud)
}


def _draw(figure_data: FigureData) -> Figure:
    incidence = figure_data.data["incidence"]
    difference = figure_data.data["difference"]
    comparisons = list(dict.fromkeys(difference["comparison"])) if len(difference) else []
    first = difference[difference["comparison"] == comparisons[0]] if comparisons else difference
    # terms ordered by the first comparison's risk difference, largest at the top
    terms = list(first.sort_values("difference", kind="stable")["term"]) if len(first) else []
    rows = {term: i for i, term in enumerate(terms)}
    groups = list(dict.fromkeys(incidence["group"])) if len(incidence) else []
    figure, (left, right) = plt.subplots(
        1,
        2,
        figsize=(7.2, 1.0 + 0.28 * max(len(terms), 3)),
        sharey=True,
        gridspec_kw={"width_ratios": [1, 1]},
    )
    if not terms:
        left.text(0.5, 0.5, "No treatment-emergent adverse event", ha="center")
    for index, group in enumerate(groups):
        part = incidence[(incidence["group"] == group) & incidence["term"].isin(rows)]
        left.scatter(
            part["percent"],
            [rows[t] for t in part["term"]],
            color=_COLOURS[index % len(_COLOURS)],
            marker=_MARKERS[index % len(_MARKERS)],
            s=22,
            label=str(group),
            zorder=3,
        )
    left.set_yticks(range(len(terms)), terms)
    left.set_xlabel("Participants with the event (%)")
    highest = float(incidence["percent"].max()) if len(incidence) else 1.0
    left.set_xlim(-0.04 * max(highest, 1.0), 1.1 * max(highest, 1.0))
    left.grid(alpha=0.3, axis="x")
    if groups:  # above the panel: never over a dot
        left.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(groups), frameon=False)
    offsets = (
        [0.0]
        if len(comparisons) <= 1
        else [(i - (len(comparisons) - 1) / 2) * 0.22 for i in range(len(comparisons))]
    )
    for index, comparison in enumerate(comparisons):
        part = difference[(difference["comparison"] == comparison) & difference["term"].isin(rows)]
        y = [rows[t] + offsets[index] for t in part["term"]]
        right.errorbar(
            part["difference"],
            y,
            xerr=[part["difference"] - part["lower"], part["upper"] - part["difference"]],
            fmt="o",
            color=_COLOURS[(index + 1) % len(_COLOURS)],
            markersize=4,
            capsize=2,
            label=str(comparison),
        )
    right.axvline(0, color="#555555", linewidth=0.8)
    right.set_xlabel("Risk difference (percentage points, 95% CI)")
    right.grid(alpha=0.3, axis="x")
    if comparisons:
        right.legend(
            loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(comparisons), frameon=False
        )
    figure.tight_layout()
    return figure


def draw_ae_dot_chart(figure_data: FigureData, protocol: Protocol) -> bytes:
    """The dot chart of ``incidence`` (term, group, percent) and ``difference`` (term,
    comparison, difference, lower, upper; percentage points); PNG bytes."""
    with plt.rc_context(_STYLE):
        figure = _draw(figure_data)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
        plt.close(figure)
    return buffer.getvalue()


def ae_dot_chart_svg(figure_data: FigureData) -> str:
    """The same chart as :func:`draw_ae_dot_chart`, as SVG text (no date, fixed ids)."""
    with plt.rc_context(_STYLE):
        figure = _draw(figure_data)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(figure)
    return buffer.getvalue()
