"""Intercurrent events and administrative censoring come from the facts, not from missing values."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from studyman.analysis.adam import visit_numbers
from studyman.analysis.intercurrent import (
    administratively_censored,
    first_visit_after_event,
    treatment_discontinuation,
)
from studyman.facts import StudyFacts, derive_facts
from studyman.protocol import Protocol, load_protocol
from studyman.protocol.reference import default_protocol_path
from studyman.sources.offline import import_snapshot
from studyman.sources.snapshot import read_snapshot
from studyman.synthetic import generate_trial, write_trial

CUT = date(2026, 9, 30)


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


@pytest.fixture(scope="module")
def facts(protocol: Protocol, tmp_path_factory: pytest.TempPathFactory) -> StudyFacts:
    out = tmp_path_factory.mktemp("intercurrent")
    trial = generate_trial(protocol, n_participants=120, seed=8)
    files = write_trial(trial, out / "generated")
    dictionary = out / "dictionary.csv"
    assert protocol.redcap is not None
    dictionary.write_text(protocol.redcap.dictionary.to_csv_text(), encoding="utf-8")
    result = import_snapshot(protocol, files["records"], dictionary, out / "snapshots")
    return derive_facts(protocol, dict(read_snapshot(result.path).tables), cutoff=CUT)


def test_treatment_discontinuation_is_dated_by_the_last_treatment_received(
    facts: StudyFacts,
) -> None:
    ice = treatment_discontinuation(facts)
    stopped = ice[ice["TRTDISFL"] == "Y"]
    assert len(stopped) > 0, "the fixture should have discontinuations"
    subjects = facts.subjects.set_axis(facts.subjects.index.astype(str))
    for subject, row in stopped.iterrows():
        last = subjects.loc[subject, "last_treatment"]
        expected = last if pd.notna(last) else subjects.loc[subject, "disposition_date"]
        assert pd.Timestamp(row["TRTDISDT"]) == pd.Timestamp(expected)
        # never after the participant left the study
        assert pd.Timestamp(row["TRTDISDT"]) <= pd.Timestamp(
            subjects.loc[subject, "disposition_date"]
        )
        assert row["DCTREAS"] == subjects.loc[subject, "disposition_label"]
    assert ice.loc[ice["TRTDISFL"] == "N", "TRTDISDT"].isna().all()
    # only randomised participants, each once
    assert set(ice.index) == set(facts.members("randomised").astype(str))


def test_administrative_censoring_is_exactly_the_visits_not_yet_due(
    facts: StudyFacts, protocol: Protocol
) -> None:
    censored = administratively_censored(facts, visit_numbers(protocol))
    assert len(censored) > 0, "the fixture should have participants still on study"
    visits = facts.visits
    due = visits[visits["due"]]
    weeks = visit_numbers(protocol)
    due_pairs = set(zip(due["subject"], due["event"].map(weeks), strict=True))
    censored_pairs = set(zip(censored["SUBJID"], censored["AVISITN"], strict=True))
    assert not (due_pairs & censored_pairs), "a due visit is never administratively censored"
    completed = set(facts.subjects.index[facts.subjects["completed"]].astype(str))
    assert not (set(censored["SUBJID"]) & completed)
    # a participant who left the study is never "ongoing": their pending visits will not happen
    discontinued = set(facts.subjects.index[facts.subjects["discontinued_study"]].astype(str))
    assert discontinued, "the fixture should have participants who left the study"
    assert not (set(censored["SUBJID"]) & discontinued)


def test_the_first_visit_after_the_event_is_the_first_target_date_after_it() -> None:
    visits = [1, 2, 4, 8, 12]
    days = {1: 7, 2: 14, 4: 28, 8: 56, 12: 84}
    rand = pd.Timestamp("2026-01-01")
    ice = pd.DataFrame(
        {
            "TRTDISFL": ["Y", "Y", "N", "Y", "Y"],
            "TRTDISDT": [
                rand + pd.Timedelta(days=30),  # after week 4 (day 28): week 8 is next
                rand + pd.Timedelta(days=3),  # before week 1
                pd.NaT,
                rand + pd.Timedelta(days=84),  # on the week-12 target day: no visit after it
                pd.NaT,  # discontinued without a date
            ],
        },
        index=pd.Index(["a", "b", "c", "d", "e"], name="SUBJID"),
    )
    subjects = ["a", "b", "c", "d", "e", "unknown"]
    index = first_visit_after_event(
        subjects, visits, days, ice, {s: rand for s in subjects if s != "unknown"}
    )
    assert index.tolist() == [3, 0, 5, 5, 5, 5]
    assert index.dtype == np.int64
