"""The ``studyman`` entry point: user errors are one line on stderr with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.cli import main

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"


def test_an_output_path_that_cannot_be_created_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sap = tmp_path / "sap.yaml"
    sap.write_bytes((ANALYSIS / "sap.yaml").read_bytes())
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["sap", "lock", "--sap", str(sap), "--lock", str(blocker / "sap.lock.json")])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {blocker}")
    assert "Not a directory" in error or "File exists" in error
    assert "Traceback" not in error
    assert error.count("\n") == 1
    assert set(tmp_path.iterdir()) == {sap, blocker}  # nothing half-written left behind
