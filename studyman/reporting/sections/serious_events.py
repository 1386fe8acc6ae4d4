"""Serious adverse events and deaths."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _choice_labels,
    _codes,
    _count_table,
    _denominators,
    _groups,
    _randomised,
    _safety,
)
from studyman.reporting.sections.shared import (
    _SEVERITY,
    _adverse_events_or_unavailable,
    _arm_column,
    _fmt_date,
)

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "sae"
TITLE = "Serious adverse events and deaths"
TABLE_IDS: tuple[str, ...] = (
    "sae.serious-adverse-events-and-deaths",
    "sae.listing-of-serious-adverse-events",
    "sae.listing-of-deaths",
)


def serious_events_section(inputs: DsmbInputs) -> Section:
    """Listings of serious adverse events and of deaths."""
    protocol = inputs.protocol
    ae_spec = protocol.adverse_events
    events = _adverse_events_or_unavailable(inputs, SECTION_ID, TITLE)
    if isinstance(events, Section):
        return events
    serious = events[events["serious"]].sort_values([inputs.key, ae_spec.start_field])
    criteria = {
        "1": "death",
        "2": "life-threatening",
        "3": "hospitalisation",
        "4": "disability",
        "5": "congenital anomaly",
        "6": "important medical event",
    }
    outcome = {
        "1": "recovered",
        "2": "recovering",
        "3": "not recovered",
        "4": "recovered with sequelae",
        "5": "fatal",
        "6": "unknown",
    }
    related = {
        code: label.lower() for code, label in _choice_labels(inputs, ae_spec.related_field).items()
    } or {
        "1": "not related",
        "2": "unlikely",
        "3": "possible",
        "4": "probable",
        "5": "definite",
    }

    def criteria_of(row: pd.Series) -> str:
        found = [
            name
            for code, name in criteria.items()
            if f"{ae_spec.serious_criteria_field}___{code}" in row.index
            and str(row[f"{ae_spec.serious_criteria_field}___{code}"]) == "1"
        ]
        return ", ".join(found) or "not recorded"

    listing = pd.DataFrame(
        {
            "Participant": serious[inputs.key].astype(str),
            "Preferred term": serious["PT"].astype(str),
            "Onset": serious[ae_spec.start_field].map(_fmt_date),
            "Severity": serious["severity"].map(
                lambda v: _SEVERITY.get(int(v), "") if pd.notna(v) else ""
            ),
            "Criteria": [criteria_of(row) for _, row in serious.iterrows()],
            "Relatedness": _codes(serious[ae_spec.related_field]).map(
                lambda c: related.get(str(c), "")
            ),
            "Outcome": _codes(serious[ae_spec.outcome_field]).map(
                lambda c: outcome.get(str(c), "")
            ),
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, serious[inputs.key]))
    subjects = inputs.subjects()
    deaths = subjects[subjects["death"].to_numpy(bool)]
    fatal_pt = (
        events[events["fatal"]].groupby(inputs.key)["PT"].agg(lambda s: ", ".join(sorted(set(s))))
    )
    disposition = inputs.table(protocol.disposition.form)
    cause: dict[str, str] = {}
    cause_field = protocol.disposition.death_cause_field
    if disposition is not None and cause_field is not None and cause_field in disposition.columns:
        cause = {
            str(k): str(v)
            for k, v in zip(disposition[inputs.key], disposition[cause_field], strict=True)
            if pd.notna(v)
        }
    death_listing = pd.DataFrame(
        {
            "Participant": deaths.index.astype(str),
            "Date of death": deaths["date_of_death"].map(_fmt_date),
            "Cause (as recorded)": [cause.get(str(r), "") for r in deaths.index],
            "Fatal adverse event": [str(fatal_pt.get(r, "")) for r in deaths.index],
        }
    )
    if inputs.closed:
        death_listing.insert(1, "Arm", _arm_column(inputs, pd.Series(deaths.index)))
    safety = _safety(inputs)
    groups = _groups(inputs, _randomised(inputs))
    serious_ids = set(serious[inputs.key].astype(str))
    death_ids = set(deaths.index.astype(str))
    counts = _count_table(
        [
            (
                "Participants with a serious treatment-emergent adverse event",
                lambda ids: len(serious_ids & set(ids.astype(str))),
            ),
            ("Deaths (any cause)", lambda ids: len(death_ids & set(ids.astype(str)))),
        ],
        groups,
        first="Participants",
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{len(serious)} serious treatment-emergent adverse events in "
            f"{serious[inputs.key].nunique()} participants; "
            f"{len(deaths)} death{'' if len(deaths) == 1 else 's'}.",
        ),
        tables=(
            ReportTable(
                "Serious adverse events and deaths",
                counts,
                "Randomised",
                _denominators(groups),
                note="Deaths: a date of death or the disposition 'death' recorded.",
            ),
            ReportTable(
                "Listing of serious adverse events",
                listing.reset_index(drop=True),
                "Safety population",
                (("Total", len(safety)),),
            ),
            ReportTable("Listing of deaths", death_listing.reset_index(drop=True)),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, serious_events_section)
