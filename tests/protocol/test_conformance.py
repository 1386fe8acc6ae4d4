"""check_conformance: the reference study is clean; each kind of drift gives its finding."""

from __future__ import annotations

import csv
from pathlib import Path

from studyman.findings import Finding
from studyman.protocol import load_protocol, load_redcap_project, read_data_dictionary
from studyman.protocol.conformance import check_conformance


def _edit_dictionary(project_dir: Path, field: str, **changes: str) -> None:
    path = project_dir / "data_dictionary.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
        columns = list(rows[0])
    for row in rows:
        if row["field_name"] == field:
            row.update(changes)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _drop_dictionary_field(project_dir: Path, field: str) -> None:
    path = project_dir / "data_dictionary.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text(
        "".join(line for line in lines if not line.startswith(f"{field},")), encoding="utf-8"
    )


def _by_check(findings: list[Finding]) -> dict[tuple[str, str], Finding]:
    return {(f.check_id, f.field or f.instrument or f.event or f.value): f for f in findings}


def test_reference_study_conforms_to_its_redcap_project(reference_study: Path) -> None:
    protocol = load_protocol(reference_study)
    assert protocol.redcap is not None
    assert check_conformance(protocol, protocol.redcap) == []
    assert check_conformance(protocol, protocol.redcap.dictionary) == []
    # the same, from metadata rows as the API (PyCap export_metadata) returns them
    assert check_conformance(protocol, protocol.redcap.dictionary.as_rows()) == []


def test_changed_type_choice_range_label_and_missing_field_are_findings(study_copy: Path) -> None:
    redcap = study_copy / "redcap"
    _edit_dictionary(redcap, "lab_alt", text_validation_type_or_show_slider_number="date_ymd")
    _edit_dictionary(
        redcap, "rand_arm", select_choices_or_calculations="1, CBT + adjunct | 3, CBT alone"
    )
    _edit_dictionary(
        redcap,
        "phq9_3",
        field_type="text",
        select_choices_or_calculations="",
        text_validation_type_or_show_slider_number="integer",
        text_validation_min="0",
        text_validation_max="4",
    )
    _edit_dictionary(
        redcap,
        "ds_status",
        select_choices_or_calculations=(
            "1, Completed | 2, Withdrew consent | 3, Lost to follow-up | 4, Adverse event | "
            "5, Died | 6, Physician decision | 7, Other"
        ),
    )
    _drop_dictionary_field(redcap, "hamd_total")
    protocol = load_protocol(study_copy, with_redcap=False)
    findings = check_conformance(protocol, read_data_dictionary(redcap / "data_dictionary.csv"))
    found = _by_check(findings)

    assert found[("conformance.field_type", "lab_alt")].severity == "major"
    assert "text (date_ymd)" in found[("conformance.field_type", "lab_alt")].message
    choices = found[("conformance.field_choices", "rand_arm")]
    assert choices.severity == "major"
    assert "missing code(s) 2; unexpected code(s) 3" in choices.message
    phq = found[("conformance.field_range", "phq9_3")]
    assert "validates 0..4, expected 0..3" in phq.message
    label = found[("conformance.field_choice_label", "ds_status")]
    assert label.severity == "minor"
    assert "'Died'" in label.message
    missing = [f for f in findings if f.check_id == "conformance.field_missing"]
    assert {f.field for f in missing} == {"hamd_total"}
    assert {f.severity for f in missing} == {"critical"}
    assert len(findings) == 3 + len(missing) + 2  # nothing else is reported


