"""Writing a plan run: results as CSV and JSON, ADaM data sets, figures and an HTML report.

Every file carries the provenance (snapshot hash, plan hash and version, amendments, studyman
version, seed). Nothing written depends on the time, the machine or the executor, so a rerun on
the same snapshot, plan and seed gives byte-identical files: CSV and JSON have no time stamps,
Parquet settings are pinned, SVG figures are written with ``svg.hashsalt`` fixed and no date.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studyman.analysis.adam import AdamDatasets
from studyman.analysis.models import AnalysisOutcome, Headline
from studyman.analysis.report_notes import notices_html, plan_text_html
from studyman.analysis.run import PlanRun
from studyman.analysis.sap import AnalysisPlan
from studyman.facts import StudyFacts, facts_document, rule_texts
from studyman.private_files import make_private_directory, write_private_bytes
from studyman.protocol import Protocol
from studyman.sources.snapshot import parquet_bytes

__all__ = ["applicability", "write_outputs"]

_ARM_COLOURS = ("#1b6ca8", "#d1495b", "#2a9d4b", "#8d5fb0", "#e08a1e", "#555555")


def _plain(value: Any) -> Any:
    """JSON-safe value: NaN/NA → None, numpy scalars → Python, dates → ISO text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _json_bytes(value: Any) -> bytes:
    return (
        json.dumps(_plain(value), indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)
        + "\n"
    ).encode("utf-8")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): _plain(v) for k, v in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]


def _stamp_lines(provenance: Mapping[str, Any]) -> str:
    plan = provenance["plan"]
    lines = [
        f"# studyman {provenance['studyman_version']}",
        f"# snapshot sha256 {provenance['snapshot']['sha256']}",
        f"# plan {plan['file']} version {plan['version']} sha256 {plan['sha256']}",
        f"# amendments {json.dumps(_plain(plan['amendments']), sort_keys=True)}",
        f"# seed {provenance['seed']}",
    ]
    late = plan.get("post_unblinding_amendment")
    if late:  # studyman.analysis.lock: a plan amended after unblinding, run for a stated reason
        lines.append(f"# PLAN AMENDED AFTER UNBLINDING, run for the reason: {late['reason']}")
    return "\n".join(lines) + "\n"


def _csv_bytes(frame: pd.DataFrame, provenance: Mapping[str, Any]) -> bytes:
    """CSV with the provenance as leading ``#`` lines (``pd.read_csv(..., comment="#")``)."""
    return (_stamp_lines(provenance) + frame.to_csv(index=False, lineterminator="\n")).encode(
        "utf-8"
    )


def _parquet_bytes(frame: pd.DataFrame, provenance: Mapping[str, Any]) -> bytes:
    return parquet_bytes(frame, schema_metadata={b"studyman.provenance": _json_bytes(provenance)})


class _Writer:
    def __init__(self, out: Path, provenance: Mapping[str, Any]) -> None:
        self.out = out
        self.provenance = provenance
        self.written: dict[str, str] = {}

    def bytes(self, relative: str, data: bytes) -> None:
        # participant-level data, and the arms in an unblinded run: readable by the owner only,
        # as the closed DSMB report, from the file's creation (and its folder's: 0700)
        write_private_bytes(self.out / relative, data)
        self.written[relative] = hashlib.sha256(data).hexdigest()

    def csv(self, relative: str, frame: pd.DataFrame) -> None:
        self.bytes(relative, _csv_bytes(frame, self.provenance))

    def json(self, relative: str, value: Any) -> None:
        self.bytes(relative, _json_bytes(value))


def _headline_document(headline: Headline | None) -> dict[str, Any] | None:
    if headline is None:
        return None
    return {
        "measure": headline.measure,
        "estimate": headline.estimate,
        "ci_lower": headline.ci_lower,
        "ci_upper": headline.ci_upper,
        "p_value": headline.p_value,
        "null_value": headline.null_value,
    }


def _outcome_document(outcome: AnalysisOutcome, provenance: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "provenance": provenance,
        "id": outcome.id,
        "kind": outcome.kind,
        "role": outcome.role,
        "label": outcome.label,
        "status": outcome.status,
        "message": outcome.message,
        "comparison": outcome.comparison,
        "headline": _headline_document(outcome.headline),
        "details": outcome.details,
        "tables": {name: _records(frame) for name, frame in outcome.tables.items()},
    }
    if outcome.comparisons:
        document["comparisons"] = [
            {
                "comparison": part.comparison,
                "status": part.status,
                "message": part.message,
                "headline": _headline_document(part.headline),
            }
            for part in outcome.comparisons
        ]
    return document


