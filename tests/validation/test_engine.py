"""All checks on generated studies: recall of planted "
"errors, clean data, query lifecycle, blinding."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from studyman.protocol.loader import load_protocol
from studyman.synthetic.generator import generate_trial
from studyman.validation.catalogue import CATALOGUE
from studyman.validation.dictionary import DataDictionary, dictionary_from_frame
from studyman.validation.engine import ValidationResult, run_checks
from studyman.validation.query_log import QueryLog

PROTOCOL_DIR = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"
REVIEW_ONLY = {check.check_id for check in CATALOGUE if check.review_only}
ARM_CHECKS = {check.check_id for check in CATALOGUE if check.needs_arm}


@cache
def _study() -> tuple[Any, DataDictionary, frozenset[str]]:
    protocol = load_protocol(PROTOCOL_DIR)
    dictionary = dictionary_from_frame(pd.DataFrame(protocol.redcap.dictionary.as_rows()))
    codes = frozenset(choice.code for choice in protocol.redcap.project.missing_codes)
    return protocol, dictionary, codes


@cache
def _trial(seed: int, plant: bool) -> Any:
    protocol, _, _ = _study()
    return generate_trial(protocol, n_participants=60, seed=seed, plant_errors=plant)


def _check(records: pd.DataFrame, randomization: pd.DataFrame | None = None) -> ValidationResult:
    protocol, dictionary, codes = _study()
    return run_checks(
        records, protocol, dictionary, missing_codes=codes, randomization=randomization
    )


# The check(s) expected to find each planted error type of the generator.
EXPECTED_CHECKS: dict[str, set[str]] = {
    "out_of_range": {"DQ-D"},
    "wrong_total": {"SCO-TOTAL", "DQ-H"},
    "out_of_window": {"VIS-WINDOW"},
    "missing_required": {"DQ-B", "AE-MISSING", "CM-INCOMPLETE"},
    "invalid_code": {"DQ-G"},
    "dates_out_of_order": {"AE-END-BEFORE-START", "CM-STOP-BEFORE-START", "DAT-VISIT-ORDER"},
    "future_date": {"DAT-FUTURE"},
    "late_sae_report": {"AE-SAE-LATE"},
    "duplicate_record": {"STR-DUP"},
    "duplicate_adverse_event": {"AE-DUPLICATE"},
    "hamd_16a_and_16b": {"SCO-HAMD16"},
    "phq9_item9_without_cssrs": {"SCO-PHQ9-CSSRS"},
    "cssrs_without_safety_action": {"CSR-SAFETY"},
    "cssrs_skip_logic": {"CSR-SKIP"},
    "serious_without_criterion": {"AE-SERIOUS-CRITERION"},
    "fatal_without_death": {"AE-FATAL-NO-DEATH"},
    "data_after_withdrawal": {"DS-DATA-AFTER"},
    "adjunct_in_control_arm": {"ARM-ADJUNCT-WRONG-ARM"},
    "stratum_mismatch": {"ARM-STRATUM", "ELG-STRATUM"},
    "randomised_despite_exclusion": {"ELG-FORM"},
    "adverse_event_before_consent": {"AE-BEFORE-CONSENT"},
    "prohibited_medication": {"CM-PROHIBITED"},
    "total_with_missing_item": {"SCO-TOTAL-MISSING-ITEMS"},
    "unreported_unanticipated_problem": {"AE-CLOCK-UP-MISSING"},
}


def _missed(planted: pd.DataFrame, findings: pd.DataFrame) -> list[str]:
    """Planted errors without the expected check at their record, event and instance.

    An error type this table does not know yet counts as found by any finding on its field or
    form at that place.
    """
    missed = []
    for error in planted.to_dict("records"):
        here = findings[
            (findings["record_id"] == error["record_id"])
            & (findings["event"] == error["event"])
            & (findings["instance"].astype(str) == str(error["instance"]))
        ]
        expected = EXPECTED_CHECKS.get(str(error["error_type"]))
        if expected is not None:
            hit = here[here["check_id"].isin(list(expected))]
        else:
            base = str(error["field"]).split("___")[0]
            hit = here[
                (here["field"] == error["field"])
                | (here["field"] == base)
                | (here["instrument"] == error["instrument"])
            ]
        if hit.empty:
            missed.append(
                f"{error['error_type']} at {error['record_id']} {error['event']} "
                f"{error['instance']} {error['field']}: found {sorted(here['check_id'])}"
            )
    return missed


@pytest.mark.parametrize("seed", [101, 202, 303])
def test_every_planted_error_is_found(seed: int) -> None:
    trial = _trial(seed, True)
    result = _check(trial.records, trial.randomization)
    assert len(trial.planted_errors) >= 40
    assert _missed(trial.planted_errors, result.findings) == []


def test_a_clean_study_raises_only_review_checks() -> None:
    trial = _trial(404, False)
    result = _check(trial.records, trial.randomization)
    unexpected = result.findings[~result.findings["check_id"].isin(list(REVIEW_ONLY))]
    # the generator's deliberate expedited-reporting lapses (reporting_lapses=2), one each
    lapses = unexpected["check_id"].str.startswith("AE-CLOCK-")
    assert lapses.sum() == trial.settings["reporting_lapses"] == 2
    unexpected = unexpected[~lapses]
    assert unexpected[["check_id", "record_id", "event", "field", "value"]].to_dict("records") == []
    assert len(result.findings) > 0  # the outlier rule always has something to show


def test_query_lifecycle_over_reruns_corrections_and_returns(tmp_path: Path) -> None:
    trial = _trial(101, True)
    records = trial.records.copy()
    log = QueryLog(tmp_path / "queries.sqlite")
    first = _check(records, trial.randomization)
    opened = log.sync(first.findings, checks_run=first.checks_run, at="2026-10-01T00:00:00Z")
    ids = set(log.queries()["query_id"])
    assert len(opened.opened) == len(ids) > 0

    rerun = log.sync(first.findings, checks_run=first.checks_run, at="2026-10-02T00:00:00Z")
    assert (rerun.opened, rerun.reopened, rerun.closed) == ((), (), ())
    assert set(log.queries()["query_id"]) == ids

    error = trial.planted_errors[trial.planted_errors["error_type"] == "out_of_range"].iloc[0]
    rows = (records["record_id"] == error["record_id"]) & (
        records["redcap_event_name"] == error["event"]
    )
    records.loc[rows, error["field"]] = error["original_value"]
    corrected = _check(records, trial.randomization)
    before = set(
        zip(
            first.findings["check_id"],
            first.findings["record_id"],
            first.findings["field"],
            strict=True,
        )
    )
    after = set(
        zip(
            corrected.findings["check_id"],
            corrected.findings["record_id"],
            corrected.findings["field"],
            strict=True,
        )
    )
    fixed = before - after
    assert fixed
    assert {record for _, record, _ in fixed} == {error["record_id"]}
    closing = log.sync(
        corrected.findings, checks_run=corrected.checks_run, at="2026-10-03T00:00:00Z"
    )
    statuses = log.queries().set_index("query_id")
    closed_places = {
        (row.check_id, row.record_id, row.field)
        for row in statuses.loc[list(closing.closed)].itertuples()
    }
    assert closed_places == fixed

    records.loc[rows, error["field"]] = error["planted_value"]
    back = _check(records, trial.randomization)
    returned = log.sync(back.findings, checks_run=back.checks_run, at="2026-10-04T00:00:00Z")
    assert set(returned.reopened) == set(closing.closed)
    assert returned.opened == ()
    # outliers (2 SD of the whole field) move when a value is corrected: review-only queries
    # may appear or go; every other query keeps its id
    listing = log.queries()
    new_ids = set(listing["query_id"]) - ids
    assert set(listing.set_index("query_id").loc[list(new_ids), "check_id"]) <= REVIEW_ONLY
    assert ids <= set(listing["query_id"])
    log.close()


def test_a_blinded_run_neither_reads_nor_reveals_arms() -> None:
    trial = _trial(202, True)
    protocol, _, _ = _study()
    blinded = _check(trial.records)
    unblinded_forms = set(protocol.blinding.unblinded_forms)
    assert not set(blinded.findings["check_id"]) & ARM_CHECKS
    assert not set(blinded.findings["instrument"]) & unblinded_forms
    assert not blinded.checks_run & ARM_CHECKS
    # scrambling every arm-revealing value changes nothing in a blinded run
    scrambled = trial.records.copy()
    for column in ("rand_arm", "rand_stratum", "rand_number", "dose_mg", "dose_date"):
        scrambled[column] = scrambled[column].where(scrambled[column] == "", "garbage")
    again = _check(scrambled)
    pd.testing.assert_frame_equal(blinded.findings, again.findings)
    unblinded = _check(trial.records, trial.randomization)
    assert "ARM-ADJUNCT-WRONG-ARM" in set(unblinded.findings["check_id"])


def test_bad_values_and_unenrolled_rows_become_findings_not_exceptions() -> None:
    records = _trial(404, False).records.copy()
    first = records.index[(records["redcap_event_name"] == "screening_arm_1")][0]
    visit = records.index[(records["redcap_event_name"] == "week_1_arm_1")][0]
    records.loc[first, "age"] = "forty"
    records.loc[first, "sex"] = "99"
    records.loc[first, "consent_date"] = "2025-02-30"
    records.loc[visit, "visit_date"] = "yesterday"
    records.loc[visit, "hamd_1"] = "x"
    stray = records.loc[[visit]].copy()
    stray["record_id"] = "S09-9999"
    stray["redcap_data_access_group"] = ""
    records = pd.concat([records, stray], ignore_index=True)
    result = _check(records)
    found = set(zip(result.findings["check_id"], result.findings["field"], strict=True))
    assert {
        ("DQ-C", "age"),
        ("DQ-G", "sex"),
        ("DQ-C", "consent_date"),
        ("DQ-C", "visit_date"),
        ("DQ-G", "hamd_1"),
    } <= found
    orphans = result.findings[result.findings["record_id"] == "S09-9999"]
    assert {"STR-UNENROLLED", "STR-SITE"} <= set(orphans["check_id"])
    assert set(orphans["site"]) == {"unknown"}


def test_garbage_in_any_cell_never_raises() -> None:
    rng = np.random.default_rng(11)
    records = _trial(404, False).records.copy()
    garbage = [
        "",
        "x",
        "-1",
        "9999",
        "2025-13-40",
        "1e309",
        "NaN",
        " ",
        "UNK",
        "2025-02-30 25:61",
        "٣",
        "S0-1",
    ]
    columns = list(records.columns)
    for _ in range(400):
        row = int(rng.integers(len(records)))
        column = columns[int(rng.integers(len(columns)))]
        records.iloc[row, records.columns.get_loc(column)] = garbage[
            int(rng.integers(len(garbage)))
        ]
    records.loc[0:3, "redcap_event_name"] = "nonsense_arm_1"
    records.loc[5, "redcap_repeat_instrument"] = "no_such_form"
    records.loc[6, "record_id"] = ""
    records.loc[7, "redcap_repeat_instance"] = "first"
    result = _check(records, _trial(404, False).randomization)
    assert len(result.findings) > 0
    assert set(result.findings["severity"]) <= {"critical", "major", "minor"}
