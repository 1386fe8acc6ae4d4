"""Query workbooks people can act on: per-site workbooks, the coordinator's, review signals.

A site's workbook ``sites/<site>/queries-<site>-<as-of>.xlsx`` holds only that site's open site
queries (never a review signal, never another site's participant), with labels beside REDCap's
names (visit, form, field), the visit date, the value, message, severity, status, age in days,
and the two columns the site fills in: ``response`` (a drop-down of the allowed codes) and
``note``. The header is styled and frozen, the listing filterable, widths fitted, messages
wrapped, dates are dates and numbers numbers; rows are sorted by severity, then oldest first;
the sheet is protected except ``response`` and ``note``. An "Instructions" sheet says how to
answer, lists the response codes, whom to contact, and names the site and the as-of date (the
import checks that a returned workbook is the site's own).

Cells hold sanitised text (:func:`~studyman.validation.outputs.excel_text`); text starting with
``=`` is stored as text, never as a formula.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

import pandas as pd

from studyman.validation.query_log import RESPONSES

__all__ = [
    "LISTING_COLUMNS",
    "RESPONSE_MEANINGS",
    "ListingContext",
    "listing_frame",
    "write_listing_workbook",
]

#: What each response code means, for the Instructions sheet.
RESPONSE_MEANINGS: Final[Mapping[str, str]] = {
    "confirmed_correct": "The value is correct as entered (checked against the source document).",
    "data_missing": "The data are missing at source and cannot be obtained.",
    "typographical_error": "An entry error: you corrected the value in REDCap.",
    "wrong_source": "Entered from the wrong source: you corrected it in REDCap.",
    "other": "Anything else: explain in the note.",
}

#: The columns of a listing sheet, in order.
LISTING_COLUMNS: Final = [
    "query_id",
    "site",
    "record_id",
    "visit",
    "event",
    "form",
    "instrument",
    "field label",
    "field",
    "instance",
    "visit date",
    "value",
    "message",
    "check",
    "severity",
    "status",
    "days open",
    "response",
    "note",
]
_SEVERITY_ORDER: Final = {"critical": 0, "major": 1, "minor": 2}
_WIDEST: Final = 60
_NUMBER: Final = re.compile(r"^-?(0|[1-9]\d{0,14})(\.\d{1,12})?$")


@dataclass(frozen=True)
class ListingContext:
    """Labels and dates a listing shows beside REDCap's names.

    Attributes
    ----------
    event_labels, form_labels, field_labels
        REDCap name to label (visit, form, field).
    visit_dates
        ``(record, event)`` or ``(record, event, instrument, instance)`` to an ISO date: the
        visit's date, or for a repeating form the instance's own first date.
    study, contact
        The study's id and title, and whom a site contacts about its queries.
    sites
        The study's sites: each gets its workbook (an empty one says there is nothing to answer).
    check_titles
        Check id to what it checks, in words (the catalogue's description).
    """

    event_labels: Mapping[str, str] = field(default_factory=dict)
    form_labels: Mapping[str, str] = field(default_factory=dict)
    field_labels: Mapping[str, str] = field(default_factory=dict)
    visit_dates: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    study: str = ""
    contact: str = "the coordinating centre's data manager"
    sites: tuple[str, ...] = ()
    check_titles: Mapping[str, str] = field(default_factory=dict)


def listing_frame(queries: pd.DataFrame, context: ListingContext) -> pd.DataFrame:
    """Queries as a listing sheet shows them (:data:`LISTING_COLUMNS`), most severe and oldest
    first."""
    frame = queries.reset_index(drop=True)
    dates = []
    for row in frame.itertuples(index=False):
        key = (str(row.record_id), str(row.event), str(row.instrument), str(row.instance))
        dates.append(context.visit_dates.get(key) or context.visit_dates.get(key[:2]) or "")
    listing = pd.DataFrame(
        {
            "query_id": frame["query_id"],
            "site": frame["site"],
            "record_id": frame["record_id"],
            "visit": [context.event_labels.get(str(e), str(e)) for e in frame["event"]],
            "event": frame["event"],
            "form": [context.form_labels.get(str(f), str(f)) for f in frame["instrument"]],
            "instrument": frame["instrument"],
            "field label": [context.field_labels.get(str(f), "") for f in frame["field"]],
            "field": frame["field"],
            "instance": frame["instance"],
            "visit date": dates,
            "value": frame["value"],
            "message": frame["message"],
            "check": frame["check_id"],
            "severity": frame["severity"],
            "status": frame["status"],
            "days open": frame["days_open"].astype(int) if len(frame) else [],
            "response": frame["response"],
            "note": frame["response_note"],
        },
        columns=LISTING_COLUMNS,
    )
    order = listing["severity"].map(_SEVERITY_ORDER).fillna(3)
    return (
        listing.assign(_order=order)
        .sort_values(["_order", "days open", "query_id"], ascending=[True, False, True])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _typed(column: str, value: object) -> object:
    """A listing value as its cell: dates as dates, numbers as numbers, the rest text."""
    from studyman.validation.outputs import excel_text

    if value is None or (isinstance(value, float) and value != value):
        return None
    if column == "days open":
        return int(value)  # type: ignore[call-overload]
    text = str(value)
    if column == "visit date" and text:
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return excel_text(text)
    if column in ("value", "instance") and _NUMBER.match(text):
        return int(text) if "." not in text else float(text)
    return excel_text(text)


def _write_sheet(sheet: Any, listing: pd.DataFrame, *, editable: bool) -> None:
    from openpyxl.styles import Alignment, Font, PatternFill, Protection
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    columns = list(listing.columns)
    header_font = Font(bold=True, color="FFFFFF")
    header_fill = PatternFill("solid", fgColor="1F4E78")
    widths = [len(name) for name in columns]
    for index, name in enumerate(columns, start=1):
        cell = sheet.cell(row=1, column=index, value=name)
        cell.font = header_font
        cell.fill = header_fill
        cell.alignment = Alignment(vertical="center")
    wrap = Alignment(wrap_text=True, vertical="top")
    top = Alignment(vertical="top")
    unlocked = Protection(locked=False)
    open_columns = {"response", "note"} if editable else set()
    for row_number, values in enumerate(listing.itertuples(index=False), start=2):
        for index, (name, value) in enumerate(zip(columns, values, strict=True), start=1):
            content = _typed(name, value)
            cell = sheet.cell(row=row_number, column=index, value=content)
            if isinstance(content, str) and content.startswith("="):
                cell.data_type = "s"  # what a site typed is never a formula
            if isinstance(content, date):
                cell.number_format = "yyyy-mm-dd"
            cell.alignment = wrap if name in ("message", "note", "field label") else top
            if name in open_columns:
                cell.protection = unlocked
            shown = 10 if isinstance(content, date) else len(str(content or ""))
            widths[index - 1] = max(widths[index - 1], shown)
    for index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = min(max(width + 2, 8), _WIDEST)
    last = get_column_letter(len(columns))
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{last}{max(len(listing) + 1, 2)}"
    if editable:
        rows = max(len(listing) + 1, 2)
        response = get_column_letter(columns.index("response") + 1)
        note = get_column_letter(columns.index("note") + 1)
        choices = DataValidation(
            type="list",
            formula1='"' + ",".join(RESPONSES) + '"',
            allow_blank=True,
            showErrorMessage=True,
            errorTitle="Response",
            error="Choose one of the response codes (see Instructions).",
        )
        choices.add(f"{response}2:{response}{rows}")
        sheet.add_data_validation(choices)
        for row_number in range(len(listing) + 2, rows + 1):
            for letter in (response, note):
                sheet[f"{letter}{row_number}"].protection = unlocked
        # protected against accidental edits (no password): only response and note change;
        # filtering and sorting stay allowed
        sheet.protection.sheet = True
        sheet.protection.autoFilter = False
        sheet.protection.sort = False
        sheet.protection.formatColumns = False


def _instructions(sheet: Any, *, site: str, as_of: str, context: ListingContext) -> None:
    from openpyxl.styles import Alignment, Font

    from studyman.validation.outputs import excel_text

    rows: list[tuple[str, str]] = [
        ("Study", context.study),
        ("Site", site),
        ("As of", as_of),
        ("", ""),
        (
            "How to answer",
            "For each query in the Queries sheet, check the value against the "
            "source document, correct it in REDCap if it is wrong, then choose a response code in "
            "the response column and explain in the note. Other columns are protected.",
        ),
        (
            "",
            "Critical and safety queries are closed only after medical review: your answer "
            "makes them 'answered'.",
        ),
        (
            "Return",
            f"Send this file back to {context.contact}; it is imported as it is (do not "
            "rename sheets or columns, do not add another site's rows).",
        ),
        ("Contact", context.contact),
        ("", ""),
        ("Response code", "Meaning"),
        *((code, RESPONSE_MEANINGS.get(code, "")) for code in RESPONSES),
    ]
    for number, (key, value) in enumerate(rows, start=1):
        sheet.cell(row=number, column=1, value=excel_text(key)).font = Font(bold=True)
        sheet.cell(row=number, column=2, value=excel_text(value)).alignment = Alignment(
            wrap_text=True, vertical="top"
        )
    sheet.column_dimensions["A"].width = 20
    sheet.column_dimensions["B"].width = 100
    sheet.protection.sheet = True


def write_listing_workbook(
    path: Path,
    sheets: Sequence[tuple[str, pd.DataFrame]],
    *,
    context: ListingContext,
    as_of: str,
    site: str = "",
    editable: bool = True,
    summary: Sequence[pd.DataFrame] = (),
) -> None:
    """Write a formatted listing workbook.

    Parameters
    ----------
    path
        The ``.xlsx`` file.
    sheets
        ``(title, listing)`` pairs, listings as :func:`listing_frame` makes them.
    context
        Study, contact and labels for the Instructions sheet.
    as_of
        The listing's date (UTC ISO time or date).
    site
        The one site of a site's workbook (named on the Instructions sheet; the import checks
        it); blank for the coordinator's workbook of every site.
    editable
        Whether ``response`` and ``note`` are to be filled in (drop-down, unlocked).
    summary
        Tables for a first "summary" sheet (the coordinator's workbook).
    """
    from openpyxl import Workbook

    from studyman.validation.outputs import excel_text

    book = Workbook()
    first = book.active
    if summary:
        first.title = "summary"
        row = 1
        for table in summary:
            for index, name in enumerate(table.columns, start=1):
                first.cell(row=row, column=index, value=excel_text(str(name)))
            for offset, values in enumerate(table.itertuples(index=False), start=1):
                for index, value in enumerate(values, start=1):
                    content: object = value
                    if not isinstance(value, int | float):
                        content = excel_text(str(value))
                    first.cell(row=row + offset, column=index, value=content)
            row += len(table) + 2
    else:
        book.remove(first)
    for title, listing in sheets:
        sheet = book.create_sheet(_sheet_title(title, book.sheetnames))
        _write_sheet(sheet, listing, editable=editable)
    if editable:
        _instructions(
            book.create_sheet("Instructions"), site=site or "all sites", as_of=as_of,
            context=context,
        )  # fmt: skip
    book.save(path)


def _sheet_title(name: str, taken: Sequence[str]) -> str:
    from studyman.validation.outputs import excel_text

    title = re.sub(r"[\[\]:*?/\\]", "_", excel_text(name))[:31] or "unknown"
    return title if title not in taken else f"{title[:27]}-{len(taken)}"
