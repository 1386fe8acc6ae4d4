"""Planted errors are in the records exactly where the ground truth says, and only there."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from studyman.protocol import Protocol, load_protocol
from studyman.synthetic import ERROR_TYPES, PLANTED_ERROR_COLUMNS, GeneratedTrial, generate_trial

STUDY = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"
KEY = ["record_id", "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"]
REQUIRED_TYPES = {
    "out_of_range",
    "wrong_total",
    "out_of_window",
    "missing_required",
    "invalid_code",
    "dates_out_of_order",
    "future_date",
    "late_sae_report",
    "duplicate_record",
}


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(STUDY / "protocol.yaml")


@pytest.fixture(scope="module")
def pair(protocol: Protocol) -> tuple[GeneratedTrial, GeneratedTrial]:
    clean = generate_trial(protocol, n_participants=300, seed=21)
    planted = generate_trial(
        protocol, n_participants=300, seed=21, plant_errors=True, errors_per_type=3
    )
    return clean, planted


def _cell(records: pd.DataFrame, row: pd.Series, instrument_repeats: bool) -> pd.DataFrame:
    match = (records["record_id"] == row["record_id"]) & (
        records["redcap_event_name"] == row["event"]
    )
    if instrument_repeats:
        match &= (records["redcap_repeat_instrument"] == row["instrument"]) & (
            records["redcap_repeat_instance"] == row["instance"]
        )
    else:
        match &= records["redcap_repeat_instrument"] == ""
    return records[match]


def test_every_error_type_is_planted_several_times(
    pair: tuple[GeneratedTrial, GeneratedTrial],
) -> None:
    _, planted = pair
    truth = planted.planted_errors
    assert list(truth.columns) == PLANTED_ERROR_COLUMNS
    counts = truth["error_type"].value_counts()
    assert set(counts.index) == set(ERROR_TYPES)
    assert set(ERROR_TYPES) >= REQUIRED_TYPES
    assert (counts == 3).all(), counts[counts != 3]


def test_each_planted_error_is_in_its_own_participant(
    pair: tuple[GeneratedTrial, GeneratedTrial],
) -> None:
    _, planted = pair
    assert planted.planted_errors["record_id"].is_unique


def test_planted_values_are_in_the_records_where_the_ground_truth_says(
    pair: tuple[GeneratedTrial, GeneratedTrial],
) -> None:
    clean, planted = pair
    repeating = {"adverse_events", "conmeds", "cbt_sessions", "dosing", "deviations"}
    for _, row in planted.planted_errors.iterrows():
        if row["error_type"] == "duplicate_record":
            rows = _cell(planted.records, row, False)
            assert len(rows) == 2
            assert rows.duplicated().iloc[1]
            assert len(_cell(clean.records, row, False)) == 1
            continue
        is_log = row["instrument"] in repeating
        rows = _cell(planted.records, row, is_log)
        assert len(rows) == 1, row.to_dict()
        assert rows[row["field"]].iloc[0] == row["planted_value"], row.to_dict()
        before = _cell(clean.records, row, is_log)
        if row["error_type"] in ("duplicate_adverse_event", "adjunct_in_control_arm"):
            assert before.empty  # a row that the clean trial does not have
        elif row["error_type"] == "phq9_item9_without_cssrs":
            assert before["cssrs_since_last_complete"].iloc[0] == "2"
            assert rows["cssrs_since_last_complete"].iloc[0] == "0"
            assert int(row["planted_value"]) > 0
        else:
            assert before[row["field"]].iloc[0] == row["original_value"] != row["planted_value"]


def test_nothing_but_the_planted_cells_changes(pair: tuple[GeneratedTrial, GeneratedTrial]) -> None:
    clean, planted = pair
    truth = planted.planted_errors
    added = truth["error_type"].isin(
        ["duplicate_record", "duplicate_adverse_event", "adjunct_in_control_arm"]
    )
    assert len(planted.records) == len(clean.records) + int(added.sum())
    base = planted.records.drop_duplicates(subset=KEY, keep="first")
    merged = clean.records.merge(
        base, on=KEY, suffixes=("", "_p"), how="left", validate="one_to_one"
    )
    changed: set[tuple[str, str, str, str]] = set()
    for column in clean.records.columns:
        if column in KEY:
            continue
        differs = merged[column] != merged[f"{column}_p"]
        for _, row in merged[differs].iterrows():
            changed.add(
                (row["record_id"], row["redcap_event_name"], row["redcap_repeat_instance"], column)
            )
    expected = {
        (r["record_id"], r["event"], r["instance"], r["field"])
        for _, r in truth.iterrows()
        if r["error_type"] not in ("phq9_item9_without_cssrs",)
        and r["error_type"]
        not in ("duplicate_record", "duplicate_adverse_event", "adjunct_in_control_arm")
    }
    removed_forms = truth[truth["error_type"] == "phq9_item9_without_cssrs"]
    # a planted disagreement between two forms may set a second cell to make it whole: the
    # date of death of a planted death, the fatal outcome of the event a planted death lacks a
    # date for (the description says which)
    companions = {"death_without_fatal_ae": "death_date", "fatal_without_death_date": "ae_outcome"}
    companion = {
        (r["record_id"], companions[r["error_type"]])
        for _, r in truth.iterrows()
        if r["error_type"] in companions
    }
    unexplained = {
        c
        for c in changed
        if c not in expected
        and c[:2] not in set(zip(removed_forms["record_id"], removed_forms["event"], strict=True))
        and (c[0], c[3]) not in companion
    }
    assert expected <= changed
    assert not unexplained


def test_clean_trial_has_an_empty_ground_truth(pair: tuple[GeneratedTrial, GeneratedTrial]) -> None:
    clean, _ = pair
    assert clean.planted_errors.empty
    assert list(clean.planted_errors.columns) == PLANTED_ERROR_COLUMNS
