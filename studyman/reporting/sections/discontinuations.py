"""Discontinuations due to adverse events."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from studyman.facts import rule_texts
from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _count_table,
    _denominators,
    _groups,
    _missing,
    _randomised,
    _unavailable,
)
from studyman.reporting.sections.shared import _adverse_events, _arm_column, _fmt_date

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "discontinuations"
TITLE = "Discontinuations due to adverse events"
TABLE_IDS: tuple[str, ...] = (
    "discontinuations.discontinuations",
    "discontinuations.listing-of-discontinuations-due-to-adverse-events",
)


def discontinuation_section(inputs: DsmbInputs) -> Section:
    """Discontinuations of the study and of study treatment, and those due to adverse events.

    Notes
    -----
    One definition each, the facts' (:mod:`studyman.facts`): *due to an adverse event* means the
    disposition is the protocol's adverse-event reason. An adverse event whose action withdrew
    study treatment, without that disposition, is a disagreement in the data for validation to
    query; it is shown in the closed listing's last column, never counted here.
    """
    protocol = inputs.protocol
    missing = _missing(inputs, (protocol.disposition.form, protocol.adverse_events.form))
    if len(missing) == 2:
        return _unavailable(SECTION_ID, TITLE, missing)
    subjects = inputs.subjects()
    events = _adverse_events(inputs)
    due_to_ae = subjects[subjects["discontinued_due_to_ae"].to_numpy(bool)]
    withdrawn_pt: dict[str, str] = {}
    if events is not None and inputs.closed:
        # the action codes are masked in the open session's view: read them in the closed one
        w = events[events["withdrawn"]]
        withdrawn_pt = {
            str(k): str(v)
            for k, v in w.groupby(inputs.key)["PT"].agg(lambda s: ", ".join(sorted(set(s)))).items()
        }
    ids = sorted(due_to_ae.index.astype(str))
    listing = pd.DataFrame(
        {
            "Participant": ids,
            "Disposition date": [_fmt_date(subjects.loc[r, "disposition_date"]) for r in ids],
            "Discontinued study treatment": [
                "yes" if bool(subjects.loc[r, "discontinued_treatment"]) else "no" for r in ids
            ],
            "Adverse event(s) with action 'withdrawn'": [withdrawn_pt.get(r, "") for r in ids],
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, pd.Series(ids, dtype="string")))
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)

    def flagged(column: str) -> Callable[[pd.Index], int]:
        chosen = set(subjects.index[subjects[column].to_numpy(bool)].astype(str))
        return lambda g: len(chosen & set(g.astype(str)))

    summary = _count_table(
        [
            ("Discontinued the study (any reason)", flagged("discontinued_study")),
            ("Discontinued study treatment", flagged("discontinued_treatment")),
            ("Discontinued the study due to an adverse event", flagged("discontinued_due_to_ae")),
        ],
        groups,
        first="Participants",
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            "Discontinued due to an adverse event: "
            + dict(rule_texts(inputs.rules))["Discontinuation due to an adverse event"]
            + ". Discontinued study treatment: discontinued the study before the end of the "
            f"{protocol.treatment.weeks}-week treatment period.",
        ),
        tables=(
            ReportTable(
                "Discontinuations",
                summary,
                "Randomised",
                _denominators(groups),
            ),
            ReportTable("Listing of discontinuations due to adverse events", listing),
        ),
        missing=missing,
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, discontinuation_section)
