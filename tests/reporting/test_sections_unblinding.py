"""Emergency unblinding: 'Does not apply' without the protocol's log; with it, pooled counts in
both sessions and the log (with the arm) in the closed report only."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from studyman.protocol.models import EmergencyUnblinding, Protocol
from studyman.reporting.dsmb import DsmbInputs, build_sections, report_data
from studyman.reporting.sections.unblinding import (
    EVENTS,
    PARTICIPANTS,
    SECTION_ID,
    unblinding_section,
)

from .conftest import Study
from .section_inputs import CUT, json_table, row, section_inputs

FORM = "unblinding"
COUNTS = f"{SECTION_ID}.emergency-unblinding-events"
LOG = f"{SECTION_ID}.emergency-unblinding-log"


def _declared(protocol: Protocol, *, hidden: bool = False) -> Protocol:
    spec = EmergencyUnblinding(
        form=FORM, date_field="unbl_date", reason_field="unbl_reason", requested_by_field="unbl_by"
    )
    update: dict[str, object] = {"emergency_unblinding": spec}
    if hidden:
        blinding = protocol.blinding.model_copy(
            update={"unblinded_forms": (*protocol.blinding.unblinded_forms, FORM)}
        )
        update["blinding"] = blinding
    return protocol.model_copy(update=update)


def _log(ids: list[str]) -> pd.DataFrame:
    """Two events of the first participant, one of the second, one after the cut-off."""
    after = (pd.Timestamp(CUT) + pd.Timedelta(days=5)).date().isoformat()
    return pd.DataFrame(
        {
            "record_id": [ids[0], ids[1], ids[0], ids[2]],
            "redcap_event_name": ["logs_arm_1"] * 4,
            "unbl_date": pd.to_datetime(["2026-01-10", "2026-03-01", "2026-05-01", after]),
            "unbl_reason": ["Overdose", "Serious rash", "Surgery", "Later"],
            "unbl_by": ["Site investigator"] * 4,
        }
    )


def _with_log(study: Study, *, closed: bool, hidden: bool = False) -> DsmbInputs:
    inputs = section_inputs(study, closed=closed)
    protocol = _declared(study.protocol, hidden=hidden)
    randomised = inputs.facts().subjects
    ids = [str(i) for i in randomised.index[randomised["randomised"].to_numpy(bool)][:3]]
    tables = dict(inputs.tables)
    if closed or not hidden:
        tables[FORM] = _log(ids)
    return dataclasses.replace(inputs, protocol=protocol, tables=tables, _cache={})


@pytest.mark.parametrize("closed", [False, True])
def test_without_the_protocols_log_the_section_does_not_apply(study: Study, closed: bool) -> None:
    section = unblinding_section(section_inputs(study, closed=closed))
    assert section.paragraphs == (
        "Does not apply: the protocol declares no emergency-unblinding log.",
    )
    assert not section.tables


def test_closed_report_lists_each_event_up_to_the_cut_off_with_its_arm(study: Study) -> None:
    inputs = _with_log(study, closed=True)
    assert inputs.arms is not None
    data = report_data(build_sections(inputs), inputs.facts())
    counts = json_table(data, COUNTS)
    assert row(counts, EVENTS)[1] == "3"  # the event after the cut-off is not counted
    assert row(counts, PARTICIPANTS)[1] == "2"
    log = json_table(data, LOG)
    assert log["columns"] == ["Participant", "Arm", "Date", "Reason", "Requested by"]
    assert [r[2] for r in log["rows"]] == ["2026-01-10", "2026-03-01", "2026-05-01"]
    assert [r[3] for r in log["rows"]] == ["Overdose", "Serious rash", "Surgery"]
    for r in log["rows"]:
        assert r[1] == str(inputs.arms[r[0]])


def test_open_session_gives_the_counts_and_withholds_the_log(study: Study) -> None:
    inputs = _with_log(study, closed=False)
    sections = build_sections(inputs)
    section = next(s for s in sections if s.id == SECTION_ID)
    data = report_data(sections, inputs.facts())
    assert row(json_table(data, COUNTS), EVENTS)[1] == "3"
    assert not [t for t in data["tables"] if t["id"] == LOG]
    ids = set(inputs.tables[FORM]["record_id"])
    text = " ".join(section.paragraphs)
    assert not any(i in text for i in ids)
    assert "closed report only" in text


def test_an_unblinded_log_is_in_the_closed_report_only(study: Study) -> None:
    opened = unblinding_section(_with_log(study, closed=False, hidden=True))
    assert not opened.tables
    assert "closed report only" in opened.paragraphs[0]
    closed = unblinding_section(_with_log(study, closed=True, hidden=True))
    assert [t.title for t in closed.tables] == [
        "Emergency unblinding events",
        "Emergency unblinding log",
    ]
