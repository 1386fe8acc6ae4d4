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
from studyman.analysis.sap import AnalysisPlan, MMRMAnalysis

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


def _definitions(items: list[tuple[str, str]]) -> str:
    rows = "".join(
        f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in items if text
    )
    return f"<dl>{rows}</dl>"


def plan_text_html(plan: AnalysisPlan) -> str:
    """The plan's own words: estimands (ICH E9(R1)) with intercurrent events and missing data,
    the imputation model, how the MMRMs make inference (which Kenward-Roger), and the
    multiplicity strategy."""
    parts = ["<h2>Estimands, intercurrent events and missing data (plan text)</h2>"]
    for estimand in plan.estimands:
        population = plan.populations.get(estimand.population)
        parts.append(f"<h3>{html.escape(estimand.id)}: {html.escape(estimand.label)}</h3>")
        events = "".join(
            f"<li><strong>{html.escape(event.event)}</strong>: "
            f"{html.escape(event.strategy.replace('_', ' '))} strategy"
            + (f". {html.escape(event.note)}" if event.note else "")
            + "</li>"
            for event in estimand.intercurrent_events
        )
        parts.append(
            _definitions(
                [
                    ("Treatment", estimand.treatment),
                    (
                        "Population",
                        f"{estimand.population}: {population.label}"
                        if population
                        else estimand.population,
                    ),
                    ("Variable", estimand.variable),
                    ("Population-level summary", estimand.summary),
                    ("Main analysis", estimand.main_analysis),
                    ("Sensitivity analyses", ", ".join(estimand.sensitivity_analyses)),
                ]
            ).removesuffix("</dl>")
            + f"<dt>Intercurrent events</dt><dd><ul>{events}</ul></dd>"
            + _definitions(
                [("Missing data", estimand.missing_data), ("Rationale", estimand.rationale)]
            ).removeprefix("<dl>")
        )
    model = plan.imputation_model
    if model is not None:
        parts.append("<h3>Imputation model</h3>")
        parts.append(
            _definitions(
                [
                    ("Outcome", model.outcome),
                    ("Covariates (besides arm and visit)", ", ".join(model.variables)),
                    ("Model", model.model),
                    ("Draws", model.draws),
                    ("Reference-based imputation", model.reference_based),
                    ("Analysis and pooling", model.pooling),
                ]
            )
        )
    mmrms = [a for a in plan.analyses if isinstance(a, MMRMAnalysis)]
    if mmrms:
        parts.append("<h3>Inference in the MMRM analyses</h3><ul>")
        for analysis in mmrms:
            parts.append(
                f"<li><strong>{html.escape(analysis.id)}</strong> "
                f"({html.escape(analysis.covariance.replace('_', ' '))} covariance, "
                f"{analysis.method.upper()}): {html.escape(analysis.inference_text())}</li>"
            )
        parts.append("</ul>")
    multiplicity = plan.multiplicity
    if multiplicity is not None:
        parts.append("<h3>Multiplicity</h3>")
        hypotheses = "; ".join(
            f"{h.id} {h.analysis} ({h.benefit} is better)" for h in multiplicity.hypotheses
        )
        parts.append(
            _definitions(
                [
                    (
                        "Familywise error rate",
                        f"{multiplicity.alpha:g}, {multiplicity.sidedness.replace('_', '-')}",
                    ),
                    ("Procedure", multiplicity.procedure.replace("_", " ")),
                    ("Hypotheses", hypotheses),
                    ("Rationale", multiplicity.rationale),
                ]
            )
        )
    return "".join(parts)
