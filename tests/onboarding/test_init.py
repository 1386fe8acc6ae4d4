"""`protocol init`: a study folder from a live or exported REDCap project (issue 13, item 4).

Real components only: the emulator serves each project over loopback HTTP and the live path
reads it through PyCap; the exported path reads REDCap's own export files; drafts are loaded
by the real protocol loader.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from studyman.errors import ProtocolError, SourceError
from studyman.onboarding import (
    TODO_PREFIX,
    apply_answers,
    fetch_project_dir,
    init_protocol,
    load_draft,
    read_answers,
    write_exported_project_dir,
)
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


def _exported(redcap: Path, *, users: bool = False) -> Callable[[Path], RedcapProject]:
    """The exported-files path over a project directory's own files."""

    def optional(name: str) -> Path | None:
        return redcap / name if (redcap / name).is_file() else None

    def make(directory: Path) -> RedcapProject:
        return write_exported_project_dir(
            directory,
            dictionary=redcap / "data_dictionary.csv",
            events=optional("events.csv"),
            mapping=optional("instrument_event_mapping.csv"),
            arms=optional("arms.csv"),
            instruments=optional("instruments.csv"),
            repeating=optional("repeating_instruments.csv"),
            dags=optional("dags.csv"),
            users=optional("users.csv") if users else None,
            project_info=optional("project.json"),
        )

    return make


def _live(url: str, token: str = TOKEN) -> Callable[[Path], RedcapProject]:
    def make(directory: Path) -> RedcapProject:
        return fetch_project_dir(url, SecretStr(token), directory, retries=0, timeout=10)

    return make


def _body(path: Path) -> str:
    """The draft without its header comments (which name the source)."""
    return "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    )


# -- the 28 projects from live REDCap servers -------------------------------------------------
@pytest.mark.parametrize("name", PROJECTS)
def test_every_live_server_project_gets_a_draft_that_loads_with_its_decisions_listed(
    name: str, tmp_path: Path
) -> None:
    with EmulatorServer(PROJECTS_DIR / name / "project.xml", tokens={TOKEN: "api"}) as server:
        result = init_protocol(tmp_path / "study", _live(server.url), source="test")
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


def test_a_project_with_several_redcap_arms_is_told_why_they_cannot_hold_the_allocation(
    tmp_path: Path,
) -> None:
    project = PROJECTS_DIR / "longitudinal" / "project.xml"
    with EmulatorServer(project, tokens={TOKEN: "api"}) as server:
        result = init_protocol(tmp_path / "study", _live(server.url), source="test")
    question = next(d.question for d in result.decisions if d.key == "arms.field")
    assert "REDCap arms (Drug A, Drug B) cannot serve" in question


# -- the reference study ------------------------------------------------------------------------
def test_reference_project_files_and_documented_answers_give_the_shipped_protocol(
    tmp_path: Path,
) -> None:
    result = init_protocol(
        tmp_path / "study",
        _exported(REFERENCE / "redcap", users=True),
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
    tmp_path: Path,
) -> None:
    result = init_protocol(tmp_path / "study", _exported(REFERENCE / "redcap"), source="test")
    answers = read_answers(ANSWERS)

    def answered(key: str) -> bool:  # at its own key, or by an answer that replaces a parent
        return any(key == a or key.startswith((f"{a}.", f"{a}[")) for a in answers)

    # Every decision the draft leaves is answered (no TODO survives the answers) ...
    assert [d.key for d in result.decisions if not answered(d.key)] == []
    # ... and the draft differs from the shipped protocol without them.
    status = load_draft(result.directory)
    assert not status.complete
    assert len(status.decisions) > 50


def test_the_reference_draft_recognises_its_scales_forms_and_fields(tmp_path: Path) -> None:
    result = init_protocol(tmp_path / "study", _exported(REFERENCE / "redcap"), source="test")
    draft = yaml.safe_load(result.protocol_file.read_text(encoding="utf-8"))
    shipped = yaml.safe_load((REFERENCE / "protocol.yaml").read_text(encoding="utf-8"))
    for section in ("visit_form", "cssrs", "withdrawal", "instruments", "repeating"):
        assert draft[section] == shipped[section], section
    for key in ("field", "form", "event"):
        assert draft["arms"][key] == shipped["arms"][key]
    labels = [scale["label"] for scale in draft["scoring"]]
    assert labels == ["HAM-D-17", "PHQ-9", "GAD-7", "COWS"]
    for drafted, declared in zip(draft["scoring"], shipped["scoring"], strict=True):
        for key in ("instrument", "total_field", "items", "total_range", "bands"):
            assert drafted.get(key) == declared.get(key), (declared["instrument"], key)
    assert draft["scoring"][0]["exactly_one_of"] == shipped["scoring"][0]["exactly_one_of"]
    assert draft["scoring"][1]["unscored_items"] == shipped["scoring"][1]["unscored_items"]
    ae_fields = {k: v for k, v in shipped["adverse_events"].items() if k.endswith("_field")}
    assert {k: draft["adverse_events"][k] for k in ae_fields} == ae_fields
    # Recognised values are listed for review in the draft's header.
    header = result.protocol_file.read_text(encoding="utf-8").split("\nstudy:")[0]
    assert "#   arms.field: " in header
    assert "(label 'Allocated arm')" in header


