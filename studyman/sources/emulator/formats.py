"""REDCap's answer formats: JSON, CSV (REDCap's quoting) and XML, and its error bodies."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

__all__ = [
    "ImportFormatError",
    "csv_cell",
    "error_body",
    "parse_import_rows",
    "to_csv",
    "to_json",
    "to_xml_records",
]


class ImportFormatError(Exception):
    """Imported ``data`` that cannot be read in its declared format (REDCap's message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_NOT_FORMATTED = "The data being imported is not formatted correctly"


def parse_import_rows(data: str, data_format: str) -> list[dict[str, object]]:
    """The rows of an import's ``data`` in ``json``, ``csv`` or ``xml`` (REDCap's shapes).

    JSON is a list of objects (one object is one row); CSV has a header row; XML is
    ``<records><item><name>value</name>…</item>…</records>`` (any root). Nesting too deep for the
    parser, a document type declaration and anything else unreadable raise
    :class:`ImportFormatError`.
    """
    if data_format == "json":
        try:
            parsed = json.loads(data)
        except RecursionError:
            raise ImportFormatError(f"{_NOT_FORMATTED} (JSON nested too deeply).") from None
        except json.JSONDecodeError as error:
            raise ImportFormatError(f"{_NOT_FORMATTED} (JSON: {error.msg}).") from None
        if isinstance(parsed, dict):
            parsed = [parsed]
        if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
            raise ImportFormatError(f"{_NOT_FORMATTED} (expected a JSON list of objects).")
        return parsed
    if data_format == "csv":
        try:
            reader = csv.DictReader(io.StringIO(data.lstrip("\ufeff"), newline=""))
            rows: list[dict[str, object]] = [dict(r) for r in reader]
        except csv.Error as error:
            raise ImportFormatError(f"{_NOT_FORMATTED} (CSV: {error}).") from None
        if any(None in r for r in rows):
            raise ImportFormatError(f"{_NOT_FORMATTED} (a CSV row has more cells than the header).")
        return [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]
    if data_format == "xml":
        if re.search(r"<!(DOCTYPE|ENTITY)", data, re.IGNORECASE):
            raise ImportFormatError(f"{_NOT_FORMATTED} (XML with a document type declaration).")
        try:
            root = ET.fromstring(data.strip())
        except (ET.ParseError, RecursionError) as error:
            raise ImportFormatError(f"{_NOT_FORMATTED} (XML: {error}).") from None
        items = list(root) if root.tag != "item" else [root]
        return [{child.tag: (child.text or "").strip() for child in item} for item in items]
    raise ImportFormatError(
        f'The value of the parameter "format" ({data_format[:20]}) is not valid.'
    )


_QUOTE_WHEN = re.compile(r'[,"\n\r \t;]')


def csv_cell(value: object) -> str:
    """One CSV cell as REDCap writes it: quoted (quotes doubled) when it holds a separator."""
    text = "" if value is None else str(value)
    if _QUOTE_WHEN.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def to_csv(header: Sequence[str], rows: Sequence[Mapping[str, object]]) -> str:
    """A CSV answer: one header row, ``\\n`` line ends, a trailing newline."""
    lines = [",".join(csv_cell(h) for h in header)]
    lines.extend(",".join(csv_cell(row.get(h, "")) for h in header) for row in rows)
    return "\n".join(lines) + "\n"


def records_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A CSV record export as REDCap 14 writes it.

    Line breaks inside values become spaces (each ``\r`` and ``\n``), as in the raw exports
    recorded from live REDCap 14 servers (``tests/data/redcap-projects``); an export without
    rows is a single ``\n`` (no header), as those servers answered for projects without records.
    """
    if not rows:
        return "\n"
    lines = [",".join(csv_cell(h) for h in header)]
    search = _QUOTE_WHEN.search
    for row in rows:
        cells = [v if isinstance(v, str) else str(v) for v in row]
        # Most rows need no quoting: test the whole row once (\x1f never occurs in REDCap data).
        joined = "\x1f".join(cells)
        if search(joined) is None:
            lines.append(joined.replace("\x1f", ","))
        else:
            lines.append(",".join([_record_cell(v) for v in cells]))
    return "\n".join(lines) + "\n"


def _record_cell(value: object) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if not text or not _QUOTE_WHEN.search(text):
        return text
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return '"' + text.replace('"', '""') + '"'


def to_json(value: object) -> str:
    """A JSON answer (UTF-8, no ASCII escaping)."""
    return json.dumps(value, ensure_ascii=False)


def to_xml_records(
    rows: Sequence[Mapping[str, object]], root: str = "records", item: str = "item"
) -> str:
    """An XML answer in REDCap's simple shape: ``<records><item><name>value</name>…``."""
    parts = ['<?xml version="1.0" encoding="UTF-8" ?>', f"<{root}>"]
    for row in rows:
        parts.append(f"<{item}>")
        for key, value in row.items():
            text = "" if value is None else str(value)
            parts.append(f"<{key}><![CDATA[{text}]]></{key}>")
        parts.append(f"</{item}>")
    parts.append(f"</{root}>")
    return "\n".join(parts) + "\n"


def error_body(message: str, fmt: str) -> tuple[str, str]:
    """REDCap's error body and content type for *fmt* (``json``, ``csv`` or anything else → xml)."""
    if fmt == "json":
        return to_json({"error": message}), "application/json; charset=utf-8"
    if fmt == "csv":
        return f"ERROR: {message}", "text/csv; charset=utf-8"
    body = f'<?xml version="1.0" encoding="UTF-8" ?><hash><error>{escape(message)}</error></hash>'
    return body, "text/xml; charset=utf-8"
