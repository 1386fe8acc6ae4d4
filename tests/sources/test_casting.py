"""Typing REDCap export text by the data dictionary (studyman.sources.casting, via TidyBuilder)."""

from __future__ import annotations

import io
from datetime import timedelta

import pandas as pd
import pytest

from studyman.sources.casting import (
    CastKind,
    ColumnSpec,
    ProjectDictionary,
    cast_column,
    parse_choice_codes,
)
from studyman.sources.offline import parse_records_csv
from studyman.sources.tidy import TidyBuilder


def _field(
    name: str, form: str, field_type: str, validation: str = "", choices: str = ""
) -> dict[str, str]:
    return {
        "field_name": name,
        "form_name": form,
        "field_type": field_type,
        "text_validation_type_or_show_slider_number": validation,
        "select_choices_or_calculations": choices,
    }


DICTIONARY = ProjectDictionary(
    [
        _field("record_id", "visit", "text"),
        _field("visit_date", "visit", "text", "date_ymd"),
        _field("visit_time", "visit", "text", "time"),
        _field("aware_dt", "visit", "text", "datetime_ymd"),
        _field("age", "visit", "text", "integer"),
        _field("weight", "visit", "text", "number_1dp"),
        _field("height", "visit", "text", "number_comma_decimal"),
        _field("done", "visit", "yesno"),
        _field("sex", "visit", "radio", choices="1, Female | 2, Male | 3, Other"),
        _field("crit", "visit", "checkbox", choices="1, Death | 2, Hospital"),
        _field("intro", "visit", "descriptive"),
        _field("total", "visit", "calc", choices="[age] + 1"),
        _field("note", "visit", "notes"),
    ]
)