def _summary(run: PlanRun) -> pd.DataFrame:
    """One row per analysis and comparison (the comparison of arms it estimates)."""
    rows = []
    for whole in run.outcomes:
        for outcome in whole.parts:
            headline = outcome.headline
            rows.append(
                {
                    "analysis": whole.id,
                    "comparison": outcome.comparison,
                    "role": outcome.role,
                    "kind": outcome.kind,
                    "status": outcome.status,
                    "measure": headline.measure if headline else "",
                    "estimate": headline.estimate if headline else math.nan,
                    "ci_lower": headline.ci_lower if headline else math.nan,
                    "ci_upper": headline.ci_upper if headline else math.nan,
                    "p_value": headline.p_value
                    if headline and headline.p_value is not None
                    else math.nan,
                    "message": outcome.message,
                }
            )
    return pd.DataFrame(rows)


# --- figures ---------------------------------------------------------------------------------


def _svg_bytes(figure: Any, provenance: Mapping[str, Any], title: str) -> bytes:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "studyman", "svg.fonttype": "path"}):
        figure.savefig(
            buffer,
            format="svg",
            metadata={
                "Date": None,
                "Title": title,
                "Description": _stamp_lines(provenance).replace("# ", "").strip(),
                "Creator": f"studyman {provenance['studyman_version']}",
            },
        )
    return buffer.getvalue()


def _parameter_titles(protocol: Protocol | None) -> dict[str, str]:
    """PARAMCD → the scale's name in words, from the protocol's scoring (``{}`` without one)."""
    if protocol is None:
        return {}
    labels = {i.name: i.label for i in protocol.instruments}
    return {
        (s.paramcd or s.instrument.upper()): s.label or labels.get(s.instrument) or s.instrument
        for s in protocol.scoring
    }


def _mean_change_figure(
    adqs: pd.DataFrame,
    by_arm: bool,
    arms: Sequence[str],
    order: Sequence[str],
    titles: Mapping[str, str] | None = None,
) -> Any:
    from matplotlib.figure import Figure

    parameters = [p for p in order if (adqs["PARAMCD"] == p).any()]
    figure = Figure(figsize=(4.2 * max(1, len(parameters)), 3.6))
    axes = figure.subplots(1, max(1, len(parameters)), squeeze=False)[0]
    rows = adqs[(adqs["ANL01FL"] == "Y") | (adqs["ABLFL"] == "Y")].copy()
    rows["CHG"] = rows["CHG"].where(rows["AVISITN"] > 0, 0.0)
    groups: list[tuple[str, pd.DataFrame]] = (
        [(arm, rows[rows["TRT01P"] == arm]) for arm in arms] if by_arm else [("All", rows)]
    )
    for axis, parameter in zip(axes, parameters, strict=False):
        for index, (name, part) in enumerate(groups):
            summary = (
                part[part["PARAMCD"] == parameter]
                .groupby("AVISITN")["CHG"]
                .agg(["mean", "std", "count"])
                .reset_index()
            )
            half = [
                (1.96 if n > 30 else 2.05) * s / math.sqrt(n) if n > 1 else 0.0
                for s, n in zip(summary["std"].fillna(0), summary["count"], strict=True)
            ]
            offset = (index - (len(groups) - 1) / 2) * 0.15
            axis.errorbar(
                summary["AVISITN"] + offset,
                summary["mean"],
                yerr=half,
                marker="o",
                capsize=3,
                color=_ARM_COLOURS[index % len(_ARM_COLOURS)] if by_arm else "#444444",
                label=name,
            )
        axis.axhline(0, color="#999999", linewidth=0.8)
        axis.set_title((titles or {}).get(parameter, parameter))
        axis.set_xlabel("Week")
        axis.set_ylabel("Mean change from baseline (95 % CI)")
    axes[0].legend(loc="lower left", fontsize=8)
    figure.suptitle("Observed mean change from baseline" + (" by arm" if by_arm else ", pooled"))
    figure.tight_layout()
    return figure


def _measure_kind(outcome: AnalysisOutcome) -> tuple[str, str, bool]:
    """(kind of effect measure, axis label, log scale) of an outcome's headline.

    One forest panel per kind: a difference at a visit, a difference in slope, a risk
    difference, an odds ratio or a rate ratio, efficacy apart from safety, so that no panel puts
    a slope or an odds ratio on an axis of differences.
    """
    headline = outcome.headline
    assert headline is not None
    measure = headline.measure.lower()
    safety = outcome.role == "safety" or outcome.kind.startswith("ae_")
    where = "safety" if safety else "efficacy"
    if headline.null_value == 1.0:
        if "odds ratio" in measure:
            name = "Odds ratio"
        elif "rate ratio" in measure:
            name = "Rate ratio"
        else:
            name = "Ratio"
        return (
            f"{where} {name.lower()}",
            f"{name}, {where} (experimental / reference; log scale)",
            True,
        )
    if "slope" in measure:
        return (
            f"{where} slope",
            "Difference in slope, points per week (experimental − reference)",
            False,
        )
    if "risk difference" in measure:
        return (
            f"{where} risk difference",
            f"Risk difference, {where} (experimental − reference)",
            False,
        )
    return (
        f"{where} difference",
        "Difference in mean change from baseline, points (experimental − reference)",
        False,
    )


