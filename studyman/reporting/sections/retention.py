"""Retention and visit completion."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _count_table,
    _denominators,
    _enrolment_form,
    _groups,
    _header,
    _member,
    _missing,
    _randomised,
    _unavailable,
)
from studyman.reporting.sections.shared import _visit_status

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "retention"
TITLE = "Retention and visit completion"
TABLE_IDS: tuple[str, ...] = (
    "retention.retention",
    "retention.scheduled-visits-done-due",
)


def retention_section(inputs: DsmbInputs) -> Section:
    """Retention and visit completion by scheduled visit."""
    missing = _missing(inputs, (inputs.protocol.visit_form.form, _enrolment_form(inputs)))
    if missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    status = _visit_status(inputs)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    data: dict[str, list[str]] = {"Visit": []}
    for label, ids in groups:
        data[_header(label, len(ids))] = []
    for keys, part in status.groupby(["event", "label"], sort=False):
        data["Visit"].append(str(keys[1]))
        for group_label, ids in groups:
            sub = part[_member(part[inputs.key], ids) & part["due"].to_numpy(bool)]
            due = len(sub)
            done = int(sub["done"].sum())
            data[_header(group_label, len(ids))].append(
                f"{done}/{due} ({100.0 * done / due:.1f}%)" if due else "0/0"
            )
    subjects = inputs.subjects().loc[randomised]
    completed = subjects["completed"].astype(bool)
    active = subjects["disposition_code"].isna()
    left = subjects["discontinued_study"].astype(bool)
    retained_rows = [
        ("Completed the study", lambda ids: int(completed.reindex(ids).sum())),
        ("Still in follow-up at the cut-off", lambda ids: int(active.reindex(ids).sum())),
        ("Discontinued the study", lambda ids: int(left.reindex(ids).sum())),
    ]
    return Section(
        id=SECTION_ID,
        title=TITLE,
        tables=(
            ReportTable(
                "Retention",
                _count_table(retained_rows, groups, first="Status"),
                population="Randomised",
                denominators=_denominators(groups),
            ),
            ReportTable(
                "Scheduled visits done / due",
                pd.DataFrame(data),
                population="Randomised",
                denominators=_denominators(groups),
                note="Due: the visit window closed before the cut-off and the participant had "
                "not left the study before it opened.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, retention_section)
