"""The interim-monitoring figure: the observed Z against the group-sequential boundaries.

Registered in :data:`studyman.reporting.figures.FIGURE_KINDS` as ``interim_boundaries``; the
data come from :mod:`studyman.reporting.sections.interim`.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from studyman.protocol.models import Protocol
from studyman.reporting.sections.base import FigureData

__all__ = ["draw_interim_boundaries"]

_DPI = 110
_STYLE: Any = {
    "font.size": 8.5,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
}


def draw_interim_boundaries(figure_data: FigureData, protocol: Protocol) -> bytes:
    """Efficacy (and, two-sided, lower) boundary by information fraction, and the observed Z."""
    boundaries = figure_data.data["boundaries"]
    observed = figure_data.data["observed"]
    fractions = boundaries["information_fraction"].to_numpy(dtype=float)
    upper = boundaries["upper"].to_numpy(dtype=float)
    lower = boundaries["lower"].to_numpy(dtype=float)
    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(figsize=(6.0, 2.8))
        axes.plot(fractions, upper, marker="o", color="#1f5a96", label="Efficacy boundary")
        if np.isfinite(lower).all():
            axes.plot(fractions, lower, marker="o", color="#7f7f7f", label="Lower boundary")
        axes.axhline(0.0, color="#bbbbbb", linewidth=0.6)
        axes.scatter(
            observed["information_fraction"].to_numpy(dtype=float),
            observed["z"].to_numpy(dtype=float),
            marker="D",
            s=40,
            color="#c8702a",
            zorder=3,
            label="Observed Z",
        )
        axes.set_xlim(0.0, 1.05)
        axes.set_xlabel("Information fraction")
        axes.set_ylabel("Standardised statistic (Z)")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
        plt.close(figure)
    return buffer.getvalue()
