"""The look every report figure shares: the arm colours and the matplotlib style."""

from __future__ import annotations

from typing import Any

__all__ = ["COLOURS", "STYLE"]

COLOURS = ("#1f5a96", "#c8702a", "#3c8d53", "#8a3b8f", "#7f7f7f")
"""Colours of the groups (pooled, or arms in the closed session's order), colour-blind safe."""

STYLE: dict[str, Any] = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "svg.hashsalt": "studyman",
}
"""matplotlib rcParams of every figure (a fixed SVG hash salt keeps SVG output reproducible)."""
