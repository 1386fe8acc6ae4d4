"""Emergency unblinding: how many participants' allocations were revealed to treat an emergency
(pooled in the open session) and the log itself (closed), when the protocol declares the log."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _choice_labels,
    _codes,
    _does_not_apply,
    _unavailable,
)
from studyman.reporting.sections.shared import _arm_column, _fmt_date

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "emergency-unblinding"
TITLE = "Emergency unblinding"
TABLE_IDS: tuple[str, ...] = (
    "emergency-unblinding.emergency-unblinding-events",
    "emergency-unblinding.emergency-unblinding-log",
)

EVENTS = "Emergency unblinding events"
PARTICIPANTS = "Participants unblinded"


def _text(inputs: DsmbInputs, frame: pd.DataFrame, field_name: str | None) -> list[str]:
    """*field_name*'s values as shown: a coded value's label, else the text; "" without it."""
    if field_name is None or field_name not in frame.columns:
        return [""] * len(frame)
    labels = _choice_labels(inputs, field_name)
    values = _codes(frame[field_name]).fillna("")
    return [labels.get(str(v), str(v)) for v in values]


def unblinding_section(inputs: DsmbInputs) -> Section:
    """Emergency unblinding events up to the cut-off: counts (both sessions, pooled) and the log
    (Participant, Arm, Date, Reason, Requested by) in the closed report; the open session's gate
    withholds the log."""
    spec = inputs.protocol.emergency_unblinding
    if spec is None:
        return _does_not_apply(SECTION_ID, TITLE, "emergency-unblinding log")
    frame = inputs.table(spec.form)
    if frame is None:
        if not inputs.closed and inputs.protocol.is_unblinded_form(spec.form):
            return Section(
                id=SECTION_ID,
                title=TITLE,
                paragraphs=(
                    "The emergency-unblinding log is a form of the unblinded team: in the closed "
                    "report only.",
                ),
            )
        return _unavailable(SECTION_ID, TITLE, (spec.form,))
    dates = pd.to_datetime(frame[spec.date_field], errors="coerce")
    cut = pd.Timestamp(inputs.cutoff)
    # a row with a date, on or before the cut-off, is an unblinding event
    rows = frame.loc[(dates.notna() & (dates <= cut)).to_numpy()].copy()
    rows["_date"] = dates[(dates.notna() & (dates <= cut)).to_numpy()]
    rows = rows.sort_values(["_date", inputs.key], kind="stable")
    counts = pd.DataFrame(
        [
            [EVENTS, str(len(rows))],
            [PARTICIPANTS, str(rows[inputs.key].nunique())],
        ],
        columns=["Emergency unblinding", "Total"],
    )
    tables = [ReportTable("Emergency unblinding events", counts, note="Pooled over arms.")]
    listing = pd.DataFrame(
        {
            "Participant": rows[inputs.key].astype(str).to_numpy(),
            "Date": [_fmt_date(v) for v in rows["_date"]],
            "Reason": _text(inputs, rows, spec.reason_field),
            "Requested by": _text(inputs, rows, spec.requested_by_field),
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, rows[inputs.key]))
    if spec.reason_field is None:
        listing = listing.drop(columns=["Reason"])
    if spec.requested_by_field is None:
        listing = listing.drop(columns=["Requested by"])
    tables.append(ReportTable("Emergency unblinding log", listing.reset_index(drop=True)))
    n = len(rows)
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{n} emergency unblinding event{'' if n == 1 else 's'} recorded by the cut-off "
            f"({rows[inputs.key].nunique()} participant"
            f"{'' if rows[inputs.key].nunique() == 1 else 's'}).",
        ),
        tables=tuple(tables),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, unblinding_section)
