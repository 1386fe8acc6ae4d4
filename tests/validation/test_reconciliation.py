"""Reconciliation checks: planted disagreements are all found, a clean study raises none.

Each disagreement is planted by the generator with its ground truth (one participant each) into
an otherwise clean study; the checks run through the real engine, unblinded (the action checks
need the arm) and blinded (they must then neither run nor leak).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from studyman.protocol.loader import load_protocol
from studyman.synthetic.design import design_from_protocol
from studyman.synthetic.generator import generate_trial
from studyman.synthetic.planting import plant_errors
from studyman.validation.catalogue import CATALOGUE, check_by_id
from studyman.validation.dictionary import DataDictionary, dictionary_from_frame
from studyman.validation.engine import ValidationResult, run_checks
from studyman.validation.reconciliation import RECONCILIATION_CHECK_IDS

PROTOCOL_DIR = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"

#: planted error type -> the check that must find it, at the planted record, event and instance
EXPECTED = {
    "ae_disposition_without_withdrawal": "REC-DS-AE-NO-WITHDRAWAL",
    "withdrawal_without_ae_disposition": "REC-WITHDRAWAL-NO-DS-AE",
    "death_without_fatal_ae": "REC-DEATH-NO-FATAL-AE",
    "fatal_without_death": "AE-FATAL-NO-DEATH",  # the reverse, an existing safety check
    "fatal_without_death_date": "REC-FATAL-NO-DEATH-DATE",
    "treatment_before_randomisation": "REC-TREATMENT-BEFORE-RAND",
    "major_deviation_recorded_minor": "REC-DV-MAJOR-NOT-RECORDED",
}
ACTION_CHECKS = {"REC-DS-AE-NO-WITHDRAWAL", "REC-WITHDRAWAL-NO-DS-AE"}


@cache
def _study() -> tuple[Any, DataDictionary, frozenset[str]]:
    protocol = load_protocol(PROTOCOL_DIR)
    dictionary = dictionary_from_frame(pd.DataFrame(protocol.redcap.dictionary.as_rows()))
    codes = frozenset(choice.code for choice in protocol.redcap.project.missing_codes)
    return protocol, dictionary, codes


@cache
def _clean(seed: int) -> Any:
    protocol, _, _ = _study()
    return generate_trial(protocol, n_participants=200, seed=seed)


@cache
def _planted(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    protocol, _, _ = _study()
    trial = _clean(seed)
    records, truth = plant_errors(
        trial.records,
        design_from_protocol(protocol),
        data_cut=trial.data_cut,
        rng=np.random.default_rng(seed),
        per_type=3,
        types=tuple(EXPECTED),
    )
    return records, truth, trial.randomization


def _check(records: pd.DataFrame, randomization: pd.DataFrame | None) -> ValidationResult:
    protocol, dictionary, codes = _study()
    return run_checks(
        records, protocol, dictionary, missing_codes=codes, randomization=randomization
    )


def _reconciliation(findings: pd.DataFrame) -> pd.DataFrame:
    return findings[findings["check_id"].isin([*RECONCILIATION_CHECK_IDS, "AE-FATAL-NO-DEATH"])]


@pytest.mark.parametrize("seed", [7, 8])
def test_every_planted_disagreement_is_found_by_its_check_and_nothing_else_is(seed: int) -> None:
    records, truth, randomization = _planted(seed)
    assert truth["error_type"].value_counts().to_dict() == dict.fromkeys(EXPECTED, 3)
    findings = _check(records, randomization).findings
    missed = []
    for error in truth.to_dict("records"):
        expected = EXPECTED[str(error["error_type"])]
        hit = findings[
            (findings["check_id"] == expected)
            & (findings["record_id"] == error["record_id"])
            & (findings["event"] == error["event"])
            & (findings["instance"].astype(str) == str(error["instance"]))
        ]
        if hit.empty:
            missed.append((error["error_type"], error["record_id"]))
    assert missed == []  # 100 % recall
    # and no reconciliation query on a participant without a planted disagreement
    found = _reconciliation(findings)
    assert set(found["record_id"]) <= set(truth["record_id"])


@pytest.mark.parametrize("seed", [7, 9])
def test_a_clean_study_raises_no_reconciliation_query_blinded_or_not(seed: int) -> None:
    trial = _clean(seed)
    for randomization in (trial.randomization, None):
        findings = _check(trial.records, randomization).findings
        assert _reconciliation(findings)[["check_id", "record_id"]].to_dict("records") == []


def test_a_blinded_run_neither_runs_nor_reveals_the_action_checks() -> None:
    records, truth, _ = _planted(7)
    result = _check(records, None)
    assert not result.checks_run & ACTION_CHECKS
    assert not set(result.findings["check_id"]) & ACTION_CHECKS
    # the checks that need no arm still find their planted disagreements in the blinded view
    blind_types = [t for t, check in EXPECTED.items() if check not in ACTION_CHECKS]
    for error in truth[truth["error_type"].isin(blind_types)].to_dict("records"):
        hit = result.findings[
            (result.findings["check_id"] == EXPECTED[str(error["error_type"])])
            & (result.findings["record_id"] == error["record_id"])
        ]
        assert len(hit) == 1, error


def test_an_adverse_event_disposition_in_the_arm_without_the_adjunct_is_not_queried() -> None:
    # only the adjunct can be withdrawn (the action field acts on it): a CBT-alone participant
    # withdrawn for an adverse event has no withdrawal to record
    trial = _clean(7)
    records = trial.records.copy()
    arms = trial.randomization.set_index("record_id")["rand_arm"]
    protocol, _, _ = _study()
    control = {str(a.code) for a in protocol.arms.items if not a.receives_adjunct}
    adjunct = {str(a.code) for a in protocol.arms.items if a.receives_adjunct}
    left = records[records["ds_status"].isin(["2", "3", "6", "7"])]
    in_control = left[left["record_id"].map(arms).isin(control)].index[:2]
    in_adjunct = left[left["record_id"].map(arms).isin(adjunct)].index[:2]
    records.loc[[*in_control, *in_adjunct], "ds_status"] = "4"
    found = _check(records, trial.randomization).findings
    flagged = set(found.loc[found["check_id"] == "REC-DS-AE-NO-WITHDRAWAL", "record_id"])
    assert flagged == set(records.loc[in_adjunct, "record_id"])


def test_a_missing_date_of_death_with_a_fatal_event_raises_one_query_not_two() -> None:
    records, truth, randomization = _planted(8)
    findings = _check(records, randomization).findings
    for error in truth[truth["error_type"] == "fatal_without_death_date"].to_dict("records"):
        here = findings[
            (findings["record_id"] == error["record_id"])
            & (findings["field"] == "death_date")
            & (findings["event"] == error["event"])
        ]
        assert list(here["check_id"]) == ["REC-FATAL-NO-DEATH-DATE"]


def test_a_recorded_major_deviation_of_a_minor_category_is_not_queried() -> None:
    # the site may always record more as major than the protocol declares; only the reverse is
    # a disagreement
    trial = _clean(9)
    records = trial.records.copy()
    minor = records.index[
        (records["redcap_repeat_instrument"] == "deviations") & (records["dv_category"] == "4")
    ]
    assert len(minor) > 0
    records.loc[minor, "dv_major"] = "1"
    found = _check(records, trial.randomization).findings
    assert not (found["check_id"] == "REC-DV-MAJOR-NOT-RECORDED").any()


def test_the_reconciliation_checks_are_site_queries_in_the_catalogue() -> None:
    for check_id in RECONCILIATION_CHECK_IDS:
        check = check_by_id(check_id)
        assert check is not None, check_id
        assert check.kind == "reconciliation"
        assert check.finding_kind == "site_query"
        assert not check.review_only
        assert check.needs_arm == (check_id in ACTION_CHECKS)
    assert {c.check_id for c in CATALOGUE if c.kind == "reconciliation"} == set(
        RECONCILIATION_CHECK_IDS
    )


def test_validate_writes_the_facts_blinded_or_by_arm_with_queries_aged_to_the_run(
    tmp_path: Path,
) -> None:
    import json
    import stat

    from studyman.synthetic.writer import write_trial
    from studyman.validation.query_log import QueryLog
    from studyman.validation.run import validate_study

    protocol, _, _ = _study()
    trial = _clean(7)
    written = write_trial(trial, tmp_path / "trial")
    stamp = "2026-10-05T00:00:00Z"  # after the cut-off, as queries are
    blinded = validate_study(protocol, written["records"], tmp_path / "blinded", at=stamp)
    document = json.loads((tmp_path / "blinded" / "facts.json").read_text(encoding="utf-8"))
    assert (document["output"], document["view"]) == ("validation", "blinded")
    assert document["as_of"] == "2026-10-05T00:00:00+00:00"
    assert document["cutoff"] == "2026-09-30"
    facts = document["facts"]
    assert not [key for key in facts if key.endswith("_by_arm")]
    with QueryLog(blinded.query_log) as log:
        queries = log.queries(as_of=stamp)
    open_queries = queries[queries["status"].isin(["open", "answered", "reopened"])]
    assert facts["site_queries_open"] == int((open_queries["kind"] == "site_query").sum()) > 0
    assert facts["median_days_open"] == 0.0  # every query was opened by this run
    assert facts["randomised"] == 200
    assert facts["pp_population"] < facts["mitt_population"] <= facts["itt_population"]
    mode = (tmp_path / "blinded" / "facts.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600

    validate_study(
        protocol,
        written["records"],
        tmp_path / "unblinded",
        randomization=written["randomization"],
        at=stamp,
    )
    unblinded = json.loads((tmp_path / "unblinded" / "facts.json").read_text(encoding="utf-8"))
    assert unblinded["view"] == "unblinded"
    by_arm = unblinded["facts"]
    names = [arm.name for arm in protocol.arms.items]
    for key in ("randomised", "mitt_population", "pp_population", "discontinued_due_to_ae"):
        assert list(by_arm[f"{key}_by_arm"]) == names
        assert sum(by_arm[f"{key}_by_arm"].values()) == by_arm[key]
        # a fact both views see has one value
        assert by_arm[key] == facts[key]
