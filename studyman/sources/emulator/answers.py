"""An API call's answer (status, content type, body) and REDCap's shapes for the common ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from studyman.sources.emulator.formats import to_csv, to_json, to_xml_records

__all__ = [
    "Answer",
    "RefusedError",
    "answer_one",
    "answer_rows",
    "check_known",
    "count_answer",
    "text_answer",
]


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, content type and body."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class RefusedError(Exception):
    """A call REDCap refuses: the HTTP status and REDCap's message (never holding a token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def answer_rows(
    rows: Sequence[Mapping[str, object]], fmt: str, header: Sequence[str], xml_root: str = "records"
) -> Answer:
    """A list of rows as REDCap answers it in *fmt* (json, csv, else xml)."""
    if fmt == "json":
        return Answer(200, "application/json; charset=utf-8", to_json(list(rows)).encode("utf-8"))
    if fmt == "csv":
        return Answer(200, "text/csv; charset=utf-8", to_csv(header, rows).encode("utf-8"))
    return Answer(200, "text/xml; charset=utf-8", to_xml_records(rows, xml_root).encode("utf-8"))


def answer_one(row: Mapping[str, object], fmt: str) -> Answer:
    """One object (``content=project``) as REDCap answers it."""
    if fmt == "json":
        return Answer(200, "application/json; charset=utf-8", to_json(dict(row)).encode("utf-8"))
    if fmt == "csv":
        return Answer(200, "text/csv; charset=utf-8", to_csv(list(row), [row]).encode("utf-8"))
    return Answer(
        200, "text/xml; charset=utf-8", to_xml_records([row], "project", "item").encode("utf-8")
    )


def count_answer(count: int, fmt: str) -> Answer:
    """An import's count: ``3`` in json and csv, ``<?xml …?><count>3</count>`` in xml."""
    if fmt == "xml":
        body = f'<?xml version="1.0" encoding="UTF-8" ?><count>{count}</count>'
        return Answer(200, "text/xml; charset=utf-8", body.encode())
    if fmt == "csv":
        return Answer(200, "text/csv; charset=utf-8", str(count).encode())
    return Answer(200, "application/json; charset=utf-8", str(count).encode())


def text_answer(text: str) -> Answer:
    """A plain-text answer (a version, a token, a survey link)."""
    return Answer(200, "text/plain; charset=utf-8", text.encode("utf-8"))


def check_known(name: str, values: Sequence[str], known: set[str]) -> None:
    """Refuse values of list parameter *name* that are not in *known* (REDCap's 400)."""
    bad = [v for v in values if v not in known]
    if bad:
        raise RefusedError(
            400,
            f'The following values in the parameter "{name}" are not valid: '
            + ", ".join(f"'{b[:60]}'" for b in bad[:20]),
        )
