"""Primary outcome and its missing values by visit: statuses partition the randomised, missing
means due without a value (never merely not yet due), values only in the closed session."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pandas as pd
import pytest

from studyman.reporting.sections.primary_outcome import (
    MISSING,
    NOT_YET_DUE,
    RECORDED,
    SECTION_ID,
    STATUSES,
    primary_outcome_section,
)

from .conftest import Study
from .section_inputs import assert_pooled, count, json_table, section_inputs, session_data

BY_VISIT = f"{SECTION_ID}.primary-outcome-by-visit-observed"
STATUS = f"{SECTION_ID}.primary-outcome-recorded-missing-and-not-yet-due-by-visit"
EARLY = date(2026, 3, 31)  # many participants still on treatment: visits not yet due


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    closed = dataclasses.replace(section_inputs(study, closed=True), interim_efficacy=True)
    return {
        "open": session_data(section_inputs(study, closed=False, cutoff=EARLY)),
        "closed": session_data(closed),
    }


def _blocks(table: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    blocks: dict[str, dict[str, list[str]]] = {}
    current = ""
    for r in table["rows"]:
        if r[0].startswith("  "):
            blocks[current][r[0].strip()] = r
        else:
            current = r[0]
            blocks[current] = {}
    return blocks


@pytest.mark.parametrize("session", ["open", "closed"])
def test_statuses_partition_the_randomised_at_every_visit(
    sessions: dict[str, dict[str, Any]], session: str
) -> None:
    data = sessions[session]
    blocks = _blocks(json_table(data, STATUS))
    assert len(blocks) >= 5
    for rows in blocks.values():
        assert list(rows) == list(STATUSES)
        assert sum(count(r[-1]) for r in rows.values()) == data["facts"]["randomised"]
        for column in range(1, len(next(iter(rows.values()))) - 1):
            assert sum(count(r[column]) for r in rows.values()) <= data["facts"]["randomised"]


def test_missing_is_due_without_a_value_and_pending_visits_are_not_missing(study: Study) -> None:
    inputs = section_inputs(study, closed=False, cutoff=EARLY)
    protocol = study.protocol
    primary = protocol.endpoints.primary
    key = protocol.study.record_id_field
    visits = inputs.facts().visits
    frame = inputs.tables[primary.instrument]
    recorded = {
        (str(r), str(e))
        for r, e, v in zip(
            frame[key], frame["redcap_event_name"], pd.to_numeric(frame[primary.field]), strict=True
        )
        if pd.notna(v)
    }
    section = primary_outcome_section(inputs)
    blocks = _blocks({"rows": section.tables[-1].frame.to_numpy().tolist(), "id": STATUS})
    pending_total = 0
    for visit in protocol.visits:
        if visit.label not in blocks or primary.instrument not in visit.instruments:
            continue
        at = visits[visits["event"] == visit.event]
        has = [(str(r), visit.event) in recorded for r in at["subject"]]
        due = at["due"].astype(bool).to_numpy()
        expected_missing = int((due & ~pd.Series(has).to_numpy(bool)).sum())
        assert count(blocks[visit.label][MISSING][-1]) == expected_missing
        assert count(blocks[visit.label][RECORDED][-1]) == sum(has)
        pending_total += count(blocks[visit.label][NOT_YET_DUE][-1])
    assert pending_total > 0  # the early cut-off leaves visits not yet due, not counted missing


def test_values_are_shown_only_closed_and_with_an_interim_efficacy_look(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    assert BY_VISIT not in [t["id"] for t in sessions["open"]["tables"]]
    closed = json_table(sessions["closed"], BY_VISIT)
    facts = sessions["closed"]["facts"]
    arms = list(facts["randomised_by_arm"])
    assert closed["columns"][1:-1] == [f"{a} (N={facts['randomised_by_arm'][a]})" for a in arms]
    for r in closed["rows"]:
        assert sum(int(c.split(";")[0]) for c in r[1:-1]) == int(r[-1].split(";")[0])
    without = primary_outcome_section(section_inputs(study, closed=True))
    assert [t.title for t in without.tables] == [
        "Primary outcome: recorded, missing and not yet due, by visit"
    ]
    assert "no interim efficacy look" in without.paragraphs[-1]


def test_closed_baseline_mean_restates_the_snapshot(study: Study) -> None:
    inputs = dataclasses.replace(section_inputs(study, closed=True), interim_efficacy=True)
    primary = study.protocol.endpoints.primary
    key = study.protocol.study.record_id_field
    frame = inputs.tables[primary.instrument]
    subjects = inputs.facts().subjects
    randomised = {str(i) for i in subjects.index[subjects["randomised"].to_numpy(bool)]}
    base = frame[
        (frame["redcap_event_name"] == primary.baseline_event)
        & frame[key].astype(str).isin(randomised)
    ]
    values = pd.to_numeric(base[primary.field]).dropna()
    section = primary_outcome_section(inputs)
    first = section.tables[0].frame.iloc[0]
    assert first.iloc[-1].startswith(f"{len(values)}; {values.mean():.1f} (")


def test_open_session_is_pooled(sessions: dict[str, dict[str, Any]]) -> None:
    assert_pooled(
        sessions["open"], SECTION_ID, list(sessions["closed"]["facts"]["randomised_by_arm"])
    )