def test_missing_instrument_event_mapping_and_repeating_form_are_findings(study_copy: Path) -> None:
    redcap = study_copy / "redcap"
    mapping = redcap / "instrument_event_mapping.csv"
    mapping.write_text(
        mapping.read_text(encoding="utf-8").replace("1,week_6_arm_1,phq9\n", ""), encoding="utf-8"
    )
    repeating = redcap / "repeating_instruments.csv"
    repeating.write_text(
        "".join(
            line
            for line in repeating.read_text(encoding="utf-8").splitlines(keepends=True)
            if ",dosing," not in line
        ),
        encoding="utf-8",
    )
    events = redcap / "events.csv"
    events.write_text(
        events.read_text(encoding="utf-8").replace(
            "Week 16,1,week_16_arm_1", "Week 16,1,wk_16_arm_1"
        ),
        encoding="utf-8",
    )
    mapping.write_text(
        mapping.read_text(encoding="utf-8").replace("week_16_arm_1", "wk_16_arm_1"),
        encoding="utf-8",
    )
    protocol = load_protocol(study_copy)
    assert protocol.redcap is not None
    found = _by_check(check_conformance(protocol, protocol.redcap))
    assert found[("conformance.mapping_missing", "phq9")].event == "week_6_arm_1"
    assert found[("conformance.repeating_missing", "dosing")].severity == "major"
    assert found[("conformance.event_missing", "week_16_arm_1")].severity == "critical"
    assert found[("conformance.event_unused", "wk_16_arm_1")].severity == "info"


def test_site_user_who_can_see_randomization_is_critical(study_copy: Path) -> None:
    users = study_copy / "redcap" / "users.csv"
    lines = users.read_text(encoding="utf-8").splitlines(keepends=True)
    lines = [
        line.replace("randomization:0", "randomization:2") if line.startswith("site_s03,") else line
        for line in lines
    ]
    users.write_text("".join(lines), encoding="utf-8")
    protocol = load_protocol(study_copy, with_redcap=False)
    findings = check_conformance(protocol, load_redcap_project(study_copy / "redcap"))
    assert [(f.check_id, f.severity, f.value) for f in findings] == [
        ("conformance.unblinded_access", "critical", "site_s03")
    ]


def test_other_project_dictionary_reports_the_missing_instruments(
    reference_study: Path, redcap_fixtures: Path
) -> None:
    protocol = load_protocol(reference_study, with_redcap=False)
    other = read_data_dictionary(redcap_fixtures / "simple" / "dictionary.csv")
    findings = check_conformance(protocol, other)
    missing = {f.instrument for f in findings if f.check_id == "conformance.instrument_missing"}
    assert missing == set(protocol.instrument_names)
    assert all(f.severity == "critical" for f in findings if f.check_id.endswith("_missing"))


def test_total_missing_item_off_schedule_visit_date_and_unknown_logic_field_are_findings(
    study_copy: Path,
) -> None:
    redcap = study_copy / "redcap"
    _edit_dictionary(
        redcap,
        "gad7_total",
        select_choices_or_calculations="sum([gad7_1],[gad7_2],[gad7_3],[gad7_4],[gad7_5],[gad7_6])",
    )
    _edit_dictionary(redcap, "screen_fail_other", branching_logic="[screen_fail_reasn] = '5'")
    _edit_dictionary(redcap, "scr_date", form_name="visit")  # visit is not due at screening
    protocol = load_protocol(study_copy)
    assert protocol.redcap is not None
    findings = check_conformance(protocol, protocol.redcap)
    assert [(f.check_id, f.field) for f in findings] == [
        ("conformance.calc_items", "gad7_total"),
        ("conformance.visit_date_form", "scr_date"),
        ("conformance.logic_unknown_field", "screen_fail_other"),
    ]
    assert "gad7_7" in findings[0].message
    assert "screen_fail_reasn" in findings[2].message


def test_api_shaped_metadata_events_and_mappings_are_checked(reference_study: Path) -> None:
    protocol = load_protocol(reference_study)
    project = protocol.redcap
    assert project is not None
    # As PyCap returns them: lists of dicts (export_metadata, export_events, ...).
    metadata = project.dictionary.as_rows()
    events = [event.model_dump() for event in project.events]
    mappings = [mapping.model_dump() for mapping in project.mappings]
    repeating = [form.model_dump() for form in project.repeating]
    assert (
        check_conformance(protocol, metadata, events=events, mappings=mappings, repeating=repeating)
        == []
    )
    without_cows = [m for m in mappings if m["form"] != "cows"]
    findings = check_conformance(protocol, metadata, events=events, mappings=without_cows)
    assert [(f.check_id, f.event, f.instrument) for f in findings] == [
        ("conformance.mapping_missing", "week_12_arm_1", "cows"),
        ("conformance.mapping_missing", "week_16_arm_1", "cows"),
    ]


