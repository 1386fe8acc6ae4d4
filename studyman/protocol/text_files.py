"""Reading the text files a study is described in: UTF-8 decoding and strict YAML.

One place for what every reader of a hand-edited file needs:

* :func:`decode_utf8` turns bytes into text, accepting a UTF-8 byte-order mark and saying in one
  line what is wrong otherwise (UTF-16 text, or the line and byte that are not UTF-8);
* :func:`parse_yaml` / :func:`read_yaml` read YAML safely and strictly: one
  :class:`~studyman.errors.ProtocolError` naming the file, the line and column and what was
  expected for a syntax error, a key given twice in one mapping (YAML's own rule, which PyYAML
  does not enforce: the last value would silently win) or a recursive alias; dates stay text so
  that the model that reads them can name the key of an impossible date;
* :func:`parse_csv_table` reads a small CSV table strictly, naming the line of a damaged or
  truncated row.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from studyman.errors import ProtocolError

__all__ = [
    "CsvTableError",
    "TextEncodingError",
    "decode_spreadsheet_csv",
    "decode_utf8",
    "parse_csv_table",
    "parse_yaml",
    "read_yaml",
]

_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


class TextEncodingError(ValueError):
    """Bytes that are not UTF-8 text; the message says where and what to do (no file name)."""


def decode_utf8(data: bytes) -> str:
    """Decode *data* as UTF-8 (a leading byte-order mark is dropped).

    Raises
    ------
    TextEncodingError
        The text is UTF-16 (it starts with a UTF-16 byte-order mark), or a byte is not UTF-8;
        the message names the line and the byte.
    """
    if data.startswith(_UTF16_MARKS):
        raise TextEncodingError("UTF-16 text, not UTF-8: save the file as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start : error.start + 1].hex()
        raise TextEncodingError(
            f"not UTF-8 text (line {line}, byte 0x{byte}): save the file as UTF-8"
        ) from None


def decode_spreadsheet_csv(data: bytes) -> str:
    """Text of a CSV file a person may have re-saved from a spreadsheet.

    UTF-8 (a byte-order mark is dropped), else Windows-1252: Excel's "CSV (Comma delimited)" on
    Windows (bytes it cannot map become U+FFFD).

    Raises
    ------
    TextEncodingError
        The text is UTF-16 (Excel's "Unicode Text"), which no CSV reader here understands.
    """
    if data.startswith(_UTF16_MARKS):
        raise TextEncodingError("UTF-16 text (Excel's 'Unicode Text'): save the file as CSV UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """Safe YAML loader that leaves dates as text.

    PyYAML turns ``2025-02-30`` into an exception without a key path; as text, the date reaches
    pydantic, whose error names the key.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str, *, file: str) -> tuple[yaml.Node | None, Any]:
    """Parse YAML *text*; return its node tree (for line numbers) and its data.

    Parameters
    ----------
    text
        The YAML document.
    file
        The name used in error messages.

    Raises
    ------
    ProtocolError
        A syntax error (key ``line L, column C``), a key repeated within one mapping (key path
        and line), or an alias that contains itself.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _reject_duplicate_keys(root, file, "", set())
        content = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = error.problem or error.context or "malformed YAML"
        raise ProtocolError(f"YAML syntax error: {problem}", file=file, key=where) from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else "malformed YAML"
        raise ProtocolError(f"YAML error: {first}", file=file) from None
    finally:
        loader.dispose()
    return root, content


def read_yaml(path: str | Path, *, what: str) -> tuple[yaml.Node | None, Any]:
    """Read and parse the YAML file at *path* (*what* it is, for the messages).

    Raises
    ------
    ProtocolError
        The file cannot be read (missing, a directory, no permission), is not UTF-8 text, or is
        not valid YAML (see :func:`parse_yaml`).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ProtocolError(f"cannot read the {what} ({error.strerror})", file=str(file)) from None
    try:
        text = decode_utf8(data)
    except TextEncodingError as problem:
        raise ProtocolError(str(problem), file=str(file)) from None
    return parse_yaml(text, file=str(file))


def _reject_duplicate_keys(node: yaml.Node, file: str, path: str, seen_nodes: set[int]) -> None:
    if id(node) in seen_nodes:
        if isinstance(node, yaml.CollectionNode) and _contains(node, node, set()):
            line = node.start_mark.line + 1
            raise ProtocolError(
                "an alias refers to the node that contains it: expected a finite value",
                file=file,
                key=f"{path} (line {line})" if path else f"line {line}",
            )
        return  # an alias of a node already checked
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            line = key_node.start_mark.line + 1
            key = f"{path}.{name}" if path else name
            if name in keys:
                raise ProtocolError(
                    f"key {name!r} repeats (first on line {keys[name]}): expected each key once",
                    file=file,
                    key=f"{key} (line {line})",
                )
            keys[name] = line
            _reject_duplicate_keys(value_node, file, key, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _reject_duplicate_keys(item, file, f"{path}[{index}]", seen_nodes)


def _contains(outer: yaml.Node, target: yaml.Node, visited: set[int]) -> bool:
    """Whether *target* is reachable from the children of *outer* (an alias cycle)."""
    if id(outer) in visited:
        return False
    visited.add(id(outer))
    children: list[yaml.Node] = []
    if isinstance(outer, yaml.MappingNode):
        for key_node, value_node in outer.value:
            children += [key_node, value_node]
    elif isinstance(outer, yaml.SequenceNode):
        children = list(outer.value)
    return any(child is target or _contains(child, target, visited) for child in children)


class CsvTableError(ValueError):
    """A CSV text that is not a well-formed table; the message names the line (no file name)."""


def parse_csv_table(text: str, *, expected: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a CSV table, every row with one cell per header column.

    Parameters
    ----------
    text
        The decoded CSV text.
    expected
        What the header should hold, for the message about an empty file.

    Returns
    -------
    tuple
        The header cells and the non-blank rows (blank rows are skipped).

    Raises
    ------
    CsvTableError
        The text is empty, a row has more or fewer cells than the header, or a row is not
        well-formed CSV (a quote left open: a truncated file); the message names the line.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            raise CsvTableError(f"empty file: expected a header ({expected})")
        start = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                if len(row) != len(header):
                    raise CsvTableError(
                        f"line {start}: {len(row)} cells for {len(header)} columns; "
                        "the file is damaged or truncated"
                    )
                rows.append(row)
            start = reader.line_num + 1
    except csv.Error as error:
        raise CsvTableError(
            f"line {start}: not a well-formed CSV row ({error}); the file is damaged or truncated"
        ) from None
    return header, rows
