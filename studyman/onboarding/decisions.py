"""The decisions a draft protocol leaves to a person, and answers that fill them in.

A draft ``protocol.yaml`` (written by ``studyman protocol init``) holds, wherever REDCap cannot
say what the study means, a string value ``"TODO(decide): <question in plain words>"``. Such a
file is not a protocol yet: :func:`draft_decisions` lists its decisions by key path, and
``studyman protocol check`` prints them instead of a type error.

An *answers file* is a YAML mapping from key paths (as ``protocol check`` prints them:
``arms.items[0].short_name``, ``visits[2].window``) to values. :func:`apply_answers` writes each
value at its path (a path one past the end of a list appends to it; the value ``~delete`` removes
the key). ``studyman protocol init --answers FILE`` applies it to the fresh draft, so the
decisions survive re-running ``init`` after the REDCap project changes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studyman.errors import ProtocolError
from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Protocol
from studyman.protocol.text_files import TextEncodingError, decode_utf8, parse_yaml

__all__ = [
    "DELETE",
    "TODO_PREFIX",
    "Decision",
    "DraftStatus",
    "apply_answers",
    "draft_decisions",
    "find_decisions",
    "load_draft",
    "read_answers",
    "todo",
]

#: The start of every value a person must decide.
TODO_PREFIX = "TODO(decide):"
#: An answer that removes its key from the draft.
DELETE = "~delete"

_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def todo(question: str) -> str:
    """The draft value that asks *question* (plain words, what to choose and where)."""
    return f"{TODO_PREFIX} {question}"


@dataclass(frozen=True, slots=True)
class Decision:
    """One value a person must decide.

    Attributes
    ----------
    key
        Its key path in ``protocol.yaml`` (``arms.field``).
    question
        What to decide, in plain words.
    """

    key: str
    question: str

    def __str__(self) -> str:
        return f"{self.key}: {self.question}"


def _walk(node: Any, path: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, Mapping | list | tuple):
        # A YAML alias is the same object again: walked once, so that aliases of aliases (a
        # "billion laughs" file) cost no more than the file's own size.
        if id(node) in seen:
            return
        seen.add(id(node))
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key), seen)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]", seen)


def find_decisions(tree: Any) -> tuple[Decision, ...]:
    """Every ``TODO(decide)`` value of a parsed draft, in file order."""
    return tuple(
        Decision(key=path, question=value[len(TODO_PREFIX) :].strip())
        for path, value in _walk(tree, "", set())
        if isinstance(value, str) and value.startswith(TODO_PREFIX)
    )


def _read_yaml(path: Path, what: str) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProtocolError(f"cannot read the {what} ({error.strerror})", file=str(path)) from None
    try:
        text = decode_utf8(data)
    except TextEncodingError as problem:
        raise ProtocolError(str(problem), file=str(path)) from None
    return parse_yaml(text, file=str(path))[1]


def draft_decisions(path: str | Path) -> tuple[Decision, ...]:
    """The decisions left in the protocol file *path* (or the directory holding it).

    Returns ``()`` for a finished protocol (no ``TODO(decide)`` value), and for a file that does
    not parse (the loader then names its problem).
    """
    file = Path(path)
    if file.is_dir():
        file = file / "protocol.yaml"
    if not file.is_file():
        return ()
    try:
        return find_decisions(_read_yaml(file, "protocol file"))
    except (ProtocolError, RecursionError):
        return ()


@dataclass(frozen=True, slots=True)
class DraftStatus:
    """How far a draft is from a protocol.

    Attributes
    ----------
    decisions
        The decisions left (empty when none).
    protocol
        The loaded protocol when the file loads, else None (a file with decisions left in text
        values, such as ``study.id``, can load: it is still not complete).
    problem
        The loader's one-line message when it does not load yet, else ``""``.
    """

    decisions: tuple[Decision, ...]
    protocol: Protocol | None
    problem: str

    @property
    def complete(self) -> bool:
        """True when the draft has become a protocol: it loads and no decision is left."""
        return self.protocol is not None and not self.decisions


def load_draft(path: str | Path) -> DraftStatus:
    """Load the draft at *path* as far as it goes: its decisions, and the protocol or the
    loader's first problem (a draft with decisions left does not load: a decision stands where
    a number, a date or a list is expected)."""
    decisions = draft_decisions(path)
    try:
        protocol = load_protocol(path)
    except ProtocolError as error:
        return DraftStatus(decisions=decisions, protocol=None, problem=str(error))
    return DraftStatus(decisions=decisions, protocol=protocol, problem="")


def _parse_path(key: str, file: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in key.split("."):
        if not chunk:
            raise ProtocolError(
                f"key path {key!r}: an empty part; expected names joined by dots",
                file=file,
                key=key,
            )
        matched = 0
        for match in _PATH_PART.finditer(chunk):
            if match.start() != matched or (match.group(1) and matched):
                break
            parts.append(match.group(1) if match.group(1) else int(match.group(2)))
            matched = match.end()
        if matched != len(chunk):
            raise ProtocolError(
                f"key path {key!r}: cannot read {chunk!r}; expected a name with optional "
                "[index] parts, e.g. visits[2].window",
                file=file,
                key=key,
            )
    return parts


def read_answers(path: str | Path) -> dict[str, Any]:
    """Read an answers file: a YAML mapping of key paths to values.

    Raises
    ------
    ProtocolError
        The file does not parse, is not a mapping, or a key is not a key path.
    """
    file = Path(path)
    tree = _read_yaml(file, "answers file")
    if not isinstance(tree, dict):
        raise ProtocolError(
            "expected a mapping of key paths (arms.field, visits[2].window, ...) to values",
            file=str(file),
        )
    answers: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise ProtocolError(f"key {key!r}: expected a key path text", file=str(file))
        _parse_path(key, str(file))
        answers[key] = value
    return answers


def apply_answers(
    tree: Mapping[str, Any], answers: Mapping[str, Any], *, file: str = "<answers>"
) -> dict[str, Any]:
    """A copy of the draft *tree* with each answer written at its key path.

    Raises
    ------
    ProtocolError
        A path that does not lead into the draft (an index beyond the end of a list plus one,
        a step into a value that is neither a mapping nor a list).
    """
    result: dict[str, Any] = copy.deepcopy(dict(tree))
    for key, value in answers.items():
        parts = _parse_path(key, file)
        node: Any = result
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = key if last else _join(parts[: depth + 1])
            if isinstance(part, str):
                if not isinstance(node, dict):
                    raise ProtocolError(
                        f"{where}: the draft has no mapping here to set {part!r} in",
                        file=file,
                        key=key,
                    )
                if last:
                    if value == DELETE:
                        node.pop(part, None)
                    else:
                        node[part] = copy.deepcopy(value)
                else:
                    if not isinstance(node.get(part), dict | list):
                        _check_open(node.get(part), where, file, key)
                        node[part] = [] if isinstance(parts[depth + 1], int) else {}
                    node = node[part]
            else:
                if not isinstance(node, list) or part > len(node):
                    size = len(node) if isinstance(node, list) else 0
                    raise ProtocolError(
                        f"{where}: no item {part} in the draft (a list of {size}); "
                        "expected an index up to its length",
                        file=file,
                        key=key,
                    )
                if part == len(node):
                    node.append({})
                if last:
                    if value == DELETE:
                        node.pop(part)
                    else:
                        node[part] = copy.deepcopy(value)
                else:
                    if not isinstance(node[part], dict | list):
                        _check_open(node[part], where, file, key)
                        node[part] = [] if isinstance(parts[depth + 1], int) else {}
                    node = node[part]
    return result


def _check_open(value: Any, where: str, file: str, key: str) -> None:
    """Refuse to step into a decided value (a step into a missing key or a decision is fine)."""
    if value is None or (isinstance(value, str) and value.startswith(TODO_PREFIX)):
        return
    raise ProtocolError(
        f"{where}: the draft has no mapping here (it holds {value!r}); answer {where} whole",
        file=file,
        key=key,
    )


def _join(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text
