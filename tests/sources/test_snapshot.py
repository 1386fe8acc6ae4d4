"""Snapshots: atomic, never overwritten, deterministic Parquet, verified against the manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from studyman.cli import main
from studyman.errors import SnapshotError
from studyman.sources.snapshot import (
    SNAPSHOT_ID_NAME,
    list_snapshots,
    manifest_id,
    parquet_bytes,
    read_snapshot,
    verify_snapshot,
    write_snapshot,
)


def _tables() -> dict[str, pd.DataFrame]:
    return {
        "visit": pd.DataFrame(
            {
                "record_id": pd.array(["1", "2"], dtype="string"),
                "age": pd.array([40, None], dtype="Int64"),
                "visit_date": pd.to_datetime(["2024-01-01", None]).astype("datetime64[us]"),
            }
        )
    }


def _findings() -> pd.DataFrame:
    return pd.DataFrame({"check_id": pd.array(["cast.integer"], dtype="string")})


def _write(out: Path, name: str = "snap") -> Path:
    return write_snapshot(
        out, name, tables=_tables(), findings=_findings(), manifest={"kind": "test"}
    )


def test_snapshot_holds_tables_findings_and_a_manifest_of_hashes(tmp_path: Path) -> None:
    path = _write(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"tables/visit.parquet", "findings.parquet"}
    assert manifest["tables"]["visit"]["rows"] == 2
    assert manifest["findings"] == 1
    snapshot = read_snapshot(path)
    pd.testing.assert_frame_equal(snapshot.tables["visit"], _tables()["visit"])
    assert list_snapshots(tmp_path) == [path]


def test_parquet_bytes_are_the_same_for_the_same_data() -> None:
    first = parquet_bytes(_tables()["visit"])
    second = parquet_bytes(_tables()["visit"].copy())
    assert first == second


def test_existing_snapshot_is_never_overwritten(tmp_path: Path) -> None:
    path = _write(tmp_path)
    before = (path / "manifest.json").read_bytes()
    with pytest.raises(SnapshotError, match="never overwritten"):
        write_snapshot(
            tmp_path, "snap", tables={}, findings=_findings(), manifest={"kind": "other"}
        )
    assert (path / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]


def test_failed_write_leaves_nothing_that_looks_like_a_snapshot(tmp_path: Path) -> None:
    bad = {"visit": pd.DataFrame({"x": [object()]})}  # not representable in Parquet
    with pytest.raises(Exception):  # noqa: B017, PT011 - pyarrow's own error
        write_snapshot(tmp_path, "snap", tables=bad, findings=_findings(), manifest={})
    assert list(tmp_path.iterdir()) == []


def test_verify_detects_a_changed_file(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert verify_snapshot(path).ok
    table = path / "tables" / "visit.parquet"
    os.chmod(table, 0o644)
    table.write_bytes(table.read_bytes() + b"\0")
    (path / "findings.parquet").unlink()
    (path / "notes.txt").write_text("added")
    result = verify_snapshot(path)
    assert result.changed == ("tables/visit.parquet",)
    assert result.missing == ("findings.parquet",)
    assert result.extra == ("notes.txt",)
    assert not result.ok
    with pytest.raises(SnapshotError, match=r"changed: tables/visit\.parquet"):
        read_snapshot(path)


def test_snapshot_verify_command_exits_non_zero_on_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path)
    # main() returns the exit code (the console script passes it to sys.exit).
    assert main(["snapshot", "verify", str(path)]) in (0, None)
    assert "OK" in capsys.readouterr().out
    table = path / "tables" / "visit.parquet"
    os.chmod(table, 0o644)
    table.write_bytes(b"tampered")
    assert main(["snapshot", "verify", str(path)]) == 1
    assert "changed: tables/visit.parquet" in capsys.readouterr().out


def test_verify_of_a_directory_without_manifest_is_a_snapshot_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"no manifest\.json"):
        verify_snapshot(tmp_path)


def test_snapshot_name_must_be_a_plain_directory_name(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="plain directory name"):
        _write(tmp_path, "../escape")


def test_snapshot_show_lists_tables_and_integrity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path)
    assert main(["snapshot", "show", str(path)]) in (0, None)
    shown = capsys.readouterr().out
    assert "visit: 2 rows, 3 columns" in shown
    assert "integrity: OK" in shown


def _rehash(snapshot: Path, relative: str, data: bytes) -> None:
    """Replace one file, record its new hash and seal the manifest again, as if the file had
    been damaged before hashing."""
    import hashlib

    target = snapshot / relative
    target.chmod(0o644)
    target.write_bytes(data)
    manifest_path = snapshot / "manifest.json"
    manifest_path.chmod(0o644)
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][relative] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    id_path = snapshot / SNAPSHOT_ID_NAME
    id_path.chmod(0o644)
    id_path.write_text(manifest_id(manifest) + "\n")


def test_a_damaged_parquet_table_is_a_snapshot_error_naming_the_file(tmp_path: Path) -> None:
    snapshot = _write(tmp_path)
    relative = "tables/visit.parquet"
    _rehash(snapshot, relative, (snapshot / relative).read_bytes()[:40])
    with pytest.raises(SnapshotError, match="not a readable Parquet table") as caught:
        read_snapshot(snapshot)
    assert str(caught.value).startswith(f"{snapshot / relative}: ")
    assert "\n" not in str(caught.value)


def test_a_manifest_table_outside_the_snapshot_is_refused(tmp_path: Path) -> None:
    snapshot = _write(tmp_path)
    manifest_path = snapshot / "manifest.json"
    manifest_path.chmod(0o644)
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["visit"]["file"] = "../../elsewhere.parquet"
    manifest_path.write_text(json.dumps(manifest))
    id_path = snapshot / SNAPSHOT_ID_NAME
    id_path.chmod(0o644)
    id_path.write_text(manifest_id(manifest) + "\n")  # even with the id taken again
    with pytest.raises(SnapshotError, match=r"tables\.visit\.file: expected tables/visit\.parquet"):
        read_snapshot(snapshot)
    with pytest.raises(SnapshotError, match="outside the snapshot directory"):
        read_snapshot(snapshot, verify=False)


def test_an_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    from studyman.sources.snapshot import write_bytes_atomic

    target = tmp_path / "results" / "summary.json"
    write_bytes_atomic(target, b"old\n")
    assert target.read_bytes() == b"old\n"
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old\n"
    assert [path.name for path in target.parent.iterdir()] == ["summary.json"]
    write_bytes_atomic(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_a_manifest_saved_as_utf16_is_named_as_such(tmp_path: Path) -> None:
    snapshot = _write(tmp_path)
    manifest_path = snapshot / "manifest.json"
    manifest_path.chmod(0o644)
    manifest_path.write_bytes(manifest_path.read_text().encode("utf-16"))
    with pytest.raises(SnapshotError, match="UTF-16 text") as caught:
        verify_snapshot(snapshot)
    assert str(caught.value).startswith(f"{manifest_path}: ")
