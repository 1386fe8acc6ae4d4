"""Race and the NIH inclusion enrolment table: totals equal the randomised fact, cells add up,
names from the protocol, a study without a race field says so."""

from __future__ import annotations

from typing import Any

import pytest

from studyman.reporting.sections.inclusion import SECTION_ID, inclusion_section

from .conftest import Study
from .section_inputs import assert_pooled, count, json_table, row, section_inputs, session_data

RACE = f"{SECTION_ID}.race"
NIH = f"{SECTION_ID}.nih-inclusion-enrolment-sex-race-and-ethnicity"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


@pytest.mark.parametrize("session", ["open", "closed"])
def test_race_and_nih_table_totals_equal_the_randomised_fact(
    sessions: dict[str, dict[str, Any]], session: str
) -> None:
    data = sessions[session]
    randomised = data["facts"]["randomised"]
    race = json_table(data, RACE)
    assert sum(count(r[-1]) for r in race["rows"]) == randomised
    assert race["columns"][-1] == f"Total (N={randomised})"
    nih = json_table(data, NIH)
    total = row(nih, "Total")
    assert int(total[-1]) == randomised
    body = [[int(cell) for cell in r[1:]] for r in nih["rows"][:-1]]
    # every row adds up to its total, every column to the total row
    assert all(sum(r[:-1]) == r[-1] for r in body)
    assert [sum(column) for column in zip(*body, strict=True)] == [int(c) for c in total[1:]]
    # the race rows of both tables agree
    assert [int(r[-1]) for r in nih["rows"][:-1]] == [count(r[-1]) for r in race["rows"]]


def test_closed_race_by_arm_sums_to_the_total_and_uses_the_arm_order(
    sessions: dict[str, dict[str, Any]],
) -> None:
    data = sessions["closed"]
    race = json_table(data, RACE)
    by_arm = data["facts"]["randomised_by_arm"]
    assert race["columns"][1:-1] == [f"{arm} (N={n})" for arm, n in by_arm.items()]
    for r in race["rows"]:
        assert sum(count(cell) for cell in r[1:-1]) == count(r[-1])


def test_open_session_is_pooled(sessions: dict[str, dict[str, Any]]) -> None:
    assert_pooled(
        sessions["open"], SECTION_ID, list(sessions["closed"]["facts"]["randomised_by_arm"])
    )


def test_categories_are_the_dictionary_labels(study: Study) -> None:
    section = inclusion_section(section_inputs(study, closed=False))
    assert study.protocol.redcap is not None
    race_field = study.protocol.redcap.dictionary.get(study.protocol.enrolment.race_field)
    assert race_field is not None
    labels = [choice.label for choice in race_field.choices]
    assert list(section.tables[0].frame["Race"]) == labels


def test_fields_come_from_the_protocol_and_a_missing_race_field_is_stated(study: Study) -> None:
    protocol = study.protocol
    inputs = section_inputs(study, closed=False)
    participant = next(name for name, frame in inputs.tables.items() if "race" in frame.columns)
    tables = dict(inputs.tables)
    tables[participant] = tables[participant].rename(columns={"race": "race_cat"})
    renamed = protocol.model_copy(
        update={"enrolment": protocol.enrolment.model_copy(update={"race_field": "race_cat"})}
    )
    section = inclusion_section(type(inputs)(renamed, tables, inputs.cutoff))
    assert int(section.tables[1].frame.iloc[-1, -1]) == inputs.facts().headline()["randomised"]
    without = inclusion_section(type(inputs)(protocol, tables, inputs.cutoff))
    assert not without.tables
    assert without.missing == ("race",)
    assert "enrolment.race_field" in without.paragraphs[0]


def test_a_missing_race_value_is_counted_as_not_recorded(study: Study) -> None:
    inputs = section_inputs(study, closed=False)
    participant = next(name for name, frame in inputs.tables.items() if "race" in frame.columns)
    tables = dict(inputs.tables)
    frame = tables[participant].copy()
    first = frame[study.protocol.study.record_id_field].isin(
        [str(i) for i in inputs.facts().members("randomised")[:3]]
    )
    frame.loc[first, "race"] = None
    tables[participant] = frame
    section = inclusion_section(type(inputs)(study.protocol, tables, inputs.cutoff))
    race = section.tables[0].frame.set_index("Race")
    assert count(race.loc["Not recorded"].iloc[-1]) == 3
