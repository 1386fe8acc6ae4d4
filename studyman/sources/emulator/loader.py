"""Load a project from a project directory or a REDCap ODM file."""

from __future__ import annotations

from pathlib import Path

from studyman.errors import ProtocolError
from studyman.sources.emulator.model import Project
from studyman.sources.emulator.odm import read_odm_file
from studyman.sources.emulator.project_dir import load_project_dir

__all__ = ["load_project"]


def load_project(source: Path | str) -> Project:
    """Load a project from a project directory or an ODM XML file (``project.xml``).

    Raises
    ------
    ProtocolError
        When *source* is neither, or its files are malformed.
    """
    path = Path(source)
    if path.is_dir():
        return load_project_dir(path)
    if path.is_file() and path.suffix.lower() in (".xml", ".odm"):
        return read_odm_file(path)
    raise ProtocolError(
        "expected a REDCap project directory or an ODM XML file (.xml)", file=str(path)
    )
