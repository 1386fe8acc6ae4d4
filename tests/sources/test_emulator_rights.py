"""Rights hold on every call, attacked the way a hostile or careless client would: a blinded
token learns nothing of a form it may not export (not through filterLogic either), a token
cannot write a form it may not edit, a group's token stays in its group, an unknown user fails
closed, and malformed requests get REDCap's 400 without hurting the server."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redcap
import requests

from studyman.sources.emulator import EmulatorServer, User, load_project, write_project_dir
from studyman.sources.emulator.api import FULL_RIGHTS
from tests.sources.conftest import (
    BLINDED_TOKEN,
    FULL_TOKEN,
    PROJECTS,
    SITE_TOKEN,
    simple_with_users,
)

Start = Callable[..., EmulatorServer]
NO_EDIT_TOKEN = "E0E0E0E0E0E0E0E0E0E0E0E0E0E0E0E0"
NO_CREATE_TOKEN = "C1C1C1C1C1C1C1C1C1C1C1C1C1C1C1C1"
DEIDENTIFIED_TOKEN = "D1D1D1D1D1D1D1D1D1D1D1D1D1D1D1D1"
STRANGER_TOKEN = "5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A"


def post(server: EmulatorServer, **data: str) -> requests.Response:
    return requests.post(server.url, data=data, timeout=30)


@pytest.fixture
def server(start_emulator: Start) -> EmulatorServer:
    """``simple`` with its users plus: no edit rights on ``health`` (standing in for the
    randomisation form), no Create Records, de-identified export of ``demographics``, and a
    token whose user is not in the project (as a stale ``api_tokens.csv`` line)."""
    project = simple_with_users()
    users = (
        *project.users,
        User("no_edit", rights=FULL_RIGHTS, forms={"health": 2}),
        User("no_create", rights={**FULL_RIGHTS, "record_create": 0}),
        User("deidentified", rights=FULL_RIGHTS, forms_export={"demographics": 2}),
    )
    tokens = {
        **project.tokens,
        NO_EDIT_TOKEN: "no_edit",
        NO_CREATE_TOKEN: "no_create",
        DEIDENTIFIED_TOKEN: "deidentified",
        STRANGER_TOKEN: "left_the_study",
    }
    return start_emulator(dataclasses.replace(project, users=users, tokens=tokens))


# ---------------------------------------------------------------- export rights and filterLogic
@pytest.mark.parametrize(
    "logic",
    [
        "[height] > 150",
        "[weight] <> ''",
        "if([bmi] > 20, 1, 0) = 1",
        "[sex] = '1' and ([comments] = 'x' or [height] >= 0)",
        "sum([height], 0) > 1",
        "(((([height])))) > 1",
        "[health_complete] = '2'",
        "[mugshot] <> ''",
    ],
)
def test_filter_logic_on_a_form_without_export_rights_is_refused(
    server: EmulatorServer, logic: str
) -> None:
    answer = post(server, token=BLINDED_TOKEN, content="record", format="json", filterLogic=logic)
    assert answer.status_code == 403
    assert "filterLogic" in answer.json()["error"]
    # The same filter works for a token with the rights (so the refusal is about rights).
    full = post(server, token=FULL_TOKEN, content="record", format="json", filterLogic=logic)
    assert full.status_code == 200


def test_a_blinded_token_cannot_sort_records_by_a_hidden_value(server: EmulatorServer) -> None:
    # The attack: two filters whose kept records would split by the hidden field.
    kept = []
    for logic in ("[height] > 150", "[height] <= 150"):
        answer = post(
            server, token=BLINDED_TOKEN, content="record", format="json", filterLogic=logic
        )
        kept.append(answer.json())
    assert all(isinstance(k, dict) and "error" in k for k in kept)


def test_filter_logic_on_an_identifier_of_a_deidentified_form_is_refused(
    server: EmulatorServer,
) -> None:
    refused = post(
        server,
        token=DEIDENTIFIED_TOKEN,
        content="record",
        format="json",
        filterLogic="[email] <> ''",
    )
    assert refused.status_code == 403
    allowed = post(
        server, token=DEIDENTIFIED_TOKEN, content="record", format="json", filterLogic="[sex] = '1'"
    )
    assert allowed.status_code == 200
    assert all("email" not in row for row in allowed.json())


def test_a_blinded_token_gets_no_hidden_field_from_fields_forms_eav_or_pdf(
    server: EmulatorServer,
) -> None:
    project = redcap.Project(server.url, BLINDED_TOKEN)
    assert all("height" not in row for row in project.export_records())
    assert all(r["field_name"] != "height" for r in project.export_records(record_type="eav"))
    with pytest.raises(redcap.RedcapError, match="Export privileges"):
        project.export_records(fields=["height"])
    with pytest.raises(redcap.RedcapError, match="Export privileges"):
        project.export_records(forms=["health"])
    content, _ = project.export_pdf(record="1")
    assert b"[height]" not in content
    assert b"[name_first]" in content


# ---------------------------------------------------------------- edit rights on imports
@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("json", json.dumps([{"record_id": "1", "height": "999"}])),
        ("csv", "record_id,height\n1,999\n"),
        ("json", json.dumps([{"record_id": "1", "health_complete": "2"}])),
        ("xml", "<records><item><record_id>1</record_id><weight>999</weight></item></records>"),
    ],
)
def test_an_import_into_a_form_without_edit_rights_is_refused_and_changes_nothing(
    server: EmulatorServer, fmt: str, data: str
) -> None:
    full = redcap.Project(server.url, FULL_TOKEN)
    before = full.export_records()
    answer = post(server, token=NO_EDIT_TOKEN, content="record", format=fmt, data=data)
    assert answer.status_code == 403
    assert "edit rights" in answer.text
    assert full.export_records() == before


def test_an_eav_import_is_checked_field_by_field(server: EmulatorServer) -> None:
    data = json.dumps([{"record": "1", "field_name": "height", "value": "999"}])
    answer = post(
        server, token=NO_EDIT_TOKEN, content="record", format="json", type="eav", data=data
    )
    assert answer.status_code == 403
    ok = json.dumps([{"record": "1", "field_name": "name_first", "value": "Nut"}])
    answer = post(server, token=NO_EDIT_TOKEN, content="record", format="json", type="eav", data=ok)
    assert answer.status_code == 200


def test_a_file_upload_into_a_form_without_edit_rights_is_refused(server: EmulatorServer) -> None:
    answer = requests.post(
        server.url,
        data={
            "token": NO_EDIT_TOKEN,
            "content": "file",
            "action": "import",
            "record": "1",
            "field": "mugshot",
        },
        files={"file": ("x.txt", b"x")},
        timeout=30,
    )
    assert answer.status_code == 403


def test_a_new_record_needs_create_rights(server: EmulatorServer) -> None:
    data = json.dumps([{"record_id": "777", "name_first": "X"}])
    answer = post(server, token=NO_CREATE_TOKEN, content="record", format="json", data=data)
    assert answer.status_code == 403
    assert not server.store.has_record("777")
    update = json.dumps([{"record_id": "1", "name_first": "Renamed"}])
    assert post(server, token=NO_CREATE_TOKEN, content="record", format="json", data=update).ok


def test_force_auto_number_cannot_create_records_without_create_rights(
    server: EmulatorServer,
) -> None:
    before = server.store.record_ids()
    data = json.dumps([{"record_id": before[0], "name_first": "Cloned"}])
    answer = post(
        server,
        token=NO_CREATE_TOKEN,
        content="record",
        format="json",
        data=data,
        forceAutoNumber="true",
    )
    assert answer.status_code == 403
    assert server.store.record_ids() == before


# ---------------------------------------------------------------- data access groups
def test_a_group_token_stays_in_its_group_for_every_call(server: EmulatorServer) -> None:
    outside = next(r for r in server.store.record_ids() if server.store.record_dag(r) != "dag_1")
    inside = server.store.record_ids("dag_1")
    site = redcap.Project(server.url, SITE_TOKEN)
    assert {r["record_id"] for r in site.export_records()} == set(inside)
    for fields in (
        {"content": "pdf", "record": outside},
        {"content": "file", "action": "export", "record": outside, "field": "mugshot"},
        {"content": "record", "action": "delete", "records[0]": outside},
    ):
        answer = post(server, token=SITE_TOKEN, format="json", **fields)
        assert answer.status_code in (400, 403), fields
        assert outside in server.store.record_ids()
    move = json.dumps([{"record_id": inside[0], "redcap_data_access_group": "dag_2"}])
    answer = post(server, token=SITE_TOKEN, content="record", format="json", data=move)
    assert answer.status_code == 403
    for fields in (
        {
            "content": "metadata",
            "data": json.dumps(redcap.Project(server.url, FULL_TOKEN).export_metadata()),
        },
        {"content": "user", "data": json.dumps([{"username": "site1", "design": 1}])},
        {
            "content": "dag",
            "action": "import",
            "data": json.dumps([{"data_access_group_name": "Mine", "unique_group_name": ""}]),
        },
    ):
        answer = post(server, token=SITE_TOKEN, format="json", **fields)
        assert answer.status_code == 403, fields
    assert [d["unique_group_name"] for d in site.export_dags()] == ["dag_1"]


# ---------------------------------------------------------------- unknown users fail closed
@pytest.mark.parametrize("content", ["record", "metadata", "version", "user", "project", "log"])
def test_a_token_whose_user_is_not_in_the_project_is_refused(
    server: EmulatorServer, content: str
) -> None:
    answer = post(server, token=STRANGER_TOKEN, content=content, format="json")
    assert answer.status_code == 403
    assert answer.json() == {"error": "You do not have permissions to use the API"}


def test_an_api_tokens_file_naming_an_unknown_user_fails_closed(
    start_emulator: Start, tmp_path: Path
) -> None:
    project = load_project(PROJECTS / "simple" / "project.xml")
    directory = tmp_path / "project"
    write_project_dir(
        dataclasses.replace(project, tokens={STRANGER_TOKEN: "ghost"}), directory, with_tokens=True
    )
    served = start_emulator(directory)
    answer = post(served, token=STRANGER_TOKEN, content="record", format="json")
    assert answer.status_code == 403


# ---------------------------------------------------------------- malformed requests
def raw_request(server: EmulatorServer, head: str, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head.encode("latin-1") + body)
        connection.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", " ", "99999999999999"])
def test_a_bad_content_length_is_a_400_in_redcaps_error_shape(
    server: EmulatorServer, length: str
) -> None:
    head = (
        "POST /api/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    answer = raw_request(server, head, b"token=x&content=version")
    if length.strip() == "":
        assert answer.startswith(b"HTTP/1.1 403")  # no body: an unknown token
    else:
        assert answer.startswith(b"HTTP/1.1 400")
        assert b"<hash><error>" in answer
    assert server.internal_errors == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"content": "record", "format": "json", "filterLogic": "(" * 5000 + "1" + ")" * 5000},
        {"content": "record", "format": "json", "filterLogic": "[height" * 3000},
        {"content": "record", "format": "json", "data": "[" * 5000 + "]" * 5000},
        {"content": "record", "format": "json", "data": '{"a":' * 5000 + "1" + "}" * 5000},
        {"content": "metadata", "format": "json", "data": "[" * 5000 + "]" * 5000},
        {"content": "record", "format": "xml", "data": "<a>" * 5000 + "</a>" * 5000},
        {
            "content": "record",
            "format": "json",
            "data": json.dumps([{"record_id": "1", "redcap_repeat_instance": "1e400"}]),
        },
        {
            "content": "file",
            "action": "export",
            "record": "1",
            "field": "mugshot",
            "repeat_instance": "1e400",
        },
        {"content": "fileRepository", "action": "export", "doc_id": "1e400"},
        {
            "content": "record",
            "format": "xml",
            "data": '<!DOCTYPE a [<!ENTITY b "c">]>'
            "<records><item><record_id>&b;</record_id></item></records>",
        },
        {"content": "record", "dateRangeBegin": "9999999-99-99"},
        {"content": "arm", "format": "json", "arms[99999999999999999999]": "1"},
    ],
)
def test_malformed_requests_are_a_400_and_the_server_lives_on(
    server: EmulatorServer, fields: dict[str, str]
) -> None:
    answer = post(server, token=FULL_TOKEN, **fields)
    assert answer.status_code == 400
    assert "error" in answer.text.lower()
    assert server.internal_errors == 0
    assert redcap.Project(server.url, FULL_TOKEN).export_version()
