"""Figures of the DSMB report, drawn with matplotlib (Agg) as PNG bytes.

Each drawing function takes a :class:`~studyman.reporting.dsmb.FigureData` and returns PNG
bytes; the PNG metadata is fixed (no time stamp) so the same data always give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from studyman.protocol.models import Protocol
from studyman.reporting.ae_dot_figure import draw_ae_dot_chart
from studyman.reporting.dsmb import TOTAL, FigureData
from studyman.reporting.figure_style import COLOURS, STYLE
from studyman.reporting.interim_figure import draw_interim_boundaries
from studyman.reporting.km_figure import draw_kaplan_meier

__all__ = ["FIGURE_KINDS", "draw_figure"]

_DPI = 110
_COLOURS = COLOURS
_STYLE: Any = STYLE


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _arms_only(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the pooled group when arms are shown (closed session)."""
    if "group" in frame.columns and frame["group"].nunique() > 1:
        return frame[frame["group"] != TOTAL]
    return frame


def _colour(index: int) -> str:
    return _COLOURS[index % len(_COLOURS)]


def _box(
    axes: Any, x: float, y: float, text: str, width: float = 0.34, fontsize: float = 7.2
) -> None:
    height = 0.028 + 0.024 * text.count("\n") * fontsize / 7.2
    axes.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.006",
            linewidth=0.8,
            edgecolor="#333333",
            facecolor="#f4f6f9",
        )
    )
    axes.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(axes: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    axes.annotate(
        "", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "linewidth": 0.8}
    )


def draw_consort(figure_data: FigureData, protocol: Protocol) -> bytes:
    """CONSORT flow diagram from the counts of the study-status section."""
    nodes = figure_data.data["flow"].iloc[0]["nodes"]
    arms = list(nodes["arms"])
    if len(arms) > 1:
        arms = [a for a in arms if a["label"] != TOTAL]
    with plt.rc_context(_STYLE):
        figure = plt.figure(figsize=(7.2, 6.4))
        axes = figure.add_axes((0, 0, 1, 1))
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.axis("off")
        _box(axes, 0.5, 0.95, f"Assessed for eligibility (n={nodes['assessed']})")
        reasons = "\n".join(f"{k}: {v}" for k, v in nodes["excluded_reasons"].items())
        excluded = f"Not randomised (n={nodes['excluded']})" + (f"\n{reasons}" if reasons else "")
        _box(axes, 0.8, 0.83, excluded, width=0.36)
        _arrow(axes, 0.5, 0.935, 0.5, 0.735)
        axes.plot([0.5, 0.62], [0.83, 0.83], color="#333333", linewidth=0.8)
        _box(axes, 0.5, 0.72, f"Randomised (n={nodes['randomised']})")
        count = len(arms)
        # one lane per arm between the lane labels (left) and the edge, with a gap between
        # boxes: any number of arms, no box touching another or a label
        left, right = 0.07, 0.99
        slot = (right - left) / count
        xs = [0.5] if count == 1 else [left + slot * (i + 0.5) for i in range(count)]
        width = 0.44 if count == 1 else min(0.44, slot - 0.025)
        size = 7.2 if count <= 3 else max(5.0, 7.2 * 3 / count)
        for x, arm in zip(xs, arms, strict=True):
            _arrow(axes, 0.5, 0.705, float(x), 0.63)
            allocated = (
                f"Allocated to {arm['label']} (n={arm['allocated']})"
                if count > 1
                else f"Allocated (n={arm['allocated']})"
            )
            _box(
                axes,
                float(x),
                0.595,
                f"{allocated}\nReceived intervention (n={arm['received']})",
                width,
                size,
            )
            reasons = "\n".join(f"  {k}: {v}" for k, v in dict(arm["discontinued_reasons"]).items())
            follow = (
                f"Lost to follow-up (n={arm['lost']})\n"
                f"Discontinued (n={arm['discontinued']})" + (f"\n{reasons}" if reasons else "")
            )
            _arrow(axes, float(x), 0.56, float(x), 0.47)
            _box(axes, float(x), 0.38, follow, width, size)
            _arrow(axes, float(x), 0.27, float(x), 0.2)
            _box(
                axes,
                float(x),
                0.15,
                f"Completed (n={arm['completed']}); ongoing (n={arm['ongoing']})\n"
                f"Analysed (n={arm['analysed']})",
                width,
                size,
            )
        for y, label in (
            (0.72, "Enrolment"),
            (0.595, "Allocation"),
            (0.38, "Follow-up"),
            (0.15, "Analysis"),
        ):
            axes.text(0.01, y, label, fontsize=7.5, color="#555555", rotation=90, va="center")
        return _png(figure)


