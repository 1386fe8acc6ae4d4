"""Per-site query workbooks a site can act on, opened with openpyxl, and their return trip."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from studyman.cli import main
from studyman.protocol.loader import load_protocol
from studyman.synthetic.generator import generate_trial
from studyman.validation.catalogue import REVIEW_SIGNALS
from studyman.validation.query_log import RESPONSES, QueryLog
from studyman.validation.run import validate_study
from studyman.validation.workbooks import LISTING_COLUMNS

PROTOCOL_DIR = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"
AS_OF = "2026-10-01T00:00:00Z"
SEVERITY = {"critical": 0, "major": 1, "minor": 2}


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    protocol = load_protocol(PROTOCOL_DIR)
    trial = generate_trial(protocol, n_participants=60, seed=11, plant_errors=True)
    folder = tmp_path_factory.mktemp("validated")
    records = folder / "records.csv"
    trial.records.to_csv(records, index=False)
    validate_study(protocol, records, folder / "out", at=AS_OF)
    return folder / "out"


def _site_books(out: Path) -> dict[str, Path]:
    return {path.parent.name: path for path in sorted((out / "sites").glob("*/*.xlsx"))}


def _rows(sheet: openpyxl.worksheet.worksheet.Worksheet) -> pd.DataFrame:
    values = list(sheet.iter_rows(values_only=True))
    return pd.DataFrame(values[1:], columns=values[0])


def test_each_site_gets_one_workbook_with_only_its_own_open_site_queries(validated: Path) -> None:
    books = _site_books(validated)
    assert set(books) == {"S01", "S02", "S03", "S04"}
    queries = pd.read_csv(validated / "queries.csv", dtype=str, keep_default_na=False)
    for site, path in books.items():
        assert path.name == f"queries-{site}-2026-10-01.xlsx"
        book = openpyxl.load_workbook(path)
        assert book.sheetnames == ["Queries", "Instructions"]
        rows = _rows(book["Queries"])
        assert list(rows.columns) == LISTING_COLUMNS
        assert set(rows["site"]) <= {site}
        assert not set(rows["check"]) & REVIEW_SIGNALS
        assert (
            not rows["record_id"].str.startswith(tuple({"S01", "S02", "S03", "S04"} - {site})).any()
        )
        expected = queries[
            (queries["site"] == site)
            & (queries["kind"] == "site_query")
            & queries["status"].isin(["open", "answered", "reopened"])
        ]
        assert set(rows["query_id"]) == set(expected["query_id"])
    # the review signals went to the central team's listing instead
    signals = pd.read_csv(validated / "review-signals.csv", dtype=str, keep_default_na=False)
    assert len(signals) > 0
    assert set(signals["check_id"]) <= REVIEW_SIGNALS


def test_a_site_workbook_is_formatted_for_people(validated: Path) -> None:
    path = _site_books(validated)["S01"]
    sheet = openpyxl.load_workbook(path)["Queries"]
    rows = _rows(sheet)
    assert len(rows) > 5
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:S{len(rows) + 1}"
    assert sheet["A1"].font.bold
    # the response column offers exactly the allowed responses
    (validation,) = sheet.data_validations.dataValidation
    assert validation.type == "list"
    assert validation.formula1 == '"' + ",".join(RESPONSES) + '"'
    assert f"R2:R{len(rows) + 1}" in str(validation.sqref)
    # protected except response and note
    assert sheet.protection.sheet
    assert sheet["R2"].protection.locked is False
    assert sheet["S2"].protection.locked is False
    assert sheet["M2"].protection.locked is not False
    assert sheet["M2"].alignment.wrap_text
    assert sheet.column_dimensions["M"].width > sheet.column_dimensions["B"].width
    # labels beside REDCap names, dates as dates, numbers as numbers
    assert (rows["visit"] != rows["event"]).all()
    filled = rows[rows["field"].notna() & (rows["field"] != "record_id")]
    assert filled["field label"].notna().all()
    assert filled["form"].notna().all()
    assert any(isinstance(value, datetime) for value in rows["visit date"])
    assert all(isinstance(value, int) for value in rows["days open"])
    assert any(isinstance(value, int | float) for value in rows["value"])
    # most severe first, then oldest
    keys = [(SEVERITY[s], -d) for s, d in zip(rows["severity"], rows["days open"], strict=True)]
    assert keys == sorted(keys)
    instructions = {
        row[0]: row[1]
        for row in openpyxl.load_workbook(path)["Instructions"].iter_rows(values_only=True)
    }
    assert instructions["Site"] == "S01"
    assert instructions["As of"] == "2026-10-01"
    assert "coordinating centre" in str(instructions["Contact"])
    assert set(RESPONSES) <= set(instructions)


def test_the_coordinators_workbook_is_formatted_the_same_way(validated: Path) -> None:
    book = openpyxl.load_workbook(validated / "queries.xlsx")
    assert book.sheetnames[0] == "summary"
    assert book.sheetnames[-1] == "Instructions"
    sheet = book["S02"]
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref is not None
    assert len(sheet.data_validations.dataValidation) == 1
    rows = _rows(sheet)
    assert not set(rows["check"]) & REVIEW_SIGNALS


def test_a_returned_site_workbook_round_trips_into_the_log(validated: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(validated, out)
    path = _site_books(out)["S01"]
    book = openpyxl.load_workbook(path)
    sheet = book["Queries"]
    rows = _rows(sheet)
    critical = int(rows.index[rows["severity"] == "critical"][0])
    minor = int(rows.index[rows["severity"] != "critical"][-1])
    sheet.cell(row=critical + 2, column=18, value="confirmed_correct")
    sheet.cell(row=critical + 2, column=19, value="values checked")
    sheet.cell(row=minor + 2, column=18, value="typographical_error")
    returned = tmp_path / path.name
    book.save(returned)
    log = out / "queries.sqlite"

    main(["queries", "import", str(returned), "--query-log", str(log), "--site", "S01"])
    with QueryLog(log) as opened:
        queries = opened.queries().set_index("query_id")
    first = queries.loc[rows.loc[critical, "query_id"]]
    assert (first["status"], first["response"], first["response_note"]) == (
        "answered",  # a critical query waits for medical review
        "confirmed_correct",
        "values checked",
    )
    assert queries.loc[rows.loc[minor, "query_id"], "status"] == "answered"
    assert queries.loc[rows.loc[minor, "query_id"], "response"] == "typographical_error"


def test_the_import_refuses_another_sites_workbook(
    validated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(validated, out)
    log = out / "queries.sqlite"
    books = _site_books(out)
    with pytest.raises(SystemExit):
        main(["queries", "import", str(books["S01"]), "--query-log", str(log), "--site", "S02"])
    assert "site S01's workbook, expected site S02's; nothing imported" in capsys.readouterr().err
    # a row of S02 pasted into S01's workbook: refused whole
    other = _rows(openpyxl.load_workbook(books["S02"])["Queries"]).iloc[0]
    book = openpyxl.load_workbook(books["S01"])
    sheet = book["Queries"]
    sheet.cell(row=2, column=18, value="other")
    last = sheet.max_row + 1
    sheet.cell(row=last, column=1, value=other["query_id"])
    sheet.cell(row=last, column=18, value="other")
    tampered = tmp_path / "tampered.xlsx"
    book.save(tampered)
    with QueryLog(log) as opened:
        before = opened.history()
    with pytest.raises(SystemExit):
        main(["queries", "import", str(tampered), "--query-log", str(log)])
    assert f"query {other['query_id']} is site S02's" in capsys.readouterr().err
    with QueryLog(log) as opened:
        assert opened.history().equals(before)


def test_the_summary_explains_each_check_and_counts_review_signals_apart(validated: Path) -> None:
    page = (validated / "summary.html").read_text(encoding="utf-8")
    queries = pd.read_csv(validated / "queries.csv", dtype=str, keep_default_na=False)
    sites = queries[queries["kind"] == "site_query"]
    signals = queries[queries["kind"] == "review_signal"]
    assert f"{len(sites)} open site queries (of {len(sites)})" in page
    assert f"{len(signals)} open review signals (of {len(signals)})" in page
    site_part = page[page.index("Site queries by check") : page.index("Review signals by check")]
    signal_part = page[page.index("Review signals by check") : page.index("Review signals by site")]
    assert "Potential Hy&#x27;s law case" in site_part  # LIV-HYS in words
    assert "DQ-E" not in site_part
    assert "DQ-E" in signal_part
    assert "far from the visit&#x27;s median" in signal_part
    age = page[page.index("Open site queries by site and age") : page.index("Site queries by site")]
    assert "0-7 days" in age
    assert all(f"<td>{site}</td>" in age for site in set(sites["site"]))
