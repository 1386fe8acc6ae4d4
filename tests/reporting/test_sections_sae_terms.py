"""Serious adverse events by SOC and PT: the overall row is the facts' count, arms add up, the
open session is pooled."""

from __future__ import annotations

from typing import Any

import pytest

from studyman.reporting.sections.sae_terms import ANY, SECTION_ID

from .conftest import Study
from .section_inputs import assert_pooled, count, json_table, row, section_inputs, session_data

TABLE = f"{SECTION_ID}.participants-with-a-serious-adverse-event-by-soc-and-pt"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


def _blocks(table: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """(SOC row, its PT rows) in order."""
    blocks: list[tuple[list[str], list[list[str]]]] = []
    for r in table["rows"][1:]:
        if r[0].startswith("  "):
            blocks[-1][1].append(r)
        else:
            blocks.append((r, []))
    return blocks


@pytest.mark.parametrize("session", ["open", "closed"])
def test_overall_row_is_the_serious_ae_fact_and_terms_nest(
    sessions: dict[str, dict[str, Any]], session: str
) -> None:
    data = sessions[session]
    table = json_table(data, TABLE)
    assert count(row(table, ANY)[-1]) == data["facts"]["serious_ae_participants"] > 0
    blocks = _blocks(table)
    assert blocks
    totals = [count(soc[-1]) for soc, _ in blocks]
    assert totals == sorted(totals, reverse=True)
    for soc, terms in blocks:
        assert terms
        # a participant counts once in a class: at least the largest term, at most their sum
        term_counts = [count(t[-1]) for t in terms]
        assert max(term_counts) <= count(soc[-1]) <= sum(term_counts)
        assert count(soc[-1]) <= count(row(table, ANY)[-1])


def test_closed_columns_are_the_arms_and_add_up_to_the_total(
    sessions: dict[str, dict[str, Any]],
) -> None:
    data = sessions["closed"]
    facts = data["facts"]
    table = json_table(data, TABLE)
    arms = list(facts["randomised_by_arm"])
    assert table["columns"][1:] == [
        *[f"{arm} (N={facts['safety_population_by_arm'][arm]})" for arm in arms],
        f"Total (N={facts['safety_population']})",
    ]
    any_row = row(table, ANY)
    assert [count(c) for c in any_row[1:-1]] == [
        facts["serious_ae_participants_by_arm"][arm] for arm in arms
    ]
    for r in table["rows"]:
        assert sum(count(c) for c in r[1:-1]) == count(r[-1]), r[0]


def test_open_session_is_pooled_and_agrees_with_the_closed_total(
    sessions: dict[str, dict[str, Any]],
) -> None:
    assert_pooled(
        sessions["open"], SECTION_ID, list(sessions["closed"]["facts"]["randomised_by_arm"])
    )
    opened = json_table(sessions["open"], TABLE)
    closed = json_table(sessions["closed"], TABLE)
    # the blinded view sees no dosing log: its safety population, and so its serious TEAEs,
    # can only be a subset of the closed session's
    assert count(row(opened, ANY)[-1]) <= count(row(closed, ANY)[-1])
    assert {r[0] for r in opened["rows"]} <= {r[0] for r in closed["rows"]}


def test_without_the_adverse_event_form_the_section_says_so(study: Study) -> None:
    from studyman.reporting.dsmb import DsmbInputs
    from studyman.reporting.sections.sae_terms import sae_terms_section

    inputs = section_inputs(study, closed=False)
    tables = {k: v for k, v in inputs.tables.items() if k != study.protocol.adverse_events.form}
    section = sae_terms_section(DsmbInputs(study.protocol, tables, inputs.cutoff))
    assert not section.tables
    assert section.missing == (study.protocol.adverse_events.form,)
