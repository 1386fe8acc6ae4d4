"""What a validation run leaves for people: query listings, the deviation log, an HTML summary.

* ``queries.csv`` — every query in the log with its current status and age;
* ``queries.xlsx`` — a summary sheet and one sheet per site (the coordinator fills in
  ``response`` and ``response_note`` and the sheet is imported back with
  ``studyman queries import``);
* ``deviations.csv`` / ``deviations.xlsx`` — the protocol deviation log in the SDTM DV style
  (participant, term, category, start date, check id), from the checks that feed it and from the
  deviations the sites recorded themselves;
* ``summary.html`` — counts by site, check and severity and the age of open queries.

One run's files are all-or-nothing: :class:`OutputBatch` writes them into a hidden directory
beside them and moves them into place together only when every one was written; a failure puts
the previous files back. Workbook cells hold sanitised text (a control character, which Excel
cannot store, is shown as ``\\xNN``; text starting with ``=`` stays text, never a formula); the
CSV files keep the raw values.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

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

if TYPE_CHECKING:
    from studyman.validation.workbooks import ListingContext
from studyman.validation.records import DAG, EVENT, REPEAT, text

__all__ = [
    "DEVIATION_COLUMNS",
    "OutputBatch",
    "deviation_log",
    "excel_text",
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


_ILLEGAL_IN_XLSX: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def excel_text(value: str) -> str:
    """*value* as a workbook cell can hold it: control characters Excel refuses become ``\\xNN``.

    Tab, line feed and carriage return are kept (a cell may hold them).
    """
    return _ILLEGAL_IN_XLSX.sub(lambda match: f"\\x{ord(match.group()):02x}", value)


class OutputBatch:
    """The files of one run, written beside their targets and moved into place together.

    Parameters
    ----------
    out_dir
        Where the files go (created when the batch is installed, removed again on failure when
        it was created for it).

    Notes
    -----
    :meth:`write` fills a file in a hidden ``.validate-*.tmp`` directory inside *out_dir*;
    :meth:`install` renames every file into place (a failed rename puts back what was already
    moved); :meth:`undo` restores the previous files after an install (for a failure that comes
    after it, such as the query log's commit); :meth:`discard` removes the hidden directory.
    Listings carry participant data: files are owner-only (0600).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._staging: Path | None = None
        self._created_out_dir = False
        self._names: list[str] = []
        self._installed: list[tuple[Path, Path | None]] = []
        self._made_dirs: list[Path] = []

    def _stage(self) -> Path:
        if self._staging is None:
            if not self.out_dir.exists():
                try:
                    self.out_dir.mkdir(parents=True)
                except OSError as error:
                    raise ValidationError(
                        f"{self.out_dir}: cannot create the output directory ({error.strerror})"
                    ) from None
                self._created_out_dir = True
            try:
                self._staging = Path(
                    tempfile.mkdtemp(prefix=".validate-", suffix=".tmp", dir=self.out_dir)
                )
            except OSError as error:
                raise ValidationError(
                    f"{self.out_dir}: cannot write there ({error.strerror}); nothing was written"
                ) from None
        return self._staging

    def target(self, name: str) -> Path:
        """The final path of file *name* (relative to the output directory)."""
        return self.out_dir / name

    def write(self, name: str, write: Callable[[Path], None]) -> Path:
        """Have *write* fill file *name* (relative, may hold folders) in the hidden directory."""
        staged = self._stage() / "new" / name
        write_file_atomic(staged, write, mode=0o600)
        self._names.append(name)
        return self.target(name)

    def install(self) -> list[Path]:
        """Move every written file into place; all of them or (on an error) none.

        Raises
        ------
        ValidationError
            A file cannot be put in place (named); the previous files are back.
        """
        staging = self._stage()
        for name in self._names:
            target = self.target(name)
            backup: Path | None = None
            try:
                self._make_parents(target.parent)
                if os.path.lexists(target):
                    backup = staging / "old" / name
                    backup.parent.mkdir(parents=True, exist_ok=True)
                    os.link(target, backup, follow_symlinks=False)
                os.replace(staging / "new" / name, target)
            except OSError as error:
                if backup is not None:
                    backup.unlink(missing_ok=True)
                self.undo()
                raise ValidationError(
                    f"{target}: cannot write ({error.strerror or error}); no output of this run "
                    "was kept and the query log is unchanged"
                ) from None
            self._installed.append((target, backup))
        return [self.target(name) for name in self._names]

    def _make_parents(self, folder: Path) -> None:
        missing: list[Path] = []
        while not folder.exists() and folder != self.out_dir:
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            made.mkdir(mode=0o700)
            self._made_dirs.append(made)

    def undo(self) -> None:
        """Put back the files the install replaced and remove those it added."""
        for target, backup in reversed(self._installed):
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        self._installed.clear()
        for folder in reversed(self._made_dirs):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self._made_dirs.clear()

    def discard(self, *, failed: bool = False) -> None:
        """Remove the hidden directory (and, after a failure, an output directory made for it)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if failed and self._created_out_dir and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()


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
    visit_date_field = protocol.visit_form.date_field
    if visit_date_field in records.columns:
        base = text(records, REPEAT) == ""
        for record_id, event, day in zip(
            text(records, id_field)[base],
            text(records, EVENT)[base],
            text(records, visit_date_field)[base],
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
        # the site: the record's data access group where exported, else the record ID's prefix
        site_of_dag = {site.dag: site.id for site in protocol.sites}
        dags = text(subset, DAG)
        for record_id, term, code, start, dag in zip(
            text(subset, id_field),
            text(subset, deviations.term_field),
            text(subset, deviations.category_field),
            text(subset, deviations.date_field),
            dags,
            strict=True,
        ):
            rows.append(
                {
                    "STUDYID": study_id,
                    "DOMAIN": "DV",
                    "USUBJID": f"{study_id}-{record_id}",
                    "site": site_of_dag.get(dag) or record_id.split("-", 1)[0],
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


def _by_check(queries: pd.DataFrame, titles: Mapping[str, str]) -> pd.DataFrame:
    """Counts by check, each check explained in words."""
    table = _counts(queries, "check_id")
    table.insert(1, "what it checks", [titles.get(str(c), "") for c in table["check_id"]])
    return table


def _summary_html(
    queries: pd.DataFrame,
    deviations: pd.DataFrame | None,
    title: str,
    as_of: str,
    unblinded: bool,
    titles: Mapping[str, str] | None = None,
) -> str:
    """The HTML summary: site queries (by site and age, severity, check) and review signals
    apart, each check id explained by its catalogue title."""
    titles = titles or {}
    kinds = queries["kind"] if "kind" in queries.columns else pd.Series("site_query", queries.index)
    site_rows = queries[kinds != "review_signal"]
    signals = queries[kinds == "review_signal"]
    sections: list[tuple[str, str, pd.DataFrame | None]] = [
        (
            "Open site queries by site and age",
            "Queries the sites must answer, by how long they have been open.",
            open_query_age(site_rows),
        ),
        ("Site queries by site", "", _counts(site_rows, "site")),
        ("Site queries by severity", "", _counts(site_rows, "severity")),
        ("Site queries by check", "", _by_check(site_rows, titles)),
        (
            "Review signals by check",
            "Statistical signals for the central team (data manager, monitor): outliers, large "
            "changes, adherence. They are not sent to sites (review-signals.xlsx).",
            _by_check(signals, titles),
        ),
        ("Review signals by site", "", _counts(signals, "site")),
        (
            "Protocol deviations by category",
            "",
            None
            if deviations is None
            else deviations.groupby("DVCAT").size().rename("deviations").reset_index(),
        ),
    ]
    blinding = "UNBLINDED run: arm-dependent checks included" if unblinded else "Blinded run"
    open_sites = int(site_rows["status"].isin(_OPEN).sum())
    open_signals = int(signals["status"].isin(_OPEN).sum())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #999;padding:3px 8px;text-align:left}th{background:#eee}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>As of {html.escape(as_of)}. {blinding}. "
        f"{open_sites} open site queries (of {len(site_rows)}); "
        f"{open_signals} open review signals (of {len(signals)}); "
        + (
            f"{len(deviations)} protocol deviations.</p>"
            if deviations is not None
            else "partial run: the deviation log was not rewritten.</p>"
        ),
    ]
    for heading, explanation, table in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if explanation:
            parts.append(f"<p>{html.escape(explanation)}</p>")
        if table is None:
            parts.append("<p>Not updated by this partial run.</p>")
        else:
            parts.append(_html_table(table) if len(table) else "<p>None.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _cell(value: object) -> object:
    """One frame value as a workbook cell: numbers stay numbers, text is sanitised."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    return excel_text(str(value))


def _put_frame(sheet: Any, frame: pd.DataFrame, first_row: int = 1) -> int:
    """Write *frame* (header and rows) from *first_row*; return the row after it."""
    for column, name in enumerate(frame.columns, start=1):
        sheet.cell(row=first_row, column=column, value=excel_text(str(name)))
    for offset, values in enumerate(frame.itertuples(index=False), start=1):
        for column, value in enumerate(values, start=1):
            cell = sheet.cell(row=first_row + offset, column=column)
            content = _cell(value)
            cell.value = content
            if isinstance(content, str) and content.startswith("="):
                cell.data_type = "s"  # text a site typed, never a formula
    return first_row + len(frame) + 1


def _sheet_title(name: str, taken: Sequence[str]) -> str:
    title = re.sub(r"[\[\]:*?/\\]", "_", excel_text(name))[:31] or "unknown"
    return title if title not in taken else f"{title[:27]}-{len(taken)}"


def _write_xlsx_table(path: Path, frame: pd.DataFrame, title: str) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = title
    _put_frame(sheet, frame)
    book.save(path)


def write_outputs(
    out_dir: Path,
    queries: pd.DataFrame,
    deviations: pd.DataFrame | None,
    *,
    title: str,
    as_of: str,
    unblinded: bool,
    batch: OutputBatch | None = None,
    context: ListingContext | None = None,
    site_queries: pd.DataFrame | None = None,
) -> list[Path]:
    """Write the listings, workbooks, the deviation log and the HTML summary; return the paths.

    Parameters
    ----------
    out_dir
        The output directory.
    queries
        Every query the run's reader may see (``queries.csv``; the coordinator's workbook and
        ``review-signals.*`` split it by kind).
    deviations
        The deviation log; ``None`` (a partial run) leaves its files as they are.
    title, as_of, unblinded
        For the summary and the workbooks' Instructions.
    batch
        Write into this batch only (the caller installs it, see :class:`OutputBatch`); without,
        the files are installed together before returning.
    context
        Labels, dates, study and sites for the workbooks (see
        :class:`~studyman.validation.workbooks.ListingContext`).
    site_queries
        The queries sites may see (default *queries*): each site's open site queries go to
        ``sites/<site>/queries-<site>-<as-of>.xlsx``.
    """
    from studyman.validation.workbooks import ListingContext

    arguments: dict[str, Any] = {
        "title": title,
        "as_of": as_of,
        "unblinded": unblinded,
        "context": context or ListingContext(sites=tuple(sorted(set(queries["site"])))),
        "site_queries": queries if site_queries is None else site_queries,
    }
    if batch is not None:
        return _write_into(batch, queries, deviations, **arguments)
    own = OutputBatch(out_dir)
    try:
        written = _write_into(own, queries, deviations, **arguments)
        own.install()
    except BaseException:
        own.discard(failed=True)
        raise
    own.discard()
    return written


def _write_into(
    files: OutputBatch,
    queries: pd.DataFrame,
    deviations: pd.DataFrame | None,
    *,
    title: str,
    as_of: str,
    unblinded: bool,
    context: ListingContext,
    site_queries: pd.DataFrame,
) -> list[Path]:
    from studyman.validation.workbooks import listing_frame, write_listing_workbook

    signals = queries[queries["kind"] == "review_signal"]
    site_rows = queries[queries["kind"] != "review_signal"]
    summary_tables = (
        [
            _counts(site_rows, "site"),
            _counts(site_rows, "severity"),
            _counts(site_rows, "check_id"),
            open_query_age(site_rows),
        ]
        if len(site_rows)
        else [pd.DataFrame({"site": []})]
    )
    by_site = [
        (str(site), listing_frame(rows, context))
        for site, rows in site_rows.groupby("site", sort=True)
    ]
    written = [
        files.write("queries.csv", lambda p: queries.to_csv(p, index=False, lineterminator="\n")),
        files.write(
            "queries.xlsx",
            lambda p: write_listing_workbook(
                p, by_site, context=context, as_of=as_of, summary=summary_tables
            ),
        ),
        files.write(
            "review-signals.csv", lambda p: signals.to_csv(p, index=False, lineterminator="\n")
        ),
        files.write(
            "review-signals.xlsx",
            lambda p: write_listing_workbook(
                p,
                [("review signals", listing_frame(signals, context))],
                context=context,
                as_of=as_of,
                editable=False,
            ),
        ),
    ]
    day = as_of[:10]
    shown = site_queries[
        (site_queries["kind"] != "review_signal") & site_queries["status"].isin(_OPEN)
    ]
    for site in context.sites:
        listing = listing_frame(shown[shown["site"] == site], context)

        def write_site(path: Path, site: str = site, listing: pd.DataFrame = listing) -> None:
            write_listing_workbook(
                path, [("Queries", listing)], context=context, as_of=day, site=site
            )

        written.append(files.write(f"sites/{site}/queries-{site}-{day}.xlsx", write_site))
    if deviations is not None:
        log = deviations
        written.append(
            files.write("deviations.csv", lambda p: log.to_csv(p, index=False, lineterminator="\n"))
        )
        written.append(
            files.write("deviations.xlsx", lambda p: _write_xlsx_table(p, log, "deviations"))
        )
    summary = _summary_html(queries, deviations, title, as_of, unblinded, context.check_titles)

    def write_summary(path: Path) -> None:
        path.write_text(summary, encoding="utf-8")

    written.append(files.write("summary.html", write_summary))
    return written


def read_listing(path: Path) -> pd.DataFrame:
    """Read a coordinator's edited listing or a site's returned workbook (``.xlsx``: every
    sheet with a ``query_id`` column; ``.csv``).

    A CSV is UTF-8 (a byte-order mark allowed) or, as Excel saves it on Windows, Windows-1252.
    ``attrs["site"]`` holds the site a site's workbook was written for ("" otherwise).

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
    table = pd.concat(frames, ignore_index=True).fillna("")
    table.attrs["site"] = _declared_site(sheets.get("Instructions"))
    return table


def _declared_site(instructions: pd.DataFrame | None) -> str:
    """The site a site's workbook names on its Instructions sheet ("" for none)."""
    if instructions is None or instructions.shape[1] < 2:
        return ""
    for key, value in zip(instructions.iloc[:, 0], instructions.iloc[:, 1], strict=True):
        if key == "Site" and isinstance(value, str) and value and value != "all sites":
            return value
    return ""


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
