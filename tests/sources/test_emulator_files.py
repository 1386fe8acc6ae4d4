"""Documents, PDF and survey calls over real HTTP with unchanged PyCap: file-upload fields and the
File Repository keep real bytes on disk (owner-only), the PDF is a real PDF, survey codes are
stable per record."""

from __future__ import annotations

import io
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import redcap
import requests

from studyman.sources.emulator import EmulatorServer
from tests.sources.conftest import BLINDED_TOKEN, FULL_TOKEN, PROJECTS, simple_with_users

Start = Callable[..., EmulatorServer]


def post(server: EmulatorServer, **data: str) -> requests.Response:
    return requests.post(
        server.url, data={"token": FULL_TOKEN, "returnFormat": "json", **data}, timeout=30
    )


@pytest.fixture
def stored(start_emulator: Start, tmp_path: Path) -> EmulatorServer:
    """``simple`` with its users, documents kept under *tmp_path*."""
    return start_emulator(simple_with_users(), storage=tmp_path)


def test_a_file_field_round_trips_its_bytes_and_shows_its_name(
    stored: EmulatorServer, tmp_path: Path
) -> None:
    project = redcap.Project(stored.url, FULL_TOKEN)
    data = b"\x89PNG fake image bytes \x00\xff"
    assert project.import_file("1", "mugshot", "face.png", io.BytesIO(data)) == [{}]
    content, headers = project.export_file("1", "mugshot")
    assert content == data
    assert headers["name"] == "face.png"
    assert project.export_records(records=["1"])[0]["mugshot"] == "face.png"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in files] == [data]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert project.delete_file("1", "mugshot") == [{}]
    assert project.export_records(records=["1"])[0]["mugshot"] == ""
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    with pytest.raises(redcap.RedcapError, match="no file"):
        project.export_file("1", "mugshot")


def test_a_file_field_follows_the_forms_export_rights(stored: EmulatorServer) -> None:
    redcap.Project(stored.url, FULL_TOKEN).import_file(
        "1", "mugshot", "face.png", io.BytesIO(b"secret")
    )
    answer = requests.post(
        stored.url,
        data={
            "token": BLINDED_TOKEN,
            "content": "file",
            "action": "export",
            "record": "1",
            "field": "mugshot",
            "returnFormat": "json",
        },
        timeout=30,
    )
    assert answer.status_code == 403
    assert b"secret" not in answer.content


def test_a_hostile_file_name_cannot_reach_the_headers_or_the_disk(
    stored: EmulatorServer, tmp_path: Path
) -> None:
    project = redcap.Project(stored.url, FULL_TOKEN)
    project.import_file("1", "mugshot", '../../x"\r\nSet-Cookie: a=b.txt', io.BytesIO(b"x"))
    _, headers = project.export_file("1", "mugshot")
    assert "\r" not in headers["name"]
    assert '"' not in headers["name"]
    assert all(tmp_path in p.parents for p in tmp_path.rglob("*"))


def test_the_file_repository_keeps_folders_and_documents(stored: EmulatorServer) -> None:
    project = redcap.Project(stored.url, FULL_TOKEN)
    folder = project.create_folder_in_repository("Minutes").pop()["folder_id"]
    assert folder > 0
    assert project.import_file_into_repository("top.txt", io.BytesIO(b"top")) == [{}]
    project.import_file_into_repository("in.txt", io.BytesIO(b"inside"), folder_id=folder)
    top = project.export_file_repository()
    assert {"folder_id": folder, "name": "Minutes"} in top
    top_file = next(e for e in top if e.get("name") == "top.txt")
    inner = project.export_file_repository(folder_id=folder)
    assert [e["name"] for e in inner] == ["in.txt"]
    content, headers = project.export_file_from_repository(doc_id=inner[0]["doc_id"])
    assert (content, headers["name"]) == (b"inside", "in.txt")
    assert project.delete_file_from_repository(doc_id=top_file["doc_id"]) == [{}]
    assert "top.txt" not in {e.get("name") for e in project.export_file_repository()}
    # PyCap hands a file answer over as bytes without looking for an error: check the status.
    gone = post(stored, content="fileRepository", action="export", doc_id=str(top_file["doc_id"]))
    assert gone.status_code == 400
    assert "doc_id" in gone.json()["error"]


def test_documents_are_removed_with_a_private_storage_at_stop(start_emulator: Start) -> None:
    server = start_emulator(simple_with_users())
    redcap.Project(server.url, FULL_TOKEN).import_file_into_repository("a.txt", io.BytesIO(b"a"))
    own = server.emulator._own_storage  # the private temporary directory
    assert own is not None
    root = Path(own.name)
    assert any(p.is_file() for p in root.rglob("*"))
    server.stop()
    assert not root.exists()


def test_the_pdf_export_is_a_real_pdf_of_the_instruments(stored: EmulatorServer) -> None:
    project = redcap.Project(stored.url, FULL_TOKEN)
    blank, _ = project.export_pdf()
    assert blank.startswith(b"%PDF-1.4")
    assert blank.rstrip().endswith(b"%%EOF")
    start = int(blank.rsplit(b"startxref", 1)[1].split()[0])
    assert blank[start:].startswith(b"xref")  # the cross-reference table is where it says
    assert b"[height]" in blank
    assert b"______" in blank
    filled, _ = project.export_pdf(record="1", instrument="demographics")
    assert b"Nutmeg" in filled
    assert b"[height]" not in filled
    refused = post(stored, content="pdf", instrument="nope")
    assert refused.status_code == 400
    assert "not valid" in refused.json()["error"]


def test_survey_codes_and_links_are_stable_per_record(start_emulator: Start) -> None:
    server = start_emulator(PROJECTS / "survey" / "project.xml", tokens={FULL_TOKEN: "a"})
    project = redcap.Project(server.url, FULL_TOKEN)
    survey = next(i for i in server.project.instruments if i.is_survey).instrument_name
    record = server.store.record_ids()[0]
    access = project.export_survey_access_code(record=record, instrument=survey)
    assert len(access) == 9
    assert project.export_survey_access_code(record=record, instrument=survey) == access
    assert len(project.export_survey_return_code(record=record, instrument=survey)) == 8
    link = project.export_survey_link(record=record, instrument=survey)
    assert link.startswith(server.url.removesuffix("api/") + "surveys/?s=")
    assert project.export_survey_queue_link(record=record).startswith(
        server.url.removesuffix("api/") + "surveys/?sq="
    )
    participants = project.export_survey_participant_list(instrument=survey)
    assert {p["record"] for p in participants} == set(server.store.record_ids())
    assert "email" in participants[0]
    other = next(i for i in server.project.instruments if not i.is_survey).instrument_name
    with pytest.raises(redcap.RedcapError, match="not enabled as a survey"):
        project.export_survey_access_code(record=record, instrument=other)
