"""REDCap Data Quality rules B-I on real REDCap exports and on the reference study dictionary."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.errors import ValidationError
from studyman.validation.custom import parse_custom_checks, run_custom_checks
from studyman.validation.dictionary import DataDictionary, dictionary_from_frame
from studyman.validation.dictionary_checks import run_dictionary_checks, valid_type_mask
from studyman.validation.records import normalise_records

ROOT = Path(__file__).parents[2]
PROJECTS = ROOT / "tests" / "data" / "redcap-projects"
STUDY_DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@cache
def _study_dictionary() -> DataDictionary:
    return dictionary_from_frame(_read(STUDY_DICTIONARY))


def _check(rows: list[dict[str, str]], codes: frozenset[str] = frozenset()) -> pd.DataFrame:
    frame = normalise_records(pd.DataFrame(rows).fillna(""), "record_id")
    return run_dictionary_checks(frame, _study_dictionary(), missing_codes=codes)


def _pairs(findings: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(findings["check_id"], findings["field"], strict=True))


def test_values_entered_before_validation_was_added_are_type_errors() -> None:
    folder = PROJECTS / "potentially-problematic-values"
    dictionary = dictionary_from_frame(_read(folder / "dictionary.csv"))
    records = normalise_records(_read(folder / "data.csv"), dictionary.record_id_field)
    findings = run_dictionary_checks(records, dictionary)
    assert sorted(
        zip(findings["check_id"], findings["record_id"], findings["field"], strict=True)
    ) == [
        ("DQ-C", "1", "date_before_validation"),
        ("DQ-C", "1", "integer_before_validation"),
        ("DQ-C", "2", "date_before_validation"),
        ("DQ-C", "2", "integer_before_validation"),
    ]


@pytest.mark.parametrize("project", ["longitudinal", "repeating-instruments", "checkboxes-1"])
def test_real_redcap_exports_raise_nothing_beyond_outliers(project: str) -> None:
    folder = PROJECTS / project
    dictionary = dictionary_from_frame(_read(folder / "dictionary.csv"))
    records = normalise_records(_read(folder / "data.csv"), dictionary.record_id_field)
    findings = run_dictionary_checks(records, dictionary)
    assert set(findings["check_id"]) <= {"DQ-E"}


def test_values_mangled_by_type_guessing_and_impossible_sizes_are_found() -> None:
    # REDCapR's "simple" fixture: sex read as TRUE/FALSE by R, heights of 7 cm, weights of 1 kg
    folder = PROJECTS / "simple"
    dictionary = dictionary_from_frame(_read(folder / "dictionary.csv"))
    records = normalise_records(_read(folder / "data.csv"), dictionary.record_id_field)
    findings = run_dictionary_checks(records, dictionary)
    errors = findings[findings["check_id"] != "DQ-E"]
    assert sorted(zip(errors["check_id"], errors["record_id"], errors["field"], strict=True)) == [
        ("DQ-D", "1", "height"),
        ("DQ-D", "1", "weight"),
        ("DQ-D", "2", "height"),
        ("DQ-D", "2", "weight"),
        *[("DQ-G", record, "sex") for record in "12345"],
    ]


@pytest.mark.parametrize(
    ("validation", "good", "bad"),
    [
        ("integer", ["12", "-3", "+4"], ["1.5", "12a", " "]),
        ("number", ["1.5", "-2", ".5"], ["1,5", "1e", "abc"]),
        ("number_1dp", ["72.5", "-0.1"], ["72", "72.50", "72."]),
        ("date_ymd", ["2025-02-28", "2024-02-29"], ["2025-02-30", "2025-2-3", "28-02-2025"]),
        (
            "datetime_ymd",
            ["2025-09-01 08:00"],
            ["2025-09-01", "2025-09-01 25:00", "2025-09-01 08:00:00"],
        ),
        ("email", ["a@b.org"], ["a@b", "@b.org"]),
    ],
)
def test_type_validation_follows_redcap_patterns(
    validation: str, good: list[str], bad: list[str]
) -> None:
    values = np.array([*good, *bad], dtype=object)
    assert list(valid_type_mask(values, validation)) == [True] * len(good) + [False] * len(bad)


def test_required_fields_count_only_where_branching_shows_them() -> None:
    base = {"record_id": "S01-0001", "redcap_event_name": "screening_arm_1"}
    eligible = {**base, "elig_date": "2025-03-01", "eligible": "1"}
    failed = {**base, "record_id": "S01-0002", "elig_date": "2025-03-01", "eligible": "0"}
    findings = _check([eligible, failed])
    blank_reason = findings[
        (findings["check_id"] == "DQ-B") & (findings["field"] == "screen_fail_reason")
    ]
    assert list(blank_reason["record_id"]) == ["S01-0002"]


def test_hidden_values_checkbox_codes_and_missing_data_codes() -> None:
    row = {
        "record_id": "S01-0001",
        "redcap_event_name": "logs_arm_1",
        "redcap_repeat_instrument": "adverse_events",
        "redcap_repeat_instance": "1",
        "ae_term": "headache",
        "ae_serious": "0",
        "ae_ser_crit___1": "1",
        "ae_severity": "UNK",
        "ae_related": "7",
        "ae_outcome": "1",
        "ae_aesi": "0",
        "ae_start": "NASK",
    }
    findings = _check([row], codes=frozenset({"UNK", "NASK"}))
    pairs = _pairs(findings)
    assert ("DQ-F", "ae_ser_crit") in pairs  # criteria ticked on a non-serious event
    assert ("DQ-G", "ae_related") in pairs
    assert {("DQ-I", "ae_severity"), ("DQ-I", "ae_start")} <= pairs
    # a missing-data code is neither a wrong code nor a wrong type
    assert not {("DQ-G", "ae_severity"), ("DQ-C", "ae_start")} & pairs


def test_stored_calculation_disagreeing_with_its_formula() -> None:
    items = {f"gad7_{i}": "2" for i in range(1, 8)}
    rows = [
        {"record_id": "S01-0001", "redcap_event_name": "week_2_arm_1", **items, "gad7_total": "14"},
        {"record_id": "S01-0002", "redcap_event_name": "week_2_arm_1", **items, "gad7_total": "13"},
    ]
    findings = _check(rows)
    wrong = findings[findings["check_id"] == "DQ-H"]
    assert list(wrong["record_id"]) == ["S01-0002"]
    assert "expected 14" in wrong["message"].item()


def test_outliers_are_review_findings_far_from_the_visit_median() -> None:
    rows = [
        {
            "record_id": f"S01-{i:04d}",
            "redcap_event_name": "baseline_arm_1",
            "vs_hr": str(70 + i % 3),
        }
        for i in range(1, 30)
    ]
    rows.append({"record_id": "S01-0099", "redcap_event_name": "baseline_arm_1", "vs_hr": "140"})
    findings = _check(rows)
    outliers = findings[findings["check_id"] == "DQ-E"]
    assert list(outliers["record_id"]) == ["S01-0099"]
    assert set(outliers["severity"]) == {"minor"}
    # how far out, in robust SD from the median of the visit (values 70-72: log MAD ~0.014)
    assert "robust SD above the median 71 at this visit" in outliers["message"].item()


def _heart_rates(shift: dict[str, float], seed: int = 3) -> list[dict[str, str]]:
    """Baseline heart rates of 4 sites x 40 participants, normal(72, 8), *shift* per DAG."""
    generator = np.random.default_rng(seed)
    return [
        {
            "record_id": f"S0{site}-{i:04d}",
            "redcap_event_name": "baseline_arm_1",
            "redcap_data_access_group": f"s0{site}",
            "vs_hr": str(round(generator.normal(72, 8) + shift.get(f"s0{site}", 0.0))),
        }
        for site in range(1, 5)
        for i in range(1, 41)
    ]


def test_robust_outliers_flag_few_values_of_a_clean_field() -> None:
    # REDCap's 2 SD rule flags ~5 % of normal data (8 of 160 here); the robust rule ~0.05 %
    findings = _check(_heart_rates({}))
    assert len(findings[findings["check_id"] == "DQ-E"]) <= 1


def test_robust_outliers_find_a_site_whose_values_are_shifted_against_the_others() -> None:
    findings = _check(_heart_rates({"s03": 45.0}))
    outliers = findings[findings["check_id"] == "DQ-E"]
    flagged = set(outliers["record_id"].str[:3])
    assert flagged == {"S03"}
    assert len(outliers) >= 30  # nearly every S03 value, against the other sites' median
    # the same values without sites (no DAG column) are one group: the shift is the group's
    unsited = [{k: v for k, v in row.items() if k != "redcap_data_access_group"}
               for row in _heart_rates({"s03": 45.0})]  # fmt: skip
    assert len(_check(unsited).query("check_id == 'DQ-E'")) < len(outliers)


def test_robust_outliers_ignore_repeating_logs_and_small_visits() -> None:
    rows = [
        {"record_id": f"S01-{i:04d}", "redcap_event_name": "logs_arm_1",
         "redcap_repeat_instrument": "conmeds", "redcap_repeat_instance": "1",
         "cm_dose": "5000" if i == 1 else "20"}
        for i in range(1, 40)
    ] + [
        {"record_id": f"S01-{i:04d}", "redcap_event_name": "week_1_arm_1", "vs_hr": v}
        for i, v in enumerate(["70", "71", "72", "140"], start=1)
    ]  # fmt: skip
    assert "DQ-E" not in set(_check(rows)["check_id"])


def test_custom_check_fires_where_its_logic_is_true() -> None:
    dictionary = _study_dictionary()
    checks = parse_custom_checks(
        [
            {
                "id": "CUS-BP",
                "severity": "major",
                "form": "vital_signs",
                "field": "vs_dbp",
                "logic": "[vs_sbp] <= [vs_dbp]",
                "message": "Diastolic not below systolic",
            }
        ],
        dictionary=dictionary,
    )
    rows = [
        {
            "record_id": "S01-0001",
            "redcap_event_name": "week_4_arm_1",
            "vs_sbp": "120",
            "vs_dbp": "80",
        },
        {
            "record_id": "S01-0002",
            "redcap_event_name": "week_4_arm_1",
            "vs_sbp": "80",
            "vs_dbp": "90",
        },
    ]
    frame = normalise_records(pd.DataFrame(rows), "record_id")
    findings = run_custom_checks(
        frame, checks, dictionary, today=pd.Timestamp("2026-01-01").to_pydatetime()
    )
    assert list(
        zip(findings["check_id"], findings["record_id"], findings["value"], strict=True)
    ) == [("CUS-BP", "S01-0002", "90")]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"id": "CUS-X", "logic": "[vs_sbp] > ", "message": "m"},
            "custom check CUS-X: .*position 12",
        ),
        (
            {"id": "CUS-X", "logic": "[no_such_field] = 1", "message": "m"},
            "unknown field \\[no_such_field\\]",
        ),
        ({"id": "DQ-B", "logic": "1", "message": "m"}, "already used"),
        ({"id": "CUS-X", "logic": "1", "message": "m", "severity": "urgent"}, "severity"),
        ({"id": "CUS-X", "logic": "1", "message": "m", "when": "x"}, "unknown key"),
    ],
)
def test_a_bad_custom_check_is_one_clear_error(entry: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_custom_checks([entry], source="checks.yaml", dictionary=_study_dictionary())
