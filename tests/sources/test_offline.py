"""Offline import of REDCap's web exports (raw CSV records + data dictionary) into snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studyman.cli import main
from studyman.errors import SnapshotError, SourceError
from studyman.protocol import load_protocol
from studyman.sources.offline import import_snapshot
from studyman.sources.snapshot import read_snapshot

PROTOCOL = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"
RECORDS = (
    "record_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,"
    "redcap_data_access_group,scr_date,age,sex,ae_term,ae_start\n"
    "S01-0001,screening_arm_1,,,s01,2025-03-01,UNK,1,,\n"
    "S02-0002,screening_arm_1,,,s02,2025-03-02,41,7,,\n"
    "S02-0002,logs_arm_1,adverse_events,1,s02,,,,Головная боль,2025-04-01\n"
)


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, Path]:
    """A small raw export and the study's dictionary with the web page's human headers."""
    protocol = load_protocol(PROTOCOL)
    assert protocol.redcap is not None
    records = tmp_path / "records.csv"
    records.write_text(RECORDS, encoding="utf-8")
    dictionary = tmp_path / "data_dictionary.csv"
    dictionary.write_text(
        protocol.redcap.dictionary.to_csv_text(human_headers=True), encoding="utf-8"
    )
    assert dictionary.read_text().lstrip('"').startswith("Variable / Field Name")
    return records, dictionary


def test_import_command_prints_the_snapshot_path(
    export: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records, dictionary = export
    out = tmp_path / "snapshots"
    code = main(
        [
            "import",
            *("--protocol", str(PROTOCOL), "--records", str(records)),
            *("--dictionary", str(dictionary), "--out", str(out), "--name", "first"),
        ]
    )
    assert code in (0, None)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [str(out / "first")]
    manifest = json.loads((out / "first" / "manifest.json").read_text())
    assert manifest["kind"] == "import"
    assert manifest["protocol"]["study_id"] == "CBT-ADJ"
    assert manifest["missing_data_codes"] == ["UNK", "NASK"]  # from the protocol's project
    assert manifest["source"]["records_file"] == "records.csv"
    assert manifest["conformance_findings"] == 0
    assert "conformance.parquet" in manifest["files"]


def test_import_types_values_keeps_codes_apart_and_reports_bad_ones(
    export: tuple[Path, Path], tmp_path: Path
) -> None:
    records, dictionary = export
    result = import_snapshot(load_protocol(PROTOCOL), records, dictionary, tmp_path, name="s")
    snapshot = read_snapshot(result.path)
    participant = snapshot.tables["participant"]
    assert participant["age__missing"].tolist()[0] == "UNK"
    assert participant["age"].tolist()[1] == 41
    assert participant["sex__raw"].tolist()[1] == "7"  # not a choice of sex
    adverse_events = snapshot.tables["adverse_events"]
    assert adverse_events["ae_term"].tolist() == ["Головная боль"]
    assert str(adverse_events["ae_start"].dtype) == "datetime64[us]"
    findings = snapshot.findings
    assert findings[["record_id", "field", "value", "check_id"]].values.tolist() == [
        ["S02-0002", "sex", "7", "cast.choice"]
    ]
    assert result.records == 2


def test_import_without_protocol_takes_missing_codes_as_an_option(
    export: tuple[Path, Path], tmp_path: Path
) -> None:
    records, dictionary = export
    plain = import_snapshot(None, records, dictionary, tmp_path, name="plain")
    coded = import_snapshot(
        None, records, dictionary, tmp_path, name="coded", missing_data_codes="UNK, Unknown"
    )
    assert read_snapshot(plain.path).tables["participant"]["age__raw"].tolist()[0] == "UNK"
    assert plain.findings == coded.findings + 1
    assert json.loads((plain.path / "manifest.json").read_text())["protocol"] is None


def test_import_never_overwrites_a_snapshot(export: tuple[Path, Path], tmp_path: Path) -> None:
    records, dictionary = export
    import_snapshot(None, records, dictionary, tmp_path, name="same")
    with pytest.raises(SnapshotError, match="never overwritten"):
        import_snapshot(None, records, dictionary, tmp_path, name="same")


def test_missing_or_damaged_files_are_one_line_errors(
    export: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, dictionary = export
    with pytest.raises(SourceError, match="records export not found"):
        import_snapshot(None, tmp_path / "nope.csv", dictionary, tmp_path / "s")
    damaged = tmp_path / "damaged.csv"
    damaged.write_text(RECORDS + "S03-0003,screening_arm_1\n")
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "import",
                *("--records", str(damaged), "--dictionary", str(dictionary)),
                *("--out", str(tmp_path / "s")),
            ]
        )
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ")
    assert "damaged.csv" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            RECORDS.encode() + b"S03-0003,screening_arm_1\n",
            r"line 5: 2 cells for 10 columns; the file is damaged or truncated",
            id="truncated-row",
        ),
        pytest.param(
            RECORDS.encode() + b'S03-0003,screening_arm_1,,,s03,"2025-0',
            r"line 5: unexpected end of data",
            id="truncated-in-quotes",
        ),
        pytest.param(
            RECORDS.replace("Головная боль", "Céphalée").encode("latin-1", errors="replace"),
            r"not UTF-8 text \(line 4, byte 0xe9\)",
            id="latin-1",
        ),
        pytest.param(RECORDS.encode("utf-16"), "UTF-16 text", id="utf-16"),
        pytest.param(
            RECORDS.replace("sex,ae_term", "sex,sex", 1).encode(),
            r"line 1: the CSV header repeats column\(s\) sex",
            id="repeated-column",
        ),
    ],
)
def test_a_damaged_records_export_is_refused_naming_file_and_line(
    export: tuple[Path, Path], tmp_path: Path, content: bytes, expected: str
) -> None:
    _, dictionary = export
    records = tmp_path / "bad.csv"
    records.write_bytes(content)
    with pytest.raises(SourceError, match=expected) as caught:
        import_snapshot(None, records, dictionary, tmp_path / "snapshots")
    assert str(caught.value).startswith(f"{records}: ")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "snapshots").exists() or not list((tmp_path / "snapshots").iterdir())


def test_a_directory_given_as_records_export_is_a_clear_error(
    export: tuple[Path, Path], tmp_path: Path
) -> None:
    _, dictionary = export
    with pytest.raises(SourceError, match=r"cannot read the records export \(Is a directory\)"):
        import_snapshot(None, tmp_path, dictionary, tmp_path / "snapshots")