def _forest_label(outcome: AnalysisOutcome, several: bool) -> str:
    label = outcome.label or outcome.id
    if several and outcome.arms:
        label = f"{label} ({outcome.arms[0]})"
    return "\n".join(textwrap.wrap(label, 60)) or label


def _forest_figure(outcomes: Sequence[AnalysisOutcome]) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    several = any(o.comparisons for o in outcomes)
    with_headline = [
        part
        for outcome in outcomes
        for part in outcome.parts
        if part.headline is not None
        and part.status == "ok"
        and math.isfinite(part.headline.estimate)
        and math.isfinite(part.headline.ci_lower)
        and math.isfinite(part.headline.ci_upper)
    ]
    panels: dict[str, tuple[str, bool, list[AnalysisOutcome]]] = {}
    for part in with_headline:
        kind, label, log = _measure_kind(part)
        panels.setdefault(kind, (label, log, []))[2].append(part)
    heights = [
        0.75 + 0.3 * sum(_forest_label(o, several).count("\n") + 1 for o in items)
        for _, _, items in panels.values()
    ]
    figure = Figure(figsize=(9.0, sum(heights) + 0.6))
    axes = figure.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    for axis, (label, log, items) in zip(axes, panels.values(), strict=True):
        for position, outcome in enumerate(reversed(items)):
            headline = outcome.headline
            assert headline is not None  # filtered above
            colour = {"primary": "#000000", "secondary": "#1b6ca8", "sensitivity": "#d1495b"}.get(
                outcome.role, "#555555"
            )
            axis.plot([headline.ci_lower, headline.ci_upper], [position, position], color=colour)
            axis.plot([headline.estimate], [position], "s", color=colour)
        names = [_forest_label(o, several) for o in items]
        axis.set_yticks(range(len(items)), list(reversed(names)), fontsize=8)
        axis.set_ylim(-0.6, len(items) - 0.4)
        axis.axvline(1.0 if log else 0.0, color="#999999", linestyle="--", linewidth=0.8)
        if log:
            axis.set_xscale("log")
            axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(label, fontsize=9)
    figure.suptitle("Primary, secondary, sensitivity and safety results (95 % CI)")
    figure.tight_layout()
    return figure


def _arm_rows(frame: pd.DataFrame, arm: str) -> pd.DataFrame:
    """An arm's rows; with several comparisons (the reference arm in each), its first one's."""
    rows = frame[frame["arm"].astype(str) == arm]
    if "comparison" in rows.columns and len(rows):
        rows = rows[rows["comparison"] == rows["comparison"].iloc[0]]
    return rows


def _km_figure(outcome: AnalysisOutcome) -> Any:
    """Kaplan–Meier curves per arm (steps at the event times) with the numbers at risk below."""
    from matplotlib.figure import Figure

    curve = outcome.tables["kaplan_meier"]
    at_risk = outcome.tables.get("at_risk")
    summary = outcome.tables.get("summary")
    arms = list(
        dict.fromkeys(
            str(arm)
            for frame in (summary, at_risk, curve)
            if frame is not None and "arm" in frame.columns
            for arm in frame["arm"]
        )
    )
    if at_risk is not None:
        at_risk = pd.concat([_arm_rows(at_risk, arm) for arm in arms], ignore_index=True)
    days = sorted({float(d) for d in at_risk["day"]}) if at_risk is not None else []
    longest = max([*days, *(float(x) for x in curve["time"])] or [1.0])
    figure = Figure(figsize=(7.5, 3.6 + 0.25 * len(arms)))
    plot, table = figure.subplots(2, 1, height_ratios=[4.0, 0.6 + 0.35 * len(arms)], sharex=True)
    for index, arm in enumerate(arms):
        part = _arm_rows(curve, arm).sort_values("time")
        times = [0.0, *(float(x) for x in part["time"]), longest]
        survival = [1.0, *(float(s) for s in part["survival"])]
        survival.append(survival[-1])
        plot.step(
            times,
            survival,
            where="post",
            color=_ARM_COLOURS[index % len(_ARM_COLOURS)],
            label=arm,
        )
    plot.set_ylim(0, 1.05)
    plot.set_ylabel("Without the event (Kaplan–Meier)")
    plot.legend(fontsize=8, loc="lower left")
    plot.set_title(outcome.label, fontsize=10)
    table.set_title("Number at risk", fontsize=9, loc="left")
    for index, arm in enumerate(arms):
        if at_risk is None:
            break
        rows = _arm_rows(at_risk, arm)
        for day, count in zip(rows["day"], rows["at_risk"], strict=True):
            table.text(float(day), index, str(int(count)), ha="center", va="center", fontsize=8)
    table.set_yticks(range(len(arms)), arms, fontsize=8)
    table.set_ylim(len(arms) - 0.5, -0.5)
    table.tick_params(left=False)
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    if days:
        table.set_xticks(days)
    table.set_xlim(-0.02 * longest, longest * 1.02)
    table.set_xlabel("Days since the first treatment")
    figure.tight_layout()
    return figure