def draw_enrolment(figure_data: FigureData, protocol: Protocol) -> bytes:
    """Cumulative randomisation against a linear target, overall and one panel per site."""
    curve = figure_data.data["curve"]
    sites = figure_data.data["sites"]
    plan = figure_data.data["plan"].iloc[0]
    n_sites = len(sites)
    with plt.rc_context(_STYLE):
        figure = plt.figure(figsize=(7.2, 3.0 + 1.6 * ((n_sites + 1) // 2)))
        grid = figure.add_gridspec(
            1 + (n_sites + 1) // 2, 2, height_ratios=[1.6] + [1] * ((n_sites + 1) // 2)
        )
        overall = figure.add_subplot(grid[0, :])
        cutoff = pd.Timestamp(plan["cutoff"])

        def panel(
            axes: Any,
            dates: pd.Series,
            start: Any,
            end: Any,
            target: int,
            title: str,
            wide: bool = False,
        ) -> None:
            dates = pd.to_datetime(dates).sort_values()
            if len(dates):
                xs = [pd.Timestamp(start), *dates.tolist(), cutoff]
                ys = [0, *range(1, len(dates) + 1), len(dates)]
                axes.step(xs, ys, where="post", color=_colour(0), linewidth=1.3, label="Randomised")
            axes.plot(
                [pd.Timestamp(start), pd.Timestamp(end)],
                [0, target],
                linestyle="--",
                color="#777777",
                linewidth=1.0,
                label=f"Target ({target})",
            )
            axes.axvline(cutoff, color="#aa2222", linewidth=0.8, linestyle=":", label="Cut-off")
            axes.set_title(title)
            axes.set_ylabel("Participants")
            # few, unrotated ticks (the year shown once): the per-site panels are narrow
            first, last = pd.Timestamp(start), max(pd.Timestamp(end), cutoff)
            months = max(1, (last.year - first.year) * 12 + last.month - first.month)
            interval = max(1, -(-months // (6 if wide else 3)))
            # matplotlib.dates is untyped
            locator = mdates.MonthLocator(interval=interval)  # type: ignore[no-untyped-call]
            formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
            axes.xaxis.set_major_locator(locator)
            axes.xaxis.set_major_formatter(formatter)
            axes.grid(alpha=0.3)

        panel(
            overall,
            curve["date"],
            plan["start"],
            plan["end"],
            int(plan["target"]),
            "All sites",
            wide=True,
        )
        overall.legend(loc="upper left")
        for index, row in enumerate(sites.itertuples(index=False)):
            axes = figure.add_subplot(grid[1 + index // 2, index % 2])
            panel(
                axes,
                curve.loc[curve["site"] == row.site, "date"],
                row.activation,
                plan["end"],
                int(str(row.target)),
                str(row.site),
            )
        figure.tight_layout()
        return _png(figure)


def draw_cssrs(figure_data: FigureData, protocol: Protocol) -> bytes:
    """Percentage with any ideation and with serious ideation/behaviour by visit."""
    curve = _arms_only(figure_data.data["curve"])
    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(figsize=(7.2, 3.0))
        if curve.empty:
            axes.text(0.5, 0.5, "No C-SSRS assessments", ha="center", transform=axes.transAxes)
        else:
            labels = curve.drop_duplicates("order").sort_values("order")["event"].tolist()
            for index, (group, part) in enumerate(curve.groupby("group", sort=False)):
                part = part.sort_values("order")
                assessed = part["assessed"].replace(0, np.nan).astype(float)
                axes.plot(
                    part["order"],
                    100 * part["ideation"] / assessed,
                    marker="o",
                    color=_colour(index),
                    label=f"{group}: any ideation",
                )
                axes.plot(
                    part["order"],
                    100 * part["serious"] / assessed,
                    marker="s",
                    linestyle="--",
                    color=_colour(index),
                    label=f"{group}: ideation 4–5 or behaviour",
                )
            axes.set_xticks(range(len(labels)))
            axes.set_xticklabels([label.split(" (")[0] for label in labels], rotation=30)
            axes.set_ylabel("% of participants assessed")
            axes.legend(loc="upper right")
            axes.grid(alpha=0.3)
        figure.tight_layout()
        return _png(figure)


def _band_colour(index: int, count: int) -> Any:
    """The lowest band grey, the others ever darker orange-red from a clearly visible start
    (the pale end of the map made "none" and "mild" look alike)."""
    if index == 0:
        return "#cfcfcf"
    return plt.get_cmap("OrRd")(0.4 + 0.55 * (index - 1) / max(1, count - 2))


def draw_withdrawal_bands(figure_data: FigureData, protocol: Protocol) -> bytes:
    """Stacked bars of the withdrawal scale's bands per visit (and group)."""
    bars = _arms_only(figure_data.data["bars"])
    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(figsize=(7.2, 2.8))
        if bars.empty:
            axes.text(0.5, 0.5, "No assessments", ha="center", transform=axes.transAxes)
        else:
            bars = bars.assign(column=bars["event"].str.split(" \\(").str[0] + "\n" + bars["group"])
            columns = list(dict.fromkeys(bars["column"]))
            bands = list(dict.fromkeys(bars["band"]))
            bottom = np.zeros(len(columns))
            totals = np.array(
                [bars.loc[bars["column"] == c, "count"].sum() for c in columns], dtype=float
            )
            totals[totals == 0] = np.nan
            for index, band in enumerate(bands):
                values = np.array(
                    [
                        bars.loc[(bars["column"] == c) & (bars["band"] == band), "count"].sum()
                        for c in columns
                    ],
                    dtype=float,
                )
                share = np.nan_to_num(100 * values / totals)
                axes.bar(
                    range(len(columns)),
                    share,
                    bottom=bottom,
                    label=band,
                    color=_band_colour(index, len(bands)),
                    edgecolor="#555555",
                    linewidth=0.5,
                )
                bottom += share
            axes.set_xticks(range(len(columns)))
            axes.set_xticklabels(columns)
            axes.set_ylabel("% of participants assessed")
            axes.set_ylim(0, 100)
            instrument = protocol.withdrawal.instrument if protocol.withdrawal else ""
            scoring = next((s for s in protocol.scoring if s.instrument == instrument), None)
            scale = scoring.label if scoring is not None and scoring.label else "Score"
            axes.legend(title=f"{scale} band", loc="center left", bbox_to_anchor=(1.0, 0.5))
        figure.tight_layout()
        return _png(figure)


def draw_edish(figure_data: FigureData, protocol: Protocol) -> bytes:
    """eDISH: peak ALT or AST (×ULN) against peak total bilirubin (×ULN), log axes."""
    points = figure_data.data["points"]
    hy = protocol.liver.hys_law
    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(figsize=(6.0, 4.6))
        points = points.dropna(subset=["transaminase", "bilirubin"])
        points = points[(points["transaminase"] > 0) & (points["bilirubin"] > 0)]
        # One scatter in record order, so that no arm is drawn over the other.
        points = points.sort_values("participant_id")
        groups = sorted(points["group"].unique())
        colours = {group: _colour(index) for index, group in enumerate(groups)}
        size, alpha = (14, 0.75) if len(points) < 500 else (5, 0.45)
        axes.scatter(
            points["transaminase"],
            points["bilirubin"],
            s=size,
            alpha=alpha,
            c=[colours[group] for group in points["group"]],
            edgecolors="none",
        )
        for group in groups:
            axes.scatter([], [], s=14, color=colours[group], label=str(group))
        quadrant = points[
            (points["transaminase"] > hy.transaminase_multiple)
            & (points["bilirubin"] > hy.bilirubin_multiple)
        ]
        axes.scatter(
            quadrant["transaminase"],
            quadrant["bilirubin"],
            s=70,
            facecolors="none",
            edgecolors="#aa2222",
            linewidths=0.9,
        )
        for row in quadrant.itertuples(index=False):
            axes.annotate(
                str(row.participant_id),
                (float(str(row.transaminase)), float(str(row.bilirubin))),
                xytext=(5, -9),
                textcoords="offset points",
                fontsize=6.5,
                color="#aa2222",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        low_x = min(0.1, float(points["transaminase"].min()) if len(points) else 0.1)
        low_y = min(0.1, float(points["bilirubin"].min()) if len(points) else 0.1)
        high_x = max(20.0, float(points["transaminase"].max()) * 1.5 if len(points) else 20.0)
        high_y = max(10.0, float(points["bilirubin"].max()) * 1.5 if len(points) else 10.0)
        axes.set_xlim(low_x, high_x)
        axes.set_ylim(low_y, high_y)
        axes.axvline(hy.transaminase_multiple, color="#aa2222", linestyle="--", linewidth=0.9)
        axes.axhline(hy.bilirubin_multiple, color="#aa2222", linestyle="--", linewidth=0.9)
        axes.text(
            hy.transaminase_multiple * 1.05,
            low_y * 1.1,
            f"{hy.transaminase_multiple:g}×ULN",
            color="#aa2222",
            fontsize=7,
        )
        axes.text(
            low_x * 1.1,
            hy.bilirubin_multiple * 1.08,
            f"{hy.bilirubin_multiple:g}×ULN",
            color="#aa2222",
            fontsize=7,
        )
        axes.text(
            high_x / 1.1,
            high_y / 1.2,
            "Potential Hy's law",
            ha="right",
            va="top",
            fontsize=7.5,
            color="#aa2222",
        )
        axes.text(
            high_x / 1.1,
            low_y * 1.1,
            "Temple's corollary",
            ha="right",
            fontsize=7.5,
            color="#555555",
        )
        axes.set_xlabel("Peak ALT or AST (×ULN)")
        axes.set_ylabel("Peak total bilirubin (×ULN)")
        axes.grid(alpha=0.3, which="both")
        if len(points):
            axes.legend(loc="upper left")
        figure.tight_layout()
        return _png(figure)


FIGURE_KINDS: Mapping[str, Callable[[FigureData, Protocol], bytes]] = {
    "consort": draw_consort,
    "enrolment": draw_enrolment,
    "cssrs": draw_cssrs,
    "withdrawal_bands": draw_withdrawal_bands,
    "edish": draw_edish,
    "interim_boundaries": draw_interim_boundaries,
    "kaplan_meier": draw_kaplan_meier,
    "ae_dot_chart": draw_ae_dot_chart,
}


def draw_figure(figure_data: FigureData, protocol: Protocol) -> bytes:
    """Draw *figure_data* with the function of its kind and return PNG bytes."""
    return FIGURE_KINDS[figure_data.kind](figure_data, protocol)
