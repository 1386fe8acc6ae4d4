"""What the analysis report must say before any result: amendments after unblinding, the parts of
the plan that could not be run as written, and the plan's own words on estimands.

:mod:`studyman.analysis.outputs` places these at the top of ``report.html``; the same facts are
in ``provenance.json`` (``plan.post_unblinding_amendment``, ``plan.unblinding``) and in the
run's warnings (``results/summary.json``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from studyman.analysis.run import PlanRun
from studyman.analysis.sap import AnalysisPlan

__all__ = ["notices_html", "plan_text_html"]


def notices_html(run: PlanRun, provenance: Mapping[str, Any]) -> str:
    """Banners for the top of the report: a post-unblinding amendment, then run warnings."""
    parts: list[str] = []
    plan = provenance.get("plan", {})
    late = plan.get("post_unblinding_amendment")
    if late:
        unblinding = plan.get("unblinding") or {}
        items = "".join(
            f"<li>version {html.escape(str(a['version']))} dated {html.escape(str(a['date']))}: "
            f"{html.escape(str(a['reason']))}</li>"
            for a in late["amendments"]
        )
        parts.append(
            "<div class='banner' id='post-unblinding-amendment'><strong>PLAN AMENDED AFTER "
            "UNBLINDING.</strong> The allocation was first read by analyze at "
            f"{html.escape(str(unblinding.get('read_at', '?')))} (snapshot "
            f"{html.escape(str(unblinding.get('snapshot_id', '?')))}, plan version "
            f"{html.escape(str(unblinding.get('plan_version', '?')))}). These amendments came "
            f"after it:<ul>{items}</ul>Run nevertheless, for this reason: "
            f"<em>{html.escape(str(late['reason']))}</em>. Results that depend on these changes "
            "are not prespecified.</div>"
        )
    if run.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in run.warnings)
        parts.append(
            "<div class='banner' id='plan-warnings'><strong>THE PLAN COULD NOT BE RUN EXACTLY "
            f"AS WRITTEN ({len(run.warnings)}).</strong><ul>{items}</ul></div>"
        )
    return "".join(parts)


def plan_text_html(plan: AnalysisPlan) -> str:
    """The estimands in the plan's words (ICH E9(R1)), strategies, missing data and imputation."""
    parts = ["<h2>Estimands, intercurrent events and missing data (plan text)</h2>"]
    for estimand in plan.estimands:
        parts.append(f"<h3>{html.escape(estimand.id)}: {html.escape(estimand.label)}</h3><dl>")
        for term, text in (
            ("Treatment", estimand.treatment),
            (
                "Population",
                f"{estimand.population}: {plan.populations[estimand.population].label}"
                if estimand.population in plan.populations
                else estimand.population,
            ),
            ("Variable", estimand.variable),
            ("Population-level summary", estimand.summary),
            ("Main analysis", estimand.main_analysis),
            ("Sensitivity analyses", ", ".join(estimand.sensitivity_analyses)),
        ):
            if text:
                parts.append(f"<dt>{term}</dt><dd>{html.escape(text)}</dd>")
        events = "".join(
            f"<li><strong>{html.escape(event.event)}</strong>: "
            f"{html.escape(event.strategy.replace('_', ' '))} strategy"
            + (f". {html.escape(event.note)}" if event.note else "")
            + "</li>"
            for event in estimand.intercurrent_events
        )
        parts.append(f"<dt>Intercurrent events</dt><dd><ul>{events}</ul></dd>")
        for term, text in (
            ("Missing data", getattr(estimand, "missing_data", "")),
            ("Rationale", getattr(estimand, "rationale", "")),
        ):
            if text:
                parts.append(f"<dt>{term}</dt><dd>{html.escape(text)}</dd>")
        parts.append("</dl>")
    return "".join(parts)