def _ae_dot_figure(incidence: pd.DataFrame, arms: Sequence[str] | None) -> Any:
    from matplotlib.figure import Figure

    terms = incidence[incidence["AEDECOD"] != "ANY"].copy()
    comparisons: list[str] = []
    if arms and "comparison" in terms.columns:
        comparisons = list(dict.fromkeys(terms["comparison"].astype(str)))
    if len(comparisons) > 1:
        # one row per term: every arm's percentage, the risk difference of each comparison
        key = ["AESOC", "AEDECOD"]
        merged = terms[key].drop_duplicates().reset_index(drop=True)
        for label in comparisons:
            part = terms[terms["comparison"] == label]
            experimental = label.split(" vs ")[0]
            percentages = [c for c in part.columns if str(c).startswith("pct_")]
            merged = merged.merge(
                part[[*key, *percentages]].rename(columns={c: f"{c}@{label}" for c in percentages}),
                on=key,
                how="left",
            )
            for arm in arms or ():
                column = f"pct_{arm}@{label}"
                if column in merged.columns:
                    merged[f"pct_{arm}"] = merged.get(f"pct_{arm}", merged[column]).fillna(
                        merged[column]
                    )
            diffs = part[[*key, "risk_difference", "rd_ci_lower", "rd_ci_upper"]]
            merged = merged.merge(
                diffs.rename(
                    columns={
                        c: f"{c}@{experimental}"
                        for c in ("risk_difference", "rd_ci_lower", "rd_ci_upper")
                    }
                ),
                on=key,
                how="left",
            )
        terms = merged
    if arms:
        terms["total"] = sum(terms[f"pct_{arm}"].fillna(0) for arm in arms)
    else:
        terms["total"] = terms["percent_of_safety"]
    terms = terms.sort_values(["total", "AEDECOD"], ascending=[True, False]).tail(20)
    height = 1.2 + 0.3 * max(1, len(terms))
    columns = 2 if arms else 1
    figure = Figure(figsize=(5.0 * columns, height))
    axes = figure.subplots(1, columns, squeeze=False, sharey=True)[0]
    positions = list(range(len(terms)))
    if arms:
        for index, arm in enumerate(arms):
            colour = _ARM_COLOURS[index % len(_ARM_COLOURS)]
            axes[0].plot(terms[f"pct_{arm}"], positions, "o", color=colour, label=arm)
        axes[0].legend(fontsize=8, loc="lower right")
        compared = [label.split(" vs ")[0] for label in comparisons]
        suffixes = [f"@{arm}" for arm in compared] if len(comparisons) > 1 else [""]
        for index, suffix in enumerate(suffixes):
            difference = terms[f"risk_difference{suffix}"]
            shift = (index - (len(suffixes) - 1) / 2) * 0.2
            axes[1].errorbar(
                difference * 100,
                [p + shift for p in positions],
                xerr=[
                    (difference - terms[f"rd_ci_lower{suffix}"]) * 100,
                    (terms[f"rd_ci_upper{suffix}"] - difference) * 100,
                ],
                fmt="o",
                color="#333333" if not suffix else _ARM_COLOURS[index % len(_ARM_COLOURS)],
                capsize=2,
                label=f"{suffix[1:]} vs reference" if suffix else None,
            )
        if len(suffixes) > 1:
            axes[1].legend(fontsize=8, loc="lower right")
        axes[1].axvline(0, color="#999999", linestyle="--", linewidth=0.8)
        axes[1].set_xlabel("Risk difference, % (Newcombe 95 % CI)")
    else:
        axes[0].plot(terms["percent_of_safety"], positions, "o", color="#444444")
    axes[0].set_yticks(positions, terms["AEDECOD"].astype(str).tolist(), fontsize=8)
    axes[0].set_xlabel("Participants with the event, %")
    figure.suptitle("Treatment-emergent adverse events" + ("" if arms else " (pooled)"))
    figure.tight_layout()
    return figure


# --- report ----------------------------------------------------------------------------------


#: Tables longer than this fold into a ``<details>`` element: every row is there, none is cut.
_FOLD_ROWS = 30


def _format_p(value: float | None) -> str:
    """A p-value as a reader expects it: three decimals, ``< 0.001`` below that, never 0."""
    if value is None or not math.isfinite(float(value)):
        return ""
    if float(value) < 0.001:
        return "< 0.001"
    return f"{float(value):.3f}"


def _is_p_column(name: str) -> bool:
    text = name.lower()
    return text in {"p", "pvalue"} or text.startswith("p_") or text.endswith("p_value")


