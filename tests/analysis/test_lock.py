"""Locking the plan: a changed plan is refused unless recorded as an amendment."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from studyman.analysis.lock import check_lock, lock_sap, record_unblinding
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


# --- unblinding -------------------------------------------------------------------------------

UNBLINDED_AT = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)


def test_first_unblinding_is_recorded_once_with_snapshot_time_and_locked_versions(
    tmp_path: Path,
) -> None:
    path = _copy(tmp_path)
    lock_sap(path)
    record = record_unblinding(load_sap(path), "a" * 64, now=UNBLINDED_AT)
    written = json.loads((tmp_path / "sap.lock.json").read_text())["unblinding"]
    assert written["snapshot_id"] == "a" * 64
    assert written["read_at"].startswith("2026-12-02T09:30:00")
    assert written["locked_versions"] == ["1.0"]
    # a later read never moves the moment of unblinding
    later = record_unblinding(load_sap(path), "b" * 64, now=UNBLINDED_AT + dt.timedelta(days=3))
    assert later == record
    assert check_lock(load_sap(path)).unblinding == record


def test_relocking_an_amendment_keeps_the_unblinding_record(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    lock_sap(path)
    record_unblinding(load_sap(path), "a" * 64, now=UNBLINDED_AT)
    _amend(path, "1.1", '  - {version: "1.1", date: 2026-12-05, reason: "late change"}')
    relocked = lock_sap(path)
    assert relocked.unblinding is not None
    assert relocked.unblinding.read_at == UNBLINDED_AT
    # relocking does not launder it: 1.1 was not locked when the allocation was read
    with pytest.raises(ProtocolError, match="amended after unblinding"):
        check_lock(load_sap(path))


@pytest.mark.parametrize(
    ("date", "why"),
    [("2026-12-05", "dated after unblinding"), ("2026-11-30", "backdated, but new after it")],
)
def test_an_amendment_after_unblinding_is_refused_without_a_reason(
    tmp_path: Path, date: str, why: str
) -> None:
    path = _copy(tmp_path)
    lock_sap(path)
    record_unblinding(load_sap(path), "c" * 64, now=UNBLINDED_AT)
    _amend(path, "1.1", f'  - {{version: "1.1", date: {date}, reason: "{why}"}}')
    with pytest.raises(ProtocolError, match="amended after unblinding") as caught:
        check_lock(load_sap(path))
    assert caught.value.key == "amendments"
    assert "cccccccccccc" in str(caught.value)
    assert "--post-unblinding-amendment" in str(caught.value)
    status = check_lock(load_sap(path), post_unblinding_amendment="DSMB asked for it")
    assert status.post_unblinding_amendment is not None
    assert status.post_unblinding_amendment.reason == "DSMB asked for it"
    assert [a.version for a in status.post_unblinding_amendment.amendments] == ["1.1"]


def test_an_amendment_made_before_unblinding_needs_no_reason_and_a_reason_is_refused(
    tmp_path: Path,
) -> None:
    path = _copy(tmp_path)
    lock_sap(path)
    _amend(path, "1.1", '  - {version: "1.1", date: 2026-12-01, reason: "before"}')
    lock_sap(path)
    record_unblinding(load_sap(path), "d" * 64, now=UNBLINDED_AT)
    status = check_lock(load_sap(path))
    assert status.post_unblinding_amendment is None
    with pytest.raises(ProtocolError, match="no amendment of the plan is after unblinding"):
        check_lock(load_sap(path), post_unblinding_amendment="just in case")
    with pytest.raises(ProtocolError, match="needs a reason"):
        check_lock(load_sap(path), post_unblinding_amendment="   ")


def test_a_lock_without_unblinding_keeps_its_old_format(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    lock_sap(path)
    assert set(json.loads((tmp_path / "sap.lock.json").read_text())) == {
        "plan",
        "version",
        "sha256",
        "history",
    }


def test_the_shipped_reference_lock_records_no_unblinding() -> None:
    # The demo and the tests unblind copies of the lock; the reference plan's own lock is a
    # committed file that no run may turn into a record of somebody's unblinding.
    shipped = json.loads(SAP.with_name("sap.lock.json").read_text(encoding="utf-8"))
    assert "unblinding" not in shipped
    assert shipped["sha256"] == load_sap(SAP).sha256
