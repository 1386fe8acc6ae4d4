"""Kaplan–Meier curves and numbers at risk: events equal the facts, the estimate is the
product-limit one, the open session and its figure are pooled."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from studyman.reporting.figures import draw_figure
from studyman.reporting.sections.time_to_event import (
    DISCONTINUATION,
    SAE,
    SECTION_ID,
    endpoints,
    landmarks,
)

from .conftest import Study
from .section_inputs import assert_pooled, json_table, section_inputs, session_data

TABLE = f"{SECTION_ID}.kaplan-meier-estimates-and-numbers-at-risk"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


def _rows(data: dict[str, Any], endpoint: str) -> dict[str, list[str]]:
    return {r[1]: r for r in json_table(data, TABLE)["rows"] if r[0] == endpoint}


@pytest.mark.parametrize("session", ["open", "closed"])
def test_events_and_populations_equal_the_facts(
    sessions: dict[str, dict[str, Any]], session: str
) -> None:
    data = sessions[session]
    facts = data["facts"]
    sae = _rows(data, SAE)["Total"]
    assert int(sae[2]) == facts["safety_population"]
    assert int(sae[3]) == facts["serious_ae_participants"] > 0
    stop = _rows(data, DISCONTINUATION)["Total"]
    assert int(stop[2]) == facts["randomised"]
    assert int(stop[3]) == facts["discontinued_study"] > 0


@pytest.mark.parametrize("session", ["open", "closed"])
def test_numbers_at_risk_start_at_n_and_never_rise(
    sessions: dict[str, dict[str, Any]], session: str
) -> None:
    for r in json_table(sessions[session], TABLE)["rows"]:
        risk = [int(cell) for cell in r[4:-1]]
        assert risk[0] == int(r[2])
        assert risk == sorted(risk, reverse=True)


def test_closed_arms_add_up_to_the_total(sessions: dict[str, dict[str, Any]]) -> None:
    data = sessions["closed"]
    facts = data["facts"]
    arms = list(facts["randomised_by_arm"])
    for endpoint in (SAE, DISCONTINUATION):
        rows = _rows(data, endpoint)
        assert list(rows) == [*arms, "Total"]
        for column in range(2, len(rows["Total"]) - 1):
            assert sum(int(rows[arm][column]) for arm in arms) == int(rows["Total"][column])
    assert [int(_rows(data, SAE)[arm][3]) for arm in arms] == [
        facts["serious_ae_participants_by_arm"][arm] for arm in arms
    ]


def test_estimate_is_the_product_limit_estimate(study: Study) -> None:
    inputs = section_inputs(study, closed=False)
    day = landmarks(inputs)[-1]
    endpoint = next(e for e in endpoints(inputs) if e.name == DISCONTINUATION)
    times = endpoint.times.to_numpy(float)
    events = endpoint.events.to_numpy(bool)
    survival = 1.0
    for t in np.unique(times[events & (times <= day)]):
        at_risk = (times >= t).sum()
        survival *= 1 - (events & (times == t)).sum() / at_risk
    row = _rows(session_data(inputs), DISCONTINUATION)["Total"]
    assert row[-1] == f"{100.0 * (1 - survival):.1f}%"


def test_open_session_and_its_figure_are_pooled(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    arms = list(sessions["closed"]["facts"]["randomised_by_arm"])
    assert_pooled(sessions["open"], SECTION_ID, arms)
    (figure,) = sessions["open"]["sections"][SECTION_ID].figures
    assert set(figure.data["curves"]["group"]) == {"Total"}
    assert set(figure.data["at_risk"]["group"]) == {"Total"}
    (closed,) = sessions["closed"]["sections"][SECTION_ID].figures
    assert set(closed.data["curves"]["group"]) == set(arms)
    png = draw_figure(closed, study.protocol)
    assert png.startswith(b"\x89PNG")
    assert draw_figure(figure, study.protocol) != png


def test_curves_run_to_the_last_follow_up(sessions: dict[str, dict[str, Any]]) -> None:
    (figure,) = sessions["open"]["sections"][SECTION_ID].figures
    curves = figure.data["curves"]
    for (_, _), part in curves.groupby(["endpoint", "group"]):
        assert part["time"].iloc[0] == 0
        assert part["survival"].iloc[0] == 1
        assert part["survival"].is_monotonic_decreasing
        assert part["time"].is_monotonic_increasing
