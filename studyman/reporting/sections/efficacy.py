"""Efficacy (closed session, descriptive)."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
    DsmbInputs,
    Section,
    SectionSpec,
    _group_table,
    _groups,
    _missing,
    _present,
    _randomised,
    _unavailable,
)
from studyman.reporting.sections.shared import _continuous_rows, _visit_labels

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "efficacy"
TITLE = "Efficacy"
TABLE_IDS: tuple[str, ...] = ("efficacy.primary-endpoint-observed-change-from-baseline",)


def efficacy_section(inputs: DsmbInputs) -> Section:
    """Efficacy: only in a closed session and only when the plan prespecifies an interim look."""
    protocol = inputs.protocol
    if not inputs.interim_efficacy:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                "The analysis plan prespecifies no interim efficacy look for the DSMB: no "
                "efficacy data are shown.",
            ),
        )
    if not inputs.closed:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=("Interim efficacy data are shown in the closed session only.",),
        )
    endpoint = protocol.endpoints.primary
    missing = _missing(inputs, (endpoint.instrument,))
    if missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    frame = _present(inputs, endpoint.instrument)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    values = frame[[inputs.key, _EVENT, endpoint.field]].copy()
    values[inputs.key] = values[inputs.key].astype(str)
    base = values[values[_EVENT] == endpoint.baseline_event].set_index(inputs.key)[endpoint.field]
    values["change"] = pd.to_numeric(values[endpoint.field], errors="coerce") - values[
        inputs.key
    ].map(base).astype(float)
    labels = _visit_labels(protocol)
    rows = []
    for visit in protocol.visits:
        if visit.kind not in ("treatment", "end_of_treatment", "follow_up"):
            continue
        at = values[values[_EVENT] == visit.event].set_index(inputs.key)["change"]
        at = at[~at.index.duplicated()]
        at.index = at.index.astype("string")
        # n, mean (SD), median (min, max) on rows of their own, as in the baseline table
        rows += _continuous_rows(labels[visit.event], at, groups)
    return Section(
        id=SECTION_ID,
        title="Efficacy (prespecified interim look)",
        tables=(
            _group_table(
                "Primary endpoint: observed change from baseline",
                rows,
                "Visit",
                groups,
                "Randomised",
                note=f"{endpoint.name}: observed values only. Descriptive; the prespecified "
                "model is run by 'studyman analyze'.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, efficacy_section)
