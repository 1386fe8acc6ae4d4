"""Concomitant medications of interest."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _codes,
    _count_table,
    _denominators,
    _per_record,
)
from studyman.reporting.sections.shared import _safety_form

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "concomitant-medications"
TITLE = "Concomitant medications of interest"
TABLE_IDS: tuple[str, ...] = (
    "concomitant-medications.participants-taking-concomitant-medications-of-interest",
)


def conmeds_section(inputs: DsmbInputs) -> Section:
    """Concomitant medications of interest (interacting or prohibited classes)."""
    protocol = inputs.protocol
    spec = protocol.concomitant_medications
    found = _safety_form(inputs, spec.form, SECTION_ID, TITLE)
    if isinstance(found, Section):
        return found
    frame, groups = found
    subjects = inputs.subjects()
    rand = subjects["randomisation_date"]
    rand.index = rand.index.astype(str)
    start = pd.to_datetime(frame[spec.start_field])
    stop = pd.to_datetime(frame[spec.stop_field])
    rdate = _per_record(frame[inputs.key], rand)
    ongoing = (_codes(frame[spec.ongoing_field]) == "1").fillna(False)
    on_study = (ongoing | (stop >= rdate).fillna(False)).to_numpy()
    started_after = (start > rdate).fillna(False).to_numpy()
    classes = _codes(frame[spec.class_field])
    rows = []
    rule_text = {
        "stable_dose": "stable dose required",
        "of_interest": "of interest",
        "prohibited": "prohibited",
    }
    for cls in spec.classes:
        if cls.rule == "allowed":
            continue
        mask = (classes == str(cls.code)).fillna(False).to_numpy()
        on = set(frame.loc[mask & on_study, inputs.key].astype(str))
        new = set(frame.loc[mask & started_after, inputs.key].astype(str))
        rows.append(
            (
                f"{cls.name} ({rule_text[cls.rule]}): taken on study",
                (lambda s: lambda ids: len(s & set(ids.astype(str))))(on),
            )
        )
        rows.append(
            (
                f"{cls.name}: started after randomisation",
                (lambda s: lambda ids: len(s & set(ids.astype(str))))(new),
            )
        )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            "Classes that may interact with the study treatment (serotonergic antidepressants, "
            "benzodiazepines and other CNS depressants) and prohibited classes.",
        ),
        tables=(
            ReportTable(
                "Participants taking concomitant medications of interest",
                _count_table(rows, groups, first="Class"),
                "Safety population",
                _denominators(groups),
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, conmeds_section)
