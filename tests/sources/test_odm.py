"""REDCap ODM files: read, converted to a project directory, served, and created through the API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redcap
import requests

from studyman.cli import main
from studyman.errors import ProtocolError
from studyman.sources.emulator import (
    EmulatorServer,
    load_project,
    read_dictionary,
    read_odm_file,
)
from tests.sources.conftest import FULL_TOKEN, PROJECTS, SUPER_TOKEN

Start = Callable[..., EmulatorServer]


def test_odm_reader_gets_forms_events_repeats_dags_and_roles() -> None:
    project = read_odm_file(PROJECTS / "longitudinal" / "project.xml")
    assert project.record_id_field == "study_id"
    assert project.instruments[0].instrument_name == "demographics"
    assert project.instruments[0].instrument_label == "Demographics"
    assert [a.name for a in project.arms] == ["Drug A", "Drug B"]
    assert project.events[7].unique_event_name == "deadline_to_opt_ou_arm_2"
    assert (1, "enrollment_arm_1", "demographics") in project.mappings
    repeating = read_odm_file(PROJECTS / "repeating-instruments" / "project.xml")
    assert [(r.event_name, r.form_name) for r in repeating.repeating] == [("", "bp")]
    dag = read_odm_file(PROJECTS / "dag" / "project.xml")
    assert [d.unique_group_name for d in dag.dags] == ["daga", "dagb"]
    simple = read_odm_file(PROJECTS / "simple" / "project.xml")
    role = simple.users[0]
    assert (role.username, role.right("api_export"), role.forms_export["health"]) == ("api", 1, 1)


def test_odm_types_map_back_to_dictionary_types() -> None:
    fields = {f.field_name: f for f in read_odm_file(PROJECTS / "simple" / "project.xml").fields}
    assert fields["address"].field_type == "notes"
    assert fields["weight"].text_validation_type_or_show_slider_number == "integer"
    assert (fields["height"].text_validation_min, fields["height"].text_validation_max) == (
        "130",
        "215",
    )
    assert fields["bmi"].select_choices_or_calculations.startswith("round(")
    assert fields["race"].field_type == "checkbox"
    assert "race___1" not in fields


def test_dictionary_reader_accepts_human_and_raw_headers() -> None:
    human = read_dictionary(PROJECTS / "simple" / "dictionary.csv")
    assert human[0].field_name == "record_id"
    assert human[3].field_label == "Street, City, State, ZIP"
    raw = read_dictionary(PROJECTS / "decimal-comma-and-dot" / "metadata.csv")
    assert raw[0].field_name == "record_id"


def test_malformed_files_are_one_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<ODM><Study>")
    with pytest.raises(ProtocolError, match=r"broken\.xml: not well-formed XML"):
        load_project(broken)
    bad_dictionary = tmp_path / "project"
    bad_dictionary.mkdir()
    (bad_dictionary / "data_dictionary.csv").write_text("name,form\nx,y\n")
    with pytest.raises(ProtocolError, match=r"data_dictionary\.csv: header: not a REDCap"):
        load_project(bad_dictionary)
    with pytest.raises(ProtocolError, match="expected a REDCap project directory or an ODM"):
        load_project(tmp_path / "nothing.txt")


@pytest.mark.parametrize(
    "name", ["longitudinal", "repeating-instruments", "dag", "survey", "vignette-repeating"]
)
def test_converted_directory_serves_what_the_odm_serves(
    name: str, start_emulator: Start, tmp_path: Path
) -> None:
    out = tmp_path / name
    main(["emulator", "convert", str(PROJECTS / name / "project.xml"), "--out", str(out)])
    assert (out / "data_dictionary.csv").is_file()
    from_odm = redcap.Project(
        start_emulator(PROJECTS / name / "project.xml", tokens={FULL_TOKEN: "a"}).url, FULL_TOKEN
    )
    from_dir = redcap.Project(start_emulator(out, tokens={FULL_TOKEN: "a"}).url, FULL_TOKEN)
    options = {
        "format_type": "csv",
        "export_survey_fields": True,
        "export_data_access_groups": True,
    }
    assert from_dir.export_records(**options) == from_odm.export_records(**options)
    assert from_dir.export_metadata() == from_odm.export_metadata()
    assert from_dir.export_project_info() == from_odm.export_project_info()
    assert from_dir.export_repeating_instruments_events() == (
        from_odm.export_repeating_instruments_events()
    )
    if from_odm.is_longitudinal:
        assert from_dir.export_events() == from_odm.export_events()
        assert from_dir.export_instrument_event_mappings() == (
            from_odm.export_instrument_event_mappings()
        )


def test_project_creation_with_a_super_token_reads_the_odm(simple_server: EmulatorServer) -> None:
    odm = (PROJECTS / "longitudinal" / "project.xml").read_text(encoding="utf-8")
    answer = requests.post(
        simple_server.url,
        data={
            "token": SUPER_TOKEN,
            "content": "project",
            "format": "json",
            "data": '[{"project_title": "Created", "purpose": 0}]',
            "odm": odm,
        },
        timeout=30,
    )
    assert answer.status_code == 200
    token = answer.text
    assert len(token) == 32
    created = redcap.Project(simple_server.url, token)
    assert created.export_project_info()["project_title"] == "Created"
    assert created.is_longitudinal is True
    assert [r["study_id"] for r in created.export_records(events=["enrollment_arm_1"])] == [
        "100",
        "220",
    ]
    # The first project is untouched and its token still reaches it.
    assert redcap.Project(simple_server.url, FULL_TOKEN).export_project_info()["project_id"] == 1
    refused = requests.post(
        simple_server.url,
        data={"token": FULL_TOKEN, "content": "project", "format": "json", "odm": odm},
        timeout=30,
    )
    assert refused.status_code == 200  # a project token's content=project is an export
    assert refused.json()["project_title"] == "REDCapR: simple"


def test_serve_command_answers_pycap_with_the_token_given(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-c",
        "from studyman.cli import main; main()",
        "emulator",
        "serve",
        str(PROJECTS / "nonnumeric-record-id" / "project.xml"),
        "--token",
        FULL_TOKEN,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.rsplit(" at ", 1)[1].strip()
        records = redcap.Project(url, FULL_TOKEN).export_records()
        assert [r["record_id"] for r in records] == ["a", "b", "c"]
        assert FULL_TOKEN not in line
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_serve_command_refuses_a_malformed_token_without_echoing_it() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from studyman.cli import main; main()",
            "emulator",
            "serve",
            str(PROJECTS / "simple" / "project.xml"),
            "--token",
            "secret-but-wrong",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "32 hexadecimal characters" in result.stderr
    assert "secret-but-wrong" not in result.stderr + result.stdout
