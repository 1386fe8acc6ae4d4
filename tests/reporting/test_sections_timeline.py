"""Study timeline and projected completion: accrual restates the facts, the projection follows
its stated method."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest

from studyman.reporting.sections.timeline import (
    MONTH_DAYS,
    SECTION_ID,
    project,
    site_months,
    timeline_section,
)

from .conftest import Study
from .section_inputs import CUT, assert_pooled, json_table, row, section_inputs, session_data

ACCRUAL = f"{SECTION_ID}.accrual-per-site-month"
TIMELINE = f"{SECTION_ID}.study-timeline"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


@pytest.mark.parametrize("session", ["open", "closed"])
def test_accrual_restates_the_randomised_fact_per_site_and_in_total(
    sessions: dict[str, dict[str, Any]], session: str, study: Study
) -> None:
    data = sessions[session]
    table = json_table(data, ACCRUAL)
    total = row(table, "All sites")
    assert int(total[3]) == data["facts"]["randomised"]
    assert sum(int(r[3]) for r in table["rows"][:-1]) == data["facts"]["randomised"]
    assert len(table["rows"]) == len(study.protocol.sites) + 1
    months = site_months(study.protocol, CUT)
    assert float(total[2]) == pytest.approx(months.sum(), abs=0.05)
    assert float(total[4]) == pytest.approx(data["facts"]["randomised"] / months.sum(), abs=0.005)


def test_open_timeline_is_pooled(sessions: dict[str, dict[str, Any]]) -> None:
    arms = list(sessions["closed"]["facts"]["randomised_by_arm"])
    assert_pooled(sessions["open"], SECTION_ID, arms)


def test_projected_last_participant_in_follows_the_stated_method(study: Study) -> None:
    protocol = study.protocol
    inputs = section_inputs(study, closed=False)
    subjects = inputs.facts().subjects
    rand_dates = subjects.loc[subjects["randomised"], "randomisation_date"]
    projection = project(protocol, rand_dates, CUT)
    assert not projection.reached
    rate = len(rand_dates) / site_months(protocol, CUT).sum()
    days = (protocol.enrolment.target - len(rand_dates)) / (rate * len(protocol.sites)) * MONTH_DAYS
    assert projection.last_in == CUT + timedelta(days=days)
    section = timeline_section(inputs)
    dates = dict(
        zip(section.tables[0].frame["Milestone"], section.tables[0].frame["Date"], strict=True)
    )
    assert dates["Projected last participant in"] == (CUT + timedelta(days=days)).isoformat()
    assert projection.last_in is not None
    assert projection.last_in.isoformat() in section.paragraphs[1]
    assert list(section.tables[0].frame["Date"]) == sorted(section.tables[0].frame["Date"])


def test_a_reached_target_gives_the_date_of_the_last_participant_in(study: Study) -> None:
    protocol = study.protocol
    enrolment = protocol.enrolment.model_copy(update={"target": 10})
    small = protocol.model_copy(update={"enrolment": enrolment})
    inputs = section_inputs(study, closed=False, protocol=small)
    subjects = inputs.facts().subjects
    tenth = subjects.loc[subjects["randomised"], "randomisation_date"].sort_values().iloc[9]
    section = timeline_section(inputs)
    dates = dict(
        zip(section.tables[0].frame["Milestone"], section.tables[0].frame["Date"], strict=True)
    )
    assert dates["Last participant in (target reached)"] == pd.Timestamp(tenth).date().isoformat()
    assert "was reached" in section.paragraphs[1]


def test_a_site_not_yet_active_has_no_months_and_no_rate(study: Study) -> None:
    protocol = study.protocol
    late = protocol.sites[-1].model_copy(update={"activation_date": date(2027, 1, 1)})
    moved = protocol.model_copy(update={"sites": (*protocol.sites[:-1], late)})
    assert site_months(moved, CUT)[late.id] == 0
    projection = project(moved, pd.Series(dtype="datetime64[ns]"), CUT)
    assert projection.randomised == 0
    assert projection.last_in is None  # nothing randomised: no rate, no projection
    section = timeline_section(section_inputs(study, closed=False, protocol=moved))
    frame = section.tables[1].frame
    assert frame.loc[frame["Site"].str.startswith(late.id), "Per site-month"].item() == "–"


def test_before_enrolment_starts_there_is_no_projection_not_a_crash(study: Study) -> None:
    before = study.protocol.enrolment.start - timedelta(days=10)
    section = timeline_section(section_inputs(study, closed=False, cutoff=before))
    assert section.paragraphs[1].startswith("No projection")
    assert row({"id": "t", "rows": section.tables[1].frame.values.tolist()}, "All sites")[4] == "–"
