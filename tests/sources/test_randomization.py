"""Reading the unblinded randomisation list (CSV or Parquet) in one place."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from studyman.errors import SourceError
from studyman.sources.randomization import read_randomization_list


def test_csv_list_is_read_as_stripped_text_with_codes_and_names_kept(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_text(
        "record_id,rand_number,rand_arm,rand_stratum\n"
        " S01-0001 ,S01S001, 1 ,S01-severe\n"
        "S01-0002,S01M001,CBT alone,S01-moderate\n"
        "S01-0003,S01M002,,S01-moderate\n"
    )
    frame = read_randomization_list(path)
    assert frame.columns.tolist() == ["record_id", "rand_arm", "rand_number", "rand_stratum"]
    assert frame["record_id"].tolist() == ["S01-0001", "S01-0002", "S01-0003"]
    assert frame["rand_arm"].tolist() == ["1", "CBT alone", ""]
    assert frame["rand_stratum"].tolist() == ["S01-severe", "S01-moderate", "S01-moderate"]


def test_csv_with_a_byte_order_mark_finds_the_record_id_column(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_bytes("\ufeffrecord_id,rand_arm\nS01-0001,2\n".encode())
    assert read_randomization_list(path)["record_id"].tolist() == ["S01-0001"]


def test_parquet_list_gives_integer_codes_as_text_without_a_decimal(tmp_path: Path) -> None:
    path = tmp_path / "randomization.parquet"
    pd.DataFrame({"record_id": ["S01-0001", "S01-0002"], "rand_arm": [1.0, 2.0]}).to_parquet(path)
    frame = read_randomization_list(path)
    assert frame["record_id"].tolist() == ["S01-0001", "S01-0002"]
    assert frame["rand_arm"].tolist() == ["1", "2"]


def test_adam_style_columns_are_accepted_and_their_names_recorded(tmp_path: Path) -> None:
    path = tmp_path / "adsl.parquet"
    pd.DataFrame({"USUBJID": ["S01-0001"], "TRT01P": ["CBT + adjunct"]}).to_parquet(path)
    frame = read_randomization_list(path)
    assert frame[["record_id", "rand_arm"]].values.tolist() == [["S01-0001", "CBT + adjunct"]]
    assert frame.attrs == {"record_id_column": "USUBJID", "arm_column": "TRT01P"}


def test_rows_without_a_record_id_are_unused_slots_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_text("record_id,rand_number,rand_arm\nS01-0001,S01S001,1\n  ,S01S002,2\n,,\n")
    assert read_randomization_list(path)["record_id"].tolist() == ["S01-0001"]


def test_missing_arm_column_error_names_the_file_and_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_text("record_id,group\nS01-0001,1\n")
    with pytest.raises(SourceError) as caught:
        read_randomization_list(path)
    message = str(caught.value)
    assert str(path) in message
    assert "rand_arm or arm or TRT01P" in message
    assert "found: record_id, group" in message


def test_missing_record_id_column_error_names_the_accepted_columns(tmp_path: Path) -> None:
    path = tmp_path / "randomization.parquet"
    pd.DataFrame({"participant": ["S01-0001"], "rand_arm": ["1"]}).to_parquet(path)
    with pytest.raises(SourceError, match=r"record_id or USUBJID or SUBJID.*found: participant"):
        read_randomization_list(path)


def test_a_participant_listed_twice_is_refused_naming_the_participant(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_text("record_id,rand_arm\nS01-0001,1\nS01-0002,2\nS01-0001 ,1\n")
    with pytest.raises(SourceError, match=r"randomization\.csv: 1 participant\(s\) listed twice"):
        read_randomization_list(path)
    with pytest.raises(SourceError, match=r"S01-0001; a randomisation list has one row"):
        read_randomization_list(path)


def test_a_missing_file_is_a_source_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(SourceError, match=r"nowhere\.csv: randomisation list not found"):
        read_randomization_list(path)


def test_an_unreadable_parquet_file_is_a_source_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "randomization.parquet"
    path.write_text("record_id,rand_arm\nS01-0001,1\n")
    with pytest.raises(SourceError, match=r"randomization\.parquet: not a readable"):
        read_randomization_list(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"", "empty file: expected a header", id="empty"),
        pytest.param(
            b"record_id,rand_arm,rand_arm\nS01-0001,1,2\n",
            r"column\(s\) rand_arm appear more than once",
            id="repeated-arm-column",
        ),
        pytest.param(
            b"record_id,rand_arm\nS01-0001,1\nS01-0002,2,extra\n",
            "line 3: 3 cells for 2 columns; the file is damaged or truncated",
            id="surplus-cells",
        ),
        pytest.param(
            b"record_id,rand_number,rand_arm\nS01-0001,S01S001,1\nS01-0002,S0\n",
            "line 3: 2 cells for 3 columns",
            id="truncated-row",
        ),
        pytest.param(
            b'record_id,rand_arm\nS01-0001,1\nS01-0002,"CBT al',
            r"line 3: not a well-formed CSV row",
            id="cut-inside-quotes",
        ),
        pytest.param(
            "record_id,rand_arm\nS01-0001,Société\n".encode("latin-1"),
            r"not UTF-8 text \(line 2, byte 0xe9\)",
            id="latin-1",
        ),
        pytest.param(
            "record_id,rand_arm\nS01-0001,1\n".encode("utf-16"), "UTF-16 text", id="utf-16"
        ),
    ],
)
def test_a_damaged_csv_list_is_one_line_naming_file_and_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "randomization.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=expected) as caught:
        read_randomization_list(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


def test_the_protocols_record_id_and_arm_fields_are_accepted_headers(tmp_path: Path) -> None:
    from studyman.protocol.loader import load_protocol

    root = Path(__file__).resolve().parents[2]
    protocol = load_protocol(root / "protocols" / "cbt-adjunct" / "protocol.yaml")
    renamed = protocol.model_copy(
        update={
            "study": protocol.study.model_copy(update={"record_id_field": "subject_id"}),
            "arms": protocol.arms.model_copy(update={"field": "allocation"}),
        }
    )
    path = tmp_path / "randomization.csv"
    path.write_text("subject_id,allocation,block\nS01-0001,2,A\n")
    frame = read_randomization_list(path, renamed)
    assert frame.columns.tolist() == ["record_id", "rand_arm", "block"]
    assert frame.iloc[0].tolist() == ["S01-0001", "2", "A"]
    assert frame.attrs["record_id_column"] == "subject_id"
    assert frame.attrs["arm_column"] == "allocation"
    # today's headers stay accepted with the renamed protocol
    path.write_text("record_id,rand_arm\nS01-0002,1\n")
    assert read_randomization_list(path, renamed)["record_id"].tolist() == ["S01-0002"]
    # a missing header is named, with the file
    path.write_text("subject_id,group\nS01-0001,1\n")
    with pytest.raises(SourceError) as caught:
        read_randomization_list(path, renamed)
    assert str(caught.value).startswith(f"{path}: no arm column (allocation or rand_arm")
