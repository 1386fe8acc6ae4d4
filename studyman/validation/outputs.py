"""What a validation run leaves for people: query listings, the deviation log, an HTML summary.

* ``queries.csv`` — every query in the log with its current status and age;
* ``queries.xlsx`` — a summary sheet and one sheet per site (the coordinator fills in
  ``response`` and ``response_note`` and the sheet is imported back with
  ``studyman queries import``);
* ``deviations.csv`` / ``deviations.xlsx`` — the protocol deviation log in the SDTM DV style
  (participant, term, category, start date, check id), from the checks that feed it and from the
  deviations the sites recorded themselves;
* ``summary.html`` — counts by site, check and severity and the age of open queries.

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import html
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from studyman.errors import ValidationError
from studyman.protocol.text_files import (
    CsvTableError,
    TextEncodingError,
    decode_spreadsheet_csv,
    parse_csv_table,
)
from studyman.sources.snapshot import write_file_atomic
from studyman.validation.catalogue import CheckDefinition
from studyman.validation.records import EVENT, REPEAT, text

__all__ = [
    "DEVIATION_COLUMNS",
    "deviation_log",
    "open_query_age",
    "read_listing",
    "write_outputs",
]

DEVIATION_COLUMNS: Final = [
    "STUDYID",
    "DOMAIN",
    "USUBJID",
    "site",
    "DVSEQ",
    "DVTERM",
    "DVCAT",
    "DVSTDTC",
    "check_id",
    "source",
]
_OPEN: Final = ("open", "answered", "reopened")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    # listings carry participant data: readable by their owner only
    write_file_atomic(path, write, mode=0o600)


def deviation_log(
    findings: pd.DataFrame,
    checks: tuple[CheckDefinition, ...],
    records: pd.DataFrame,
    protocol: Any,
) -> pd.DataFrame:
    """The protocol deviation log (SDTM DV style) from findings and site-recorded deviations.

    Notes
    -----
    A finding's start date (DVSTDTC) is its value when that is a date, else the date of the
    visit at that event, else blank.
    """
    category = {
        check.check_id: check.deviation_category for check in checks if check.deviation_category
    }
    study_id = protocol.study.id
    id_field = protocol.study.record_id_field
    rows: list[dict[str, str]] = []
    visit_dates: dict[tuple[str, str], str] = {}
    if "visit_date" in records.columns:
        base = text(records, REPEAT) == ""
        for record_id, event, day in zip(
            text(records, id_field)[base],
            text(records, EVENT)[base],
            text(records, "visit_date")[base],
            strict=True,
        ):
            if day:
                visit_dates.setdefault((record_id, event), day)
    feeding = findings[findings["check_id"].isin(list(category))]
    for finding in feeding.to_dict("records"):
        value = str(finding["value"])
        start = value[:10] if len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-" else ""
        if not start:
            start = visit_dates.get((str(finding["record_id"]), str(finding["event"])), "")
        rows.append(
            {
                "STUDYID": study_id,
                "DOMAIN": "DV",
                "USUBJID": f"{study_id}-{finding['record_id']}",
                "site": str(finding.get("site", "")),
                "DVTERM": str(finding["message"]),
                "DVCAT": category[str(finding["check_id"])],
                "DVSTDTC": start,
                "check_id": str(finding["check_id"]),
                "source": "validation",
            }
        )
    deviations = protocol.deviations
    form_rows = text(records, REPEAT) == deviations.form
    if form_rows.any():
        names = {str(c.code): c.name for c in deviations.categories}
        subset = records.loc[form_rows]
        for record_id, term, code, start in zip(
            text(subset, id_field),
            text(subset, "dv_term"),
            text(subset, deviations.category_field),
            text(subset, "dv_date"),
            strict=True,
        ):
            rows.append(
                {
                    "STUDYID": study_id,
                    "DOMAIN": "DV",
                    "USUBJID": f"{study_id}-{record_id}",
                    "site": record_id.split("-", 1)[0],
                    "DVTERM": term,
                    "DVCAT": names.get(code, code),
                    "DVSTDTC": start,
                    "check_id": "",
                    "source": "site",
                }
            )
    log = pd.DataFrame(rows, columns=[c for c in DEVIATION_COLUMNS if c != "DVSEQ"])
    log = log.sort_values(["USUBJID", "DVSTDTC", "DVCAT", "DVTERM"], kind="stable").reset_index(
        drop=True
    )
    log.insert(4, "DVSEQ", log.groupby("USUBJID").cumcount() + 1 if len(log) else [])
    return log[DEVIATION_COLUMNS]


def open_query_age(queries: pd.DataFrame) -> pd.DataFrame:
    """Open queries by site and age band (0-7, 8-30, 31-90, over 90 days), median age and the
    median days to resolution of closed queries."""
    open_queries = queries[queries["status"].isin(_OPEN)]
    bands = pd.cut(
        open_queries["days_open"].astype(int),
        bins=[-1, 7, 30, 90, np.inf],
        labels=["0-7 days", "8-30 days", "31-90 days", "over 90 days"],
    )
    table = pd.crosstab(open_queries["site"], bands, dropna=False)
    table["open"] = table.sum(axis=1)
    table["median days open"] = open_queries.groupby("site")["days_open"].median()
    closed = queries[queries["status"] == "closed"]
    table["median days to resolution"] = closed.groupby("site")["days_open"].median()
    table = table.reset_index()
    for column in ("median days open", "median days to resolution"):
        table[column] = [
            "" if pd.isna(value) else f"{value:g}" for value in table[column].astype(float)
        ]
    return table


def _counts(queries: pd.DataFrame, by: str) -> pd.DataFrame:
    table = pd.crosstab(queries[by], queries["status"])
    for status in ("open", "answered", "reopened", "closed"):
        if status not in table.columns:
            table[status] = 0
    table = table[["open", "answered", "reopened", "closed"]]
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_html(
    queries: pd.DataFrame, deviations: pd.DataFrame, title: str, as_of: str, unblinded: bool
) -> str:
    sections = [
        ("Queries by site", _counts(queries, "site")),
        ("Queries by severity", _counts(queries, "severity")),
        ("Queries by check", _counts(queries, "check_id")),
        ("Age of open queries", open_query_age(queries)),
        (
            "Protocol deviations by category",
            deviations.groupby("DVCAT").size().rename("deviations").reset_index(),
        ),
    ]
    blinding = "UNBLINDED run: arm-dependent checks included" if unblinded else "Blinded run"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #999;padding:3px 8px;text-align:left}th{background:#eee}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>As of {html.escape(as_of)}. {blinding}. "
        f"{int(queries['status'].isin(_OPEN).sum())} open of {len(queries)} queries; "
        f"{len(deviations)} protocol deviations.</p>",
    ]
    for heading, table in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_html_table(table) if len(table) else "<p>None.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_xlsx_queries(path: Path, queries: pd.DataFrame) -> None:
    listing = queries.copy()
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        row = 0
        if len(listing):
            tables = [
                _counts(listing, "site"),
                _counts(listing, "severity"),
                _counts(listing, "check_id"),
                open_query_age(listing),
            ]
        else:
            tables = [pd.DataFrame({"site": []})]
        for table in tables:
            table.to_excel(writer, sheet_name="summary", index=False, startrow=row)
            row += len(table) + 2
        for site, rows in listing.groupby("site", sort=True):
            rows.to_excel(writer, sheet_name=str(site)[:31] or "unknown", index=False)


def write_outputs(
    out_dir: Path,
    queries: pd.DataFrame,
    deviations: pd.DataFrame,
    *,
    title: str,
    as_of: str,
    unblinded: bool,
) -> list[Path]:
    """Write the listings, the deviation log and the HTML summary; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def target(name: str) -> Path:
        path = out_dir / name
        written.append(path)
        return path

    _atomic(target("queries.csv"), lambda p: queries.to_csv(p, index=False, lineterminator="\n"))
    _atomic(target("queries.xlsx"), lambda p: _write_xlsx_queries(p, queries))
    _atomic(
        target("deviations.csv"), lambda p: deviations.to_csv(p, index=False, lineterminator="\n")
    )
    _atomic(
        target("deviations.xlsx"),
        lambda p: deviations.to_excel(p, index=False, sheet_name="deviations", engine="openpyxl"),
    )
    summary = _summary_html(queries, deviations, title, as_of, unblinded)

    def write_summary(path: Path) -> None:
        path.write_text(summary, encoding="utf-8")

    _atomic(target("summary.html"), write_summary)
    return written


