"""Project directories from exported files and from a live project (PyCap over loopback HTTP)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from studyman.errors import ProtocolError, SourceError
from studyman.onboarding import init_protocol
from studyman.protocol import load_redcap_project
from studyman.protocol.redcap_project import RedcapProject
from studyman.sources.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "protocols" / "cbt-adjunct"
TOKEN = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00"
#: A function that makes the function init gives the new project directory to (conftest).
ProjectMaker = Callable[..., Callable[[Path], RedcapProject]]


def _body(path: Path) -> str:
    """The draft without its header comments (which name the source)."""
    return "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    )


def test_live_and_exported_paths_give_the_same_draft(
    live: ProjectMaker, exported: ProjectMaker, tmp_path: Path
) -> None:
    files = init_protocol(
        tmp_path / "files", exported(REFERENCE / "redcap", users=True), source="files"
    )
    with EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "admin"}) as server:
        read = init_protocol(tmp_path / "live", live(server.url), source="live")
    assert _body(read.protocol_file) == _body(files.protocol_file)
    assert read.decisions == files.decisions


def test_a_malformed_export_names_its_file_and_line_and_leaves_nothing(
    exported: ProjectMaker, tmp_path: Path
) -> None:
    redcap = tmp_path / "export"
    shutil.copytree(REFERENCE / "redcap", redcap)
    events = redcap / "events.csv"
    events.write_text(
        events.read_text(encoding="utf-8").replace("Week 2,1,", "Week 2,one,"), encoding="utf-8"
    )
    with pytest.raises(ProtocolError) as raised:
        init_protocol(tmp_path / "study", exported(redcap), source="test")
    # The file the user gave (not init's working copy), its line, and what was expected.
    assert str(raised.value).startswith(f"{events}: line 5, arm_num: expected")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_refused_token_is_one_error_without_the_token_and_leaves_nothing(
    live: ProjectMaker,
    tmp_path: Path,
) -> None:
    wrong = "DEADBEEF" * 4
    with (
        EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "admin"}) as server,
        pytest.raises(SourceError) as raised,
    ):
        init_protocol(tmp_path / "study", live(server.url, wrong), source="test")
    assert wrong not in str(raised.value)
    assert wrong.lower() not in str(raised.value).lower()
    assert "metadata" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_the_token_is_in_no_file_init_writes(live: ProjectMaker, tmp_path: Path) -> None:
    with EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "admin"}) as server:
        init_protocol(tmp_path / "study", live(server.url), source="test")
    for path in (tmp_path / "study").rglob("*"):
        if path.is_file():
            assert TOKEN.lower() not in path.read_text(encoding="utf-8").lower(), path


def test_a_live_project_brings_its_users_and_rights_for_the_blinding_checks(
    live: ProjectMaker, tmp_path: Path
) -> None:
    with EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "admin"}) as server:
        result = init_protocol(tmp_path / "study", live(server.url), source="live")
    read = load_redcap_project(result.directory / "redcap")
    shipped = load_redcap_project(REFERENCE / "redcap")
    assert read.users == shipped.users
    assert read.dags == shipped.dags
    assert read.repeating == shipped.repeating
    assert read.dictionary.fields == shipped.dictionary.fields


def test_a_token_without_user_rights_still_gets_a_draft_without_users(
    live: ProjectMaker, tmp_path: Path
) -> None:
    # The statistician may export data but not manage users: REDCap refuses the users export.
    with EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "statistician"}) as server:
        result = init_protocol(tmp_path / "study", live(server.url), source="live")
    assert not (result.directory / "redcap" / "users.csv").exists()
    assert load_redcap_project(result.directory / "redcap").users == ()