def _build(text: str, missing_codes: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    builder = TidyBuilder(DICTIONARY, missing_codes)
    builder.add_batch(parse_records_csv(text, "test"))
    result = builder.finish()
    return result.tables["visit"], result.findings


HEADER = (
    "record_id,visit_date,visit_time,aware_dt,age,weight,height,done,sex,crit___1,crit___2,"
    "total,note,visit_complete\n"
)


def test_values_cast_to_the_types_the_dictionary_gives() -> None:
    table, findings = _build(
        HEADER + '007,2024-02-29,08:05,2024-03-01 13:45,42,70.5,"1,54",1,2,1,0,43,Привет,2\n'
    )
    row = table.iloc[0]
    assert row["record_id"] == "007"  # an ID is text: leading zeros kept
    assert row["visit_date"] == pd.Timestamp("2024-02-29")
    assert row["visit_time"] == timedelta(hours=8, minutes=5)
    assert row["aware_dt"] == pd.Timestamp("2024-03-01 13:45")
    assert row["age"] == 42
    assert row["weight"] == pytest.approx(70.5)
    assert row["height"] == pytest.approx(1.54)  # decimal comma read as a number
    assert row["done"] == 1
    assert row["sex"] == "2"  # codes stay codes
    assert (row["crit___1"], row["crit___2"]) == (1, 0)
    assert row["total"] == pytest.approx(43.0)
    assert row["note"] == "Привет"
    assert row["visit_complete"] == 2
    assert "intro" not in table.columns
    assert str(table["age"].dtype) == "Int64"
    assert str(table["height"].dtype) == "Float64"
    assert str(table["record_id"].dtype) == "string"
    assert findings.empty


def test_value_that_does_not_cast_is_kept_as_text_and_reported() -> None:
    table, findings = _build(
        HEADER + "1,2021-02-30,25:00,yesterday,forty,7O.5,1.5.4,2,9,1,x,n/a,,1\n"
    )
    row = table.iloc[0]
    for column, text in [
        ("visit_date", "2021-02-30"),
        ("visit_time", "25:00"),
        ("aware_dt", "yesterday"),
        ("age", "forty"),
        ("weight", "7O.5"),
        ("height", "1.5.4"),
        ("done", "2"),
        ("sex", "9"),
        ("crit___2", "x"),
        ("total", "n/a"),
    ]:
        assert pd.isna(row[column]), column
        assert row[column + "__raw"] == text, column
    assert list(findings["field"]) == [
        "visit_date",
        "visit_time",
        "aware_dt",
        "age",
        "weight",
        "height",
        "done",
        "sex",
        "crit___2",
        "total",
    ]
    assert set(findings["record_id"]) == {"1"}
    assert findings.loc[findings["field"] == "age", "check_id"].item() == "cast.integer"
    assert findings.loc[findings["field"] == "sex", "check_id"].item() == "cast.choice"
    assert "forty" in findings.loc[findings["field"] == "age", "message"].item()


def test_missing_data_codes_are_kept_apart_and_do_not_break_numbers() -> None:
    table, findings = _build(
        HEADER + "1,2024-01-01,,,UNK,NASK,,,,0,0,,,2\n2,2024-01-02,,,30,60.5,,,,0,0,,,2\n",
        missing_codes=("UNK", "NASK"),
    )
    assert pd.isna(table["age"][0])
    assert table["age"][1] == 30
    assert str(table["age"].dtype) == "Int64"
    assert table["age__missing"][0] == "UNK"
    assert table["weight__missing"][0] == "NASK"
    assert pd.isna(table["age__missing"][1])
    assert "age__raw" not in table.columns
    assert findings.empty


def test_missing_data_code_without_the_setting_is_a_finding() -> None:
    table, findings = _build(HEADER + "1,,,,UNK,,,,,0,0,,,2\n")
    assert table["age__raw"][0] == "UNK"
    assert list(findings["check_id"]) == ["cast.integer"]


def test_rows_of_empty_cells_are_dropped_and_a_row_without_id_is_reported() -> None:
    table, findings = _build(HEADER + ",,,,,,,,,,,,,\n1,,,,5,,,,,0,0,,,0\n,,,,7,,,,,0,0,,,0\n")
    assert len(table) == 2
    assert table["age"].tolist() == [5, 7]
    assert pd.isna(table["record_id"][1])
    assert list(findings["check_id"]) == ["import.missing_record_id"]


def test_unknown_columns_are_kept_in_an_unmapped_table_and_reported() -> None:
    builder = TidyBuilder(DICTIONARY)
    builder.add_batch(parse_records_csv("record_id,age,mystery\n1,3,abc\n", "test"))
    result = builder.finish()
    assert result.tables["_unmapped"]["mystery"].tolist() == ["abc"]
    assert list(result.findings["check_id"]) == ["import.unknown_column"]


def test_batches_give_the_same_tables_and_findings_as_one_file() -> None:
    rows = [f"{i},2024-01-{i:02d},,,{'x' if i % 3 == 0 else i},,,,,0,0,,,2\n" for i in range(1, 10)]
    whole = TidyBuilder(DICTIONARY)
    whole.add_batch(parse_records_csv(HEADER + "".join(rows), "whole"))
    batched = TidyBuilder(DICTIONARY)
    for start in range(0, 9, 2):
        batched.add_batch(parse_records_csv(HEADER + "".join(rows[start : start + 2]), "batch"))
    one, many = whole.finish(), batched.finish()
    pd.testing.assert_frame_equal(one.tables["visit"], many.tables["visit"])
    pd.testing.assert_frame_equal(one.findings, many.findings)
    assert len(one.findings) == 3


def test_batches_with_different_columns_are_refused() -> None:
    from studyman.errors import SourceError

    builder = TidyBuilder(DICTIONARY)
    builder.add_batch(parse_records_csv("record_id,age\n1,3\n", "first"))
    with pytest.raises(SourceError, match="disagree on columns"):
        builder.add_batch(parse_records_csv("record_id,weight\n2,3.5\n", "second"))


def test_short_csv_row_is_a_source_error() -> None:
    from studyman.errors import SourceError

    with pytest.raises(SourceError, match="not a well-formed"):
        parse_records_csv("record_id,age,sex\n1,2\n", "damaged.csv")


def test_choice_codes_parse_at_the_first_comma() -> None:
    assert parse_choice_codes("1, Yes | 0, No") == ("1", "0")
    assert parse_choice_codes("a, Label, with comma|b,B") == ("a", "b")


def test_survey_not_completed_marker_is_missing_without_finding() -> None:
    spec = ColumnSpec("s_timestamp", "s_timestamp", "s", CastKind.SURVEY_TIMESTAMP)
    result = cast_column(pd.Series(["[not completed]", "2024-10-25 10:16:01"]), spec)
    assert pd.isna(result.typed[0])
    assert result.typed[1] == pd.Timestamp("2024-10-25 10:16:01")
    assert result.raw is None


def test_csv_text_is_read_without_type_guessing() -> None:
    frame = parse_records_csv(io.StringIO("record_id,flag\nF,NA\n").getvalue(), "t")
    assert frame.loc[0, "record_id"] == "F"
    assert frame.loc[0, "flag"] == "NA"
