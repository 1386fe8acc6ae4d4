"""validate_study's reading of a flat CSV export: the offline import's strict reader."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest

from studyman.errors import SourceError, ValidationError
from studyman.protocol.loader import load_protocol
from studyman.validation.run import dictionary_for, read_flat_records, validate_study

PROTOCOL_DIR = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"
HEADER = "record_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,age\n"
ROWS = "S01-0001,screening_arm_1,,,41\nS01-0002,screening_arm_1,,,52\n"


def _read(path: Path) -> object:
    dictionary, _ = dictionary_for(load_protocol(PROTOCOL_DIR))
    return read_flat_records(path, dictionary)


def test_a_flat_export_is_read_as_text_records(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_text(HEADER + ROWS, encoding="utf-8")
    records = _read(path)
    assert list(records["record_id"]) == ["S01-0001", "S01-0002"]  # type: ignore[index]
    assert list(records["age"]) == ["41", "52"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            (HEADER + ROWS + "S01-0003,screening_arm_1\n").encode(),
            r"line 4: 2 cells for 5 columns",
            id="truncated",
        ),
        pytest.param(
            (HEADER.replace(",age", ",age,age") + ROWS.replace("\n", ",1\n")).encode(),
            r"repeats column\(s\) age",
            id="repeated-column",
        ),
        pytest.param((HEADER + ROWS).encode("utf-16"), "UTF-16 text", id="utf-16"),
    ],
)
def test_a_damaged_flat_export_is_an_error_naming_the_line_not_fewer_records(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=expected) as caught:
        _read(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_an_unknown_arm_in_the_randomisation_list_is_refused_naming_file_and_value(
    tmp_path: Path,
) -> None:
    records = tmp_path / "records.csv"
    records.write_text(HEADER + ROWS, encoding="utf-8")
    randomization = tmp_path / "randomization.csv"
    randomization.write_text("record_id,rand_arm\nS01-0001,1\nS01-0002,7\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"column rand_arm: unknown arm value\(s\) '7'") as e:
        validate_study(
            load_protocol(PROTOCOL_DIR),
            records,
            tmp_path / "out",
            randomization=randomization,
        )
    assert str(e.value).startswith(f"{randomization}: ")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------- one run's outputs are all-or-nothing

BELL_AGE = "4\x071"  # a control character (BEL) in a value that raises a query


@pytest.fixture(scope="module")
def trial_records() -> pd.DataFrame:
    """A small generated trial's complete flat export (every column of the dictionary)."""
    from studyman.synthetic.generator import generate_trial

    trial = generate_trial(load_protocol(PROTOCOL_DIR), n_participants=12, seed=5)
    return trial.records


def _export(records: pd.DataFrame, folder: Path, age: str, name: str = "records.csv") -> Path:
    """*records* with the first participant's age at screening set to *age*, as a CSV export."""
    changed = records.copy()
    first = changed.index[changed["age"] != ""][0]
    changed.loc[first, "age"] = age
    path = folder / name
    changed.to_csv(path, index=False, lineterminator="\n")
    return path


def _column(sheet: Any, name: str) -> list[Any]:
    header = [cell.value for cell in sheet[1]]
    return [row[header.index(name)] for row in sheet.iter_rows(min_row=2)]


def _log_rows(path: Path) -> tuple[list[tuple[object, ...]], ...]:
    with sqlite3.connect(path) as connection:
        return tuple(
            connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("queries", "history", "runs")
        )


def test_a_control_character_in_a_queried_value_is_raw_in_the_csv_and_escaped_in_the_workbook(
    tmp_path: Path, trial_records: pd.DataFrame
) -> None:
    out = tmp_path / "out"
    validate_study(load_protocol(PROTOCOL_DIR), _export(trial_records, tmp_path, BELL_AGE), out)
    listing = pd.read_csv(out / "queries.csv", dtype=str, keep_default_na=False)
    assert BELL_AGE in set(listing["value"])
    book = openpyxl.load_workbook(out / "queries.xlsx")
    cells = [cell.value for cell in _column(book["S01"], "value")]
    assert "4\\x071" in cells
    assert not any(isinstance(value, str) and "\x07" in value for value in cells)
    assert not list(out.glob(".validate-*"))


def test_text_starting_with_an_equals_sign_stays_text_in_the_workbook(
    tmp_path: Path, trial_records: pd.DataFrame
) -> None:
    out = tmp_path / "out"
    validate_study(load_protocol(PROTOCOL_DIR), _export(trial_records, tmp_path, "=1+1"), out)
    sheet = openpyxl.load_workbook(out / "queries.xlsx")["S01"]
    formula = [cell for cell in _column(sheet, "value") if cell.value == "=1+1"]
    assert formula
    assert all(cell.data_type == "s" for cell in formula)


def _files(out: Path) -> dict[str, bytes]:
    """Every file under *out* (but the query log) with its content."""
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != "queries.sqlite"
    }


def test_an_output_that_cannot_be_written_leaves_every_listing_and_the_log_unchanged(
    tmp_path: Path, trial_records: pd.DataFrame
) -> None:
    protocol = load_protocol(PROTOCOL_DIR)
    out = tmp_path / "out"
    first = validate_study(
        protocol, _export(trial_records, tmp_path, "41"), out, at="2026-10-01T00:00:00Z"
    )
    assert first.sync.opened
    # the last output's place is taken by a folder (a real failure, not a patched writer), and
    # the data changed so that the run would open queries and hold a control character; a new
    # as-of date would add new site workbooks
    (out / "summary.html").unlink()
    (out / "summary.html").mkdir()
    (out / "summary.html" / "keep").write_text("x", encoding="utf-8")
    before = _files(out)
    assert "sites/S01/queries-S01-2026-10-01.xlsx" in before
    log_before = _log_rows(out / "queries.sqlite")
    with pytest.raises(ValidationError, match=r"summary\.html: cannot write") as failed:
        validate_study(
            protocol,
            _export(trial_records, tmp_path, BELL_AGE, "changed.csv"),
            out,
            at="2026-10-08T00:00:00Z",
        )
    assert "\n" not in str(failed.value)
    assert _files(out) == before  # nothing replaced, nothing added (no 2026-10-08 workbook)
    assert _log_rows(out / "queries.sqlite") == log_before
    assert not list(out.glob(".validate-*"))


def test_a_first_run_that_fails_leaves_no_query_log_behind(
    tmp_path: Path, trial_records: pd.DataFrame
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "queries.xlsx").mkdir()
    (out / "queries.xlsx" / "keep").write_text("x", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"queries\.xlsx: cannot write"):
        validate_study(load_protocol(PROTOCOL_DIR), _export(trial_records, tmp_path, BELL_AGE), out)
    assert sorted(path.name for path in out.iterdir()) == ["queries.xlsx"]