def test_the_second_study_is_drafted_from_its_own_names_with_three_arms_and_the_madrs(
    tmp_path: Path,
) -> None:
    result = init_protocol(tmp_path / "study", _exported(SECOND_STUDY / "redcap"), source="test")
    draft = yaml.safe_load(result.protocol_file.read_text(encoding="utf-8"))
    shipped = yaml.safe_load((SECOND_STUDY / "protocol.yaml").read_text(encoding="utf-8"))
    assert [arm["code"] for arm in draft["arms"]["items"]] == [
        arm["code"] for arm in shipped["arms"]["items"]
    ]
    assert len(draft["arms"]["items"]) == 3
    assert draft["arms"]["field"] == shipped["arms"]["field"]
    primary = shipped["endpoints"]["primary"]
    assert draft["endpoints"]["primary"]["instrument"] == primary["instrument"]
    assert draft["endpoints"]["primary"]["field"] == primary["field"]
    assert "withdrawal" not in draft  # no COWS in this study: no withdrawal section guessed
    assert next(s["label"] for s in draft["scoring"]) == "MADRS"


def _leaves(node: object, path: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        found: dict[str, object] = {}
        for key, value in node.items():
            found |= _leaves(value, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(node, list):
        found = {}
        for index, value in enumerate(node):
            found |= _leaves(value, f"{path}[{index}]")
        return found
    return {path: node}


@pytest.mark.parametrize("study", [REFERENCE, SECOND_STUDY], ids=lambda p: p.name)
def test_every_name_and_code_the_draft_fills_in_is_the_shipped_protocols(
    study: Path, tmp_path: Path
) -> None:
    """Two studies with different names and shapes: what init fills in without asking (field,
    form and event names, codes, item values, ranges) is what their authors wrote; only words
    (titles, labels, site names) and guessed visit kinds may differ."""
    result = init_protocol(tmp_path / "study", _exported(study / "redcap"), source="test")
    drafted = _leaves(yaml.safe_load(result.protocol_file.read_text(encoding="utf-8")))
    shipped = _leaves(yaml.safe_load((study / "protocol.yaml").read_text(encoding="utf-8")))
    filled = {
        key: value
        for key, value in drafted.items()
        if key in shipped and not (isinstance(value, str) and value.startswith(TODO_PREFIX))
    }
    assert len(filled) > 400
    words = ("title", "name", "label", "text", "kind")
    wrong = {
        key: (value, shipped[key])
        for key, value in filled.items()
        if value != shipped[key] and key.rsplit(".", 1)[-1] not in words
    }
    assert wrong == {}


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_the_cssrs_is_recognised_by_its_questions_in_a_project_that_does_not_name_it(
    tmp_path: Path,
) -> None:
    questions = [
        "Wish to be dead",
        "Non-specific active suicidal thoughts",
        "Active ideation with any methods without intent",
        "Active ideation with some intent to act without a plan",
        "Active ideation with specific plan and intent",
    ]
    header = ["field_name", "form_name", "section_header", "field_type", "field_label"]
    rows = [header, ["pid", "intake", "", "text", "Participant"]]
    for prefix, form in (("life", "risk_intake"), ("since", "risk_review")):
        rows += [[f"{prefix}_q{i}", form, "", "yesno", q] for i, q in enumerate(questions, 1)]
    rows += [
        ["since_attempt", "risk_review", "", "yesno", "Actual attempt"],
        ["since_harm", "risk_review", "", "yesno", "Non-suicidal self-injury"],
        ["since_act", "risk_review", "", "yesno", "Safety action taken"],
    ]
    dictionary = _write_csv(tmp_path / "dd.csv", rows)
    events = _write_csv(
        tmp_path / "events.csv",
        [
            ["event_name", "arm_num", "unique_event_name"],
            *[[f"Month {m}", "1", f"month_{m}_arm_1"] for m in (0, 1, 2)],
        ],
    )
    mapping = _write_csv(
        tmp_path / "mapping.csv",
        [
            ["arm_num", "unique_event_name", "form"],
            ["1", "month_0_arm_1", "intake"],
            ["1", "month_0_arm_1", "risk_intake"],
            *[["1", f"month_{m}_arm_1", "risk_review"] for m in (1, 2)],
        ],
    )

    def make(directory: Path) -> RedcapProject:
        return write_exported_project_dir(
            directory, dictionary=dictionary, events=events, mapping=mapping
        )

    result = init_protocol(tmp_path / "study", make, source="test")
    cssrs = yaml.safe_load(result.protocol_file.read_text(encoding="utf-8"))["cssrs"]
    assert cssrs["screening_form"] == "risk_intake"
    assert cssrs["since_last_form"] == "risk_review"  # due at more events
    assert cssrs["ideation_fields"] == [f"since_q{i}" for i in range(1, 6)]
    assert cssrs["gate_fields"] == ["since_q1", "since_q2"]
    assert cssrs["safety_action_required_ideation"] == ["since_q4", "since_q5"]
    assert cssrs["behaviour_fields"] == ["since_attempt"]
    assert cssrs["self_injury_field"] == "since_harm"
    assert cssrs["safety_action_field"] == "since_act"


def test_live_and_exported_paths_give_the_same_draft(tmp_path: Path) -> None:
    files = init_protocol(tmp_path / "files", _exported(REFERENCE / "redcap"), source="files")
    with EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "admin"}) as server:
        live = init_protocol(tmp_path / "live", _live(server.url), source="live")
    assert _body(live.protocol_file) == _body(files.protocol_file)
    assert live.decisions == files.decisions


