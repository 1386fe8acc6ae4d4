"""Load ``protocol.yaml`` (and the REDCap project directory it names) into a :class:`Protocol`.

Every way a protocol file can be wrong ends in exactly one
:class:`~studyman.errors.ProtocolError` that names the file, the key path
(``visits[3].window.start``) with its line, and what was expected.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from studyman.errors import ProtocolError
from studyman.protocol.models import Protocol
from studyman.protocol.redcap_project import load_redcap_project
from studyman.protocol.text_files import TextEncodingError, decode_utf8, parse_yaml

__all__ = ["PROTOCOL_FILE_NAME", "load_protocol", "parse_protocol", "protocol_sha256"]

PROTOCOL_FILE_NAME = "protocol.yaml"

#: Keys the loader fills in; a protocol file may not set them.
_INJECTED_KEYS = ("redcap", "source_file", "source_sha256")


def _protocol_path(path: str | Path) -> Path:
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / PROTOCOL_FILE_NAME
    if not candidate.is_file():
        raise ProtocolError(
            f"no protocol file: expected a {PROTOCOL_FILE_NAME} or a directory holding one",
            file=str(candidate),
        )
    return candidate


def protocol_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of the protocol file's bytes (*path*: the file or its directory)."""
    return hashlib.sha256(_protocol_path(path).read_bytes()).hexdigest()


def load_protocol(path: str | Path, *, with_redcap: bool = True) -> Protocol:
    """Load and check a protocol.

    Parameters
    ----------
    path
        ``protocol.yaml`` or the directory holding it.
    with_redcap
        Also load the REDCap project directory named by ``redcap_project`` (relative to the
        protocol file) into :attr:`Protocol.redcap`.

    Returns
    -------
    Protocol
        The frozen protocol with ``source_file``, ``source_sha256`` and ``redcap`` filled in.

    Raises
    ------
    ProtocolError
        YAML syntax error (with line and column), unknown key, wrong type, missing key, an
        internal inconsistency (window start after end, unknown instrument or event, ...) or a
        malformed REDCap project file. One error: the first problem in file order.
    """
    file = _protocol_path(path)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ProtocolError(
            f"cannot read the protocol file ({error.strerror})", file=str(file)
        ) from None
    try:
        text = decode_utf8(data)
    except TextEncodingError as problem:
        raise ProtocolError(str(problem), file=str(file)) from None
    protocol = parse_protocol(text, file=str(file))
    update: dict[str, Any] = {
        "source_file": str(file),
        "source_sha256": hashlib.sha256(data).hexdigest(),
    }
    if with_redcap:
        directory = (file.parent / protocol.redcap_project).resolve()
        if not directory.is_dir():
            raise ProtocolError(
                f"no REDCap project directory at {directory}: expected a directory relative to "
                "the protocol file",
                file=str(file),
                key="redcap_project",
            )
        update["redcap"] = load_redcap_project(directory)
    return protocol.model_copy(update=update)


def parse_protocol(text: str, *, file: str = "<protocol>") -> Protocol:
    """Parse and check protocol YAML *text* (no REDCap project is loaded).

    *file* is the name used in error messages.
    """
    root, content = parse_yaml(text, file=file)
    if not isinstance(content, dict):
        raise ProtocolError(
            "expected a mapping of protocol sections (study, arms, visits, ...)",
            file=file,
            key="line 1" if content is None else None,
        )
    for key in _INJECTED_KEYS:
        if key in content:
            raise ProtocolError(
                f"unknown key {key!r}: it is filled in by the loader, not the file",
                file=file,
                key=_with_line(key, root, (key,)),
            )
    try:
        return Protocol.model_validate(content)
    except PydanticValidationError as error:
        problems = error.errors()
        # A misspelt key is both unknown and (its right spelling) missing: name the misspelling.
        first = next((p for p in problems if p["type"] == "extra_forbidden"), problems[0])
        location = tuple(first["loc"])
        more = f" ({len(problems) - 1} more problem(s) after this one)" if len(problems) > 1 else ""
        raise ProtocolError(
            _describe(first, location) + more,
            file=file,
            key=_with_line(_key_path(location), root, location),
        ) from None
    except ProtocolError as error:
        key = error.key or ""
        message = str(error)
        prefix = f"{key}: " if key else ""
        if message.startswith(prefix):
            message = message[len(prefix) :]
        location = _parse_key_path(key)
        raise ProtocolError(message, file=file, key=_with_line(key, root, location)) from None


# --------------------------------------------------------------------------- helpers


def _key_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _parse_key_path(key: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for chunk in key.replace("[", ".[").split("."):
        if not chunk:
            continue
        if chunk.startswith("[") and chunk.endswith("]") and chunk[1:-1].isdigit():
            parts.append(int(chunk[1:-1]))
        else:
            parts.append(chunk)
    return tuple(parts)


def _with_line(key: str, root: yaml.Node | None, location: tuple[Any, ...]) -> str:
    line = _line_of(root, location)
    if not key:
        return f"line {line}" if line else ""
    return f"{key} (line {line})" if line else key


def _line_of(root: yaml.Node | None, location: tuple[Any, ...]) -> int | None:
    """The 1-based line of the node at *location* (or of its deepest existing parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = None
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    found = (key_node, value_node)
                    break
            if found is None:
                return line
            line = found[0].start_mark.line + 1
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in get_args(annotation):
        found.extend(_model_types(argument))
    return found


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at the end of *location*."""
    current: type[BaseModel] | None = Protocol
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        if current is None:
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        models = _model_types(field.annotation)
        current = models[0] if models else None
    return current


def _describe(error: Any, location: tuple[Any, ...]) -> str:
    kind = error["type"]
    name = location[-1] if location else ""
    if kind == "extra_forbidden":
        model = _model_at(location)
        allowed = [
            field
            for field, info in (model.model_fields.items() if model else ())
            if not info.exclude
        ]
        expected = f": expected one of {', '.join(allowed)}" if allowed else ""
        close = difflib.get_close_matches(str(name), allowed, n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {name!r}{suggestion}{expected}"
    if kind == "missing":
        return f"missing key {name!r}: this key is required"
    got = error.get("input")
    shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    expected = message[0].lower() + message[1:] if message else kind
    expected = expected.replace("a valid tuple", "a list").replace("valid tuple", "list")
    expected = re.sub(r"a valid dictionary or instance of \w+", "a mapping of keys", expected)
    for prefix in ("input should be ", "input should ", "value should be ", "value should "):
        if expected.startswith(prefix):
            expected = expected[len(prefix) :]
            break
    else:
        return f"{expected} (got {shown})"
    hint = ""
    if kind == "string_type" and isinstance(got, int | float):
        hint = f' (quote it: "{got}")'
    return f"expected {expected}, got {shown}{hint}"
