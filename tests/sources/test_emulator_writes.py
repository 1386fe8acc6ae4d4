"""Design writes over real HTTP with unchanged PyCap: each changes what the emulator serves (or is
refused with a 400 and changes nothing), with REDCap's cascades to the data."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pandas as pd
import pytest
import redcap
import requests

from studyman.sources.emulator import EmulatorServer
from tests.sources.conftest import BLINDED_TOKEN, FULL_TOKEN, PROJECTS, SUPER_TOKEN

Start = Callable[..., EmulatorServer]


def post(server: EmulatorServer, **data: str) -> requests.Response:
    return requests.post(server.url, data=data, timeout=30)


@pytest.fixture
def longitudinal(longitudinal_server: EmulatorServer) -> redcap.Project:
    return redcap.Project(longitudinal_server.url, FULL_TOKEN)


@pytest.fixture
def simple(simple_server: EmulatorServer) -> redcap.Project:
    return redcap.Project(simple_server.url, FULL_TOKEN)


# ---------------------------------------------------------------- metadata
def test_metadata_import_drops_a_field_with_its_data_and_reimport_restores_the_field(
    simple: redcap.Project,
) -> None:
    original = simple.export_metadata()
    assert "dob" in simple.export_records(records=["1"])[0]
    reduced = [f for f in original if f["field_name"] != "dob"]
    assert simple.import_metadata(reduced) == len(reduced)
    fresh = redcap.Project(simple.url, FULL_TOKEN)
    assert [f["field_name"] for f in fresh.export_metadata()] == [f["field_name"] for f in reduced]
    assert "dob" not in fresh.export_records(records=["1"])[0]
    assert simple.import_metadata(original) == len(original)
    restored = redcap.Project(simple.url, FULL_TOKEN)
    assert len(restored.export_metadata()) == len(original)
    # REDCap's cascade: the data of a deleted field does not come back with the field.
    assert restored.export_records(records=["1"])[0]["dob"] == ""


def test_metadata_import_in_csv_round_trips(simple: redcap.Project) -> None:
    text = simple.export_metadata(format_type="csv")
    assert simple.import_metadata(text, import_format="csv") == len(simple.export_metadata())


def test_a_bad_data_dictionary_is_refused_and_changes_nothing(simple: redcap.Project) -> None:
    original = simple.export_metadata()
    doubled = [*original, dict(original[1])]
    with pytest.raises(redcap.RedcapError, match="listed twice"):
        simple.import_metadata(doubled)
    no_choices = [dict(f) for f in original]
    radio = next(f for f in no_choices if f["field_type"] == "radio")
    radio["select_choices_or_calculations"] = ""
    with pytest.raises(redcap.RedcapError, match="has no choices"):
        simple.import_metadata(no_choices)
    assert simple.export_metadata() == original


# ---------------------------------------------------------------- arms and events
def test_deleting_an_arm_deletes_its_events_and_their_data(longitudinal: redcap.Project) -> None:
    assert {r["study_id"] for r in longitudinal.export_records()} == {"100", "220", "304"}
    assert longitudinal.delete_arms([2]) == 1
    assert [a["arm_num"] for a in longitudinal.export_arms()] == [1]
    assert all(e["arm_num"] == 1 for e in longitudinal.export_events())
    assert all(m["arm_num"] == 1 for m in longitudinal.export_instrument_event_mappings())
    # 304 had data only in arm 2: the record is gone with it.
    assert {r["study_id"] for r in longitudinal.export_records()} == {"100", "220"}


def test_arm_import_renames_adds_and_with_override_replaces(longitudinal: redcap.Project) -> None:
    assert longitudinal.import_arms([{"arm_num": 1, "name": "Drug Alpha"}]) == 1
    assert longitudinal.import_arms([{"arm_num": 3, "name": "Drug C"}]) == 1
    # REDCap lists an arm only once it has an event.
    assert [a["name"] for a in longitudinal.export_arms()] == ["Drug Alpha", "Drug B"]
    assert longitudinal.import_events([{"event_name": "Screening", "arm_num": "3"}]) == 1
    assert [a["name"] for a in longitudinal.export_arms()] == ["Drug Alpha", "Drug B", "Drug C"]
    assert longitudinal.import_arms([{"arm_num": 3, "name": "Drug C"}], override=1) == 1
    assert [a["arm_num"] for a in longitudinal.export_arms()] == [3]
    assert [e["unique_event_name"] for e in longitudinal.export_events()] == ["screening_arm_3"]
    assert longitudinal.export_records() == []


def test_event_import_derives_unique_names_and_delete_takes_the_data(
    longitudinal: redcap.Project,
) -> None:
    before = len(longitudinal.export_events())
    assert longitudinal.import_events([{"event_name": "Extra visit", "arm_num": "1"}]) == 1
    assert longitudinal.import_events([{"event_name": "Extra visit", "arm_num": "1"}]) == 1
    names = [e["unique_event_name"] for e in longitudinal.export_events()]
    assert len(names) == before + 2
    assert {"extra_visit_arm_1", "extra_visitb_arm_1"} <= set(names)
    rows = longitudinal.export_records(records=["100"], events=["visit_1_arm_1"])
    assert rows
    assert longitudinal.delete_events(["visit_1_arm_1"]) == 1
    left = longitudinal.export_records(records=["100"])
    assert all(r["redcap_event_name"] != "visit_1_arm_1" for r in left)
    with pytest.raises(redcap.RedcapError, match="do not exist"):
        longitudinal.delete_events(["visit_1_arm_1"])


def test_an_event_for_a_missing_arm_is_refused(longitudinal: redcap.Project) -> None:
    with pytest.raises(redcap.RedcapError, match="arm_num 9 does not exist"):
        longitudinal.import_events([{"event_name": "Lost", "arm_num": "9"}])


def test_form_event_mapping_import_replaces_every_mapping(longitudinal: redcap.Project) -> None:
    current = longitudinal.export_instrument_event_mappings()
    one = [{"arm_num": "1", "unique_event_name": "enrollment_arm_1", "form": "demographics"}]
    assert longitudinal.import_instrument_event_mappings(one) == 1
    assert longitudinal.export_instrument_event_mappings() == [
        {"arm_num": 1, "unique_event_name": "enrollment_arm_1", "form": "demographics"}
    ]
    bad = [{"arm_num": "1", "unique_event_name": "enrollment_arm_1", "form": "nope"}]
    with pytest.raises(redcap.RedcapError, match="does not exist"):
        longitudinal.import_instrument_event_mappings(bad)
    assert longitudinal.import_instrument_event_mappings(current) == len(current)
    assert longitudinal.export_instrument_event_mappings() == current


def test_repeating_settings_round_trip_in_every_format(start_emulator: Start) -> None:
    server = start_emulator(
        PROJECTS / "repeating-instruments" / "project.xml", tokens={FULL_TOKEN: "a"}
    )
    project = redcap.Project(server.url, FULL_TOKEN)
    before = project.export_repeating_instruments_events()
    for fmt in ("xml", "json", "csv", "df"):
        exported = project.export_repeating_instruments_events(format_type=fmt)
        assert project.import_repeating_instruments_events(exported, import_format=fmt) == 1
    assert project.export_repeating_instruments_events() == before
    with pytest.raises(redcap.RedcapError, match="does not exist"):
        project.import_repeating_instruments_events([{"form_name": "nope"}])


def test_a_classic_project_refuses_arm_and_event_writes(simple: redcap.Project) -> None:
    with pytest.raises(redcap.RedcapError, match="classic"):
        simple.import_arms([{"arm_num": 1, "name": "A"}])
    with pytest.raises(redcap.RedcapError, match="classic"):
        simple.delete_events(["x_arm_1"])


# ---------------------------------------------------------------- groups, users, roles
def test_dag_import_and_delete_leave_records_and_users_in_no_group(
    simple_server: EmulatorServer, simple: redcap.Project
) -> None:
    assert (
        simple.import_dags(
            [{"data_access_group_name": "New Site", "unique_group_name": ""}],
            return_format_type="csv",
        )
        == "1"
    )
    assert "new_site" in {d["unique_group_name"] for d in simple.export_dags()}
    in_group = [r for r in simple_server.store.record_ids() if simple_server.store.record_dag(r)]
    group = simple_server.store.record_dag(in_group[0])
    assert simple.delete_dags([group]) == 1
    assert simple_server.store.record_dag(in_group[0]) == ""
    users = {u["username"]: u for u in simple.export_users()}
    assert users["site1"]["data_access_group"] == ""


def test_user_import_adds_a_user_without_rights_and_delete_ends_their_token(
    simple_server: EmulatorServer, simple: redcap.Project
) -> None:
    assert simple.import_users([{"username": "newcomer"}], return_format_type="csv") == "1"
    newcomer = {u["username"]: u for u in simple.export_users()}["newcomer"]
    assert newcomer["api_export"] == 0
    assert set(newcomer["forms_export"].values()) == {0}
    token = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00"
    simple_server.add_token(token, "newcomer")
    answer = post(simple_server, token=token, content="record", format="json")
    assert answer.status_code == 403  # no API export right
    assert simple.delete_users(["newcomer"]) == 1
    answer = post(simple_server, token=token, content="version")
    assert answer.status_code == 403
    assert "permissions to use the API" in answer.text


def test_a_role_gives_its_users_its_rights(
    simple_server: EmulatorServer, simple: redcap.Project
) -> None:
    assert simple.import_user_roles([{"role_label": "No export", "api_export": 0}]) == 1
    role = simple.export_user_roles()[-1]
    assert role["role_label"] == "No export"
    assert role["unique_role_name"].startswith("U-")
    assert (
        simple.import_user_role_assignment(
            [{"username": "blinded", "unique_role_name": role["unique_role_name"]}]
        )
        == 1
    )
    mapping = {m["username"]: m["unique_role_name"] for m in simple.export_user_role_assignment()}
    assert mapping["blinded"] == role["unique_role_name"]
    answer = post(simple_server, token=BLINDED_TOKEN, content="record", format="json")
    assert answer.status_code == 403
    assert simple.delete_user_roles([role["unique_role_name"]]) == 1
    assert role["unique_role_name"] not in {
        r["unique_role_name"] for r in simple.export_user_roles()
    }
    # Its users keep the rights they had through it.
    answer = post(simple_server, token=BLINDED_TOKEN, content="record", format="json")
    assert answer.status_code == 403


def test_user_dag_assignment_moves_a_user_into_a_group(
    simple_server: EmulatorServer, simple: redcap.Project
) -> None:
    mapping = simple.export_user_dag_assignment()
    assert {"username": "coordinator", "redcap_data_access_group": ""} in mapping
    assert (
        simple.import_user_dag_assignment(
            [{"username": "viewer", "redcap_data_access_group": "dag_1"}], return_format_type="csv"
        )
        == "1"
    )
    users = {u["username"]: u for u in simple.export_users()}
    assert users["viewer"]["data_access_group"] == "dag_1"
    with pytest.raises(redcap.RedcapError, match="does not exist"):
        simple.import_user_dag_assignment(
            [{"username": "viewer", "redcap_data_access_group": "dag_9"}]
        )


# ---------------------------------------------------------------- projects and answers
@pytest.mark.parametrize(
    ("fmt", "settings"),
    [
        (
            "xml",
            "<?xml version='1.0'?><item><project_title>Made</project_title>"
            "<purpose>0</purpose></item>",
        ),
        ("json", '[{"project_title": "Made", "purpose": 0}]'),
        ("csv", "project_title,purpose\nMade,0\n"),
    ],
)
def test_project_creation_reads_settings_in_each_format(
    simple_server: EmulatorServer, fmt: str, settings: str
) -> None:
    odm = (PROJECTS / "simple" / "project.xml").read_text(encoding="utf-8")
    answer = post(
        simple_server, token=SUPER_TOKEN, content="project", format=fmt, data=settings, odm=odm
    )
    assert answer.status_code == 200
    token = answer.text
    assert len(token) == 32
    created = redcap.Project(simple_server.url, token)
    assert created.export_project_info()["project_title"] == "Made"
    users = created.export_users()
    assert [u["username"] for u in users] == ["super_user"]
    assert users[0]["api_export"] == 1
    assert users[0]["user_rights"] == 1
    assert str(created.export_version()) == "14.5.0"
    log = created.export_logging(log_type="manage")
    assert log[-1]["action"] == "Manage/Design"
    assert log[-1]["details"] == "Create project (API)"
    # REDCap keeps no values of calculated fields from the ODM (see the api module's Notes).
    assert all(r["bmi"] == "" for r in created.export_records())
    assert any(r["weight"] != "" for r in created.export_records())


def test_project_creation_without_a_title_is_refused(simple_server: EmulatorServer) -> None:
    answer = post(
        simple_server, token=SUPER_TOKEN, content="project", format="json", data='[{"purpose": 0}]'
    )
    assert answer.status_code == 400
    assert "project_title" in answer.json()["error"]


def test_project_creation_without_odm_makes_the_first_instrument(
    simple_server: EmulatorServer,
) -> None:
    answer = post(
        simple_server,
        token=SUPER_TOKEN,
        content="project",
        format="json",
        data='[{"project_title": "Empty", "purpose": 1}]',
    )
    created = redcap.Project(simple_server.url, answer.text)
    assert [f["field_name"] for f in created.export_metadata()] == ["record_id"]
    assert created.export_instruments()[0]["instrument_name"] == "my_first_instrument"


@pytest.mark.parametrize(
    ("return_format", "expected"),
    [("csv", "2"), ("xml", '<?xml version="1.0" encoding="UTF-8" ?><count>2</count>')],
)
def test_record_import_count_has_redcaps_shape(
    simple: redcap.Project, return_format: str, expected: str
) -> None:
    frame = pd.read_csv(StringIO("record_id\n900\n901\n"))
    assert simple.import_records(frame, import_format="df", return_format_type=return_format) == (
        expected
    )
    assert simple.delete_records(["900", "901"], return_format_type=return_format) == "2"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"content": "report", "report_id": "1"}, "does not implement content=report"),
        ({"content": "metadata", "action": "delete"}, '"action" (delete) is not valid'),
        ({"content": "dag", "action": "switch", "dag": "dag_1"}, "does not implement"),
        ({"content": "user", "action": "rename"}, "is not valid"),
        ({"content": "nonsense"}, '"content" is not valid'),
    ],
)
def test_calls_not_emulated_are_a_400_never_a_200(
    simple_server: EmulatorServer, fields: dict[str, Any], message: str
) -> None:
    answer = post(simple_server, token=FULL_TOKEN, format="json", **fields)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_a_write_with_data_is_never_answered_as_an_export(simple: redcap.Project) -> None:
    # Before the model was mutable, metadata with data answered 200 with the export.
    answer = requests.post(
        simple.url,
        data={"token": FULL_TOKEN, "content": "metadata", "format": "json", "data": "[]"},
        timeout=30,
    )
    assert answer.status_code == 400
    assert "No fields" in answer.json()["error"]
