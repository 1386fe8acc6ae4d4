"""Interim monitoring: group-sequential boundaries, the observed statistic, conditional power.

Only when the analysis plan prespecifies interim looks (``interim.information_fractions``,
:class:`studyman.analysis.sap.Interim`). The information fraction at the cut-off is the number
of randomised participants with the primary endpoint (change from baseline at the endpoint's
visit) over the planned number (``interim.planned_participants``, else the protocol's enrolment
target). The closed session shows the Lan–DeMets boundaries at that fraction
(:mod:`studyman.stats.group_sequential`), the observed standardised statistic against them and
the conditional power under the current trend and under the design effect; the open session
says only that looks are planned and how much information has accrued (pooled, no arm data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from studyman.analysis.sap import AnalysisPlan
from studyman.reporting.sections.base import (
    _EVENT,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _missing,
    _present,
    _randomised,
    _unavailable,
)
from studyman.stats.group_sequential import (
    MIN_INFORMATION_STEP,
    ConditionalPowerResult,
    GroupSequentialDesign,
    group_sequential_design,
    interim_conditional_power,
)

SECTION_ID = "interim"
TITLE = "Interim monitoring"
TABLE_IDS: tuple[str, ...] = (
    "interim.planned-interim-looks",
    "interim.group-sequential-boundaries-at-the-observed-information-fraction",
    "interim.observed-statistic-and-conditional-power",
)

_SPENDING = {"obrien_fleming": "O'Brien–Fleming-type", "pocock": "Pocock-type"}


@dataclass(frozen=True)
class InterimLook:
    """The numbers of one interim look (closed session).

    Attributes
    ----------
    design
        Boundaries at the looks taken, this one and the planned ones after it.
    look
        Index of this look in ``design`` (the number of earlier looks).
    z
        Observed standardised statistic (positive favours the experimental arm).
    difference, standard_error
        Difference in mean change (experimental − reference) and its standard error.
    counts
        (displayed arm label, participants with the primary endpoint), in the report's arm
        order: which coded arm is the experimental one is not said (the arm-code key says).
    power
        Conditional power under the current trend and under the design effect.
    """

    design: GroupSequentialDesign
    look: int
    z: float
    difference: float
    standard_error: float
    counts: tuple[tuple[str, int], ...]
    power: ConditionalPowerResult


def _changes(inputs: DsmbInputs) -> pd.Series:
    """Change from baseline of the primary endpoint at its visit, per randomised participant
    who has both values (index: record ID)."""
    endpoint = inputs.protocol.endpoints.primary
    frame = _present(inputs, endpoint.instrument)
    keys = frame[inputs.protocol.study.record_id_field].astype(str)
    values = pd.to_numeric(frame[endpoint.field], errors="coerce").astype(float)
    base = values[(frame[_EVENT] == endpoint.baseline_event).to_numpy()]
    base.index = keys[base.index]
    at = values[(frame[_EVENT] == endpoint.event).to_numpy()]
    at.index = keys[at.index]
    base = base[~base.index.duplicated()]
    at = at[~at.index.duplicated()]
    change = (at - base.reindex(at.index)).dropna()
    randomised = {str(v) for v in _randomised(inputs)}
    return change[[i in randomised for i in change.index]]


def _past_looks(inputs: DsmbInputs, plan: AnalysisPlan, fraction: float) -> tuple[list[float], str]:
    """Information fractions of the looks taken before this one, and a note on them.

    Only the looks the DSMB history records (``information_fraction`` of a meeting before the
    cut-off) count as taken. A planned look that was not taken before the current fraction is
    not spent separately: Lan–DeMets spending lets this look spend all alpha up to *fraction*.
    """
    history = inputs.dsmb_history
    recorded = (
        [
            m.information_fraction
            for m in history.meetings_before(inputs.cutoff)
            if m.information_fraction is not None
        ]
        if history is not None
        else []
    )
    past = [f for f in recorded if f < fraction - MIN_INFORMATION_STEP]
    # the latest planned look below the current fraction is the one this look stands for
    skipped = [
        f
        for f in plan.interim.information_fractions[:-1]
        if f < fraction - MIN_INFORMATION_STEP and all(abs(f - r) > 0.1 for r in past)
    ][:-1]
    notes = []
    if past:
        notes.append(
            "Earlier looks at the information fractions the DSMB history records: "
            + ", ".join(f"{f:.3f}" for f in past)
            + "."
        )
    if skipped:
        notes.append(
            "Planned look(s) at "
            + ", ".join(f"{f:.2f}" for f in skipped)
            + " not recorded as taken: their alpha is spent at this look."
        )
    return past, " ".join(notes)


def interim_look(
    plan: AnalysisPlan,
    fraction: float,
    past: list[float],
) -> tuple[GroupSequentialDesign, int]:
    """The design at the observed *fraction*: the looks in *past*, this one, the planned ones
    at least :data:`MIN_INFORMATION_STEP` beyond it, and the final analysis."""
    interim = plan.interim
    alpha, sidedness = plan.interim_significance()
    current = min(fraction, 1.0)
    if current > 1.0 - MIN_INFORMATION_STEP:
        current = 1.0
    later = [f for f in interim.information_fractions if f >= current + MIN_INFORMATION_STEP]
    rates = [*past, current, *later]
    design = group_sequential_design(
        rates, alpha=alpha, sidedness=sidedness, spending=interim.spending
    )
    return design, len(past)


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


def _planned_table(plan: AnalysisPlan, planned: int) -> ReportTable:
    fractions = plan.interim.information_fractions
    rows = [
        [
            "Final analysis" if index == len(fractions) else f"Interim look {index}",
            f"{fraction:.2f}",
            str(math.ceil(fraction * planned)),
        ]
        for index, fraction in enumerate(fractions, start=1)
    ]
    return ReportTable(
        "Planned interim looks",
        pd.DataFrame(
            rows,
            columns=["Look", "Information fraction", "Participants with the primary endpoint"],
        ),
        note=f"Information: randomised participants with the primary endpoint over the "
        f"{planned} planned.",
    )


def interim_monitoring_section(inputs: DsmbInputs) -> Section:
    """Interim monitoring; boundaries and statistics in a closed session only."""
    plan = inputs.plan
    if plan is None:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                "No analysis plan was supplied: whether interim looks are prespecified is not "
                "known to this report.",
            ),
        )
    interim = plan.interim
    if not interim.information_fractions:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                "The analysis plan prespecifies no interim efficacy or futility look: the "
                "DSMB reviews safety only.",
            ),
        )
    protocol = inputs.protocol
    endpoint = protocol.endpoints.primary
    missing = _missing(inputs, (endpoint.instrument,))
    if missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    planned = interim.planned_participants or protocol.enrolment.target
    alpha, sidedness = plan.interim_significance()
    changes = _changes(inputs)
    fraction = len(changes) / planned
    looks = len(interim.information_fractions) - 1
    design_text = (
        f"The analysis plan prespecifies {looks} interim look(s) of '{interim.analysis}' at "
        "information fractions "
        + ", ".join(f"{f:.2f}" for f in interim.information_fractions[:-1])
        + f" and the final analysis, with Lan–DeMets {_SPENDING[interim.spending]} alpha "
        f"spending ({sidedness.replace('_', '-')} alpha {alpha:g})."
    )
    if interim.futility is not None:
        futility = interim.futility
        design_text += (
            " Non-binding futility rule: conditional power under the "
            f"{futility.under.replace('_', ' ')} below {futility.threshold:g}."
        )
    visit = next((v.label for v in protocol.visits if v.event == endpoint.event), endpoint.event)
    accrued = (
        f"Information at the data cut-off: {len(changes)} of {planned} planned participants "
        f"have the primary endpoint ({endpoint.name} at {visit}), an information "
        f"fraction of {fraction:.3f}."
    )
    planned_table = _planned_table(plan, planned)
    if not inputs.closed:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                design_text,
                accrued,
                "The boundaries, the observed statistic and the conditional power are shown in "
                "the closed session only.",
            ),
            tables=(planned_table,),
        )
    if fraction < MIN_INFORMATION_STEP:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(design_text, accrued, "Too little information for an interim look."),
            tables=(planned_table,),
        )
    result = _closed_look(inputs, plan, changes, fraction)
    if isinstance(result, str):
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(design_text, accrued, result),
            tables=(planned_table,),
        )
    look, source = result
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=tuple(p for p in (design_text, accrued, source, _verdict(plan, look)) if p),
        tables=(_boundary_table(look), _statistic_table(plan, look)),
        figures=(_figure(look),),
    )


def _closed_look(
    inputs: DsmbInputs, plan: AnalysisPlan, changes: pd.Series, fraction: float
) -> tuple[InterimLook, str] | str:
    labels = inputs.arm_labels
    experimental_name = plan.treatment.experimental_arms[0]
    reference_name = plan.treatment.reference
    if experimental_name not in labels or reference_name not in labels or inputs.arms is None:
        return (
            f"The plan's arms ({experimental_name!r}, {reference_name!r}) are not arms of this "
            "report: no statistic is computed."
        )
    arms = inputs.arms.reindex(changes.index).astype("string")
    experimental = changes[(arms == labels[experimental_name]).fillna(False).to_numpy()]
    reference = changes[(arms == labels[reference_name]).fillna(False).to_numpy()]
    if len(experimental) < 2 or len(reference) < 2:
        return "Fewer than two participants with the primary endpoint in an arm: no statistic."
    difference = float(experimental.mean() - reference.mean())
    error = math.sqrt(
        float(experimental.var(ddof=1)) / len(experimental)
        + float(reference.var(ddof=1)) / len(reference)
    )
    if not error > 0:
        return "The primary endpoint does not vary: no statistic."
    sign = -1.0 if plan.interim_benefit() == "lower" else 1.0
    z = sign * difference / error
    past, source = _past_looks(inputs, plan, fraction)
    design, index = interim_look(plan, fraction, past)
    planned_design = group_sequential_design(
        plan.interim.information_fractions,
        alpha=design.alpha,
        sidedness=design.sidedness,
        spending=design.spending,
    )
    power = interim_conditional_power(
        design, look=index, z=z, planned=planned_design, power=plan.interim.power
    )
    return (
        InterimLook(
            design,
            index,
            z,
            difference,
            error,
            tuple((label, int((arms == label).fillna(False).sum())) for label in inputs.arm_order),
            power,
        ),
        source,
    )


def _verdict(plan: AnalysisPlan, look: InterimLook) -> str:
    boundary = look.design.critical_values[look.look]
    crossed = look.z >= boundary
    harm = look.design.sidedness == "two_sided" and look.z <= -boundary
    text = (
        f"The observed statistic Z = {look.z:.3f} "
        + (
            "crosses the efficacy boundary"
            if crossed
            else "crosses the lower boundary"
            if harm
            else "does not cross the efficacy boundary"
        )
        + f" ({boundary:.3f}) at this look."
    )
    futility = plan.interim.futility
    if futility is not None and not crossed:
        value = (
            look.power.current_trend
            if futility.under == "current_trend"
            else look.power.design_effect
        )
        met = value < futility.threshold
        text += (
            f" The non-binding futility rule is {'met' if met else 'not met'} (conditional "
            f"power under the {futility.under.replace('_', ' ')} {value:.3f}"
            f"{' <' if met else ' ≥'} {futility.threshold:g})."
        )
    return text


def _boundary_table(look: InterimLook) -> ReportTable:
    design = look.design
    two_sided = design.sidedness == "two_sided"
    rows = []
    for index, rate in enumerate(design.information_rates):
        status = (
            "Taken"
            if index < look.look
            else "This look"
            if index == look.look
            else "Final analysis"
            if index == len(design.information_rates) - 1
            else "Planned"
        )
        value = design.critical_values[index]
        rows.append(
            [
                str(index + 1),
                status,
                f"{rate:.3f}",
                f"±{value:.3f}" if two_sided else f"{value:.3f}",
                _p(design.stage_levels[index]),
                f"{design.alpha_spent[index]:.5f}",
            ]
        )
    return ReportTable(
        "Group-sequential boundaries at the observed information fraction",
        pd.DataFrame(
            rows,
            columns=[
                "Look",
                "Status",
                "Information fraction",
                "Efficacy boundary (Z)",
                "Nominal one-sided p",
                "Cumulative alpha spent",
            ],
        ),
        note=f"Lan–DeMets {_SPENDING[design.spending]} spending of "
        f"{design.sidedness.replace('_', '-')} alpha {design.alpha:g}, recomputed at the "
        "information fraction observed at this look (checked against R's rpact). Later looks "
        "at their planned fractions.",
    )


def _statistic_table(plan: AnalysisPlan, look: InterimLook) -> ReportTable:
    direction = "lower" if plan.interim_benefit() == "lower" else "higher"
    rows = [
        *[[f"Participants with the primary endpoint: {label}", str(n)] for label, n in look.counts],
        ["Difference in mean change (experimental − reference)", _fmt(look.difference, 2)],
        ["Standard error", _fmt(look.standard_error, 2)],
        ["Observed Z (positive favours the experimental arm)", _fmt(look.z)],
        ["Efficacy boundary at this look", _fmt(look.design.critical_values[look.look])],
        ["Conditional power, current trend", _fmt(look.power.current_trend)],
        ["Conditional power, design effect", _fmt(look.power.design_effect)],
    ]
    return ReportTable(
        "Observed statistic and conditional power",
        pd.DataFrame(rows, columns=["Quantity", "Value"]),
        note=f"Z: two-sample statistic of the change from baseline ({direction} is better), "
        "complete cases at the endpoint's visit, unequal variances; the prespecified model is "
        "run by 'studyman analyze'. Which coded arm is the experimental one: see the arm-code "
        "key. Conditional power: probability of crossing an efficacy boundary later, under the "
        f"drift of the current trend (θ = Z/√t = {look.power.trend_drift:.3f}) and of the "
        f"design effect (θ = {look.power.design_drift:.3f}, power {plan.interim.power:g} as "
        "planned).",
    )


def _figure(look: InterimLook) -> FigureData:
    design = look.design
    boundaries = pd.DataFrame(
        {
            "information_fraction": np.asarray(design.information_rates),
            "upper": np.asarray(design.critical_values),
            "lower": np.asarray(design.lower_values()),
        }
    )
    observed = pd.DataFrame(
        {"information_fraction": [design.information_rates[look.look]], "z": [look.z]}
    )
    return FigureData(
        kind="interim_boundaries",
        title="Observed statistic against the group-sequential boundaries",
        data={"boundaries": boundaries, "observed": observed},
        caption="Efficacy boundary of each look (line) and the observed Z at this look (point).",
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, interim_monitoring_section)
