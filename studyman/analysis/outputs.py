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


def _mean_change_figure(
    adqs: pd.DataFrame, by_arm: bool, arms: Sequence[str], order: Sequence[str]
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
        axis.set_title(parameter)
        axis.set_xlabel("Week")
        axis.set_ylabel("Mean change from baseline (95 % CI)")
    axes[0].legend(loc="lower left", fontsize=8)
    figure.suptitle("Observed mean change from baseline" + (" by arm" if by_arm else ", pooled"))
    figure.tight_layout()
    return figure


def _forest_figure(outcomes: Sequence[AnalysisOutcome]) -> Any:
    from matplotlib.figure import Figure

    several = any(o.comparisons for o in outcomes)
    with_headline = [
        part
        for outcome in outcomes
        for part in outcome.parts
        if part.headline is not None and part.status == "ok"
    ]
    differences = [o for o in with_headline if o.headline and o.headline.null_value == 0.0]
    ratios = [o for o in with_headline if o.headline and o.headline.null_value == 1.0]
    differences = [o for o in differences if not o.kind.startswith("ae_")]
    panels = [(differences, "Difference (experimental − reference)", False)]
    if ratios:
        panels.append((ratios, "Ratio (experimental / reference), log scale", True))
    height = 1.2 + 0.35 * max(len(p[0]) for p in panels)
    figure = Figure(figsize=(6.5 * len(panels), height))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (items, label, log) in zip(axes, panels, strict=True):
        for position, outcome in enumerate(reversed(items)):
            headline = outcome.headline
            assert headline is not None  # filtered above
            colour = {"primary": "#000000", "secondary": "#1b6ca8", "sensitivity": "#d1495b"}.get(
                outcome.role, "#555555"
            )
            axis.plot([headline.ci_lower, headline.ci_upper], [position, position], color=colour)
            axis.plot([headline.estimate], [position], "s", color=colour)
        names = [f"{o.id} ({o.arms[0]})" if several and o.arms else o.id for o in items]
        axis.set_yticks(range(len(items)), list(reversed(names)), fontsize=8)
        axis.axvline(1.0 if log else 0.0, color="#999999", linestyle="--", linewidth=0.8)
        if log:
            axis.set_xscale("log")
        axis.set_xlabel(label)
    figure.suptitle("Primary, sensitivity and secondary results (95 % CI)")
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


def _table_html(frame: pd.DataFrame, limit: int = 40) -> str:
    shown = frame.head(limit)
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, float | np.floating):
                text = "" if math.isnan(float(value)) else f"{float(value):.4g}"
            elif value is None or value is pd.NA or value is pd.NaT:
                text = ""
            else:
                text = str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='note'>first {limit} of {len(frame)} rows</p>" if len(frame) > limit else ""
    return f"<table><tr>{header}</tr>{''.join(body)}</table>{more}"


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


def _report_html(
    plan: AnalysisPlan,
    run: PlanRun,
    provenance: Mapping[str, Any],
    figures: Mapping[str, bytes],
    summary: pd.DataFrame,
    facts: StudyFacts | None = None,
    protocol: Protocol | None = None,
) -> bytes:
    plan_info = provenance["plan"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(plan.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
        "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0;}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;}"
        ".failed{color:#b00;} .refused{color:#a60;} .note{color:#666;font-size:0.85em;}"
        ".banner{background:#fee;border:1px solid #c99;padding:0.5em;}</style></head><body>",
        f"<h1>{html.escape(plan.title)}</h1>",
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
                "estimand": e.id,
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
    parts.append("<h2>Summary of analyses</h2>" + _table_html(summary, limit=100))
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
    for name, svg in figures.items():
        text = svg.decode("utf-8")
        text = text[text.index("<svg") :]
        parts.append(f"<figure><figcaption>{html.escape(name)}</figcaption>{text}</figure>")
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
                + "</p>"
            )
            for part in outcome.parts:
                if part.headline is None:
                    continue
                h = part.headline
                p_text = "" if h.p_value is None else f", p = {h.p_value:.4g}"
                versus = f"{html.escape(part.comparison)}: " if part.comparison else ""
                parts.append(
                    f"<p>{versus}<strong>{html.escape(h.measure)}</strong>: {h.estimate:.4g} "
                    f"(95 % CI {h.ci_lower:.4g} to {h.ci_upper:.4g}){p_text}</p>"
                )
            if outcome.details:
                details = pd.DataFrame(
                    [(k, json.dumps(_plain(v))) for k, v in sorted(outcome.details.items())],
                    columns=["detail", "value"],
                )
                parts.append(_table_html(details))
            for name, frame in outcome.tables.items():
                if name == "per_imputation":
                    continue
                parts.append(f"<h4>{html.escape(name.replace('_', ' '))}</h4>")
                parts.append(_table_html(frame))
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
        _mean_change_figure(adam.adqs, not run.blinded, arms, [key.upper() for key in plan.visits]),
        provenance,
        "Mean change from baseline",
    )
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
    elif "adverse_events" in run.review and len(run.review["adverse_events"]):
        figures["ae_dotplot.svg"] = _svg_bytes(
            _ae_dot_figure(run.review["adverse_events"], None), provenance, "Adverse events"
        )
    for name, data in figures.items():
        writer.bytes(f"figures/{name}", data)
    writer.bytes(
        "report.html", _report_html(plan, run, provenance, figures, summary, facts, protocol)
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