def test_blinded_coordinator_who_can_export_dosing_is_critical(study_copy: Path) -> None:
    users = study_copy / "redcap" / "users.csv"
    lines = users.read_text(encoding="utf-8").splitlines(keepends=True)
    lines = [
        line.rsplit("dosing:0", 1)[0] + "dosing:1" + line.rsplit("dosing:0", 1)[1]
        if line.startswith("coordinator,")
        else line
        for line in lines
    ]
    users.write_text("".join(lines), encoding="utf-8")
    protocol = load_protocol(study_copy)
    assert protocol.redcap is not None
    findings = check_conformance(protocol, protocol.redcap)
    assert [(f.check_id, f.severity, f.value, f.instrument) for f in findings] == [
        ("conformance.unblinded_access", "critical", "coordinator", "dosing")
    ]
    assert "blinded user 'coordinator'" in findings[0].message


def test_datetime_with_seconds_in_any_date_order_is_a_datetime_field(
    reference_study: Path,
) -> None:
    # REDCap's datetime validations: ymd, mdy, dmy, each with or without seconds.
    protocol = load_protocol(reference_study)
    assert protocol.redcap is not None
    metadata = protocol.redcap.dictionary.as_rows()
    validations = {"ae_aware_dt": "datetime_seconds_dmy", "ae_report_dt": "datetime_seconds_mdy"}
    for row in metadata:
        if row["field_name"] in validations:
            row["text_validation_type_or_show_slider_number"] = validations[row["field_name"]]
    edited = {
        row["field_name"]: row["text_validation_type_or_show_slider_number"]
        for row in metadata
        if row["field_name"] in validations
    }
    assert edited == validations
    assert check_conformance(protocol, metadata) == []


def test_reporting_clock_mappings_are_checked_like_every_other_field(study_copy: Path) -> None:
    redcap = study_copy / "redcap"
    # expectedness as a radio, the regulator report as a date without time, the seriousness
    # criteria without "life-threatening", the IRB report field gone
    _edit_dictionary(
        redcap, "ae_expected", field_type="radio", select_choices_or_calculations="1, Y | 0, N"
    )
    _edit_dictionary(
        redcap, "ae_reg_report_dt", text_validation_type_or_show_slider_number="date_ymd"
    )
    _edit_dictionary(
        redcap,
        "ae_ser_crit",
        select_choices_or_calculations="1, Death | 3, Hospitalisation or prolongation",
    )
    _drop_dictionary_field(redcap, "ae_irb_report_dt")
    protocol = load_protocol(study_copy, with_redcap=False)
    findings = check_conformance(protocol, read_data_dictionary(redcap / "data_dictionary.csv"))
    found = _by_check(findings)

    expected = found[("conformance.field_type", "ae_expected")]
    assert (expected.severity, "adverse_events.expected_field" in expected.message) == (
        "major",
        True,
    )
    regulator = [f for f in findings if f.field == "ae_reg_report_dt"]
    # two clocks (fatal/life-threatening and other SUSARs) name the regulator report field
    assert {f.check_id for f in regulator} == {"conformance.field_type"}
    assert any("reporting_clocks[1].report_field" in f.message for f in regulator)
    assert any("reporting_clocks[2].report_field" in f.message for f in regulator)
    criteria = found[("conformance.field_choices", "ae_ser_crit")]
    assert "missing code(s) 2" in criteria.message
    missing = found[("conformance.field_missing", "ae_irb_report_dt")]
    assert missing.severity == "critical"
    assert "reporting_clocks[4].report_field" in missing.message
