"""Executive summary: the major points for the board (enrolment against target, retention, safety
signals, data quality) in a few sentences and a traffic-light table, all read from the facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from studyman.protocol.models import Protocol, TrafficLights
from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _count_table,
    _denominators,
    _groups,
    _member,
)

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "executive-summary"
TITLE = "Executive summary"
TABLE_IDS: tuple[str, ...] = (
    "executive-summary.major-points-traffic-lights",
    "executive-summary.safety-signals",
)

GREEN, AMBER, RED, NOT_ASSESSED = "Green", "Amber", "Red", "Not assessed"


def expected_enrolment(protocol: Protocol, cutoff: date) -> float:
    """Participants expected randomised by *cutoff*: a linear accrual to the enrolment target
    between the planned start and end of enrolment (the enrolment figure's dashed line)."""
    enrolment = protocol.enrolment
    span = (enrolment.end - enrolment.start).days
    elapsed = (cutoff - enrolment.start).days
    fraction = 1.0 if span <= 0 else min(max(elapsed / span, 0.0), 1.0)
    return enrolment.target * fraction


def thresholds_text(lights: TrafficLights) -> str:
    """The footnote of the traffic lights: every threshold and how expected enrolment is set."""
    return (
        f"Enrolment: green at {lights.enrolment_amber:.0%} or more of the enrolment expected by "
        f"the cut-off, amber at {lights.enrolment_red:.0%} or more, else red (expected: a linear "
        "accrual to the target between the planned start and end of enrolment). Retention: green "
        f"at {lights.retention_amber:.0%} or more of the scheduled visits due done, amber at "
        f"{lights.retention_red:.0%} or more, else red. Safety signals: red on any death or "
        "potential Hy's law case, amber on any serious adverse event or AESI, else green. Data "
        f"quality: green when the open site queries' median age is {lights.query_days_amber:g} "
        f"days or less, amber up to {lights.query_days_red:g} days, else red. Thresholds: the "
        "protocol's reporting.traffic_lights (these defaults when it declares none); every count "
        "is a fact of facts.json."
    )


def randomised_ids(inputs: DsmbInputs) -> pd.Index:
    """Record IDs of the randomised participants, from the facts."""
    subjects = inputs.facts().subjects
    ids: pd.Index = pd.Index(
        [str(i) for i in subjects.index[subjects["randomised"].to_numpy(bool)]]
    )
    return ids


def safety_ids(inputs: DsmbInputs) -> pd.Index:
    """Record IDs of the safety population as the rules define it, from the facts (randomised
    and treated when the rules declare no safety population)."""
    subjects = inputs.facts().subjects
    rule = inputs.rules.population("safety")
    if rule is not None:
        mask = subjects[f"population_{rule.name}"].to_numpy(bool)
    else:
        mask = (subjects["randomised"] & subjects["treated"]).to_numpy(bool)
    ids: pd.Index = pd.Index([str(i) for i in subjects.index[mask]])
    return ids


def _at_least(value: float, amber: float, red: float) -> str:
    """Green at or above *amber*, amber at or above *red*, else red (higher is better)."""
    if value >= amber:
        return GREEN
    return AMBER if value >= red else RED


@dataclass(frozen=True)
class _Signals:
    serious: pd.Index
    deaths: pd.Index
    aesi: pd.Index
    hys_law: pd.Index


def _signals(inputs: DsmbInputs) -> _Signals:
    """Record IDs with each safety signal, from the facts (treatment-emergent events only)."""
    facts = inputs.facts()
    events = facts.adverse_events
    teae = events[events["teae"].astype(bool).to_numpy()]
    subjects = facts.subjects
    safety = _member(subjects.index, safety_ids(inputs))
    return _Signals(
        serious=pd.Index(teae.loc[teae["serious"].astype(bool).to_numpy(), "subject"].unique()),
        deaths=subjects.index[subjects["death"].to_numpy(bool)],
        aesi=pd.Index(teae.loc[teae["aesi"].astype(bool).to_numpy(), "subject"].unique()),
        hys_law=subjects.index[subjects["hys_law"].to_numpy(bool) & safety],
    )


def executive_summary_section(inputs: DsmbInputs) -> Section:
    """The board's major points: sentences, the traffic lights and the safety signals table."""
    protocol = inputs.protocol
    lights: TrafficLights = protocol.reporting.traffic_lights
    headline = inputs.facts().headline()
    target = protocol.enrolment.target
    randomised = int(headline["randomised"])
    expected = expected_enrolment(protocol, inputs.cutoff)
    enrolment_ratio = randomised / expected if expected > 0 else float("nan")
    enrolment_light = (
        _at_least(enrolment_ratio, lights.enrolment_amber, lights.enrolment_red)
        if expected > 0
        else NOT_ASSESSED
    )
    due = int(headline["visits_due"])
    done = int(headline["visits_done"])
    retention = done / due if due else float("nan")
    retention_light = (
        _at_least(retention, lights.retention_amber, lights.retention_red) if due else NOT_ASSESSED
    )
    signals = _signals(inputs)
    serious, deaths = len(signals.serious), len(signals.deaths)
    aesi, hys_law = len(signals.aesi), len(signals.hys_law)
    if deaths or hys_law:
        safety_light = RED
    elif serious or aesi:
        safety_light = AMBER
    else:
        safety_light = GREEN
    has_queries = "site_queries_open" in headline
    open_queries = int(headline.get("site_queries_open", 0))
    median_days = float(headline.get("median_days_open", 0.0))
    if not has_queries:
        quality_light = NOT_ASSESSED
    elif median_days > lights.query_days_red:
        quality_light = RED
    elif median_days > lights.query_days_amber:
        quality_light = AMBER
    else:
        quality_light = GREEN

    def percent(value: float) -> str:
        return "–" if np.isnan(value) else f"{100.0 * value:.1f}%"

    rows = [
        [
            "Enrolment",
            f"{randomised} randomised of {target} ({100.0 * randomised / target:.1f}% of target); "
            f"{expected:.0f} expected by the cut-off ({percent(enrolment_ratio)})",
            enrolment_light,
        ],
        [
            "Retention",
            f"{done} of {due} scheduled visits due done ({percent(retention)}); "
            f"{int(headline['discontinued_study'])} discontinued the study",
            retention_light,
        ],
        [
            "Safety signals",
            f"{serious} with a serious adverse event, {deaths} death"
            f"{'' if deaths == 1 else 's'}, {aesi} with an AESI, {hys_law} potential Hy's law "
            f"case{'' if hys_law == 1 else 's'}",
            safety_light,
        ],
        [
            "Data quality",
            (
                f"{open_queries} site queries open, median {median_days:g} days open"
                if has_queries
                else "no query log supplied"
            ),
            quality_light,
        ],
    ]
    traffic = pd.DataFrame(rows, columns=["Domain", "At the data cut-off", "Status"])
    groups = _groups(inputs, randomised_ids(inputs))

    def among(found: pd.Index) -> Callable[[pd.Index], int]:
        return lambda ids: int(_member(ids, found).sum())

    safety_table = _count_table(
        [
            (
                "Participants with a serious treatment-emergent adverse event",
                among(signals.serious),
            ),
            ("Deaths (any cause)", among(signals.deaths)),
            ("Participants with a treatment-emergent AESI", among(signals.aesi)),
            ("Potential Hy's law cases (safety population)", among(signals.hys_law)),
        ],
        groups,
        first="Participants",
    )
    flagged = [row[0] for row in rows if row[2] in (AMBER, RED)]
    paragraphs = (
        f"At the data cut-off ({inputs.cutoff.isoformat()}) {randomised} participants were "
        f"randomised, {100.0 * randomised / target:.1f}% of the target of {target} and "
        f"{percent(enrolment_ratio)} of the {expected:.0f} expected by now at a linear accrual.",
        (
            f"Of {due} scheduled visits due, {done} were done ({percent(retention)}); "
            f"{int(headline['discontinued_study'])} participants discontinued the study."
            if due
            else "No scheduled visit was due by the cut-off."
        ),
        f"Safety: {serious} participants with a serious treatment-emergent adverse event, "
        f"{deaths} death{'' if deaths == 1 else 's'}, {aesi} participants with a "
        f"treatment-emergent adverse event of special interest and {hys_law} potential Hy's law "
        f"case{'' if hys_law == 1 else 's'}.",
        (
            f"Data quality: {open_queries} site queries open, median {median_days:g} days open."
            if has_queries
            else "Data quality: no query log was supplied."
        ),
        (
            "For the board's attention: " + ", ".join(flagged).lower() + "."
            if flagged
            else "No domain is amber or red."
        ),
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=paragraphs,
        tables=(
            ReportTable(
                "Major points (traffic lights)",
                traffic,
                note=thresholds_text(lights),
            ),
            ReportTable(
                "Safety signals",
                safety_table,
                "Randomised",
                _denominators(groups),
                note="Treatment-emergent events; AESI: recorded as an adverse event of special "
                "interest the protocol declares; potential Hy's law: the protocol's rule on one "
                "liver sample after screening.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, executive_summary_section)
