"""Where the embedded reference study lives (the default of every command that reads a study)."""

from __future__ import annotations

from pathlib import Path

from studyman.errors import ProtocolError

__all__ = ["default_protocol_path"]


def default_protocol_path() -> Path:
    """Return the embedded reference study (``protocols/cbt-adjunct`` beside the package).

    Raises
    ------
    ProtocolError
        The study is not there (an installation without the repository's ``protocols/``).
    """
    path = Path(__file__).resolve().parent.parent.parent / "protocols" / "cbt-adjunct"
    if not (path / "protocol.yaml").is_file():
        raise ProtocolError(
            "the embedded reference study is missing; run from a clone of the repository "
            "or pass --protocol",
            file=str(path / "protocol.yaml"),
        )
    return path
