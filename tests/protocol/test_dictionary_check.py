"""check_dictionary: REDCap's upload rules on the reference and on real REDCap dictionaries."""

from __future__ import annotations

from pathlib import Path

from studyman.protocol import read_data_dictionary
from studyman.protocol.dictionary_check import check_dictionary


def test_reference_dictionary_follows_redcap_upload_rules(reference_study: Path) -> None:
    dictionary = read_data_dictionary(reference_study / "redcap" / "data_dictionary.csv")
    assert check_dictionary(dictionary) == []


def test_dictionaries_downloaded_from_real_redcap_have_no_major_finding(
    redcap_fixtures: Path,
) -> None:
    paths = sorted(redcap_fixtures.glob("*/dictionary.csv"))
    assert len(paths) >= 20
    for path in paths:
        findings = check_dictionary(read_data_dictionary(path))
        assert [f for f in findings if f.severity == "major"] == [], path


def test_broken_dictionary_gives_one_finding_per_broken_rule(tmp_path: Path) -> None:
    path = tmp_path / "dictionary.csv"
    path.write_text(
        "field_name,form_name,section_header,field_type,field_label,"
        "select_choices_or_calculations,field_note,text_validation_type_or_show_slider_number,"
        "text_validation_min,text_validation_max,identifier,branching_logic,required_field\n"
        "record_id,demo,,text,ID,,,,,,,,\n"
        "sex,demo,,radio,Sex,,,,,,,,\n"
        'flags,demo,,checkbox,Flags,"1, A | a b, B",,,,,,,\n'
        "score,demo,,calc,Score,,,,,,,,\n"
        "weight,demo,,text,Weight,,,number,200,30,,,\n"
        "visit,demo,,text,Visit,,,date_ymd,2025-02-30,,,,\n"
        "height,demo,,text,Height,,,decimal,,,,,\n"
        "pain,demo,,text,Pain,,,,,,Y?,,\n"
        "bmi,demo,,text,BMI,,,,,,,([weight] > 0,\n"
        "demo_complete,demo,,text,Status,,,,,,,,\n"
        "note,other,,notes,Note,,,,,,,,\n"
        "late,demo,,text,Late,,,,,,,,\n",
        encoding="utf-8",
    )
    findings = check_dictionary(read_data_dictionary(path))
    assert [(f.check_id, f.field) for f in findings] == [
        ("dictionary.choices_missing", "sex"),
        ("dictionary.checkbox_code", "flags"),
        ("dictionary.calc_missing", "score"),
        ("dictionary.validation_range", "weight"),
        ("dictionary.validation_range", "visit"),
        ("dictionary.validation_unknown", "height"),
        ("dictionary.flag_value", "pain"),
        ("dictionary.logic_parentheses", "bmi"),
        ("dictionary.reserved_name", "demo_complete"),
        ("dictionary.form_split", "late"),
    ]
    assert all(f.severity == "major" for f in findings)


def test_logic_validation_could_not_evaluate_is_a_major_finding(tmp_path: Path) -> None:
    # the same check (studyman.protocol.logic.check_logic) validation applies before it runs
    deep = "(" * 150 + "[age] > 1" + ")" * 150
    path = tmp_path / "dictionary.csv"
    path.write_text(
        "field_name,form_name,section_header,field_type,field_label,"
        "select_choices_or_calculations,field_note,text_validation_type_or_show_slider_number,"
        "text_validation_min,text_validation_max,identifier,branching_logic,required_field\n"
        "record_id,demo,,text,ID,,,,,,,,\n"
        "age,demo,,text,Age,,,integer,,,,,\n"
        f"deep,demo,,text,Deep,,,,,,,{deep},\n"
        f'score,demo,,calc,Score,"sum({deep})",,,,,,,\n'
        "typo,demo,,text,Typo,,,,,,,[age] >> 3,\n"
        "chain,demo,,text,Chain,,,,,,," + " or ".join(["[age] = 1"] * 500) + ",\n",
        encoding="utf-8",
    )
    findings = check_dictionary(read_data_dictionary(path))
    assert [(f.check_id, f.field, f.severity) for f in findings] == [
        ("dictionary.logic_invalid", "deep", "major"),
        ("dictionary.logic_invalid", "score", "major"),
        ("dictionary.logic_invalid", "typo", "major"),
    ]
    assert "nested more than 100 levels deep" in findings[0].message
    assert "the formula of 'score'" in findings[1].message
    assert "unexpected '>'" in findings[2].message
