"""The CSV writer follows REDCap's raw CSV export format, and the command writes the files."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pandas as pd
import pytest

from studyman.cli import main
from studyman.protocol import load_protocol
from studyman.synthetic import generate_trial, redcap_csv_text, write_trial

STUDY = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"


def test_values_are_quoted_only_when_they_hold_comma_space_quote_or_newline() -> None:
    frame = pd.DataFrame(
        {"a": ["plain", "two words", 'say "hi"', "x,y", "line\nbreak", ""], "b": ["1"] * 6},
        dtype=object,
    )
    text = redcap_csv_text(frame)
    assert text == ('a,b\nplain,1\n"two words",1\n"say ""hi""",1\n"x,y",1\n"line\nbreak",1\n,1\n')
    assert list(csv.reader(io.StringIO(text)))[1:] == [
        list(row) for row in frame.itertuples(index=False)
    ]


def test_written_records_read_back_unchanged(tmp_path: Path) -> None:
    trial = generate_trial(load_protocol(STUDY), n_participants=60, seed=2, plant_errors=True)
    paths = write_trial(trial, tmp_path / "out")
    raw = paths["records"].read_bytes()
    assert raw.endswith(b"\n")
    assert b"\r" not in raw
    back = pd.read_csv(paths["records"], dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(back, trial.records.astype(str), check_dtype=False)
    truth = pd.read_csv(paths["planted_errors"], dtype=str, keep_default_na=False)
    assert len(truth) == len(trial.planted_errors) > 0
    listed = pd.read_csv(paths["randomization"], dtype=str, keep_default_na=False)
    assert list(listed["record_id"]) == list(trial.randomization["record_id"])


def test_generate_command_writes_the_three_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen"
    argv = [
        "generate",
        "--protocol",
        str(STUDY),
        "--participants",
        "40",
        "--seed",
        "5",
        "--plant-errors",
        "--out",
        str(out),
    ]
    main(argv)
    printed = capsys.readouterr().out
    assert "40 randomised" in printed
    assert {p.name for p in out.iterdir()} == {
        "records.csv",
        "randomization.csv",
        "planted_errors.csv",
    }
    first = hashlib.sha256((out / "records.csv").read_bytes()).hexdigest()
    main([*argv[:-1], str(tmp_path / "again")])
    assert hashlib.sha256((tmp_path / "again" / "records.csv").read_bytes()).hexdigest() == first


def test_generate_command_rejects_a_bad_dropout_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--protocol", str(STUDY), "--dropout", "often", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "mar or mnar" in capsys.readouterr().err
