"""``studyman emulator serve``: tokens from owner-only files, never on the command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redcap

from studyman.cli import main
from tests.sources.conftest import FULL_TOKEN, PROJECTS, SUPER_TOKEN

SIMPLE = PROJECTS / "simple" / "project.xml"


def _token_file(directory: Path, text: str, mode: int) -> Path:
    path = directory / "tokens"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("option", ["--token-file", "--super-token-file"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_token_file_readable_by_others_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, mode: int
) -> None:
    token = FULL_TOKEN if option == "--token-file" else SUPER_TOKEN
    path = _token_file(tmp_path, token + "\n", mode)
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "serve", str(SIMPLE), option, str(path)])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "readable by its owner only" in error
    assert str(path) in error
    assert error.count("\n") == 1
    assert token not in error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not-a-token\n", "line 1 is not a token of 32"),
        ("# only a comment\n\n", "holds no token"),
        (FULL_TOKEN + "\n" + FULL_TOKEN[:-1] + "\n", "line 2 is not a token"),
    ],
)
def test_a_bad_token_file_names_the_line_and_never_echoes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = _token_file(tmp_path, text, 0o600)
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "serve", str(SIMPLE), "--token-file", str(path)])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert FULL_TOKEN[:-1] not in error


def test_serve_with_a_token_file_answers_pycap_and_keeps_the_token_off_the_command_line(
    tmp_path: Path,
) -> None:
    path = _token_file(tmp_path, f"# the emulator's token\n{FULL_TOKEN}\n", 0o600)
    command = [
        sys.executable,
        "-m",
        "studyman",
        "emulator",
        "serve",
        str(SIMPLE),
        "--port",
        "0",
        "--token-file",
        str(path),
    ]
    assert FULL_TOKEN not in " ".join(command)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"at (http://127\.0\.0\.1:\d+/api/)", line)
            if match:
                found.append(match.group(1))
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "the emulator did not start"
        project = redcap.Project(found[0], FULL_TOKEN)
        assert len(project.export_records()) == 5
        assert project.export_users()[-1]["username"] == "api_user"
    finally:
        os.kill(process.pid, signal.SIGINT)  # this child only, by its PID
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
