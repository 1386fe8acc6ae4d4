"""The ``studyman`` entry point: user errors are one line on stderr with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.cli import main
from studyman.protocol.loader import load_protocol
from studyman.synthetic import generate_trial, write_trial

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"
PROTOCOL = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"


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


def test_a_mistyped_option_is_a_usage_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["analyze", "--bogus"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "No such option: --bogus" in error
    assert "Traceback" not in error


def test_a_project_without_records_validates_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # REDCap's export of a project with no records yet: the header line alone
    trial = generate_trial(load_protocol(PROTOCOL), n_participants=4, seed=7)
    written = write_trial(trial, tmp_path / "generated")
    header = written["records"].read_text(encoding="utf-8").splitlines()[0]
    records = tmp_path / "records.csv"
    records.write_text(header + "\n", encoding="utf-8")
    main(
        [
            "import",
            "--records", str(records),
            "--dictionary", str(PROTOCOL / "redcap" / "data_dictionary.csv"),
            "--protocol", str(PROTOCOL),
            "--out", str(tmp_path / "snapshots"),
            "--name", "empty",
        ]
    )  # fmt: skip
    snapshot = tmp_path / "snapshots" / "empty"
    main(
        [
            "validate",
            "--protocol", str(PROTOCOL),
            "--snapshot", str(snapshot),
            "--out", str(tmp_path / "validation"),
        ]
    )  # fmt: skip
    queries = (tmp_path / "validation" / "queries.csv").read_text(encoding="utf-8")
    assert "Q-" not in queries  # no participants, no queries
    main(
        [
            "report", "dsmb",
            "--session", "open",
            "--snapshot", str(snapshot),
            "--protocol", str(PROTOCOL),
            "--out", str(tmp_path / "dsmb"),
            "--no-pdf",
        ]
    )  # fmt: skip
    html = next((tmp_path / "dsmb").glob("dsmb-open-*.html")).read_text(encoding="utf-8")
    assert "Adverse events" in html
    assert "Traceback" not in capsys.readouterr().err
