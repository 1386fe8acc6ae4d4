"""Issue 7 part 3: offline import of the 28 projects exported from live REDCap servers.

Each project (tests/data/redcap-projects, REDCapR's test projects) is imported without a study
protocol, from its raw records export ``data.csv`` and the data dictionary downloaded from the web
page ``dictionary.csv`` (``decimal-comma`` spells it ``dictionay.csv``). The typed tables must hold
every value of the export, checked against the CSV read here with Python's own csv module:

* a cell is *held* when its typed cell is not missing, or it is kept in ``<field>__raw`` (it did
  not cast, and a finding says so) or in ``<field>__missing``;
* REDCap's defaults on rows where a form has no data (form status ``0``, unticked checkboxes
  ``0``, survey ``[not completed]``) are not values anyone entered: such rows are not in the
  form's table (see ``studyman.sources.tidy``), and their defaults are the only cells allowed
  to be absent.

Projects whose files cannot be imported as they are:

* ``russian`` has no ``dictionary.csv``, and its ``data.csv`` is not a REDCap export (R's
  ``write.csv``: a row-name column, ``NA`` for blanks, Cyrillic escaped as ``<U+043E>``). The
  dictionary and records come from its ODM file (``studyman emulator convert``), which holds the
  Cyrillic text; ``data.csv`` is imported too, against that dictionary, to show that a foreign
  file gives findings, not a crash.
* ``simple-write`` has only ``project.xml``: dictionary and records come from it the same way.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
import pytest

from studyman.protocol import read_data_dictionary
from studyman.sources.casting import MISSING_SUFFIX, RAW_SUFFIX, ProjectDictionary
from studyman.sources.emulator.convert import convert_odm
from studyman.sources.offline import import_snapshot
from studyman.sources.snapshot import read_snapshot
from studyman.sources.tidy import UNMAPPED_TABLE

PROJECTS = Path(__file__).resolve().parents[1] / "data" / "redcap-projects"
ALL_PROJECTS = sorted(p.name for p in PROJECTS.iterdir() if p.is_dir())
FROM_ODM = {"russian", "simple-write"}
KEYS = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
CYRILLIC = re.compile(r"[\u0400-\u04FF]")


def test_there_are_28_projects() -> None:
    assert len(ALL_PROJECTS) == 28


def _inputs(project: str, tmp_path: Path) -> tuple[Path, Path]:
    directory = PROJECTS / project
    if project in FROM_ODM:
        converted = tmp_path / "converted"
        convert_odm(directory / "project.xml", converted)
        return converted / "records.csv", converted / "data_dictionary.csv"
    dictionary = directory / "dictionary.csv"
    if not dictionary.exists():
        dictionary = directory / "dictionay.csv"  # sic: the source project's own spelling
    return directory / "data.csv", dictionary


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    text = path.read_text(encoding="utf-8-sig") if path.exists() else ""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    return (rows[0], rows[1:]) if rows else ([], [])


def _key(values: dict[str, str], record_id_field: str) -> tuple[str, ...]:
    return (values.get(record_id_field, ""), *(values.get(k, "") for k in KEYS))


def _table_index(table: pd.DataFrame, record_id_field: str) -> dict[tuple[str, ...], int]:
    index: dict[tuple[str, ...], int] = {}
    for position in range(len(table)):
        values = {
            column: ""
            if pd.isna(table[column].iloc[position])
            else str(table[column].iloc[position])
            for column in (record_id_field, *KEYS)
            if column in table.columns
        }
        index[_key(values, record_id_field)] = position
    return index


def _is_default(column: str, value: str, dictionary: ProjectDictionary) -> bool:
    spec = dictionary.column_spec(column)
    if spec is None:
        return False
    if spec.kind.value == "status" or spec.is_checkbox:
        return value == "0"
    return spec.kind.value == "survey_timestamp" and value == "[not completed]"


@pytest.mark.parametrize("project", ALL_PROJECTS)
def test_import_holds_every_value_of_the_export(project: str, tmp_path: Path) -> None:
    records, dictionary_file = _inputs(project, tmp_path)
    if not records.exists():
        # The ODM holds no records (e.g. empty-rows after conversion): an empty export.
        records = tmp_path / "empty.csv"
        records.write_text("\n")
    result = import_snapshot(None, records, dictionary_file, tmp_path / "snapshots", name=project)
    snapshot = read_snapshot(result.path)  # verified against its manifest
    dictionary = ProjectDictionary(read_data_dictionary(dictionary_file).as_rows())
    record_id_field = dictionary.record_id_field
    header, rows = _csv_rows(records)

    for name, table in snapshot.tables.items():
        assert str(table[record_id_field].dtype) == "string", name  # IDs stay text

    indexes = {
        name: _table_index(table, record_id_field) for name, table in snapshot.tables.items()
    }
    held = absent_defaults = 0
    for row in rows:
        values = dict(zip(header, row, strict=True))
        if not any(cell.strip() for cell in row):
            continue  # a line of empty cells: nothing to hold
        key = _key(values, record_id_field)
        for column, value in values.items():
            if value == "" or column == record_id_field or column in KEYS:
                continue
            if column in ("redcap_data_access_group", "redcap_survey_identifier"):
                continue  # record-level, repeated in every table of the row
            spec = dictionary.column_spec(column)
            table_name = spec.form if spec is not None and spec.form else UNMAPPED_TABLE
            position = indexes[table_name].get(key)
            if position is None:
                assert _is_default(column, value, dictionary), (column, value, key)
                absent_defaults += 1
                continue
            table = snapshot.tables[table_name]
            typed = table[column].iloc[position]
            raw = (
                table[column + RAW_SUFFIX].iloc[position] if column + RAW_SUFFIX in table else None
            )
            missing = (
                table[column + MISSING_SUFFIX].iloc[position]
                if column + MISSING_SUFFIX in table
                else None
            )
            assert not pd.isna(typed) or raw == value or missing == value, (column, value, key)
            held += 1
    raw_cells = sum(
        int(table[c].notna().sum())
        for table in snapshot.tables.values()
        for c in table.columns
        if c.endswith(RAW_SUFFIX)
    )
    cast_findings = snapshot.findings["check_id"].str.startswith("cast.").sum()
    assert raw_cells == cast_findings  # every value kept as text is reported, and only those
    if rows:
        assert held + absent_defaults > 0


def test_decimal_comma_numbers_are_read_as_numbers(tmp_path: Path) -> None:
    records, dictionary = _inputs("decimal-comma", tmp_path)
    result = import_snapshot(None, records, dictionary, tmp_path, name="dc")
    table = read_snapshot(result.path).tables["demographics"]
    assert str(table["height"].dtype) == "Float64"
    assert table["height"].tolist() == pytest.approx([1.54, 1.84, 1.95, 1.61])
    assert table["weight"].tolist() == pytest.approx([52.3, 92.3, 123.4, 45.9])
    assert read_snapshot(result.path).findings.empty


def test_decimal_comma_and_dot_columns_agree(tmp_path: Path) -> None:
    records, dictionary = _inputs("decimal-comma-and-dot", tmp_path)
    result = import_snapshot(None, records, dictionary, tmp_path, name="dcd")
    table = read_snapshot(result.path).tables["demographics"]
    assert table["height_comma"].tolist() == table["height_dot"].tolist()
    assert table["weight_comma"].tolist() == table["weight_dot"].tolist()


def test_non_numeric_record_ids_stay_text(tmp_path: Path) -> None:
    records, dictionary = _inputs("nonnumeric-record-id", tmp_path)
    result = import_snapshot(None, records, dictionary, tmp_path, name="ids")
    table = read_snapshot(result.path).tables["demographics"]
    assert table["record_id"].tolist() == ["a", "b", "c"]
    assert str(table["record_id"].dtype) == "string"


def test_dag_record_ids_with_hyphens_and_groups_are_kept(tmp_path: Path) -> None:
    records, dictionary = _inputs("dag", tmp_path)
    result = import_snapshot(None, records, dictionary, tmp_path, name="dag")
    table = read_snapshot(result.path).tables["demographics"]
    assert table["record_id"].tolist() == ["331-1", "331-2", "332-3"]
    assert table["redcap_data_access_group"].tolist() == ["daga", "daga", "dagb"]


def test_cyrillic_text_survives_intact(tmp_path: Path) -> None:
    records, dictionary = _inputs("russian", tmp_path)
    cyrillic_in_export = {
        cell for row in _csv_rows(records)[1] for cell in row if CYRILLIC.search(cell)
    }
    assert cyrillic_in_export  # the ODM's records do hold Cyrillic
    result = import_snapshot(None, records, dictionary, tmp_path, name="ru")
    cyrillic_in_tables = {
        value
        for table in read_snapshot(result.path).tables.values()
        for column in table.columns
        if str(table[column].dtype) == "string"
        for value in table[column].dropna()
        if CYRILLIC.search(value)
    }
    assert cyrillic_in_tables == cyrillic_in_export


def test_foreign_csv_gives_findings_not_a_crash(tmp_path: Path) -> None:
    # russian/data.csv was written by R, not REDCap: a row-name column and NA for blanks.
    _, dictionary = _inputs("russian", tmp_path)
    result = import_snapshot(
        None, PROJECTS / "russian" / "data.csv", dictionary, tmp_path / "s", name="r"
    )
    assert result.findings > 0
    findings = read_snapshot(result.path).findings
    assert "cast.integer" in set(findings["check_id"]) or "cast.choice" in set(findings["check_id"])


def test_values_entered_before_validation_are_findings(tmp_path: Path) -> None:
    records, dictionary = _inputs("potentially-problematic-values", tmp_path)
    result = import_snapshot(None, records, dictionary, tmp_path, name="ppv")
    snapshot = read_snapshot(result.path)
    findings = snapshot.findings
    assert sorted(set(findings["field"])) == ["date_before_validation", "integer_before_validation"]
    assert set(findings["value"]) == {"before validation 1", "before validation 2"}
    table = snapshot.tables["form_1"]
    assert table["date_before_validation__raw"].tolist() == [
        "before validation 1",
        "before validation 2",
    ]


def test_empty_export_gives_empty_typed_tables(tmp_path: Path) -> None:
    records, dictionary = _inputs("empty-rows", tmp_path)
    result = import_snapshot(None, records, dictionary, tmp_path, name="empty")
    snapshot = read_snapshot(result.path)
    assert result.records == 0
    assert snapshot.tables
    assert all(len(table) == 0 for table in snapshot.tables.values())
    assert "demographics_complete" in snapshot.tables["demographics"].columns


def test_longitudinal_and_repeating_are_inferred_without_a_protocol(tmp_path: Path) -> None:
    import json

    records, dictionary = _inputs("longitudinal", tmp_path)
    longitudinal = import_snapshot(None, records, dictionary, tmp_path, name="long")
    manifest = json.loads((longitudinal.path / "manifest.json").read_text())
    assert (manifest["longitudinal"], manifest["repeating"], manifest["protocol"]) == (
        True,
        False,
        None,
    )
    records, dictionary = _inputs("repeating-instruments", tmp_path)
    repeating = import_snapshot(None, records, dictionary, tmp_path, name="rep")
    manifest = json.loads((repeating.path / "manifest.json").read_text())
    assert (manifest["longitudinal"], manifest["repeating"]) == (False, True)
    bp = read_snapshot(repeating.path).tables["bp"]
    assert bp["redcap_repeat_instrument"].unique().tolist() == ["bp"]
    assert bp["redcap_repeat_instance"].tolist() == [1, 2, 3, 1]
