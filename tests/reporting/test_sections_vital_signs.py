"""Vital signs and weight: counts restate the snapshot's values in the safety population,
notable limits from the protocol or the dictionary, the open session pooled."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from studyman.reporting.dsmb import DsmbInputs
from studyman.reporting.sections.vital_signs import SECTION_ID, vital_signs_section

from .conftest import Study
from .section_inputs import assert_pooled, count, json_table, section_inputs, session_data

BY_VISIT = f"{SECTION_ID}.vital-signs-and-weight-by-visit"
NOTABLE = f"{SECTION_ID}.participants-with-a-notable-value"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


def _values(inputs: DsmbInputs, field: str) -> pd.DataFrame:
    """The recorded values of *field* in the safety population, straight from the snapshot."""
    spec = inputs.protocol.vital_signs
    assert spec is not None
    key = inputs.protocol.study.record_id_field
    frame = inputs.tables[spec.form]
    subjects = inputs.facts().subjects
    safety = {str(i) for i in subjects.index[subjects["population_safety"].to_numpy(bool)]}
    frame = frame[frame[key].astype(str).isin(safety)]
    return pd.DataFrame(
        {
            "id": frame[key].astype(str),
            "event": frame["redcap_event_name"].astype(str),
            "value": pd.to_numeric(frame[field], errors="coerce"),
        }
    ).dropna(subset=["value"])


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_n_per_visit_restates_the_recorded_values(study: Study, closed: bool) -> None:
    inputs = section_inputs(study, closed=closed)
    spec = study.protocol.vital_signs
    assert spec is not None
    parameter = spec.parameters[0]
    values = _values(inputs, parameter.field)
    section = vital_signs_section(inputs)
    frame = section.tables[0].frame
    start = frame.index[frame.iloc[:, 0] == f"{parameter.label} ({parameter.unit})"][0]
    visits = [v for v in study.protocol.visits if spec.form in v.instruments]
    checked = 0
    for offset, visit in enumerate(visits, start=1):
        cells = frame.iloc[start + offset]
        assert cells.iloc[0].strip() == visit.label
        at = values[values["event"] == visit.event]
        assert int(cells.iloc[-1].split(";")[0]) == len(at)
        if len(at):
            assert f"{at['value'].mean():.1f} (" in cells.iloc[-1]
            checked += 1
        # arms add up to the total
        assert sum(int(c.split(";")[0]) for c in cells.iloc[1:-1]) == (len(at) if closed else 0)
    assert checked >= 3


def test_notable_values_use_the_protocols_limits_when_declared(study: Study) -> None:
    spec = study.protocol.vital_signs
    assert spec is not None
    parameter = spec.parameters[0]
    declared = parameter.model_copy(update={"notable_high": 135.0})
    protocol = study.protocol.model_copy(
        update={
            "vital_signs": spec.model_copy(update={"parameters": (declared, *spec.parameters[1:])})
        }
    )
    inputs = section_inputs(study, closed=False, protocol=protocol)
    values = _values(inputs, parameter.field)
    screening = {v.event for v in protocol.visits if v.kind == "screening"}
    after = values[~values["event"].isin(screening)]
    expected = after.loc[after["value"] > 135, "id"].nunique()
    section = vital_signs_section(inputs)
    notable = section.tables[1].frame.set_index("Participants with a value")
    label = f"{parameter.label} above 135 {parameter.unit}"
    assert count(notable.loc[label].iloc[-1]) == expected > 0
    assert "135" in section.tables[1].note
    # the undeclared low limit is still the dictionary's
    assert study.protocol.redcap is not None
    field = study.protocol.redcap.dictionary.get(parameter.field)
    assert field is not None
    low = field.range_min_number()
    assert f"{parameter.label} below {low:g} {parameter.unit}" in notable.index


def test_open_session_is_pooled(sessions: dict[str, dict[str, Any]]) -> None:
    assert_pooled(
        sessions["open"], SECTION_ID, list(sessions["closed"]["facts"]["randomised_by_arm"])
    )
    for session in ("open", "closed"):
        assert json_table(sessions[session], BY_VISIT)["rows"]
        assert json_table(sessions[session], NOTABLE)["rows"]


def test_a_study_without_vital_signs_says_it_does_not_apply(study: Study) -> None:
    protocol = study.protocol.model_copy(update={"vital_signs": None})
    section = vital_signs_section(section_inputs(study, closed=False, protocol=protocol))
    assert not section.tables
    assert section.paragraphs[0].startswith("Does not apply")
