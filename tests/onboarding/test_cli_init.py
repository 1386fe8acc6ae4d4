"""`studyman protocol init` and `protocol check` of a draft, through the real entry point."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from studyman.cli import main
from studyman.sources.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
REDCAP = ROOT / "protocols" / "cbt-adjunct" / "redcap"
ANSWERS = ROOT / "tests" / "data" / "onboarding" / "cbt-adjunct-answers.yaml"
SIMPLE = ROOT / "tests" / "data" / "redcap-projects" / "simple" / "project.xml"
TOKEN = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00"


def _run(argv: list[str]) -> int:
    """Exit status as the console script gives it (``sys.exit(main())``)."""
    try:
        result = main(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return result if isinstance(result, int) else 0


def _exported_options() -> list[str]:
    files = {
        "--dictionary": "data_dictionary.csv",
        "--events": "events.csv",
        "--mapping": "instrument_event_mapping.csv",
        "--arms": "arms.csv",
        "--instruments": "instruments.csv",
        "--repeating": "repeating_instruments.csv",
        "--dags": "dags.csv",
        "--users": "users.csv",
        "--project-info": "project.json",
    }
    return [part for option, name in files.items() for part in (option, str(REDCAP / name))]


def test_init_from_exports_with_the_answers_gives_a_conformant_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    argv = ["protocol", "init", *_exported_options(), "--answers", str(ANSWERS), "--out", str(out)]
    assert _run(argv) == 0
    assert "no decision left" in capsys.readouterr().out
    assert _run(["protocol", "check", str(out)]) == 0
    assert "CBT-ADJ v1.2: conformant (0 critical, 0 major" in capsys.readouterr().out


def test_check_of_a_draft_lists_its_decisions_in_plain_words_and_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDYMAN_REDCAP_TOKEN", TOKEN)
    out = tmp_path / "study"
    with EmulatorServer(SIMPLE, tokens={TOKEN: "api"}) as server:
        assert _run(["protocol", "init", "--url", server.url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "decision(s) left: `studyman protocol check" in printed
    assert _run(["protocol", "check", str(out)]) == 1
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert "  arms.field: choose the field that holds the allocation (a radio or dropdown)" in lines
    assert any(line.startswith("  enrolment.target: the number of participants") for line in lines)
    assert "Traceback" not in printed
    assert lines[-1].startswith("draft: ")
    assert TOKEN not in printed


def test_init_from_a_live_project_with_a_token_file_writes_no_token_anywhere(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    out = tmp_path / "study"
    with EmulatorServer(REDCAP, tokens={TOKEN: "admin"}) as server:
        argv = ["protocol", "init", "--url", server.url, "--token-file", str(token_file)]
        assert _run([*argv, "--out", str(out)]) == 0
        # A second run into the same folder is refused in one line.
        assert _run([*argv, "--out", str(out)]) == 2
    captured = capfd.readouterr()
    assert f"error: {out}: exists already" in captured.err
    for text in (captured.out, captured.err):
        assert TOKEN not in text
        assert TOKEN.lower() not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.lower() not in path.read_text(encoding="utf-8").lower()
    assert (out / "redcap" / "data_dictionary.csv").is_file()


def test_a_token_file_open_to_others_is_refused_before_anything_is_read(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, encoding="utf-8")
    token_file.chmod(0o644)
    argv = ["protocol", "init", "--url", "http://127.0.0.1:9/api/", "--token-file"]
    assert _run([*argv, str(token_file), "--out", str(tmp_path / "study")]) == 2
    err = capfd.readouterr().err
    assert "chmod 600" in err
    assert TOKEN not in err
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--out", "x"],  # neither source
        ["--url", "http://127.0.0.1:9/api/", "--dictionary", "d.csv", "--out", "x"],
        ["--url", "http://127.0.0.1:9/api/", "--events", "e.csv", "--out", "x"],
    ],
)
def test_a_wrong_mix_of_sources_is_one_line(
    argv: list[str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(["protocol", "init", *argv]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: protocol init:")
    assert "\n" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("data_dictionary.csv", lambda t: t.replace(",radio,", ",wheel,", 1)),
        ("data_dictionary.csv", lambda t: "\ufffe" + t[:200]),
        ("project.json", lambda t: t[: len(t) // 2]),
        ("instrument_event_mapping.csv", lambda t: t + "1,week_99_arm_1,hamd17\n"),
        ("repeating_instruments.csv", lambda t: t + "logs_arm_1,no_such_form,\n"),
        ("dags.csv", lambda t: t.replace("data_access_group_name", "group")),
    ],
)
def test_a_damaged_export_is_one_line_naming_the_given_file(
    name: str,
    damage: Callable[[str], str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    export = tmp_path / "export"
    shutil.copytree(REDCAP, export)
    (export / name).write_text(damage((export / name).read_text(encoding="utf-8")), "utf-8")
    options = [part.replace(str(REDCAP), str(export)) for part in _exported_options()]
    out = tmp_path / "study"
    assert _run(["protocol", "init", *options, "--out", str(out)]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith(f"error: {export / name}"), err
    assert "\n" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
