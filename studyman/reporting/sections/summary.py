"""The summary and protocol synopsis, with the study's headline facts."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import TOTAL, DsmbInputs, ReportTable, Section, SectionSpec
from studyman.reporting.sections.shared import _as_of_text

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "summary"
TITLE = "Summary and protocol synopsis"
TABLE_IDS: tuple[str, ...] = (
    "summary.protocol-synopsis",
    "summary.study-facts-at-the-data-cut-off",
)


def summary_section(inputs: DsmbInputs) -> Section:
    """Summary and protocol synopsis; no arm is named in an open session."""
    protocol = inputs.protocol
    study = protocol.study
    subjects = inputs.subjects()
    randomised = int(subjects["randomised"].sum())
    ratio = ":".join(str(arm.ratio) for arm in protocol.arms.items)
    if inputs.closed:
        arms_text = (
            f"{len(protocol.arms.items)} arms ({ratio}), shown in this closed session as "
            + ", ".join(inputs.arm_order)
            + "."
        )
    else:
        arms_text = (
            f"{len(protocol.arms.items)} arms, allocation ratio {ratio}; this open report pools "
            "all participants and names no arm."
        )
    synopsis = pd.DataFrame(
        {
            "Item": [
                "Study",
                "Registration",
                "Sponsor",
                "Protocol version",
                "Design",
                "Treatment",
                "Randomisation",
                "Primary endpoint",
                "Sites",
                "Enrolment target",
                "Data cut-off",
            ],
            "Value": [
                f"{study.id}: {study.title}",
                study.registration or "–",
                study.sponsor or "–",
                f"{study.version}" + (f" ({study.version_date})" if study.version_date else ""),
                arms_text,
                f"{protocol.treatment.weeks} weeks of treatment; "
                f"{protocol.treatment.cbt_sessions_planned} CBT sessions planned",
                f"{protocol.randomization.method}, stratified by "
                + ", ".join(f.label or f.id for f in protocol.randomization.stratification),
                protocol.endpoints.primary.name,
                str(len(protocol.sites)),
                f"{protocol.enrolment.target} randomised between {protocol.enrolment.start} "
                f"and {protocol.enrolment.end}",
                inputs.cutoff.isoformat(),
            ],
        }
    )
    headline = inputs.facts().headline()
    safety = int(headline["safety_population"])
    screened = int(headline["screened"])
    paragraphs = (
        f"At the data cut-off ({inputs.cutoff.isoformat()}) {screened} participants had been "
        f"screened and {randomised} randomised "
        f"({100.0 * randomised / protocol.enrolment.target:.1f}% of the target of "
        f"{protocol.enrolment.target}); the safety population holds {safety} participants.",
        "Prepared by the Data Coordinating Centre from a verified data snapshot. The report "
        "states what the data show; it makes no claim about any treatment.",
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=paragraphs,
        tables=(ReportTable("Protocol synopsis", synopsis), facts_table(inputs)),
    )


#: Row labels of the study-facts table by ``facts.json`` key (:data:`studyman.facts.HEADLINE_KEYS`).
FACT_LABELS: dict[str, str] = {
    "screened": "Screened",
    "eligible": "Eligible",
    "randomised": "Randomised",
    "treated": "Randomised and treated",
    "safety_population": "Safety population",
    "itt_population": "Intention-to-treat population",
    "mitt_population": "Modified intention-to-treat population",
    "pp_population": "Per-protocol population",
    "teae_participants": "Participants with a treatment-emergent adverse event",
    "teae_events": "Treatment-emergent adverse events (events)",
    "serious_ae_participants": "Participants with a serious treatment-emergent adverse event",
    "deaths": "Deaths",
    "discontinued_treatment": "Discontinued study treatment",
    "discontinued_study": "Discontinued the study",
    "discontinued_due_to_ae": "Discontinued the study due to an adverse event",
    "deviations": "Protocol deviations (events)",
    "major_deviations": "Major protocol deviations (events)",
    "participants_with_major_deviation": "Participants with a major protocol deviation",
    "visits_due": "Scheduled visits due by the cut-off (randomised participants)",
    "visits_done": "Scheduled visits done",
    "visits_missed": "Scheduled visits recorded as not done",
    "visits_overdue": "Scheduled visits overdue (due, no record)",
    "site_queries_open": "Site queries open",
    "review_signals_open": "Review signals open",
    "median_days_open": "Median days open (site queries)",
}


def facts_table(inputs: DsmbInputs) -> ReportTable:
    """The headline facts (``facts.json``'s ``facts``) as a table: one row per key, a column
    per arm in a closed session (where the facts have per-arm values), then the total."""
    headline = inputs.facts().headline()
    arms = inputs.arm_order if inputs.closed else ()
    rows: list[list[str]] = []
    for key, label in FACT_LABELS.items():
        if key not in headline:
            continue
        value = headline[key]
        by_arm = headline.get(f"{key}_by_arm", {}) if arms else {}
        cells = [str(by_arm[arm]) if arm in by_arm else "–" for arm in arms]
        total = f"{value:g}" if isinstance(value, float) else str(value)
        rows.append([label, key, *cells, total])
    return ReportTable(
        "Study facts at the data cut-off",
        pd.DataFrame(rows, columns=["Fact", "Key", *arms, TOTAL]),
        note="Derived once from the snapshot at the data cut-off; every table of this report "
        "and facts.json state the same values (query ages count to "
        f"{_as_of_text(inputs)}). Definitions: see 'Definitions'."
        + (" –: no per-arm value." if arms else ""),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, summary_section)
