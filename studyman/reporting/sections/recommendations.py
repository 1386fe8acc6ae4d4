"""Previous DSMB recommendations and the study's responses (both sessions).

From ``dsmb-history.yaml`` beside the protocol (:mod:`studyman.protocol.dsmb_history`): the
meetings held before this report's data cut-off, what the board recommended at each and how the
study responded. Nothing here is by arm.
"""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import DsmbInputs, ReportTable, Section, SectionSpec

SECTION_ID = "recommendations"
TITLE = "Previous recommendations"
TABLE_IDS: tuple[str, ...] = (
    "recommendations.previous-meetings",
    "recommendations.recommendations-and-the-study-s-responses",
)

_KINDS = {
    "organisational": "organisational",
    "open_and_closed": "open and closed sessions",
    "ad_hoc": "ad hoc",
}
_STATUS = {
    "implemented": "Implemented",
    "in_progress": "In progress",
    "not_adopted": "Not adopted",
    "no_action_needed": "No action needed",
    "open": "Open: no response yet",
}


def recommendations_section(inputs: DsmbInputs) -> Section:
    """The meetings before the cut-off, their recommendations and the responses."""
    history = inputs.dsmb_history
    if history is None:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                "No DSMB history is recorded for this study (dsmb-history.yaml beside the "
                "protocol): no previous meeting or recommendation to report.",
            ),
        )
    meetings = history.meetings_before(inputs.cutoff)
    if not meetings:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                f"No DSMB meeting was held before the data cut-off ({inputs.cutoff}): this is "
                "the board's first report.",
            ),
        )
    paragraphs = [
        f"{len(meetings)} meeting(s) before the data cut-off ({inputs.cutoff}); the "
        f"last on {meetings[-1].date}."
    ]
    declared = set(inputs.protocol.reporting.dsmb_meetings)
    unplanned = [str(m.date) for m in meetings if declared and m.date not in declared]
    if unplanned:
        paragraphs.append(
            "Not among the meeting dates the protocol declares (reporting.dsmb_meetings): "
            + ", ".join(unplanned)
            + "."
        )
    meeting_rows = [
        [
            str(m.date),
            _KINDS[m.kind],
            str(m.data_cutoff) if m.data_cutoff is not None else "–",
            str(len(m.recommendations)),
        ]
        for m in meetings
    ]
    tables = [
        ReportTable(
            "Previous meetings",
            pd.DataFrame(
                meeting_rows, columns=["Meeting", "Kind", "Data cut-off", "Recommendations"]
            ),
        )
    ]
    rows = [
        [
            str(meeting.date),
            recommendation.id,
            recommendation.text,
            recommendation.response or "–",
            _STATUS[recommendation.status]
            + (
                f" ({recommendation.response_date})"
                if recommendation.response_date is not None
                else ""
            ),
        ]
        for meeting in meetings
        for recommendation in meeting.recommendations
    ]
    if rows:
        tables.append(
            ReportTable(
                "Recommendations and the study's responses",
                pd.DataFrame(
                    rows, columns=["Meeting", "Id", "Recommendation", "Response", "Status"]
                ),
                note="From the study's DSMB history (dsmb-history.yaml); the date after a "
                "status is that of the response.",
            )
        )
    open_items = sum(1 for row in rows if row[4].startswith(("Open", "In progress")))
    if open_items:
        paragraphs.append(f"{open_items} recommendation(s) not yet fully implemented.")
    return Section(id=SECTION_ID, title=TITLE, paragraphs=tuple(paragraphs), tables=tuple(tables))


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, recommendations_section)
