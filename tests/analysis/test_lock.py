"""Locking the plan: a changed plan is refused unless recorded as an amendment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studyman.analysis.lock import check_lock, lock_sap
from studyman.analysis.sap import load_sap
from studyman.errors import ProtocolError

SAP = Path(__file__).resolve().parents[2] / "analysis" / "sap.yaml"


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "sap.yaml"
    path.write_bytes(SAP.read_bytes())
    return path


def _amend(path: Path, version: str, amendment: str) -> None:
    text = path.read_text(encoding="utf-8")
    text = text.replace('version: "1.0"', f'version: "{version}"', 1)
    text = text.replace("amendments: []", f"amendments:\n{amendment}", 1)
    text = text.replace("seed: 20261125", "seed: 20261126", 1)
    path.write_text(text, encoding="utf-8")


def test_lock_records_hash_and_version(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    lock = lock_sap(path)
    written = json.loads((tmp_path / "sap.lock.json").read_text())
    assert written["sha256"] == load_sap(path).sha256 == lock.sha256
    assert written["version"] == "1.0"
    assert check_lock(load_sap(path)).locked_version == "1.0"


def test_analysis_of_an_unlocked_plan_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="not locked"):
        check_lock(load_sap(_copy(tmp_path)))


def test_changed_plan_without_amendment_is_refused(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    lock_sap(path)
    path.write_text(path.read_text().replace("seed: 20261125", "seed: 7"), encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"changed since version 1\.0 was locked") as caught:
        check_lock(load_sap(path))
    assert caught.value.key == "version"
    with pytest.raises(ProtocolError):
        lock_sap(path)


def test_new_version_without_amendment_entry_is_refused(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    lock_sap(path)
    path.write_text(path.read_text().replace('version: "1.0"', 'version: "1.1"'), encoding="utf-8")
    with pytest.raises(ProtocolError, match="no amendment recorded") as caught:
        check_lock(load_sap(path))
    assert caught.value.key == "amendments"


def test_recorded_amendment_is_accepted_and_kept_in_history(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    first = lock_sap(path)
    _amend(path, "1.1", '  - {version: "1.1", date: 2026-12-01, reason: "new seed after audit"}')
    provenance = check_lock(load_sap(path))
    assert provenance.version == "1.1"
    assert provenance.locked_sha256 == first.sha256
    assert provenance.amendments[0].reason == "new seed after audit"
    relocked = lock_sap(path)
    assert [entry.version for entry in relocked.history] == ["1.0", "1.1"]
    assert check_lock(load_sap(path)).locked_version == "1.1"


@pytest.mark.parametrize(
    ("content", "key", "expected"),
    [
        ('{"plan": "sap.yaml", "version": "1.0", "sha', "line 1", "not JSON"),
        ("[]", None, "expected a JSON object"),
        (
            '{"plan": "sap.yaml", "version": "1.0", "sha256": "ab", "history": [], "x": 1}',
            "x",
            "unknown key",
        ),
        ('{"plan": "sap.yaml", "version": "1.0", "history": []}', "sha256", "Field required"),
    ],
)
def test_a_damaged_lock_file_is_one_line_naming_file_and_key(
    tmp_path: Path, content: str, key: str | None, expected: str
) -> None:
    path = _copy(tmp_path)
    lock_path = tmp_path / "sap.lock.json"
    lock_path.write_text(content, encoding="utf-8")
    with pytest.raises(ProtocolError, match=expected) as caught:
        check_lock(load_sap(path))
    assert caught.value.file == str(lock_path)
    assert caught.value.key == key
    assert "\n" not in str(caught.value)


def test_a_lock_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    (tmp_path / "sap.lock.json").mkdir()
    with pytest.raises(ProtocolError, match=r"cannot read the lock file \(Is a directory\)"):
        lock_sap(path)
