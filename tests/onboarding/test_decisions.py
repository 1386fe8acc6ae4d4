"""Decisions of a draft (`TODO(decide)` values) and answers files that fill them in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from studyman.errors import ProtocolError
from studyman.onboarding import (
    TODO_PREFIX,
    apply_answers,
    draft_decisions,
    find_decisions,
    read_answers,
)


def test_decisions_are_listed_by_key_path_in_file_order() -> None:
    tree = {
        "arms": {"field": f"{TODO_PREFIX} choose the field", "items": [{"code": 1}]},
        "visits": [{"window": "fine"}, {"window": f"{TODO_PREFIX} the window"}],
    }
    assert [str(d) for d in find_decisions(tree)] == [
        "arms.field: choose the field",
        "visits[1].window: the window",
    ]


def test_a_finished_or_unreadable_file_has_no_decisions(tmp_path: Path) -> None:
    (tmp_path / "protocol.yaml").write_text("study: {id: X}\n", encoding="utf-8")
    assert draft_decisions(tmp_path) == ()
    (tmp_path / "protocol.yaml").write_text("study: [unclosed\n", encoding="utf-8")
    assert draft_decisions(tmp_path) == ()  # the loader names the syntax error instead
    assert draft_decisions(tmp_path / "missing") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "expected a mapping of key paths"),
        ("visits[x].window: 1\n", r"cannot read 'visits\[x\]'"),
        ("arms..field: 1\n", "an empty part"),
        ("1: 2\n", "expected a key path text"),
    ],
)
def test_a_malformed_answers_file_is_one_error_naming_it(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProtocolError, match=expected) as raised:
        read_answers(path)
    assert str(raised.value).startswith(str(path))


def test_an_answer_into_a_scalar_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"study\.id: the draft has no mapping here"):
        apply_answers({"study": {"id": "X"}}, {"study.id.part": 1})


def test_an_answer_may_replace_a_whole_todo_section_or_append_one_item() -> None:
    draft = {"sites": f"{TODO_PREFIX} the sites", "visits": [{"event": "a"}]}
    done = apply_answers(
        draft,
        {"sites": [{"id": "S1"}], "visits[1].event": "b", "visits[0].label": "A"},
    )
    assert done == {
        "sites": [{"id": "S1"}],
        "visits": [{"event": "a", "label": "A"}, {"event": "b"}],
    }
    assert find_decisions(done) == ()


def test_answers_apply_to_a_copy_and_can_delete_a_key() -> None:
    draft = {"study": {"id": f"{TODO_PREFIX} an id", "title": "T"}, "sites": [{"id": "A"}]}
    done = apply_answers(draft, {"study.id": "X-1", "study.title": "~delete", "sites[1].id": "B"})
    assert done == {"study": {"id": "X-1"}, "sites": [{"id": "A"}, {"id": "B"}]}
    assert draft["study"]["id"].startswith(TODO_PREFIX)  # the draft itself is unchanged


def test_an_alias_bomb_is_listed_at_once_not_expanded(tmp_path: Path) -> None:
    # Nine levels of nine aliases: 387 million values if each alias were walked again.
    lines = ['a0: &a0 ["TODO(decide): x", 1, 2, 3, 4, 5, 6, 7, 8]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "protocol.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.monotonic()
    decisions = draft_decisions(tmp_path)
    assert time.monotonic() - started < 5
    assert [d.key for d in decisions] == ["a0[0]"]
