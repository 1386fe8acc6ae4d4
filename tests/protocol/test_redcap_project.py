"""REDCap project files: the reference project, and dictionaries with raw or human headers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from studyman.errors import ProtocolError
from studyman.protocol import load_redcap_project, read_data_dictionary
from studyman.protocol.redcap_project import DICTIONARY_COLUMNS, DataDictionary, parse_choices


def test_reference_project_has_the_design_layout(reference_study: Path) -> None:
    project = load_redcap_project(reference_study / "redcap")
    dictionary = project.dictionary
    assert dictionary.fields[0].field_name == "record_id"
    assert dictionary.fields[0].form_name == "participant"
    assert project.project.is_longitudinal == 1
    assert project.project.redcap_version == "14.5.0"
    assert [arm.arm_num for arm in project.arms] == [1]
    assert project.forms_at("logs_arm_1") == (
        "adverse_events",
        "conmeds",
        "cbt_sessions",
        "dosing",
        "deviations",
    )
    assert {r.form_name for r in project.repeating} == set(project.forms_at("logs_arm_1"))
    assert [dag.unique_group_name for dag in project.dags] == ["s01", "s02", "s03", "s04"]
    assert project.records_file is None
    assert project.tokens_file is None


def test_reference_project_users_keep_blinded_staff_out_of_unblinded_forms(
    reference_study: Path,
) -> None:
    project = load_redcap_project(reference_study / "redcap")
    admin = project.user("admin")
    statistician = project.user("statistician")
    coordinator = project.user("coordinator")
    assert admin is not None
    assert statistician is not None
    assert coordinator is not None
    assert admin.user_rights == 1
    assert admin.design == 1
    assert statistician.can_export("randomization")
    assert statistician.can_export("dosing")
    for form in ("randomization", "dosing"):
        assert coordinator.forms_export[form] == 0
        assert coordinator.forms[form] == 0
    assert coordinator.can_export("hamd17")
    site_users = [user for user in project.users if user.data_access_group]
    assert sorted(user.data_access_group for user in site_users) == ["s01", "s02", "s03", "s04"]
    assert not any(user.can_export("randomization") for user in site_users)


def test_reference_dictionary_types_and_choices(reference_study: Path) -> None:
    dictionary = read_data_dictionary(reference_study / "redcap" / "data_dictionary.csv")
    age = dictionary.field("age")
    assert (age.validation, age.range_min_number(), age.range_max_number()) == (
        "integer",
        16.0,
        90.0,
    )
    assert dictionary.field("rand_arm").choice_codes == ("1", "2")
    assert dictionary.field("eligible").choice_codes == ("1", "0")
    assert dictionary.field("cows_11").choice_codes == ("0", "3", "5")
    assert dictionary.field("ae_ser_crit").export_names[0] == "ae_ser_crit___1"
    assert dictionary.field("ae_aware_dt").is_datetime
    assert dictionary.field("initials").is_identifier
    assert dictionary.field("screen_fail_reason").branching_logic == "[eligible] = '0'"
    assert dictionary.field("phq9_total").calculation.startswith("if(")
    assert len(dictionary.field("ae_pt").choices) == 37


def test_adverse_events_form_records_what_every_reporting_clock_needs(
    reference_study: Path,
) -> None:
    dictionary = read_data_dictionary(reference_study / "redcap" / "data_dictionary.csv")
    names = [f.field_name for f in dictionary.fields if f.form_name == "adverse_events"]
    # the existing fields first, unchanged in order, then the five new ones
    assert names[-6:] == [
        "ae_aesi",
        "ae_expected",
        "ae_unanticipated",
        "ae_reg_report_dt",
        "ae_dsmb_report_dt",
        "ae_irb_report_dt",
    ]
    expected = dictionary.field("ae_expected")
    assert (expected.field_type, expected.branching_logic, expected.required_field) == (
        "yesno",
        "[ae_serious] = '1'",
        "y",
    )
    judgement = dictionary.field("ae_unanticipated")
    assert (judgement.field_type, judgement.branching_logic) == ("yesno", "")
    for phrase in ("OHRP", "unexpected", "possibly related", "greater risk"):
        assert phrase in judgement.field_annotation
    for name, branching in (
        ("ae_reg_report_dt", "[ae_serious] = '1'"),
        ("ae_dsmb_report_dt", "[ae_serious] = '1'"),
        ("ae_irb_report_dt", "[ae_unanticipated] = '1'"),
    ):
        field = dictionary.field(name)
        assert (field.validation, field.branching_logic) == ("datetime_ymd", branching)
    # unchanged: the sponsor report and its awareness date
    assert dictionary.field("ae_report_dt").field_label == (
        "Date and time the SAE report was sent to the sponsor"
    )
    assert dictionary.field("ae_ser_crit").choice_codes == ("1", "2", "3", "4", "5", "6")


def test_choice_strings_parse_like_redcap() -> None:
    choices = parse_choices("1, Yes, definitely | 0, No |  | 9")
    assert [(c.code, c.label) for c in choices] == [
        ("1", "Yes, definitely"),
        ("0", "No"),
        ("9", "9"),
    ]


def _human_dictionaries(root: Path) -> list[Path]:
    paths = sorted(root.glob("*/dictionary.csv")) + sorted(root.glob("*/dictionay.csv"))
    assert len(paths) >= 20
    return paths


def test_human_header_dictionaries_read_the_same_as_raw_headers(redcap_fixtures: Path) -> None:
    for path in _human_dictionaries(redcap_fixtures):
        human = read_data_dictionary(path)
        raw_text = human.to_csv_text()
        assert raw_text.splitlines()[0] == ",".join(DICTIONARY_COLUMNS)
        raw = read_data_dictionary(io.StringIO(raw_text))
        assert raw.fields == human.fields, path


def test_human_download_matches_the_api_metadata_of_the_same_project(
    redcap_fixtures: Path, tmp_path: Path
) -> None:
    # simple/metadata.csv: REDCapR's raw-header copy of the same dictionary, R's NA for blanks.
    human = read_data_dictionary(redcap_fixtures / "simple" / "dictionary.csv")
    with (redcap_fixtures / "simple" / "metadata.csv").open(encoding="utf-8") as handle:
        rows = [["" if cell == "NA" else cell for cell in row] for row in csv.reader(handle)]
    raw_path = tmp_path / "metadata.csv"
    with raw_path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    raw = read_data_dictionary(raw_path)
    # The two files were saved at different times: REDCapR's project later turned `age` from a
    # text field into a calc field. Every other field must read identically.
    differing = [a.field_name for a, b in zip(raw.fields, human.fields, strict=True) if a != b]
    assert differing == ["age"]
    assert raw.field("age").field_type == "calc"
    assert human.fields[0].field_name == "record_id"
    assert any(field.is_identifier for field in human.fields)


def test_reference_dictionary_round_trips_through_human_headers(reference_study: Path) -> None:
    raw = read_data_dictionary(reference_study / "redcap" / "data_dictionary.csv")
    human_text = raw.to_csv_text(human_headers=True)
    assert human_text.startswith("Variable / Field Name,Form Name,")
    assert read_data_dictionary(io.BytesIO(("\ufeff" + human_text).encode())).fields == raw.fields


def test_dictionary_with_unknown_header_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "dictionary.csv"
    path.write_text("field_name,form_name,colour,field_type,field_label\n", encoding="utf-8")
    with pytest.raises(ProtocolError, match="unknown data dictionary column 'colour'") as caught:
        read_data_dictionary(path)
    assert caught.value.key == "line 1, column 3"


def test_dictionary_with_unknown_field_type_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "dictionary.csv"
    path.write_text(
        "field_name,form_name,section_header,field_type,field_label\n"
        "record_id,demo,,text,ID\n"
        'age,demo,,"numeric",Age\n',
        encoding="utf-8",
    )
    with pytest.raises(ProtocolError, match="expected one of 'text'") as caught:
        read_data_dictionary(path)
    assert caught.value.key == "line 3, field_type"


def test_dictionary_with_repeated_field_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dictionary.csv"
    path.write_text(
        "field_name,form_name,section_header,field_type,field_label\n"
        "record_id,demo,,text,ID\n"
        "record_id,demo,,text,ID again\n",
        encoding="utf-8",
    )
    with pytest.raises(ProtocolError, match="repeats \\(first on line 2\\)"):
        read_data_dictionary(path)


_HEADER = "field_name,form_name,section_header,field_type,field_label\n"


@pytest.mark.parametrize(
    ("content", "key", "expected"),
    [
        pytest.param(
            (_HEADER + "record_id,demo,,text,ID\nage,demo,,text\n").encode(),
            "line 3",
            "4 cells for 5 columns: the file is damaged or truncated",
            id="short-row",
        ),
        pytest.param(
            (_HEADER + 'record_id,demo,,text,ID\nage,demo,,text,"Age in\n').encode(),
            "line 3",
            "not a well-formed CSV row",
            id="cut-inside-quotes",
        ),
        pytest.param(
            (_HEADER + "record_id,demo,,text,ID,surplus\n").encode(),
            "line 2",
            "6 cells for 5 columns",
            id="surplus-cell",
        ),
        pytest.param(
            (_HEADER.rstrip("\n") + ",Field Label\nrecord_id,demo,,text,ID,ID\n").encode(),
            "line 1, column 6",
            "column field_label repeats (columns 5 and 6)",
            id="repeated-column",
        ),
        pytest.param(
            (_HEADER + "record_id,demo,,text,ID\n").encode("utf-16"),
            None,
            "UTF-16 text",
            id="utf-16",
        ),
    ],
)
def test_damaged_dictionary_is_an_error_naming_file_and_line(
    tmp_path: Path, content: bytes, key: str | None, expected: str
) -> None:
    path = tmp_path / "dictionary.csv"
    path.write_bytes(content)
    with pytest.raises(ProtocolError) as caught:
        read_data_dictionary(path)
    assert caught.value.file == str(path)
    assert caught.value.key == key
    assert expected in str(caught.value)


def test_a_blank_surplus_cell_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "dictionary.csv"
    path.write_text(_HEADER + "record_id,demo,,text,ID,\n", encoding="utf-8")
    assert read_data_dictionary(path).record_id_field == "record_id"


def test_a_truncated_project_table_names_file_and_line(study_copy: Path) -> None:
    events = study_copy / "redcap" / "events.csv"
    text = events.read_text(encoding="utf-8")
    events.write_text(text[: text.rindex(",")], encoding="utf-8")
    with pytest.raises(ProtocolError, match="the file is damaged or truncated") as caught:
        load_redcap_project(study_copy / "redcap")
    assert caught.value.file == str(events)
    assert caught.value.key == f"line {text.rstrip().count(chr(10)) + 1}"


def test_users_with_rights_on_unknown_forms_are_an_error(study_copy: Path) -> None:
    users = study_copy / "redcap" / "users.csv"
    users.write_text(
        users.read_text(encoding="utf-8").replace("dosing:0", "dosage:0", 1), encoding="utf-8"
    )
    with pytest.raises(ProtocolError, match="unknown form\\(s\\) dosage") as caught:
        load_redcap_project(study_copy / "redcap")
    assert caught.value.file == str(users)
    assert caught.value.key == "line 5, forms"  # the coordinator's row


def test_metadata_rows_from_the_api_build_the_same_dictionary(reference_study: Path) -> None:
    dictionary = read_data_dictionary(reference_study / "redcap" / "data_dictionary.csv")
    assert DataDictionary.from_rows(dictionary.as_rows()).fields == dictionary.fields


def test_malformed_metadata_row_names_the_row_and_column() -> None:
    rows = [
        {"field_name": "record_id", "form_name": "demo", "field_type": "text"},
        {"field_name": "Bad Name", "form_name": "demo", "field_type": "text"},
    ]
    with pytest.raises(ProtocolError, match="expected a REDCap name") as caught:
        DataDictionary.from_rows(rows, source="export_metadata")
    assert str(caught.value).startswith("export_metadata: row 2, field_name:")
