"""Narratives: a paragraph per death, serious adverse event and potential Hy's law case in the
closed report, from the facts and the records; the open session gives pooled counts only."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pytest

from studyman.reporting.dsmb import DsmbInputs
from studyman.reporting.sections.narratives import (
    DEATH,
    HYS_LAW,
    SAE,
    SECTION_ID,
    narratives_section,
)

from .conftest import Study
from .section_inputs import json_table, row, section_inputs, session_data

COUNTS = f"{SECTION_ID}.cases-with-a-narrative"
INDEX = f"{SECTION_ID}.narratives-index"


@pytest.fixture(scope="module")
def sessions(study: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": session_data(section_inputs(study, closed=False)),
        "closed": session_data(section_inputs(study, closed=True)),
    }


def _record_ids(study: Study) -> set[str]:
    inputs = section_inputs(study, closed=True)
    return {str(r) for r in inputs.facts().subjects.index}


def _narratives(data: dict[str, Any]) -> list[str]:
    section = data["sections"][SECTION_ID]
    return [p for p in section.paragraphs if p.startswith((DEATH, SAE, HYS_LAW))]


def test_open_session_holds_counts_and_names_no_participant(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    data = sessions["open"]
    ids = _record_ids(study)
    section = data["sections"][SECTION_ID]
    assert not _narratives(data)
    text = " ".join(section.paragraphs)
    assert not any(i in text for i in ids)
    assert [t["id"] for t in data["tables"] if t["id"].startswith(SECTION_ID)] == [COUNTS]
    table = json_table(data, COUNTS)
    cells = [c for r in table["rows"] for c in r]
    assert not any(i in c for i in ids for c in cells)
    assert table["columns"] == ["Cases", "Total"]
    assert int(row(table, "Deaths")[1]) == data["facts"]["deaths"]
    assert (
        int(row(table, "Participants with a serious treatment-emergent adverse event")[1])
        == data["facts"]["serious_ae_participants"]
    )


def test_closed_session_has_a_paragraph_per_case_and_totals_equal_the_facts(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    data = sessions["closed"]
    facts = data["facts"]
    subjects = section_inputs(study, closed=True).facts().subjects
    table = json_table(data, COUNTS)
    deaths = int(row(table, "Deaths")[1])
    events = int(row(table, "Serious treatment-emergent adverse events")[1])
    hys = int(row(table, "Potential Hy's law cases")[1])
    assert deaths == facts["deaths"] > 0
    assert hys == int(subjects["hys_law"].sum()) > 0
    assert (
        int(row(table, "Participants with a serious treatment-emergent adverse event")[1])
        == (facts["serious_ae_participants"])
    )
    texts = _narratives(data)
    assert len(texts) == deaths + events + hys == int(row(table, "Narratives (closed report)")[1])
    kinds = [t.split(" — ")[0] for t in texts]
    assert kinds.count(DEATH) == deaths
    assert kinds.count(SAE) == events
    assert kinds.count(HYS_LAW) == hys
    index = json_table(data, INDEX)
    assert len(index["rows"]) == len(texts)


def test_narratives_name_only_the_closed_sessions_cases_with_their_arm(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    inputs = section_inputs(study, closed=True)
    subjects = inputs.facts().subjects
    assert inputs.arms is not None
    ids = _record_ids(study)
    deaths = {str(r) for r in subjects.index[subjects["death"].to_numpy(bool)]}
    hys = {str(r) for r in subjects.index[subjects["hys_law"].to_numpy(bool)]}
    index = json_table(sessions["closed"], INDEX)
    for text, listed in zip(_narratives(sessions["closed"]), index["rows"], strict=True):
        named = {i for i in ids if re.search(rf"\b{re.escape(i)}\b", text)}
        assert named == {listed[0]}, text
        participant = listed[0]
        assert f"Participant {participant} (" in text
        assert str(inputs.arms[participant]) in text
        assert listed[1] == str(inputs.arms[participant])
        kind = text.split(" — ")[0]
        assert listed[2] == kind
        if kind == DEATH:
            assert participant in deaths
        if kind == HYS_LAW:
            assert participant in hys


def test_serious_event_narratives_state_the_onset_day_from_the_first_treatment(
    sessions: dict[str, dict[str, Any]], study: Study
) -> None:
    subjects = section_inputs(study, closed=True).facts().subjects
    checked = 0
    for text in _narratives(sessions["closed"]):
        if not text.startswith(SAE):
            continue
        participant = re.search(r"Participant (\S+) \(", text).group(1)  # type: ignore[union-attr]
        onset = re.search(r"with onset on (\d{4}-\d{2}-\d{2})", text).group(1)  # type: ignore[union-attr]
        first = subjects.at[participant, "first_treatment"]
        delta = (pd.Timestamp(onset) - pd.Timestamp(first).normalize()).days
        day = delta + 1 if delta >= 0 else delta
        assert f"(day {day} relative to the first study treatment)" in text
        for part in ("Seriousness criteria:", "relatedness to study treatment:", "Outcome:"):
            assert part in text
        assert "Disposition:" in text
        checked += 1
    assert checked > 0


def test_a_medication_started_before_onset_is_named_one_started_after_is_not(
    study: Study,
) -> None:
    inputs = section_inputs(study, closed=True)
    protocol = study.protocol
    spec = protocol.concomitant_medications
    plain = narratives_section(inputs)
    sae = next(p for p in plain.paragraphs if p.startswith(SAE))
    participant = re.search(r"Participant (\S+) \(", sae).group(1)  # type: ignore[union-attr]
    onset = pd.Timestamp(re.search(r"with onset on (\S+) ", sae).group(1))  # type: ignore[union-attr]
    meds = inputs.tables[spec.form]
    template = meds[meds[inputs.key].astype(str) != participant].iloc[[0, 0]].copy()
    template[inputs.key] = participant
    template[spec.name_field] = ["Zz-before-onset", "Zz-after-onset"]
    template[spec.start_field] = [onset - pd.Timedelta(days=3), onset + pd.Timedelta(days=3)]
    template[spec.stop_field] = pd.NaT
    tables = {**inputs.tables, spec.form: pd.concat([meds, template], ignore_index=True)}
    attacked = narratives_section(
        DsmbInputs(protocol, tables, inputs.cutoff, arms=inputs.arms,
                   arm_order=inputs.arm_order, as_of=inputs.as_of)
    )  # fmt: skip
    text = next(
        p for p in attacked.paragraphs if p.startswith(SAE) and f"Participant {participant} (" in p
    )
    assert "Zz-before-onset" in text
    assert "Zz-after-onset" not in text