def read_listing(path: Path) -> pd.DataFrame:
    """Read a coordinator's edited listing (``.xlsx``: every site sheet; ``.csv``).

    A CSV is UTF-8 (a byte-order mark allowed) or, as Excel saves it on Windows, Windows-1252.

    Raises
    ------
    ValidationError
        The file cannot be read, is not a workbook / CSV table (damaged or truncated: the line is
        named), is UTF-16 text, or has no sheet with a ``query_id`` column.
    """
    if path.suffix.lower() == ".csv":
        return _read_listing_csv(path)
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        sheets = pd.read_excel(path, sheet_name=None, dtype=str, engine="openpyxl")
    except OSError as error:
        raise ValidationError(f"{path}: cannot read the listing ({error.strerror})") from None
    except (ValueError, KeyError, zipfile.BadZipFile, InvalidFileException) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValidationError(
            f"{path}: not a readable Excel workbook ({detail}); save it again as .xlsx"
        ) from None
    frames = [
        frame for name, frame in sheets.items() if name != "summary" and "query_id" in frame.columns
    ]
    if not frames:
        raise ValidationError(
            f"{path}: no sheet has a query_id column (sheets: {', '.join(map(str, sheets))}); "
            "expected the listing written by studyman validate"
        )
    return pd.concat(frames, ignore_index=True).fillna("")


def _read_listing_csv(path: Path) -> pd.DataFrame:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValidationError(f"{path}: cannot read the listing ({error.strerror})") from None
    try:
        text = decode_spreadsheet_csv(data)
    except TextEncodingError as problem:
        raise ValidationError(f"{path}: {problem}") from None
    try:
        header, rows = parse_csv_table(text, expected="a listing with query_id, response")
    except CsvTableError as problem:
        raise ValidationError(f"{path}: {problem}") from None
    if "query_id" not in header:
        raise ValidationError(
            f"{path}: line 1: no query_id column (found {', '.join(header)}); expected the "
            "listing written by studyman validate"
        )
    return pd.DataFrame(rows, columns=pd.Index(header), dtype=object)