def _decimals(values: Sequence[float]) -> int | None:
    """Fixed decimals for a column of numbers: 0 for counts, 2 from 1 up, more below 1 (at most
    6); ``None`` (scientific notation) when the typical value is below 0.001."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    if not finite or all(float(v).is_integer() for v in finite):
        return 0
    nonzero = [v for v in finite if v > 0]
    typical = float(np.median(nonzero)) if nonzero else 0.0
    if typical >= 1 or typical == 0:
        return 2
    if typical < 0.001:
        return None
    return min(6, max(3, 2 - math.floor(math.log10(typical))))


def _number_text(value: float, decimals: int | None) -> str:
    if not math.isfinite(value):
        return ""
    if decimals is None:
        return f"{value:.2e}"
    if decimals == 0:
        return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
    return f"{value:.{decimals}f}"


def _column_texts(name: str, column: pd.Series) -> list[str]:
    """The cells of one column as text: p-values, counts and estimates each in their format."""
    values = list(column)
    numbers = [
        float(v)
        for v in values
        if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
    ]
    decimals = _decimals(numbers)
    texts = []
    for value in values:
        if value is None or value is pd.NA or value is pd.NaT:
            texts.append("")
        elif isinstance(value, bool | np.bool_):
            texts.append(str(bool(value)))
        elif isinstance(value, int | np.integer):
            texts.append(str(int(value)))
        elif isinstance(value, float | np.floating):
            number = float(value)
            texts.append(
                _format_p(number) if _is_p_column(name) else _number_text(number, decimals)
            )
        else:
            texts.append(str(value))
    return texts


def _table_html(frame: pd.DataFrame) -> str:
    """The whole table, formatted for reading; one longer than :data:`_FOLD_ROWS` rows folds.

    Only the HTML is formatted: the CSV and JSON outputs keep every digit.
    """
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    columns = [_column_texts(str(name), frame[name]) for name in frame.columns]
    body = [
        "<tr>" + "".join(f"<td>{html.escape(column[row])}</td>" for column in columns) + "</tr>"
        for row in range(len(frame))
    ]
    table = f"<table><tr>{header}</tr>{''.join(body)}</table>"
    if len(frame) > _FOLD_ROWS:
        return f"<details><summary>all {len(frame)} rows</summary>{table}</details>"
    return table


def _plain_rounded(value: Any) -> Any:
    """A detail for the report: floats at most six significant digits, tiny ones scientific."""
    if isinstance(value, dict):
        return {str(k): _plain_rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_rounded(v) for v in value]
    value = _plain(value)
    if isinstance(value, float):
        return float(_number_text(value, _decimals([value])))
    return value


def _detail_text(key: str, value: Any) -> str:
    if isinstance(value, float | np.floating) and _is_p_column(key.removesuffix("s")):
        return _format_p(float(value))
    if "p_value" in key and isinstance(value, float | np.floating):
        return _format_p(float(value))
    plain = _plain_rounded(value)
    if isinstance(plain, str):
        return plain
    if plain is None:
        return "none"
    if isinstance(plain, dict) and all(not isinstance(v, dict | list) for v in plain.values()):
        return "; ".join(f"{k}: {_detail_text(k, v)}" for k, v in plain.items())
    if isinstance(plain, list) and all(not isinstance(v, dict | list) for v in plain):
        return ", ".join(_detail_text(key, v) for v in plain)
    return json.dumps(plain, ensure_ascii=False)


def applicability(protocol: Protocol) -> list[tuple[str, str]]:
    """(part, statement) for each optional part of a study: what applies and what does not.

    A study may lack the withdrawal scale or the dosing log; its analysis then runs without
    them and the report says which parts do not apply.
    """
    withdrawal = protocol.withdrawal
    doses = protocol.treatment.doses
    return [
        (
            "Withdrawal scale",
            f"Applies: {withdrawal.instrument} ({withdrawal.total_field})"
            if withdrawal is not None
            else "Does not apply: the protocol declares no withdrawal scale.",
        ),
        (
            "Dosing log",
            f"Applies: {doses.form} dates the doses taken (first and last treatment, "
            "as-treated arm)"
            if doses is not None
            else "Does not apply: the protocol declares no dosing log; treatment exposure "
            "and the as-treated arm come from the treatment sessions alone.",
        ),
    ]


#: The report's figures in words (file name → caption); a Kaplan–Meier figure is captioned
#: with its analysis's label.
_FIGURE_CAPTIONS = {
    "mean_change.svg": "Observed mean change from baseline by visit (95 % CI)",
    "forest.svg": "Forest plot: estimated effects with 95 % confidence intervals, one panel per "
    "kind of effect measure",
    "ae_dotplot.svg": "Treatment-emergent adverse events: participants with each event and the "
    "risk difference",
}

_STYLE = (
    "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;}"
    "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0;}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;}"
    ".failed{color:#b00;} .refused{color:#a60;} .note{color:#666;font-size:0.85em;}"
    ".subtitle{color:#444;margin-top:-0.5em;}"
    ".banner{background:#fee;border:1px solid #c99;padding:0.5em;}"
    "figure{margin:1em 0;} figure svg{display:block;width:100%;height:auto;max-width:100%;}"
    "svg{max-width:100%;height:auto;}"
    "figcaption{font-weight:bold;margin-bottom:0.3em;}"
    "@media print{body{max-width:none;margin:0;}figure{break-inside:avoid;}"
    "figure svg{max-width:100%;height:auto;max-height:8.5in;}h2,h3,h4{break-after:avoid;}}"
    "</style>"
)


def _results_title(plan: AnalysisPlan) -> str:
    """ "<study title>: results of the prespecified analyses", the plan's own suffix dropped."""
    study = re.sub(
        r"[\s,:;–-]*statistical analysis plan\s*$", "", plan.title, flags=re.IGNORECASE
    ).strip()
    return f"{study or plan.study}: results of the prespecified analyses"


