"""AE dot chart (closed report): the most frequent preferred terms, incidence per arm and the risk
difference with its 95% confidence interval (Newcombe), as a figure and a table."""

from __future__ import annotations

import math

import pandas as pd

from studyman.analysis.models import newcombe_interval
from studyman.reporting.sections.base import (
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _denominators,
    _groups,
    _header,
    _member,
    _pct,
)
from studyman.reporting.sections.executive_summary import safety_ids
from studyman.reporting.sections.shared import _adverse_events_or_unavailable

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "ae-dot-chart"
TITLE = "Most frequent adverse events: incidence and risk difference by arm"
TABLE_IDS: tuple[str, ...] = (
    "ae-dot-chart.most-frequent-treatment-emergent-adverse-events-by-arm",
)

ANY = "Any treatment-emergent adverse event"
#: How many preferred terms the chart shows at most (the most frequent overall).
TOP_TERMS = 15


def _difference(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float]:
    return newcombe_interval(x1, n1, x2, n2)


def _fmt_difference(value: tuple[float, float, float]) -> str:
    estimate, lower, upper = value
    if math.isnan(estimate):
        return "–"
    return f"{100 * estimate:.1f} ({100 * lower:.1f}, {100 * upper:.1f})"


def ae_dot_chart_section(inputs: DsmbInputs) -> Section:
    """Closed: per preferred term (the :data:`TOP_TERMS` most frequent), participants with the
    event per arm and each arm's risk difference against the first arm, with Newcombe's 95%
    interval (percentage points), as a table and a dot chart. Open: the section says it is in
    the closed report only (a difference between arms is arm data)."""
    if inputs.closed and len(inputs.arm_order) < 2:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=("Does not apply: the study has fewer than two arms to compare.",),
        )
    if not inputs.closed:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                "In the closed report only: incidence by arm and the risk differences between "
                "arms are arm data. The open session's adverse-event tables are pooled.",
            ),
        )
    events = _adverse_events_or_unavailable(inputs, SECTION_ID, TITLE)
    if isinstance(events, Section):
        return events
    groups = _groups(inputs, safety_ids(inputs))
    arms = groups[:-1]
    reference_label, reference_ids = arms[0]
    frame = pd.DataFrame(
        {
            "id": events[inputs.key].astype(str).to_numpy(),
            "PT": events["PT"].astype(str).to_numpy(),
        }
    )
    frame = frame[_member(frame["id"], groups[-1][1])]
    participants = frame.groupby("PT")["id"].nunique()
    terms = sorted(participants.index, key=lambda t: (-int(participants[t]), t))[:TOP_TERMS]

    def count(term: str | None, ids: pd.Index) -> int:
        rows = frame if term is None else frame[frame["PT"] == term]
        return int(rows.loc[_member(rows["id"], ids), "id"].nunique())

    comparisons = [(label, ids) for label, ids in arms[1:]]
    rows = []
    incidence = []
    differences = []
    for term in [None, *terms]:
        name = ANY if term is None else term
        counts = [count(term, ids) for _, ids in groups]
        line = [name, *[_pct(n, len(ids)) for n, (_, ids) in zip(counts, groups, strict=True)]]
        for label, ids in comparisons:
            value = _difference(
                count(term, ids), len(ids), count(term, reference_ids), len(reference_ids)
            )
            line.append(_fmt_difference(value))
            if term is not None:
                differences.append(
                    {
                        "term": name,
                        "comparison": f"{label} − {reference_label}",
                        "difference": 100 * value[0],
                        "lower": 100 * value[1],
                        "upper": 100 * value[2],
                    }
                )
        rows.append(line)
        if term is not None:
            for (label, ids), n in zip(arms, counts, strict=False):
                incidence.append(
                    {"term": name, "group": label, "percent": 100 * n / len(ids) if len(ids) else 0}
                )
    columns = [
        "Preferred term",
        *[_header(label, len(ids)) for label, ids in groups],
        *[f"Risk difference {label} − {reference_label}, % (95% CI)" for label, _ in comparisons],
    ]
    table = ReportTable(
        "Most frequent treatment-emergent adverse events by arm",
        pd.DataFrame(rows, columns=columns),
        "Safety population",
        _denominators(groups),
        note=f"Participants with the event, n (%); the {len(terms)} most frequent preferred "
        "terms overall. Risk difference in percentage points against "
        f"{reference_label}, with Newcombe's hybrid score 95% interval; not adjusted for "
        "multiplicity (a screen for signals, not a test).",
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            "The dot chart shows each arm's incidence of the most frequent preferred terms "
            "(left) and the risk difference with its 95% interval (right).",
        ),
        tables=(table,),
        figures=(
            FigureData(
                kind="ae_dot_chart",
                title="Most frequent adverse events: incidence by arm and risk difference",
                data={
                    "incidence": pd.DataFrame(incidence, columns=["term", "group", "percent"]),
                    "difference": pd.DataFrame(
                        differences,
                        columns=["term", "comparison", "difference", "lower", "upper"],
                    ),
                },
                caption="Left: participants with the event (% of the arm's safety population). "
                "Right: risk difference (percentage points) with Newcombe's 95% interval; the "
                "vertical line marks no difference.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, ae_dot_chart_section)
