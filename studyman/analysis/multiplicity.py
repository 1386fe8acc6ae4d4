"""The plan's multiplicity strategy applied to the run: adjusted decisions over the family.

The confirmatory family (primary and key secondary hypotheses) and its testing graph are declared
in the plan (``multiplicity:``, :class:`~studyman.analysis.sap.Multiplicity`); the p-values come
from the headlines of the named analyses; :func:`studyman.stats.multiplicity.graph_test` makes
the decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pandas as pd

from studyman.analysis.models import AnalysisOutcome, Headline
from studyman.analysis.sap import AnalysisPlan, Multiplicity
from studyman.stats.multiplicity import graph_test

__all__ = ["directional_p_value", "is_significant", "multiplicity_outcome"]

MULTIPLICITY_ID = "multiplicity"


def directional_p_value(
    headline: Headline, sidedness: Literal["one_sided", "two_sided"], benefit: str
) -> float:
    """The p-value of *headline* in the declared sidedness.

    Notes
    -----
    The headline's p-value is two-sided from a symmetric test (t or Wald z, or a likelihood-ratio
    test for Firth's model). One-sided in the direction of benefit it is half of it when the
    estimate lies on the favourable side of the null value, else one minus half.
    """
    p = headline.p_value
    if p is None:
        return 1.0
    if sidedness == "two_sided":
        return float(p)
    favourable = (
        headline.estimate < headline.null_value
        if benefit == "lower"
        else headline.estimate > headline.null_value
    )
    return float(p) / 2 if favourable else 1 - float(p) / 2


def is_significant(
    headline: Headline,
    alpha: float,
    sidedness: Literal["one_sided", "two_sided"],
    benefit: str | None,
) -> bool:
    """Whether *headline* is significant at *alpha* (one-sided needs a declared benefit)."""
    if sidedness == "one_sided" and benefit is None:
        # Without a declared direction a one-sided test is undefined: test two-sided at 2 alpha.
        return headline.p_value is not None and headline.p_value < 2 * alpha
    return directional_p_value(headline, sidedness, benefit or "lower") < alpha


def _tested(outcome: AnalysisOutcome, comparison: str | None) -> AnalysisOutcome:
    """The part of *outcome* a hypothesis tests: its comparison's (the only one by default)."""
    if comparison is None or not outcome.comparisons:
        return outcome
    try:
        return outcome.part(comparison)
    except KeyError:
        return AnalysisOutcome(
            id=outcome.id,
            kind=outcome.kind,
            role=outcome.role,
            label=outcome.label,
            status="failed",
            message=f"no comparison of arm {comparison!r}",
        )


def multiplicity_outcome(
    plan: AnalysisPlan, outcomes: Mapping[str, AnalysisOutcome]
) -> AnalysisOutcome | None:
    """Adjusted decisions over the plan's confirmatory family (None without ``multiplicity``).

    Parameters
    ----------
    plan
        The plan, with its ``multiplicity`` section.
    outcomes
        The run's outcomes by analysis id.

    Returns
    -------
    AnalysisOutcome or None
        ``multiplicity`` with tables ``hypotheses`` (raw and adjusted p-values, decision),
        ``graph`` (initial weights and transition matrix) and ``steps`` (rejection sequence);
        ``refused`` when an analysis of the family is not part of this run.

    Notes
    -----
    A hypothesis whose analysis has no result enters with p = 1: it keeps its share of alpha and
    is never rejected, so nothing it would pass on along the graph is released (conservative).
    """
    multiplicity = plan.multiplicity
    if multiplicity is None:
        return None
    label = _label(multiplicity)
    absent = [h.analysis for h in multiplicity.hypotheses if h.analysis not in outcomes]
    if absent:
        return AnalysisOutcome(
            id=MULTIPLICITY_ID,
            kind="multiplicity",
            role="confirmatory",
            label=label,
            status="refused",
            message=f"the family's analyses {', '.join(absent)} are not part of this run",
        )
    rows = []
    p_values = []
    for hypothesis in multiplicity.hypotheses:
        outcome = _tested(outcomes[hypothesis.analysis], hypothesis.comparison)
        headline = outcome.headline if outcome.status == "ok" else None
        p = (
            1.0
            if headline is None
            else directional_p_value(headline, multiplicity.sidedness, hypothesis.benefit)
        )
        p_values.append(p)
        rows.append(
            {
                "hypothesis": hypothesis.id,
                "analysis": hypothesis.analysis,
                "comparison": outcome.comparison,
                "label": hypothesis.label or outcome.label,
                "benefit": hypothesis.benefit,
                "analysis_status": outcome.status,
                "measure": headline.measure if headline else "",
                "estimate": headline.estimate if headline else float("nan"),
                "p_value_two_sided": headline.p_value
                if headline and headline.p_value is not None
                else float("nan"),
                "p_value": p,
            }
        )
    graph = multiplicity.graph()
    result = graph_test(graph, p_values, multiplicity.alpha)
    table = pd.DataFrame(rows)
    table.insert(5, "initial_weight", list(graph.weights))
    table["adjusted_p_value"] = list(result.adjusted_p_values)
    table["rejected"] = list(result.rejected)
    step_of = {step.rejected: step.step for step in result.steps}
    table["rejected_at_step"] = [step_of.get(name, pd.NA) for name in graph.names]
    table["decision"] = ["rejected" if rejected else "not rejected" for rejected in result.rejected]
    transitions = pd.DataFrame([list(row) for row in graph.transitions], columns=list(graph.names))
    transitions.insert(0, "weight", list(graph.weights))
    transitions.insert(0, "from", list(graph.names))
    steps = pd.DataFrame(
        [
            {
                "step": step.step,
                "rejected": step.rejected,
                "p_value": step.p_value,
                "local_alpha": step.local_alpha,
                "weights_after": "; ".join(
                    f"{name} {weight:.4g}" for name, weight in step.weights_after.items()
                ),
            }
            for step in result.steps
        ],
        columns=["step", "rejected", "p_value", "local_alpha", "weights_after"],
    )
    failed = [
        h.analysis + (f" ({h.comparison})" if h.comparison else "")
        for h in multiplicity.hypotheses
        if _tested(outcomes[h.analysis], h.comparison).status != "ok"
    ]
    message = (
        f"without a result (p taken as 1, never rejected): {', '.join(failed)}" if failed else ""
    )
    rejected = [name for name, r in zip(graph.names, result.rejected, strict=True) if r]
    return AnalysisOutcome(
        id=MULTIPLICITY_ID,
        kind="multiplicity",
        role="confirmatory",
        label=label,
        status="ok",
        message=message,
        tables={"hypotheses": table, "graph": transitions, "steps": steps},
        details={
            "procedure": multiplicity.procedure,
            "alpha": multiplicity.alpha,
            "sidedness": multiplicity.sidedness,
            "rejected": rejected,
            "rationale": multiplicity.rationale,
            "reference": "Bretz F, Maurer W, Brannath W, Posch M (2009), Stat Med 28:586-604",
        },
    )


def _label(multiplicity: Multiplicity) -> str:
    name = {
        "graphical": "graphical procedure (Bretz et al. 2009)",
        "fixed_sequence": "fixed-sequence (hierarchical) testing",
        "holm": "Holm's procedure",
    }[multiplicity.procedure]
    side = multiplicity.sidedness.replace("_", "-")
    return (
        f"Familywise error control over {len(multiplicity.hypotheses)} hypotheses: {name}, "
        f"alpha {multiplicity.alpha:g} {side}"
    )
