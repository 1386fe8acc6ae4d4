"""`draft_protocol`: what a draft fills in from a REDCap design, and what it recognises.

Two shipped studies with different names and shapes, a REDCap fixture project and a small
project written here: names and codes come from the design, recognition from label words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from studyman.onboarding import TODO_PREFIX, init_protocol, write_exported_project_dir
from studyman.protocol import load_redcap_project
from studyman.protocol.models import Protocol
from studyman.protocol.redcap_project import RedcapProject
from studyman.sources.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "protocols" / "cbt-adjunct"
SECOND_STUDY = ROOT / "protocols" / "cbt-madrs-3arm"
PROJECTS_DIR = ROOT / "tests" / "data" / "redcap-projects"
TOKEN = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00"
#: A function that makes the function init gives the new project directory to (conftest).
ProjectMaker = Callable[..., Callable[[Path], RedcapProject]]


def test_a_project_with_several_redcap_arms_is_told_why_they_cannot_hold_the_allocation(
    live: ProjectMaker,
    tmp_path: Path,
) -> None:
    project = PROJECTS_DIR / "longitudinal" / "project.xml"
    with EmulatorServer(project, tokens={TOKEN: "api"}) as server:
        result = init_protocol(tmp_path / "study", live(server.url), source="test")
    question = next(d.question for d in result.decisions if d.key == "arms.field")
    assert "REDCap arms (Drug A, Drug B) cannot serve" in question


def test_the_reference_draft_recognises_its_scales_forms_and_fields(
    exported: ProjectMaker, tmp_path: Path
) -> None:
    result = init_protocol(tmp_path / "study", exported(REFERENCE / "redcap"), source="test")
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
    exported: ProjectMaker,
    tmp_path: Path,
) -> None:
    result = init_protocol(tmp_path / "study", exported(SECOND_STUDY / "redcap"), source="test")
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
    exported: ProjectMaker, study: Path, tmp_path: Path
) -> None:
    """Two studies with different names and shapes: what init fills in without asking (field,
    form and event names, codes, item values, ranges) is what their authors wrote; only words
    (titles, labels, site names) and guessed visit kinds may differ."""
    result = init_protocol(tmp_path / "study", exported(study / "redcap"), source="test")
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


def _reference_names() -> set[str]:
    project = load_redcap_project(REFERENCE / "redcap")
    return (
        {f.field_name for f in project.dictionary.fields}
        | {i.instrument_name for i in project.instruments}
        | set(project.event_names)
    )


def _keys_defaulting_to_names(
    model: type[BaseModel], names: set[str], prefix: str = ""
) -> Iterator[tuple[str, type[BaseModel]]]:
    """Key paths (``[*]`` for any list item) whose schema default is a reference-study name."""
    for key, info in model.model_fields.items():
        if info.exclude:
            continue
        path = f"{prefix}.{key}" if prefix else key
        default = info.default
        values = default if isinstance(default, tuple) else (default,)
        if (values and all(isinstance(v, str) and v in names for v in values)) or (
            isinstance(default, BaseModel)
            and any(isinstance(v, str) and v in names for v in default.model_dump().values())
        ):
            yield path, model
        for argument in (info.annotation, *get_args(info.annotation)):
            inner = get_args(argument) or (argument,)
            for candidate in inner:
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    many = get_origin(argument) is tuple
                    yield from _keys_defaulting_to_names(
                        candidate, names, f"{path}[*]" if many else path
                    )


def _has(tree: object, path: str) -> bool | None:
    """True/False whether *path* is stated; None when a parent is a decision or absent."""
    node = tree
    for part in path.replace("[*]", ".[*]").split("."):
        if part == "[*]":
            if not isinstance(node, list) or not node:
                return None
            node = node[0]
        elif isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        else:
            return None
    return True


def test_a_draft_states_every_key_whose_default_is_a_reference_study_name(
    exported: ProjectMaker, tmp_path: Path
) -> None:
    """The schema's defaults are the reference study's names: a draft of another study that
    left such a key out would silently name a field its project does not have."""
    result = init_protocol(tmp_path / "study", exported(SECOND_STUDY / "redcap"), source="test")
    draft = yaml.safe_load(result.protocol_file.read_text(encoding="utf-8"))
    keys = dict(_keys_defaulting_to_names(Protocol, _reference_names()))
    assert "study.record_id_field" in keys  # the walk finds them
    missing = sorted(key for key in keys if _has(draft, key) is False)
    assert missing == []
