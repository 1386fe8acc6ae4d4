"""Protocol amendments since the last report (both sessions).

From ``dsmb-history.yaml`` beside the protocol (:mod:`studyman.protocol.dsmb_history`): the
amendments dated after the data the last meeting reviewed (its data cut-off, else its date) and
up to this report's data cut-off; every amendment so far when the board has not met before.
"""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import DsmbInputs, ReportTable, Section, SectionSpec

SECTION_ID = "amendments"
TITLE = "Protocol amendments since the last report"
TABLE_IDS: tuple[str, ...] = ("amendments.protocol-amendments-since-the-last-report",)


def amendments_section(inputs: DsmbInputs) -> Section:
    """The protocol amendments since the last report, in date order."""
    history = inputs.dsmb_history
    current = f"The protocol in use is version {inputs.protocol.study.version}."
    if history is None:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                "No DSMB history is recorded for this study (dsmb-history.yaml beside the "
                "protocol): protocol amendments are not listed.",
                current,
            ),
        )
    last = history.last_meeting_before(inputs.cutoff)
    since = history.amendments_since_last_report(inputs.cutoff)
    if last is None:
        window = f"up to the data cut-off ({inputs.cutoff}); the board has not met before"
    else:
        window = (
            f"after the data the last meeting ({last.date}) reviewed, to "
            f"{last.reviewed_until}, up to the data cut-off ({inputs.cutoff})"
        )
    if not since:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(f"No protocol amendment {window}.", current),
        )
    rows = [[a.version, str(a.date), a.summary] for a in since]
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(f"{len(since)} protocol amendment(s) {window}.", current),
        tables=(
            ReportTable(
                "Protocol amendments since the last report",
                pd.DataFrame(rows, columns=["Version", "Date", "Summary of changes"]),
                note="From the study's DSMB history (dsmb-history.yaml).",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, amendments_section)
