"""`studyman protocol check` and `show`, run through the real command line entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.cli import main


def _run(argv: list[str]) -> int:
    """Exit status as the console script gives it (``sys.exit(main())``)."""
    try:
        result = main(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return result if isinstance(result, int) else 0


def test_check_of_the_reference_study_exits_zero(
    reference_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["protocol", "check", str(reference_study)]) == 0
    assert "CBT-ADJ v1.2: conformant" in capsys.readouterr().out


def test_check_against_a_drifted_dictionary_exits_one(
    reference_study: Path, study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dictionary = study_copy / "redcap" / "data_dictionary.csv"
    dictionary.write_text(
        dictionary.read_text(encoding="utf-8").replace(
            '"1, CBT + adjunct | 2, CBT alone"', '"1, CBT + adjunct | 3, CBT alone"'
        ),
        encoding="utf-8",
    )
    code = _run(["protocol", "check", str(reference_study), "--dictionary", str(dictionary)])
    out = capsys.readouterr().out
    assert code == 1
    assert "conformance.field_choices" in out
    assert "NOT conformant (0 critical, 1 major" in out


def test_check_of_a_malformed_protocol_is_one_error_line_and_exit_two(
    study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = study_copy / "protocol.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "window: {start: 25, end: 31}", "window: {start: 31, end: 25}"
        ),
        encoding="utf-8",
    )
    assert _run(["protocol", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {path}: visits[4].window.start")


def test_check_of_a_damaged_dsmb_history_is_one_error_naming_file_key_and_line(
    study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = study_copy / "dsmb-history.yaml"
    history.write_text("meetings:\n  - date: not-a-date\n", encoding="utf-8")
    assert _run(["protocol", "check", str(study_copy / "protocol.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {history}: meetings[0].date (line 2)")


def test_show_summarises_arms_sites_and_schedule(
    reference_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["protocol", "show", str(reference_study)]) == 0
    out = capsys.readouterr().out
    for text in ("CBT + adjunct", "S04", "week_12_arm_1", "Hy's law", "-28..-1"):
        assert text in out


def test_check_prints_markup_like_text_in_a_dictionary_as_written(
    reference_study: Path, study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # found by the fuzzer: "[/x]" in a dictionary cell crashed the findings table (rich markup)
    dictionary = study_copy / "redcap" / "data_dictionary.csv"
    text = dictionary.read_text(encoding="utf-8")
    assert ",integer,16,90," in text
    dictionary.write_text(text.replace(",integer,16,90,", ",[/x],16,90,", 1), encoding="utf-8")
    code = _run(["protocol", "check", str(reference_study), "--dictionary", str(dictionary)])
    out = capsys.readouterr().out
    assert code == 1
    assert "'[/x]'" in out
