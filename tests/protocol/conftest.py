"""Fixtures for the protocol tests: the reference study (in the repository) and private copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def reference_study() -> Path:
    """The reference study directory, ``protocols/cbt-adjunct`` (read only)."""
    return REPOSITORY / "protocols" / "cbt-adjunct"


@pytest.fixture
def redcap_fixtures() -> Path:
    """The REDCapR fixture projects (human-header dictionaries from real REDCap servers)."""
    return REPOSITORY / "tests" / "data" / "redcap-projects"


@pytest.fixture
def study_copy(tmp_path: Path, reference_study: Path) -> Path:
    """A private, writable copy of the reference study directory."""
    target = tmp_path / "cbt-adjunct"
    shutil.copytree(reference_study, target)
    return target
