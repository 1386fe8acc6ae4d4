"""Protocol checks one by one: a clean generated study, one cell changed, the right finding."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from studyman.protocol.loader import load_protocol
from studyman.synthetic.generator import generate_trial
from studyman.validation.dictionary import DataDictionary, dictionary_from_frame
from studyman.validation.engine import run_checks

PROTOCOL_DIR = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"


@cache
def _study() -> tuple[Any, DataDictionary]:
    protocol = load_protocol(PROTOCOL_DIR)
    return protocol, dictionary_from_frame(pd.DataFrame(protocol.redcap.dictionary.as_rows()))


@cache
def _clean() -> tuple[pd.DataFrame, pd.DataFrame]:
    # reporting_lapses=0: every expedited report on time, so each test plants its own problem
    trial = generate_trial(_study()[0], n_participants=30, seed=5, reporting_lapses=0)
    return trial.records, trial.randomization


def _records() -> pd.DataFrame:
    return _clean()[0].copy()


def _row(
    records: pd.DataFrame, record: str, event: str, instrument: str = "", instance: str = ""
) -> int:
    mask = (records["record_id"] == record) & (records["redcap_event_name"] == event)
    mask &= records["redcap_repeat_instrument"] == instrument
    if instance:
        mask &= records["redcap_repeat_instance"].astype(str) == instance
    rows = records.index[mask]
    assert len(rows) >= 1, (record, event, instrument, instance)
    return int(rows[0])


def _findings(records: pd.DataFrame, *, unblinded: bool = False) -> pd.DataFrame:
    protocol, dictionary = _study()
    randomization = _clean()[1] if unblinded else None
    return run_checks(records, protocol, dictionary, randomization=randomization).findings


def _at(findings: pd.DataFrame, check: str, record: str) -> pd.DataFrame:
    return findings[(findings["check_id"] == check) & (findings["record_id"] == record)]


def _completer(records: pd.DataFrame) -> str:
    done = records[
        (records["redcap_event_name"] == "end_of_study_arm_1") & (records["ds_status"] == "1")
    ]
    return str(done["record_id"].iloc[0])


def _logs(records: pd.DataFrame, form: str) -> pd.DataFrame:
    return records[records["redcap_repeat_instrument"] == form]


def test_clean_generated_study_has_no_protocol_query() -> None:
    findings = _findings(_records(), unblinded=True)
    assert set(findings["check_id"]) <= {"DQ-E", "LIV-ALT", "LIV-HYS"}


def test_overdue_visit_is_found_and_a_withdrawn_participant_is_not_chased() -> None:
    records = _records()
    record = _completer(records)
    week8 = _row(records, record, "week_8_arm_1")
    overdue = records.drop(index=week8)
    found = _at(_findings(overdue), "VIS-OVERDUE", record)
    assert list(found["event"]) == ["week_8_arm_1"]
    # the same gap for a participant who withdrew before the window closed is not overdue
    end = _row(overdue, record, "end_of_study_arm_1")
    week4 = overdue.loc[_row(overdue, record, "week_4_arm_1"), "visit_date"]
    overdue.loc[end, ["ds_status", "ds_date", "ds_reason"]] = ["2", week4, "moved away"]
    later = overdue.index[
        (overdue["record_id"] == record)
        & overdue["redcap_event_name"].isin(["week_12_arm_1", "week_16_arm_1"])
    ]
    withdrawn = overdue.drop(index=later)
    withdrawn = withdrawn[
        ~((withdrawn["record_id"] == record) & (withdrawn["redcap_repeat_instrument"] != ""))
    ]
    assert _at(_findings(withdrawn), "VIS-OVERDUE", record).empty


def test_randomised_with_an_exclusion_yes_is_a_critical_eligibility_query() -> None:
    records = _records()
    record = _completer(records)
    screening = _row(records, record, "screening_arm_1")
    records.loc[screening, "exc_bipolar"] = "1"
    found = _at(_findings(records), "ELG-FORM", record)
    assert list(found["field"]) == ["exc_bipolar"]
    assert set(found["severity"]) == {"critical"}


def test_derived_eligibility_disagreeing_with_the_form() -> None:
    records = _records()
    record = _completer(records)
    screening = _row(records, record, "screening_arm_1")
    records.loc[screening, "lab_alt"] = "95"  # above the exclusion limit of 80 U/L
    found = _at(_findings(records), "ELG-DERIVED", record)
    assert list(found["field"]) == ["exc_liver"]


def test_recorded_stratum_is_compared_with_the_baseline_score() -> None:
    records = _records()
    record = _completer(records)
    baseline = _row(records, record, "baseline_arm_1")
    records.loc[baseline, "strat_severity"] = (
        "2" if records.loc[baseline, "strat_severity"] == "1" else "1"
    )
    assert list(_at(_findings(records), "ELG-STRATUM", record)["field"]) == ["strat_severity"]


def test_prohibited_opioid_and_a_new_antidepressant_after_randomisation() -> None:
    records = _records()
    record = _completer(records)
    rand_date = records.loc[_row(records, record, "baseline_arm_1"), "rand_date"]
    template = _logs(records, "conmeds").iloc[0].copy()
    opioid = template.copy()
    opioid[
        [
            "record_id",
            "redcap_repeat_instance",
            "cm_name",
            "cm_class",
            "cm_start",
            "cm_stop",
            "cm_ongoing",
        ]
    ] = [record, "41", "Tramadol", "5", rand_date, "", "1"]
    new_ad = template.copy()
    later = (pd.Timestamp(rand_date) + pd.Timedelta(days=20)).strftime("%Y-%m-%d")
    new_ad[
        [
            "record_id",
            "redcap_repeat_instance",
            "cm_name",
            "cm_class",
            "cm_start",
            "cm_stop",
            "cm_ongoing",
        ]
    ] = [record, "42", "Mirtazapine", "3", later, "", "1"]
    records = pd.concat([records, opioid.to_frame().T, new_ad.to_frame().T], ignore_index=True)
    findings = _findings(records)
    assert list(_at(findings, "CM-PROHIBITED", record)["instance"]) == ["41"]
    assert list(_at(findings, "CM-NEW-AD", record)["instance"]) == ["42"]
    assert set(_at(findings, "CM-PROHIBITED", record)["severity"]) == {"critical"}


def test_sae_clock_counts_hours_from_awareness() -> None:
    records = _records()
    ae = _logs(records, "adverse_events").index[0]
    record = records.loc[ae, "record_id"]
    records.loc[ae, ["ae_serious", "ae_ser_crit___3", "ae_aware_dt"]] = [
        "1",
        "1",
        "2025-09-01 08:00",
    ]
    records.loc[ae, "ae_report_dt"] = "2025-09-02 08:00"  # exactly 24 h: on time
    assert _at(_findings(records), "AE-SAE-LATE", record).empty
    records.loc[ae, "ae_report_dt"] = "2025-09-02 08:01"
    late = _at(_findings(records), "AE-SAE-LATE", record)
    assert list(late["field"]) == ["ae_report_dt"]
    assert "24.0 h" in late["message"].item()


def _clock_findings(records: pd.DataFrame, *, unblinded: bool = False) -> pd.DataFrame:
    findings = _findings(records, unblinded=unblinded)
    return findings[findings["check_id"].str.startswith("AE-CLOCK-")]


def _susar(records: pd.DataFrame) -> int:
    # a generated SUSAR (serious, related, unexpected), also judged an unanticipated problem
    logs = _logs(records, "adverse_events")
    rows = logs.index[(logs["ae_unanticipated"] == "1") & (logs["ae_ser_crit___2"] == "0")]
    assert len(rows) >= 1
    return int(rows[0])


def test_susar_and_unanticipated_problem_clocks_find_late_and_missing_reports() -> None:
    records = _records()
    row = _susar(records)
    record = records.loc[row, "record_id"]
    assert _clock_findings(records).empty  # generated on time
    records.loc[row, "ae_aware_dt"] = "2025-09-01 08:00"
    records.loc[row, "ae_reg_report_dt"] = "2025-09-16 08:00"  # exactly 360 h: on time
    records.loc[row, "ae_irb_report_dt"] = ""  # due 2025-09-08 08:00, long before the cut
    found = _clock_findings(records)
    assert list(zip(found["check_id"], found["field"], strict=True)) == [
        ("AE-CLOCK-UP-MISSING", "ae_irb_report_dt")
    ]
    assert found["message"].item().startswith("unanticipated_problem_irb: no report to the IRB")
    assert "2025-09-08 08:00" in found["message"].item()
    assert set(found["record_id"]) == {record}

    records.loc[row, "ae_irb_report_dt"] = "2025-09-08 08:00"
    records.loc[row, "ae_reg_report_dt"] = "2025-09-16 10:30"
    found = _clock_findings(records)
    assert list(found["check_id"]) == ["AE-CLOCK-SUSAR-LATE"]
    assert found["message"].item() == (
        "susar_other: report to the regulator sent 362.5 h after awareness, "
        "2.5 h over the 360 h limit"
    )
    assert found["value"].item() == "2025-09-16 10:30"

    # life-threatening: the same report is now against the 7-day clock
    records.loc[row, "ae_ser_crit___2"] = "1"
    found = _clock_findings(records)
    assert list(found["check_id"]) == ["AE-CLOCK-SUSAR-FLT-LATE"]
    assert found["message"].item().startswith("susar_fatal_life_threatening:")
    assert "194.5 h over the 168 h limit" in found["message"].item()
    records.loc[row, "ae_reg_report_dt"] = ""
    assert list(_clock_findings(records)["check_id"]) == ["AE-CLOCK-SUSAR-FLT-MISSING"]

    # expected per the reference safety information: not a SUSAR, no regulator clock
    records.loc[row, "ae_expected"] = "1"
    assert _clock_findings(records).empty


def test_suicide_death_clock_runs_48_hours_to_the_dsmb() -> None:
    records = _records()
    logs = _logs(records, "adverse_events")
    # a serious event that is not a SUSAR (so only the DSMB clock is new for it)
    row = int(logs.index[(logs["ae_serious"] == "1") & (logs["ae_unanticipated"] == "0")][0])
    record = records.loc[row, "record_id"]
    records.loc[row, ["ae_outcome", "ae_aesi", "ae_ser_crit___1"]] = ["5", "1", "1"]
    records.loc[row, "ae_aware_dt"] = "2025-09-01 08:00"
    records.loc[row, "ae_dsmb_report_dt"] = ""
    found = _clock_findings(records)
    assert list(zip(found["check_id"], found["record_id"], strict=True)) == [
        ("AE-CLOCK-SUICIDE-DEATH-MISSING", record)
    ]
    assert "due by 2025-09-03 08:00" in found["message"].item()
    records.loc[row, "ae_dsmb_report_dt"] = "2025-09-03 08:00"
    assert _clock_findings(records).empty
    records.loc[row, "ae_dsmb_report_dt"] = "2025-09-03 09:00"
    found = _clock_findings(records)
    assert list(found["check_id"]) == ["AE-CLOCK-SUICIDE-DEATH-LATE"]
    assert found["message"].item().startswith("suicide_death_dsmb: report to the DSMB sent 49.0 h")


def test_a_report_not_yet_due_at_the_data_cut_is_not_a_finding() -> None:
    records = _records()
    row = _susar(records)
    # data cut 2026-09-30: aware the day before, so the IRB deadline (168 h) is after the cut
    records.loc[row, ["ae_start", "ae_aware_dt"]] = ["2026-09-29", "2026-09-29 10:00"]
    records.loc[row, ["ae_reg_report_dt", "ae_irb_report_dt", "ae_report_dt"]] = [
        "",
        "",
        "2026-09-29 12:00",
    ]
    assert _clock_findings(records).empty


def test_clock_checks_give_the_same_findings_without_the_arm() -> None:
    records = _records()
    row = _susar(records)
    records.loc[row, ["ae_reg_report_dt", "ae_irb_report_dt"]] = ["", ""]
    blinded = _clock_findings(records)
    unblinded = _clock_findings(records, unblinded=True)
    assert sorted(blinded["check_id"]) == ["AE-CLOCK-SUSAR-MISSING", "AE-CLOCK-UP-MISSING"]
    pd.testing.assert_frame_equal(blinded.reset_index(drop=True), unblinded.reset_index(drop=True))


@pytest.mark.parametrize(
    ("alt", "bili", "alp", "expected"),
    [
        ("130", "2.5", "100", {"LIV-ALT", "LIV-HYS"}),  # ALT 3.25x, bilirubin 2.08x, ALP 0.8x
        ("130", "2.5", "250", {"LIV-ALT"}),  # ALP 2.08x ULN: cholestatic, not Hy's law
        ("120", "2.5", "100", set()),  # ALT exactly 3x ULN is not above it
    ],
)
def test_hys_law_uses_the_protocol_multiples_of_uln(
    alt: str, bili: str, alp: str, expected: set[str]
) -> None:
    records = _records()
    record = _completer(records)
    row = _row(records, record, "week_8_arm_1")
    records.loc[row, ["lab_alt", "lab_ast", "lab_bili", "lab_alp"]] = [alt, "30", bili, alp]
    found = _findings(records)
    here = found[(found["record_id"] == record) & (found["event"] == "week_8_arm_1")]
    assert set(here["check_id"]) & {"LIV-ALT", "LIV-HYS"} == expected


def test_cows_at_the_withdrawal_threshold_needs_a_withdrawal_aesi() -> None:
    records = _records()
    record = _completer(records)
    row = _row(records, record, "week_16_arm_1")
    items = {f"cows_{i}": "0" for i in range(1, 12)}
    items.update({"cows_1": "4", "cows_2": "4", "cows_3": "5"})  # total 13
    for field, value in items.items():
        records.loc[row, field] = value
    records.loc[row, "cows_total"] = "13"
    records.loc[(records["record_id"] == record) & (records["ae_aesi"] == "2"), "ae_aesi"] = "0"
    assert list(_at(_findings(records), "COWS-AESI", record)["event"]) == ["week_16_arm_1"]


def test_completed_without_the_final_visit() -> None:
    records = _records()
    record = _completer(records)
    records = records.drop(index=_row(records, record, "week_16_arm_1"))
    assert list(_at(_findings(records), "DS-COMPLETED-NO-FINAL", record)["field"]) == ["ds_status"]


def test_phq9_total_is_prorated_and_blank_with_too_many_missing_items() -> None:
    records = _records()
    record = _completer(records)
    row = _row(records, record, "week_4_arm_1")
    items = [f"phq9_{i}" for i in range(1, 10)]
    records.loc[row, items] = ["1", "2", "1", "0", "3", "1", "2", "1", ""]
    records.loc[row, "phq9_total"] = "12"  # round(11/8 x 9) = round(12.375) = 12
    assert _at(_findings(records), "SCO-TOTAL", record).empty
    records.loc[row, "phq9_8"] = ""  # two missing: the total must be blank
    found = _findings(records)
    assert list(_at(found, "SCO-TOTAL-MISSING-ITEMS", record)["field"]) == ["phq9_total"]
    assert _at(found, "DQ-H", record).empty  # one query for one problem


def test_form_at_an_event_the_schedule_does_not_allow() -> None:
    records = _records()
    record = _completer(records)
    row = _row(records, record, "week_1_arm_1")
    records.loc[row, ["lab_date", "lab_alt"]] = [records.loc[row, "visit_date"], "30"]
    found = _at(_findings(records), "STR-EVENT", record)
    assert list(found["instrument"]) == ["liver_tests"]


def test_stratum_in_the_randomisation_list_is_checked_only_when_unblinded() -> None:
    records = _records()
    protocol, dictionary = _study()
    randomization = _clean()[1].copy()
    record = randomization["record_id"].iloc[0]
    randomization.loc[0, "rand_stratum"] = "S04-moderate"
    unblinded = run_checks(records, protocol, dictionary, randomization=randomization).findings
    assert list(_at(unblinded, "ARM-STRATUM", record)["value"]) == ["S04-moderate"]
    assert _at(_findings(records), "ARM-STRATUM", record).empty


def test_low_cbt_adherence_is_a_review_finding() -> None:
    records = _records()
    record = _completer(records)
    sessions = records.index[
        (records["record_id"] == record) & (records["redcap_repeat_instrument"] == "cbt_sessions")
    ]
    records = records.drop(index=sessions[4:])  # keep four of twelve
    attended = int((records.loc[sessions[:4], "cbt_attended"] == "1").sum())
    found = _at(_findings(records), "ADH-CBT", record)
    assert list(found["value"]) == [str(attended)]
    assert set(found["severity"]) == {"minor"}


def test_randomisation_list_is_reconciled_with_the_snapshot_when_unblinded() -> None:
    records = _records()
    protocol, dictionary = _study()
    full = _clean()[1]
    assert (
        run_checks(records, protocol, dictionary, randomization=full)
        .findings["check_id"]
        .str.startswith("ARM-LIST")
        .sum()
        == 0
    )  # a clean trial reconciles
    dropped = str(full["record_id"].iloc[0])
    stranger = full.iloc[[1]].assign(record_id="S99-9999")
    edited = pd.concat([full.iloc[1:], stranger], ignore_index=True)
    found = run_checks(records, protocol, dictionary, randomization=edited).findings
    missing = found[found["check_id"] == "ARM-LIST-MISSING"]
    assert list(missing["record_id"]) == [dropped]
    unknown = found[found["check_id"] == "ARM-LIST-UNKNOWN"]
    assert list(unknown["record_id"]) == ["S99-9999"]
    assert set(unknown["severity"]) == {"major"}
    # a blinded run never reconciles (it has no list)
    assert not _findings(records)["check_id"].str.startswith("ARM-LIST").any()


def test_the_module_that_holds_a_check_is_found_from_its_id() -> None:
    from studyman.validation import protocol_checks
    from studyman.validation.catalogue import CATALOGUE
    from studyman.validation.protocol_checks import module_of

    package = Path(protocol_checks.__file__).parent
    sources = {
        path.stem: path.read_text(encoding="utf-8")
        for path in package.glob("*.py")
        if path.stem not in ("__init__", "view")
    }
    checks = [check.check_id for check in CATALOGUE if check.kind == "protocol"]
    found = 0
    for check_id in checks:
        assert module_of(check_id) in sources, check_id
        holders = {name for name, source in sources.items() if f'"{check_id}"' in source}
        assert holders in ({module_of(check_id)}, set()), check_id
        found += bool(holders)
    assert found > 50


def test_assessment_dates_come_from_the_schedule_and_the_treatment_logs() -> None:
    from datetime import date

    from studyman.validation.protocol_checks import ProtocolCheckInput, StudyView

    protocol, dictionary = _study()
    view = StudyView(_records(), ProtocolCheckInput(protocol, dictionary, date(2026, 9, 30)))
    # every date of a form due at a scheduled visit, then the session and dose logs; not the
    # screening, consent and randomisation dates (they have checks of their own)
    assert view.assessment_date_fields() == (
        "elig_date",
        "visit_date",
        "cows_date",
        "lab_date",
        "cbt_date",
        "dose_date",
    )


def test_age_range_and_low_baseline_score_are_told_by_the_criterion_not_its_id() -> None:
    protocol, dictionary = _study()
    eligibility = protocol.eligibility
    renamed_ids = eligibility.model_copy(
        update={
            "criteria": tuple(
                criterion.model_copy(update={"id": f"criterion_{number}"})
                for number, criterion in enumerate(eligibility.criteria, start=1)
            )
        }
    )
    other_ids = protocol.model_copy(update={"eligibility": renamed_ids})
    records = _records()
    record = _completer(records)
    records.loc[_row(records, record, "screening_arm_1"), "age"] = "70"
    records.loc[_row(records, record, "baseline_arm_1"), "hamd_total"] = "12"
    for study in (protocol, other_ids):
        findings = run_checks(records, study, dictionary).findings
        assert list(_at(findings, "ELG-AGE", record)["field"]) == ["age"]
        assert list(_at(findings, "SCO-RAND-LOW", record)["field"]) == ["hamd_total"]
