"""``python -m studyman`` runs the same command line as the ``studyman`` script."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_studyman_lists_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "studyman", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout
    assert "validate" in done.stdout