def _embedded_svg(svg: bytes) -> str:
    """An SVG scaled to the content width: its viewBox kept, its fixed width and height gone."""
    text = svg.decode("utf-8")
    text = text[text.index("<svg") :]
    end = text.index(">")
    tag = re.sub(r'\s(width|height)="[^"]*"', "", text[:end])
    return tag + ' width="100%" preserveAspectRatio="xMidYMid meet"' + text[end:]


def _headline_text(outcome: AnalysisOutcome, level: float = 0.95) -> str:
    headline = outcome.headline
    assert headline is not None
    kind = _measure_kind(outcome)[0]
    decimals = 3 if kind.endswith(("slope", "risk difference")) else 2
    p_value = _format_p(headline.p_value)
    p_text = (
        "" if not p_value else (f", p {p_value}" if p_value.startswith("<") else f", p = {p_value}")
    )
    if not (math.isfinite(headline.ci_lower) and math.isfinite(headline.ci_upper)):
        return f"{headline.estimate:.{decimals}f} (no confidence interval){p_text}"
    low, high = headline.ci_lower, headline.ci_upper
    return (
        f"{headline.estimate:.{decimals}f} ({level * 100:g} % CI {low:.{decimals}f} to "
        f"{high:.{decimals}f}){p_text}"
    )


def _summary_html(run: PlanRun, level: float) -> pd.DataFrame:
    """The summary of analyses for reading: the analysis in words, the effect with its CI."""
    rows = []
    for whole in run.outcomes:
        for outcome in whole.parts:
            headline = outcome.headline
            rows.append(
                {
                    "analysis": outcome.label or outcome.id,
                    "comparison": outcome.comparison,
                    "role": outcome.role,
                    "status": outcome.status,
                    "measure": headline.measure if headline else "",
                    f"estimate ({level * 100:g} % CI), p": _headline_text(outcome, level)
                    if headline is not None and math.isfinite(headline.estimate)
                    else "",
                    "message": outcome.message,
                }
            )
    return pd.DataFrame(rows)


def _outcome_table_html(outcome: AnalysisOutcome, name: str, frame: pd.DataFrame) -> str:
    if "median_days" in frame.columns:
        # a median survival time the curve never reaches is "not reached", not a blank
        frame = frame.astype({"median_days": object})
        frame["median_days"] = [
            "not reached"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else _number_text(float(value), 0 if float(value).is_integer() else 1)
            for value in frame["median_days"]
        ]
    return f"<h4>{html.escape(name.replace('_', ' '))}</h4>" + _table_html(frame)


