"""AE dot chart (closed report): incidence per arm of the most frequent preferred terms and the
risk difference with Newcombe's 95% interval, a figure and a table; nothing in the open one."""

from __future__ import annotations

from typing import Any

import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from studyman.reporting.ae_dot_figure import ae_dot_chart_svg, draw_ae_dot_chart
from studyman.reporting.sections.ae_dot_chart import ANY, SECTION_ID, TOP_TERMS

from .conftest import Study
from .section_inputs import count, json_table, row, section_inputs, session_data

TABLE = f"{SECTION_ID}.most-frequent-treatment-emergent-adverse-events-by-arm"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


def test_open_session_shows_no_arm_comparison(sessions: dict[str, dict[str, Any]]) -> None:
    section = sessions["open"]["sections"][SECTION_ID]
    assert not section.tables
    assert not section.figures
    assert "closed report only" in section.paragraphs[0]
    assert not [t for t in sessions["open"]["tables"] if t["id"].startswith(SECTION_ID)]


def test_any_event_row_equals_the_facts_per_arm(sessions: dict[str, dict[str, Any]]) -> None:
    data = sessions["closed"]
    facts = data["facts"]
    table = json_table(data, TABLE)
    arms = list(facts["randomised_by_arm"])
    any_row = row(table, ANY)
    assert [count(c) for c in any_row[1 : 1 + len(arms)]] == [
        facts["teae_participants_by_arm"][arm] for arm in arms
    ]
    assert count(any_row[1 + len(arms)]) == facts["teae_participants"] > 0
    assert table["columns"][1 : 2 + len(arms)] == [
        *[f"{arm} (N={facts['safety_population_by_arm'][arm]})" for arm in arms],
        f"Total (N={facts['safety_population']})",
    ]


def test_terms_are_the_most_frequent_and_arms_add_up(sessions: dict[str, dict[str, Any]]) -> None:
    data = sessions["closed"]
    table = json_table(data, TABLE)
    arms = len(data["facts"]["randomised_by_arm"])
    terms = table["rows"][1:]
    assert 0 < len(terms) <= TOP_TERMS
    totals = [count(r[1 + arms]) for r in terms]
    assert totals == sorted(totals, reverse=True)
    for r in table["rows"]:
        assert sum(count(c) for c in r[1 : 1 + arms]) == count(r[1 + arms]), r[0]


def test_risk_differences_are_newcombe_intervals_of_the_counts(
    sessions: dict[str, dict[str, Any]],
) -> None:
    data = sessions["closed"]
    table = json_table(data, TABLE)
    facts = data["facts"]
    arms = list(facts["randomised_by_arm"])
    sizes = [facts["safety_population_by_arm"][arm] for arm in arms]
    checked = 0
    for r in table["rows"]:
        reference = count(r[1])
        for k in range(1, len(arms)):
            x = count(r[1 + k])
            low, high = confint_proportions_2indep(
                x, sizes[k], reference, sizes[0], method="newcomb", compare="diff"
            )
            estimate = x / sizes[k] - reference / sizes[0]
            cell = r[2 + len(arms) + (k - 1)]
            assert cell == f"{100 * estimate:.1f} ({100 * low:.1f}, {100 * high:.1f})", r[0]
            assert 100 * low <= 100 * estimate <= 100 * high
            checked += 1
    assert checked == len(table["rows"]) * (len(arms) - 1) > 0


def test_the_figure_draws_every_term_as_png_and_svg(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    data = sessions["closed"]
    section = data["sections"][SECTION_ID]
    (figure,) = section.figures
    assert figure.kind == "ae_dot_chart"
    table = json_table(data, TABLE)
    terms = [r[0] for r in table["rows"][1:]]
    assert set(figure.data["incidence"]["term"]) == set(terms)
    arms = list(data["facts"]["randomised_by_arm"])
    assert set(figure.data["incidence"]["group"]) == set(arms)
    differences = figure.data["difference"]
    assert (differences["lower"] <= differences["difference"]).all()
    assert (differences["difference"] <= differences["upper"]).all()
    png = draw_ae_dot_chart(figure, study.protocol)
    assert png.startswith(b"\x89PNG")
    svg = ae_dot_chart_svg(figure)
    assert svg.lstrip().startswith("<?xml")
    for term in terms:
        assert term.replace("'", "&#x27;") in svg or term in svg, term
