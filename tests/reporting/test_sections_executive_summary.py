"""The executive summary: first in both sessions, every count a fact, thresholds that bite."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import pytest

from studyman.protocol.models import TrafficLights
from studyman.reporting.sections.executive_summary import (
    SECTION_ID,
    executive_summary_section,
    expected_enrolment,
)

from .conftest import Study
from .section_inputs import (
    AS_OF,
    assert_pooled,
    count,
    json_table,
    row,
    section_inputs,
    session_data,
)

SAFETY = f"{SECTION_ID}.safety-signals"
LIGHTS = f"{SECTION_ID}.major-points-traffic-lights"
SAE = "Participants with a serious treatment-emergent adverse event"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


def _status(data: dict[str, Any], domain: str) -> str:
    return row(json_table(data, LIGHTS), domain)[2]


@pytest.mark.parametrize("session", ["open", "closed"])
def test_executive_summary_is_the_first_section(
    sessions: dict[str, dict[str, Any]], session: str
) -> None:
    assert next(iter(sessions[session]["sections"])) == SECTION_ID
    assert sessions[session]["tables"][0]["id"] == LIGHTS


@pytest.mark.parametrize("session", ["open", "closed"])
def test_safety_signal_totals_equal_the_facts(
    sessions: dict[str, dict[str, Any]], session: str, study: Study
) -> None:
    data = sessions[session]
    facts = data["facts"]
    table = json_table(data, SAFETY)
    assert count(row(table, SAE)[-1]) == facts["serious_ae_participants"]
    assert count(row(table, "Deaths (any cause)")[-1]) == facts["deaths"]
    assert facts["serious_ae_participants"] > 0
    assert facts["deaths"] > 0
    # the Hy's law count is the liver section's
    liver = json_table(data, "aesi-liver.liver-test-abnormalities-after-randomisation")
    hys = count(row(table, "Potential Hy's law cases (safety population)")[-1])
    assert hys == count(row(liver, "Potential Hy's law case")[-1]) > 0
    inputs = section_inputs(study, closed=session == "closed")
    events = inputs.facts().adverse_events
    aesi = events[events["teae"].astype(bool) & events["aesi"].astype(bool)]
    aesi_row = row(table, "Participants with a treatment-emergent AESI")
    assert count(aesi_row[-1]) == aesi["subject"].nunique() > 0


def test_closed_safety_signals_by_arm_sum_to_the_total_and_match_facts_by_arm(
    sessions: dict[str, dict[str, Any]],
) -> None:
    data = sessions["closed"]
    facts = data["facts"]
    table = json_table(data, SAFETY)
    arms = list(facts["randomised_by_arm"])
    assert len(table["columns"]) == 1 + len(arms) + 1
    for label, key in ((SAE, "serious_ae_participants"), ("Deaths (any cause)", "deaths")):
        cells = row(table, label)
        by_arm = [count(cell) for cell in cells[1:-1]]
        assert by_arm == [facts[f"{key}_by_arm"][arm] for arm in arms]
        assert sum(by_arm) == count(cells[-1])
    for arm, column in zip(arms, table["columns"][1:-1], strict=True):
        assert column == f"{arm} (N={facts['randomised_by_arm'][arm]})"


def test_open_summary_is_pooled(sessions: dict[str, dict[str, Any]]) -> None:
    arms = list(sessions["closed"]["facts"]["randomised_by_arm"])
    assert_pooled(sessions["open"], SECTION_ID, arms)
    assert json_table(sessions["open"], SAFETY)["columns"] == [
        "Participants",
        f"Total (N={sessions['open']['facts']['randomised']})",
    ]


def test_traffic_lights_restate_enrolment_and_retention_facts(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    data = sessions["open"]
    facts = data["facts"]
    enrolment = row(json_table(data, LIGHTS), "Enrolment")[1]
    assert enrolment.startswith(
        f"{facts['randomised']} randomised of {study.protocol.enrolment.target}"
    )
    retention = row(json_table(data, LIGHTS), "Retention")[1]
    assert retention.startswith(f"{facts['visits_done']} of {facts['visits_due']} scheduled visits")
    assert _status(data, "Safety signals") == "Red"  # a death in the study
    assert _status(data, "Data quality") == "Not assessed"  # no query log given


def test_thresholds_declared_in_the_protocol_change_the_light_and_the_footnote(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    facts = sessions["open"]["facts"]
    done = facts["visits_done"] / facts["visits_due"]
    assert _status(sessions["open"], "Retention") == "Green"
    strict = TrafficLights(
        retention_amber=min(1.0, done + 0.01), retention_red=min(1.0, done + 0.005)
    )
    reporting = study.protocol.reporting.model_copy(update={"traffic_lights": strict})
    protocol = study.protocol.model_copy(update={"reporting": reporting})
    section = executive_summary_section(section_inputs(study, closed=False, protocol=protocol))
    lights = section.tables[0]
    assert lights.frame.set_index("Domain").loc["Retention", "Status"] == "Red"
    assert f"{strict.retention_amber:.0%} or more" in lights.note
    assert "retention" in section.paragraphs[-1]


def test_expected_enrolment_is_linear_and_clamped(study: Study) -> None:
    protocol = study.protocol
    enrolment = protocol.enrolment
    assert expected_enrolment(protocol, date(2000, 1, 1)) == 0
    assert expected_enrolment(protocol, enrolment.start) == 0
    assert expected_enrolment(protocol, enrolment.end) == enrolment.target
    assert expected_enrolment(protocol, date(2100, 1, 1)) == enrolment.target
    middle = enrolment.start + (enrolment.end - enrolment.start) / 2
    assert expected_enrolment(protocol, middle) == pytest.approx(enrolment.target / 2, abs=1)


def test_before_enrolment_starts_enrolment_is_not_assessed_not_a_crash(study: Study) -> None:
    before = date(study.protocol.enrolment.start.year - 1, 1, 1)
    section = executive_summary_section(section_inputs(study, closed=False, cutoff=before))
    frame = section.tables[0].frame.set_index("Domain")
    assert frame.loc["Enrolment", "Status"] == "Not assessed"
    assert frame.loc["Retention", "Status"] == "Not assessed"
    assert count(section.tables[1].frame.iloc[0, -1]) == 0


def test_query_age_sets_the_data_quality_light(study: Study) -> None:
    opened = [AS_OF - pd.Timedelta(days=days) for days in (40, 50, 60, 2)]
    queries = pd.DataFrame(
        {
            "query_id": ["Q1", "Q2", "Q3", "Q4"],
            "kind": ["site_query", "site_query", "site_query", "review_signal"],
            "status": ["open", "answered", "open", "open"],
            "first_opened_at": [stamp.isoformat() for stamp in opened],
        }
    )
    inputs = section_inputs(study, closed=False, queries=queries)
    headline = inputs.facts().headline()
    section = executive_summary_section(inputs)
    frame = section.tables[0].frame.set_index("Domain")
    assert headline["site_queries_open"] == 3
    assert headline["median_days_open"] == 50
    assert frame.loc["Data quality", "Status"] == "Red"
    assert frame.loc["Data quality", "At the data cut-off"].startswith("3 site queries open")
    young = queries.assign(first_opened_at=[(AS_OF - pd.Timedelta(days=1)).isoformat()] * 4)
    fresh = executive_summary_section(section_inputs(study, closed=False, queries=young))
    assert fresh.tables[0].frame.set_index("Domain").loc["Data quality", "Status"] == "Green"