def _report_html(
    plan: AnalysisPlan,
    run: PlanRun,
    provenance: Mapping[str, Any],
    figures: Mapping[str, bytes],
    summary: pd.DataFrame,
    facts: StudyFacts | None = None,
    protocol: Protocol | None = None,
    captions: Mapping[str, str] | None = None,
) -> bytes:
    plan_info = provenance["plan"]
    title = _results_title(plan)
    locked = (
        f"locked as version {plan_info['locked_version']} (sha256 {plan_info['locked_sha256']})"
        if plan_info.get("locked_version")
        else "not locked"
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        _STYLE,
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='subtitle'>Statistical analysis plan version {html.escape(str(plan.version))}"
        f" of {plan.date.isoformat()}, {html.escape(locked)}; "
        f"{len(plan_info['amendments'] or [])} amendment(s).</p>",
    ]
    if run.blinded:
        parts.append(
            "<p class='banner'><strong>BLINDED DATA REVIEW.</strong> No randomisation list was "
            "given: every analysis that compares arms was refused. The tables below pool all "
            "participants.</p>"
        )
    parts.append(notices_html(run, provenance))
    amendments = plan_info["amendments"] or []
    provenance_rows = pd.DataFrame(
        [
            ("snapshot sha256", provenance["snapshot"]["sha256"]),
            ("plan", f"{plan_info['file']} version {plan_info['version']}"),
            ("plan sha256", plan_info["sha256"]),
            ("locked plan", f"version {plan_info['locked_version']} {plan_info['locked_sha256']}"),
            ("studyman version", provenance["studyman_version"]),
            ("seed", str(provenance["seed"])),
            ("imputations", str(provenance["imputations"])),
            ("randomisation list sha256", provenance["randomization_sha256"] or "none (blinded)"),
            (
                "interim efficacy for the DSMB prespecified",
                str(provenance["interim_dsmb_efficacy"]),
            ),
            (
                "randomised without an arm in the list",
                ", ".join(provenance["randomization_mismatches"].get("randomised_without_arm", []))
                or "none",
            ),
            (
                "in the list but not randomised in the snapshot",
                ", ".join(provenance["randomization_mismatches"].get("listed_not_randomised", []))
                or "none",
            ),
        ],
        columns=["item", "value"],
    )
    parts.append("<h2>Provenance</h2>" + _table_html(provenance_rows))
    parts.append("<h3>Amendment history</h3>")
    parts.append(
        _table_html(pd.DataFrame(amendments, columns=["version", "date", "reason"]))
        if amendments
        else "<p>None: the plan is as locked.</p>"
    )
    estimands = pd.DataFrame(
        [
            {
                "estimand": e.label or e.id,
                "treatment": e.treatment,
                "population": e.population,
                "variable": e.variable,
                "intercurrent events": "; ".join(
                    f"{i.event}: {i.strategy.replace('_', ' ')}" for i in e.intercurrent_events
                ),
                "summary": e.summary,
                "main analysis": e.main_analysis,
            }
            for e in plan.estimands
        ]
    )
    parts.append("<h2>Estimands (ICH E9(R1))</h2>" + _table_html(estimands))
    if facts is not None:
        # the same words as every report of the study (studyman.facts.rule_texts)
        parts.append(
            "<h2 id='definitions'>Definitions</h2>"
            + _table_html(pd.DataFrame(rule_texts(facts.rules), columns=["term", "definition"]))
        )
    parts.append(plan_text_html(plan))
    if protocol is not None:
        parts.append(
            "<h2 id='applicability'>Optional study data</h2>"
            + _table_html(pd.DataFrame(applicability(protocol), columns=["part", "status"]))
        )
    parts.append(
        "<h2>Summary of analyses</h2>"
        + _table_html(_summary_html(run, plan.confidence_level) if len(summary) else summary)
        + "<p class='note'>Every digit is in results/summary.csv and results/summary.json.</p>"
    )
    problems = [o for o in run.outcomes if o.status != "ok"]
    if problems and not run.blinded:
        parts.append("<h2>Analyses without a result</h2><ul>")
        for outcome in problems:
            parts.append(
                f"<li class='{outcome.status}'><strong>{html.escape(outcome.id)}</strong> "
                f"({outcome.status}): {html.escape(outcome.message)}</li>"
            )
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    inline = {name for name in figures if name.startswith("km_")}
    for name, svg in figures.items():
        if name in inline:
            continue
        caption = (captions or {}).get(name) or _FIGURE_CAPTIONS.get(name, "Figure")
        parts.append(
            f"<figure id='{html.escape(name.removesuffix('.svg'))}'><figcaption>"
            f"{html.escape(caption)}</figcaption>{_embedded_svg(svg)}</figure>"
        )
    if run.blinded:
        parts.append("<h2>Pooled data review</h2>")
        for name, frame in run.review.items():
            parts.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>" + _table_html(frame))
    else:
        parts.append("<h2>Results by analysis</h2>")
        for outcome in run.outcomes:
            parts.append(
                f"<h3 id='{html.escape(outcome.id)}'>{html.escape(outcome.id)}: "
                f"{html.escape(outcome.label)}</h3>"
            )
            parts.append(
                f"<p class='{outcome.status}'>role {outcome.role}; status {outcome.status}"
                + (f"; {html.escape(outcome.message)}" if outcome.message else "")
                + f"; results/{html.escape(outcome.id)}.json</p>"
            )
            for part in outcome.parts:
                if part.headline is None or not math.isfinite(part.headline.estimate):
                    continue
                versus = f"{html.escape(part.comparison)}: " if part.comparison else ""
                parts.append(
                    f"<p>{versus}<strong>{html.escape(part.headline.measure)}</strong>: "
                    f"{html.escape(_headline_text(part, plan.confidence_level))}</p>"
                )
            if outcome.details:
                details = pd.DataFrame(
                    [
                        (k.replace("_", " "), _detail_text(k, v))
                        for k, v in sorted(outcome.details.items())
                    ],
                    columns=["detail", "value"],
                )
                parts.append(_table_html(details))
            km = f"km_{outcome.id}.svg"
            if km in figures:
                caption = (captions or {}).get(km) or outcome.label
                parts.append(
                    f"<figure id='km-{html.escape(outcome.id)}'><figcaption>"
                    f"{html.escape(caption)}</figcaption>{_embedded_svg(figures[km])}</figure>"
                )
            for name, frame in outcome.tables.items():
                if name == "per_imputation":
                    continue
                if km in figures and name in {"kaplan_meier", "at_risk"}:
                    continue  # drawn above; every step is in results/<id>__kaplan_meier.csv
                parts.append(_outcome_table_html(outcome, name, frame))
    parts.append(
        "<hr><p class='note'>"
        + html.escape(_stamp_lines(provenance).replace("# ", "").replace("\n", " · "))
        + "</p></body></html>\n"
    )
    return "".join(parts).encode("utf-8")


def _earlier_outputs(out: Path) -> list[Path]:
    try:
        files = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        return []
    paths = [out / relative for relative in files if ".." not in Path(relative).parts]
    return [path for path in [*paths, out / "manifest.json"] if path.is_file()]


