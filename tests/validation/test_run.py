"""validate_study's reading of a flat CSV export: the offline import's strict reader."""

from __future__ import annotations

from pathlib import Path

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
