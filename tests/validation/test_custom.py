"""Reading the custom checks file: a malformed file is one line naming the file and line/key."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.errors import ValidationError
from studyman.validation.custom import load_custom_checks

CHECKS = Path(__file__).parents[2] / "protocols" / "cbt-adjunct" / "checks.yaml"


def _variant(tmp_path: Path, old: str, new: str, encoding: str = "utf-8") -> Path:
    text = CHECKS.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "checks.yaml"
    path.write_bytes(text.replace(old, new, 1).encode(encoding))
    return path


def test_the_study_checks_file_loads() -> None:
    assert "CUS-BP-ORDER" in {check.definition.check_id for check in load_custom_checks(CHECKS)}


@pytest.mark.parametrize(
    ("old", "new", "encoding", "expected"),
    [
        pytest.param(
            "    severity: major\n",
            "    severity: major\n    severity: minor\n",
            "utf-8",
            r"checks\[0\]\.severity \(line \d+\): key 'severity' repeats",
            id="repeated-key",
        ),
        pytest.param(
            "    severity: major\n",
            "\tseverity: major\n",
            "utf-8",
            r"line \d+, column 1: YAML syntax error",
            id="tab",
        ),
        pytest.param(
            "Diastolic blood",
            "Diastolique élevée blood",
            "latin-1",
            r"not UTF-8 text \(line \d+, byte 0xe9\)",
            id="latin-1",
        ),
        pytest.param("Diastolic", "Diastolic", "utf-16", "UTF-16 text", id="utf-16"),
    ],
)
def test_a_malformed_checks_file_is_one_line_naming_file_and_line(
    tmp_path: Path, old: str, new: str, encoding: str, expected: str
) -> None:
    path = _variant(tmp_path, old, new, encoding)
    with pytest.raises(ValidationError, match=expected) as caught:
        load_custom_checks(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


def test_a_directory_given_as_checks_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"cannot read the custom checks \(Is a directory\)"):
        load_custom_checks(tmp_path)