# -- attacks --------------------------------------------------------------------------------------
def test_an_existing_folder_is_refused_and_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "study"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ProtocolError, match="exists already"):
        init_protocol(out, _exported(REFERENCE / "redcap"), source="test")
    with pytest.raises(ProtocolError, match=r"notes\.txt besides protocol\.yaml"):
        init_protocol(out, _exported(REFERENCE / "redcap"), source="test", force=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_symbolic_link_is_refused_even_with_force(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    init_protocol(target, _exported(SECOND_STUDY / "redcap"), source="test")
    link = tmp_path / "study"
    link.symlink_to(target)
    with pytest.raises(ProtocolError, match="is a symbolic link"):
        init_protocol(link, _exported(REFERENCE / "redcap"), source="test", force=True)
    assert "madrs" in (target / "redcap" / "instruments.csv").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "study"]


def test_force_replaces_a_folder_written_by_init(tmp_path: Path) -> None:
    out = tmp_path / "study"
    init_protocol(out, _exported(SECOND_STUDY / "redcap"), source="test")
    first = _body(out / "protocol.yaml")
    init_protocol(out, _exported(REFERENCE / "redcap"), source="test", force=True)
    assert _body(out / "protocol.yaml") != first
    assert "hamd17" in (out / "redcap" / "instruments.csv").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]  # nothing staged is left


def test_a_malformed_export_names_its_file_and_line_and_leaves_nothing(tmp_path: Path) -> None:
    redcap = tmp_path / "export"
    shutil.copytree(REFERENCE / "redcap", redcap)
    events = redcap / "events.csv"
    events.write_text(
        events.read_text(encoding="utf-8").replace("Week 2,1,", "Week 2,one,"), encoding="utf-8"
    )
    with pytest.raises(ProtocolError) as raised:
        init_protocol(tmp_path / "study", _exported(redcap), source="test")
    # The file the user gave (not init's working copy), its line, and what was expected.
    assert str(raised.value).startswith(f"{events}: line 5, arm_num: expected")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_refused_token_is_one_error_without_the_token_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    wrong = "DEADBEEF" * 4
    with (
        EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "admin"}) as server,
        pytest.raises(SourceError) as raised,
    ):
        init_protocol(tmp_path / "study", _live(server.url, wrong), source="test")
    assert wrong not in str(raised.value)
    assert wrong.lower() not in str(raised.value).lower()
    assert "metadata" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_the_token_is_in_no_file_init_writes(tmp_path: Path) -> None:
    with EmulatorServer(REFERENCE / "redcap", tokens={TOKEN: "admin"}) as server:
        init_protocol(tmp_path / "study", _live(server.url), source="test")
    for path in (tmp_path / "study").rglob("*"):
        if path.is_file():
            assert TOKEN.lower() not in path.read_text(encoding="utf-8").lower(), path


def test_an_answer_outside_the_draft_is_refused_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match=r"visits\[40\]: no item 40"):
        init_protocol(
            tmp_path / "study",
            _exported(REFERENCE / "redcap"),
            source="test",
            answers={"visits[40].window": {"start": 0, "end": 1}},
        )
    assert list(tmp_path.iterdir()) == []


def test_answers_apply_to_a_copy_and_can_delete_a_key() -> None:
    draft = {"study": {"id": f"{TODO_PREFIX} an id", "title": "T"}, "sites": [{"id": "A"}]}
    done = apply_answers(draft, {"study.id": "X-1", "study.title": "~delete", "sites[1].id": "B"})
    assert done == {"study": {"id": "X-1"}, "sites": [{"id": "A"}, {"id": "B"}]}
    assert draft["study"]["id"].startswith(TODO_PREFIX)  # the draft itself is unchanged
