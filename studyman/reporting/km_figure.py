"""The DSMB report's Kaplan–Meier figure: one panel per endpoint, the proportion free of the
event over days from randomisation per group, and the numbers at risk under each panel."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from studyman.protocol.models import Protocol
from studyman.reporting.figure_style import COLOURS, STYLE
from studyman.reporting.sections.base import FigureData

__all__ = ["draw_kaplan_meier"]

_COLOURS = COLOURS
_STYLE: Any = STYLE


def draw_kaplan_meier(figure_data: FigureData, protocol: Protocol) -> bytes:
    """Step curves of ``curves`` (endpoint, group, time, survival) and the ``at_risk`` rows
    (endpoint, group, day, at_risk) as text under each panel; PNG bytes."""
    curves = figure_data.data["curves"]
    at_risk = figure_data.data["at_risk"]
    names = list(dict.fromkeys(curves["endpoint"])) if len(curves) else []
    groups = list(dict.fromkeys(curves["group"])) if len(curves) else []
    with plt.rc_context(_STYLE):
        panels = max(len(names), 1)
        figure, axes_list = plt.subplots(
            panels, 1, figsize=(7.2, 2.3 * panels + 0.3 * len(groups) * panels), squeeze=False
        )
        if not names:
            axes_list[0][0].text(0.5, 0.5, "No participant to follow", ha="center")
        for axes_row, name in zip(axes_list, names, strict=False):
            axes = axes_row[0]
            for index, group in enumerate(groups):
                part = curves[(curves["endpoint"] == name) & (curves["group"] == group)]
                if part.empty:
                    continue
                axes.step(
                    part["time"],
                    part["survival"],
                    where="post",
                    color=_COLOURS[index % len(_COLOURS)],
                    label=str(group),
                )
            risk = at_risk[at_risk["endpoint"] == name]
            days = sorted(risk["day"].unique())
            axes.set_xlim(0, max(days) * 1.03 if days and max(days) > 0 else 1)
            axes.set_ylim(0, 1.02)
            axes.set_xticks(days)
            axes.set_title(name)
            axes.set_ylabel("Proportion free of event")
            axes.grid(alpha=0.3)
            axes.legend(loc="lower left")
            lines = []
            for group in groups:
                counts = risk[risk["group"] == group].set_index("day")["at_risk"]
                lines.append(f"{group}: " + "  ".join(f"{int(counts.get(day, 0))}" for day in days))
            axes.set_xlabel(
                "Days from randomisation\nNumbers at risk at days "
                + ", ".join(str(int(day)) for day in days)
                + "\n"
                + "\n".join(lines)
            )
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
        plt.close(figure)
        return buffer.getvalue()
