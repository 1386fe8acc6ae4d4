"""Eligibility violations and randomised-but-never-treated: counts equal the facts, listings in
the closed session only, planted violations found."""

from __future__ import annotations

from typing import Any

import pytest

from studyman.reporting.dsmb import DsmbInputs
from studyman.reporting.sections.eligibility import (
    CRITERION_NOT_MET,
    NEVER_TREATED,
    NOT_ELIGIBLE,
    SECTION_ID,
    eligibility_section,
)

from .conftest import Study
from .section_inputs import assert_pooled, count, json_table, row, section_inputs, session_data

COUNTS = f"{SECTION_ID}.randomised-participants-with-an-eligibility-violation-or-never-treated"
VIOLATIONS = f"{SECTION_ID}.listing-of-eligibility-violations"
NEVER = f"{SECTION_ID}.listing-of-randomised-participants-never-treated"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


@pytest.mark.parametrize("session", ["open", "closed"])
def test_never_treated_count_is_randomised_minus_treated(
    sessions: dict[str, dict[str, Any]], session: str
) -> None:
    data = sessions[session]
    facts = data["facts"]
    never = count(row(json_table(data, COUNTS), NEVER_TREATED)[-1])
    assert never == facts["randomised"] - facts["treated"]
    assert never > 0


def test_closed_session_lists_the_never_treated_by_arm(sessions: dict[str, dict[str, Any]]) -> None:
    data = sessions["closed"]
    facts = data["facts"]
    listing = json_table(data, NEVER)
    assert listing["columns"][:2] == ["Participant", "Arm"]
    assert len(listing["rows"]) == facts["randomised"] - facts["treated"]
    by_arm = row(json_table(data, COUNTS), NEVER_TREATED)[1:-1]
    arms = list(facts["randomised_by_arm"])
    listed = [r[1] for r in listing["rows"]]
    assert [count(cell) for cell in by_arm] == [listed.count(arm) for arm in arms]
    assert [count(cell) for cell in by_arm] == [
        facts["randomised_by_arm"][arm] - facts["treated_by_arm"][arm] for arm in arms
    ]


def test_open_session_has_counts_and_no_listing(sessions: dict[str, dict[str, Any]]) -> None:
    data = sessions["open"]
    ids = [t["id"] for t in data["tables"]]
    assert COUNTS in ids
    assert VIOLATIONS not in ids
    assert NEVER not in ids
    assert_pooled(data, SECTION_ID, list(sessions["closed"]["facts"]["randomised_by_arm"]))
    section = data["sections"][SECTION_ID]
    assert any("closed report only" in paragraph for paragraph in section.paragraphs)


def _planted(study: Study, *, closed: bool) -> tuple[DsmbInputs, list[str]]:
    """Two randomised participants with an inclusion criterion recorded not met, one of them
    also recorded not eligible."""
    inputs = section_inputs(study, closed=closed)
    protocol = study.protocol
    eligibility = protocol.eligibility
    criterion = next(c for c in eligibility.criteria if c.kind == "inclusion")
    key = protocol.study.record_id_field
    victims = [str(i) for i in inputs.facts().members("randomised")[:2]]
    tables = dict(inputs.tables)
    frame = tables[eligibility.form].copy()
    rows = frame[key].astype(str).isin(victims) & (frame["redcap_event_name"] == eligibility.event)
    frame.loc[rows, criterion.field] = 0
    frame.loc[rows & (frame[key].astype(str) == victims[0]), eligibility.eligible_field] = 0
    tables[eligibility.form] = frame
    planted = DsmbInputs(
        protocol, tables, inputs.cutoff, arms=inputs.arms, arm_order=inputs.arm_order
    )
    return planted, victims


def test_a_planted_violation_is_counted_and_listed_with_its_criterion(study: Study) -> None:
    planted, victims = _planted(study, closed=True)
    section = eligibility_section(planted)
    counts = section.tables[0].frame.set_index("Participants")
    assert count(counts.loc[CRITERION_NOT_MET].iloc[-1]) == 2
    assert count(counts.loc[NOT_ELIGIBLE].iloc[-1]) == 1
    listing = section.tables[1].frame
    assert sorted(listing["Participant"]) == sorted(victims)
    criterion = next(c for c in study.protocol.eligibility.criteria if c.kind == "inclusion")
    assert all(criterion.text in cell for cell in listing["Criteria recorded not met"])
    assert dict(zip(listing["Participant"], listing["Recorded eligible"], strict=True)) == {
        victims[0]: "no",
        victims[1]: "yes",
    }
    per_criterion = f"  Inclusion: {criterion.text}"
    assert count(counts.loc[per_criterion].iloc[-1]) == 2


def test_a_planted_violation_shows_only_as_a_count_in_the_open_session(study: Study) -> None:
    planted, victims = _planted(study, closed=False)
    data = session_data(planted)
    assert count(row(json_table(data, COUNTS), CRITERION_NOT_MET)[-1]) == 2
    assert VIOLATIONS not in [t["id"] for t in data["tables"]]
    text = str(data["tables"])
    assert not any(victim in text for victim in victims)
