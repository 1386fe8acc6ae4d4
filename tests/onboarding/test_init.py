"""`init_protocol`: a study folder from a live or exported REDCap project (issue 13, item 4).

Real components only: the emulator serves each project over loopback HTTP and the live path
reads it through PyCap; drafts are loaded by the real protocol loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from studyman.errors import ProtocolError
from studyman.onboarding import TODO_PREFIX, init_protocol, load_draft, read_answers
from studyman.protocol import load_protocol, load_redcap_project
from studyman.protocol.redcap_project import RedcapProject
from studyman.sources.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "protocols" / "cbt-adjunct"
SECOND_STUDY = ROOT / "protocols" / "cbt-madrs-3arm"
ANSWERS = ROOT / "tests" / "data" / "onboarding" / "cbt-adjunct-answers.yaml"
PROJECTS_DIR = ROOT / "tests" / "data" / "redcap-projects"
PROJECTS = sorted(p.name for p in PROJECTS_DIR.iterdir() if (p / "project.xml").is_file())
TOKEN = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00"
#: A function that makes the function init gives the new project directory to (conftest).
ProjectMaker = Callable[..., Callable[[Path], RedcapProject]]


def _body(path: Path) -> str:
    """The draft without its header comments (which name the source)."""
    return "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    )


@pytest.mark.parametrize("name", PROJECTS)
def test_every_live_server_project_gets_a_draft_that_loads_with_its_decisions_listed(
    live: ProjectMaker, name: str, tmp_path: Path
) -> None:
    with EmulatorServer(PROJECTS_DIR / name / "project.xml", tokens={TOKEN: "api"}) as server:
        result = init_protocol(tmp_path / "study", live(server.url), source="test")
    draft = yaml.safe_load(result.protocol_file.read_text(encoding="utf-8"))
    # The project files are the project's own design, read back by the project reader.
    project = load_redcap_project(result.directory / "redcap")
    assert [i["name"] for i in draft["instruments"]] == [
        i.instrument_name for i in project.instruments
    ]
    assert draft["study"]["record_id_field"] == project.dictionary.record_id_field
    if project.events:
        assert [v["event"] for v in draft["visits"]] == list(project.event_names)
        for visit in draft["visits"]:
            forms = visit["instruments"]
            assert isinstance(forms, str) or set(forms) == set(project.forms_at(visit["event"]))
    # None of these projects is a trial: the allocation field is a decision, in plain words.
    status = load_draft(result.directory)
    keys = {d.key for d in status.decisions}
    assert "arms.field" in keys
    assert any("choose the field that holds the allocation" in d.question for d in status.decisions)
    assert status.decisions == result.decisions
    # It loads as far as it goes: the loader says what is incomplete, in one line, and no more.
    assert not status.complete
    assert status.protocol is None
    assert status.problem
    assert "\n" not in status.problem
    assert TODO_PREFIX in status.problem or "expected" in status.problem


def test_reference_project_files_and_documented_answers_give_the_shipped_protocol(
    exported: ProjectMaker,
    tmp_path: Path,
) -> None:
    result = init_protocol(
        tmp_path / "study",
        exported(REFERENCE / "redcap", users=True),
        source="test",
        answers=read_answers(ANSWERS),
        answers_file=str(ANSWERS),
    )
    assert result.decisions == ()
    status = load_draft(result.directory)
    assert status.complete
    assert status.protocol is not None
    shipped = load_protocol(REFERENCE)
    assert status.protocol.model_dump() == shipped.model_dump()


def test_every_answer_is_needed_and_the_draft_alone_leaves_each_decision_open(
    exported: ProjectMaker,
    tmp_path: Path,
) -> None:
    result = init_protocol(tmp_path / "study", exported(REFERENCE / "redcap"), source="test")
    answers = read_answers(ANSWERS)

    def answered(key: str) -> bool:  # at its own key, or by an answer that replaces a parent
        return any(key == a or key.startswith((f"{a}.", f"{a}[")) for a in answers)

    # Every decision the draft leaves is answered (no TODO survives the answers) ...
    assert [d.key for d in result.decisions if not answered(d.key)] == []
    # ... and the draft differs from the shipped protocol without them.
    status = load_draft(result.directory)
    assert not status.complete
    assert len(status.decisions) > 50


def test_an_existing_folder_is_refused_and_left_untouched(
    exported: ProjectMaker, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ProtocolError, match="exists already"):
        init_protocol(out, exported(REFERENCE / "redcap"), source="test")
    with pytest.raises(ProtocolError, match=r"notes\.txt besides protocol\.yaml"):
        init_protocol(out, exported(REFERENCE / "redcap"), source="test", force=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_symbolic_link_is_refused_even_with_force(exported: ProjectMaker, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    init_protocol(target, exported(SECOND_STUDY / "redcap"), source="test")
    link = tmp_path / "study"
    link.symlink_to(target)
    with pytest.raises(ProtocolError, match="is a symbolic link"):
        init_protocol(link, exported(REFERENCE / "redcap"), source="test", force=True)
    assert "madrs" in (target / "redcap" / "instruments.csv").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "study"]


def test_force_replaces_a_folder_written_by_init(exported: ProjectMaker, tmp_path: Path) -> None:
    out = tmp_path / "study"
    init_protocol(out, exported(SECOND_STUDY / "redcap"), source="test")
    first = _body(out / "protocol.yaml")
    init_protocol(out, exported(REFERENCE / "redcap"), source="test", force=True)
    assert _body(out / "protocol.yaml") != first
    assert "hamd17" in (out / "redcap" / "instruments.csv").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]  # nothing staged is left


def test_an_answer_outside_the_draft_is_refused_with_its_key(
    exported: ProjectMaker, tmp_path: Path
) -> None:
    with pytest.raises(ProtocolError, match=r"visits\[40\]: no item 40"):
        init_protocol(
            tmp_path / "study",
            exported(REFERENCE / "redcap"),
            source="test",
            answers={"visits[40].window": {"start": 0, "end": 1}},
        )
    assert list(tmp_path.iterdir()) == []
