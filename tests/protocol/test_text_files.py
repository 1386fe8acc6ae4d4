"""Reading hand-edited text files: UTF-8 decoding and strict YAML, one clear error each."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.errors import ProtocolError
from studyman.protocol.text_files import (
    CsvTableError,
    TextEncodingError,
    decode_spreadsheet_csv,
    decode_utf8,
    parse_csv_table,
    parse_yaml,
    read_yaml,
)


def test_utf8_with_and_without_byte_order_mark_decodes_to_the_same_text() -> None:
    assert decode_utf8("a: é\n".encode()) == decode_utf8(b"\xef\xbb\xbf" + "a: é\n".encode())


def test_latin1_bytes_are_refused_naming_the_line_and_byte() -> None:
    with pytest.raises(TextEncodingError, match=r"line 3, byte 0xe9"):
        decode_utf8("a: 1\nb: 2\nc: Société\n".encode("latin-1"))


def test_utf16_text_is_named_as_utf16() -> None:
    with pytest.raises(TextEncodingError, match="UTF-16 text, not UTF-8"):
        decode_utf8("a: 1\n".encode("utf-16"))


def test_yaml_syntax_error_is_one_line_with_line_and_column() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_yaml("a: 1\nb:\n\tc: 2\n", file="plan.yaml")
    assert caught.value.file == "plan.yaml"
    assert caught.value.key == "line 3, column 1"
    assert "\n" not in str(caught.value)


def test_a_key_given_twice_is_refused_with_both_lines() -> None:
    with pytest.raises(ProtocolError, match=r"key 'version' repeats \(first on line 2\)") as caught:
        parse_yaml("study: x\nversion: '1'\nversion: '2'\n", file="plan.yaml")
    assert caught.value.key == "version (line 3)"


def test_an_alias_that_contains_itself_is_refused_not_a_recursion_crash() -> None:
    with pytest.raises(ProtocolError, match="alias refers to the node that contains it"):
        parse_yaml("a: &x [1, *x]\n", file="plan.yaml")


def test_a_repeated_alias_without_a_cycle_is_accepted() -> None:
    _, content = parse_yaml("a: &x [1, 2]\nb: *x\n", file="plan.yaml")
    assert content == {"a": [1, 2], "b": [1, 2]}


def test_dates_stay_text_for_the_model_to_check() -> None:
    _, content = parse_yaml("date: 2025-02-30\n", file="plan.yaml")
    assert content == {"date": "2025-02-30"}


def test_read_yaml_names_a_directory_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match=r"cannot read the plan \(Is a directory\)") as caught:
        read_yaml(tmp_path, what="plan")
    assert caught.value.file == str(tmp_path)
    with pytest.raises(ProtocolError, match="No such file"):
        read_yaml(tmp_path / "none.yaml", what="plan")


def test_read_yaml_names_the_file_of_latin1_text(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_bytes("title: Société\n".encode("latin-1"))
    with pytest.raises(ProtocolError, match=r"not UTF-8 text \(line 1, byte 0xe9\)") as caught:
        read_yaml(path, what="plan")
    assert caught.value.file == str(path)


def test_csv_table_keeps_rows_skips_blank_ones_and_names_a_damaged_line() -> None:
    header, rows = parse_csv_table("id,arm\nS1,1\n\nS2,2\n", expected="id, arm")
    assert header == ["id", "arm"]
    assert rows == [["S1", "1"], ["S2", "2"]]
    with pytest.raises(CsvTableError, match=r"^line 3: 1 cells for 2 columns"):
        parse_csv_table("id,arm\nS1,1\nS2\n", expected="id, arm")
    with pytest.raises(CsvTableError, match=r"^line 3: not a well-formed CSV row"):
        parse_csv_table('id,arm\nS1,1\nS2,"2\n', expected="id, arm")
    with pytest.raises(CsvTableError, match=r"^empty file: expected a header \(id, arm\)"):
        parse_csv_table("", expected="id, arm")


def test_spreadsheet_csv_is_utf8_or_windows_1252_and_utf16_is_refused() -> None:
    assert decode_spreadsheet_csv("a,é\n".encode()) == "a,é\n"
    assert decode_spreadsheet_csv(b"\xef\xbb\xbfa,b\n") == "a,b\n"
    assert decode_spreadsheet_csv("a,é €\n".encode("cp1252")) == "a,é €\n"  # Excel on Windows
    with pytest.raises(TextEncodingError, match=r"UTF-16 text .*save the file as CSV UTF-8"):
        decode_spreadsheet_csv("a,b\n".encode("utf-16"))
