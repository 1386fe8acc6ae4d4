"""Fixtures of the onboarding tests: the two ways ``init`` reads a REDCap project's design."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from studyman.onboarding import fetch_project_dir, write_exported_project_dir
from studyman.protocol.redcap_project import RedcapProject

TOKEN = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00"

MakeProject = Callable[[Path], RedcapProject]


def _exported(redcap: Path, *, users: bool = False) -> MakeProject:
    """The exported-files path over a project directory's own files."""

    def optional(name: str) -> Path | None:
        return redcap / name if (redcap / name).is_file() else None

    def make(directory: Path) -> RedcapProject:
        return write_exported_project_dir(
            directory,
            dictionary=redcap / "data_dictionary.csv",
            events=optional("events.csv"),
            mapping=optional("instrument_event_mapping.csv"),
            arms=optional("arms.csv"),
            instruments=optional("instruments.csv"),
            repeating=optional("repeating_instruments.csv"),
            dags=optional("dags.csv"),
            users=optional("users.csv") if users else None,
            project_info=optional("project.json"),
        )

    return make


def _live(url: str, token: str = TOKEN) -> MakeProject:
    """The live path: the project's design through PyCap from *url*."""

    def make(directory: Path) -> RedcapProject:
        return fetch_project_dir(url, SecretStr(token), directory, retries=0, timeout=10)

    return make


@pytest.fixture
def exported() -> Callable[..., MakeProject]:
    """``exported(redcap_dir, users=False)``: init reads the directory's files as exports."""
    return _exported


@pytest.fixture
def live() -> Callable[..., MakeProject]:
    """``live(url, token=TOKEN)``: init reads the live project at *url*."""
    return _live