def write_outputs(
    out: Path,
    *,
    plan: AnalysisPlan,
    run: PlanRun,
    adam: AdamDatasets,
    provenance: Mapping[str, Any],
    facts: StudyFacts | None = None,
    protocol: Protocol | None = None,
) -> dict[str, str]:
    """Write every output of a plan run under *out*; return relative path → sha256.

    With *protocol*, the report states which optional parts of the study do not apply
    (:func:`applicability`).

    Layout: ``provenance.json``; ``adam/{adsl,adqs,adae}.{parquet,csv}``;
    ``results/summary.{csv,json}``, ``results/<analysis>.json`` and
    ``results/<analysis>__<table>.csv``; ``review/<table>.csv`` (blinded);
    ``figures/*.svg``; ``report.html``; ``facts.json`` (the study's headline facts,
    :func:`studyman.facts.facts_document`, output ``analysis``, when *facts* are given);
    ``manifest.json`` (sha256 of every other file).

    Every file is 0600 and every folder this creates (*out* included) 0700, from creation.
    """
    make_private_directory(out)
    # An earlier run wrote here. Its manifest goes first, so that until the new one is written
    # last the directory is visibly incomplete; each file is replaced atomically, and the
    # earlier files this run does not write again are removed before the new manifest.
    earlier = _earlier_outputs(out) if (out / "manifest.json").is_file() else []
    (out / "manifest.json").unlink(missing_ok=True)
    writer = _Writer(out, provenance)
    writer.json("provenance.json", provenance)
    adam_frames = {"adsl": adam.adsl, "adqs": adam.adqs, "adae": adam.adae}
    if run.blinded:
        # Nothing derived from the randomisation list is written in a blinded run.
        adam_frames = {
            name: frame.drop(columns=[c for c in ("TRT01P", "TRT01A") if c in frame.columns])
            for name, frame in adam_frames.items()
        }
    for name, frame in adam_frames.items():
        writer.bytes(f"adam/{name}.parquet", _parquet_bytes(frame, provenance))
        writer.csv(f"adam/{name}.csv", frame)
    summary = _summary(run)
    writer.csv("results/summary.csv", summary)
    writer.json("results/summary.json", {"provenance": provenance, "analyses": _records(summary)})
    for outcome in run.outcomes:
        writer.json(f"results/{outcome.id}.json", _outcome_document(outcome, provenance))
        for name, frame in outcome.tables.items():
            writer.csv(f"results/{outcome.id}__{name}.csv", frame)
    for name, frame in run.review.items():
        writer.csv(f"review/{name}.csv", frame)
    arms = plan.treatment.arms
    figures: dict[str, bytes] = {}
    figures["mean_change.svg"] = _svg_bytes(
        _mean_change_figure(
            adam.adqs,
            not run.blinded,
            arms,
            [key.upper() for key in plan.visits],
            _parameter_titles(protocol),
        ),
        provenance,
        "Mean change from baseline",
    )
    captions: dict[str, str] = {}
    if not run.blinded:
        if any(p.headline is not None and p.status == "ok" for o in run.outcomes for p in o.parts):
            figures["forest.svg"] = _svg_bytes(
                _forest_figure(run.outcomes), provenance, "Forest plot"
            )
        incidence = next(
            (
                o.tables["incidence"]
                for o in run.outcomes
                if o.kind == "ae_incidence"
                and o.status == "ok"
                and o.details.get("subset") == "all"
            ),
            None,
        )
        if incidence is not None and (incidence["AEDECOD"] != "ANY").any():
            figures["ae_dotplot.svg"] = _svg_bytes(
                _ae_dot_figure(incidence, arms), provenance, "Adverse events"
            )
        for outcome in run.outcomes:
            curve = outcome.tables.get("kaplan_meier")
            if outcome.status == "ok" and curve is not None and "arm" in curve.columns:
                name = f"km_{outcome.id}.svg"
                figures[name] = _svg_bytes(_km_figure(outcome), provenance, outcome.label)
                captions[name] = f"Kaplan–Meier curves: {outcome.label}"
    elif "adverse_events" in run.review and len(run.review["adverse_events"]):
        figures["ae_dotplot.svg"] = _svg_bytes(
            _ae_dot_figure(run.review["adverse_events"], None), provenance, "Adverse events"
        )
    for name, data in figures.items():
        writer.bytes(f"figures/{name}", data)
    writer.bytes(
        "report.html",
        _report_html(plan, run, provenance, figures, summary, facts, protocol, captions),
    )
    if facts is not None:
        document = facts_document(facts, output="analysis")
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        writer.bytes("facts.json", text.encode("utf-8"))
    for stale in earlier:
        if (
            stale.name != "manifest.json"
            and stale.relative_to(out).as_posix() not in writer.written
        ):
            stale.unlink(missing_ok=True)
    writer.json(
        "manifest.json", {"provenance": provenance, "files": dict(sorted(writer.written.items()))}
    )
    return dict(writer.written)
