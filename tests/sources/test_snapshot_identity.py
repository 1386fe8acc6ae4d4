"""The snapshot id covers the manifest: every edit of it is detected (issue 11, item 7).

A snapshot is imported from a REDCap fixture export; each attack edits its manifest the way a
careless or hostile user would (counts, table map, dates, removed keys, wrong types, broken
JSON, the id file itself) and checks that ``verify`` says so, that reading refuses it, and that
``snapshot show`` answers without a traceback.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from studyman.cli import main
from studyman.errors import SnapshotError
from studyman.sources.offline import import_snapshot
from studyman.sources.snapshot import (
    MANIFEST_NAME,
    SNAPSHOT_ID_NAME,
    manifest_id,
    read_snapshot,
    snapshot_id,
    verify_snapshot,
)

PROJECT = Path(__file__).resolve().parents[1] / "data" / "redcap-projects" / "longitudinal"

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("snapshots")
    result = import_snapshot(
        None, PROJECT / "data.csv", PROJECT / "dictionary.csv", out, name="original"
    )
    assert len(result.table_rows) >= 2
    return result.path


def _copy(original: Path, target: Path) -> Path:
    target.mkdir()
    for file in original.rglob("*"):
        if file.is_file():
            destination = target / file.relative_to(original)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(file.read_bytes())
    return target


def _manifest(snapshot: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((snapshot / MANIFEST_NAME).read_text(encoding="utf-8"))
    return loaded


def _first_table(manifest: dict[str, Any]) -> str:
    return sorted(manifest["tables"])[0]


def _parent(manifest: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, str]:
    """The object holding the last of *keys* (``<table>``: the first table's name)."""
    named = [key if key != "<table>" else _first_table(manifest) for key in keys]
    target: Any = manifest
    for key in named[:-1]:
        target = target[key]
    return target, named[-1]


def _set(*keys: str, value: Any) -> Edit:
    def edit(manifest: dict[str, Any]) -> None:
        target, last = _parent(manifest, keys)
        target[last] = value

    return edit


def _delete(*keys: str) -> Edit:
    def edit(manifest: dict[str, Any]) -> None:
        target, last = _parent(manifest, keys)
        del target[last]

    return edit


def _bump(*keys: str, by: int) -> Edit:
    def edit(manifest: dict[str, Any]) -> None:
        target, last = _parent(manifest, keys)
        target[last] += by

    return edit


def _drop_table_and_its_file(manifest: dict[str, Any]) -> None:
    name = _first_table(manifest)
    del manifest["files"][manifest["tables"].pop(name)["file"]]


def _swap_table_files(manifest: dict[str, Any]) -> None:
    first, second = sorted(manifest["tables"])[:2]
    tables = manifest["tables"]
    tables[first]["file"], tables[second]["file"] = tables[second]["file"], tables[first]["file"]


def _fake_table(manifest: dict[str, Any]) -> None:
    manifest["tables"]["randomization"] = {
        "file": "tables/randomization.parquet",
        "rows": 3,
        "columns": 4,
    }


def _rehash_file(manifest: dict[str, Any]) -> None:
    manifest["files"]["findings.parquet"] = hashlib.sha256(b"other").hexdigest()


EDITS: dict[str, Edit] = {
    # counts
    "records + 1": _bump("records", by=1),
    "records - 1": _bump("records", by=-1),
    "table rows + 1": _bump("tables", "<table>", "rows", by=1),
    "table rows - 1": _bump("tables", "<table>", "rows", by=-1),
    "table columns + 1": _bump("tables", "<table>", "columns", by=1),
    "findings + 1": _bump("findings", by=1),
    # the table map and the hashes
    "a table left out": _delete("tables", "<table>"),
    "a table and its hash left out": _drop_table_and_its_file,
    "two tables' files swapped": _swap_table_files,
    "a table that was never pulled": _fake_table,
    "a table file renamed": _set("tables", "<table>", "file", value="tables/other.parquet"),
    "a file's hash changed": _rehash_file,
    "a file's hash removed": _delete("files", "findings.parquet"),
    "a hashed file added": _set("files", "notes.txt", value="0" * 64),
    # dates and other values
    "created_at a day earlier": lambda m: m.update(
        created_at=m["created_at"].replace(m["created_at"][8:10], "01", 1)
    ),
    "created_at not a time": _set("created_at", value="yesterday"),
    "kind changed": _set("kind", value="pull"),
    "source file renamed": _set("source", "records_file", value="other.csv"),
    "missing-data codes added": _set("missing_data_codes", value=["UNK"]),
    "format of an older version": _set("format", value="studyman-snapshot/1"),
    "a key added": _set("note", value="checked by me"),
    # wrong types
    "records as text": _set("records", value="18"),
    "records negative": _set("records", value=-1),
    "rows as text": _set("tables", "<table>", "rows", value="3"),
    "rows as a float": _set("tables", "<table>", "rows", value=3.0),
    "rows as a boolean": _set("tables", "<table>", "rows", value=True),
    "rows null": _set("tables", "<table>", "rows", value=None),
    "a table entry null": _set("tables", "<table>", value=None),
    "tables a list": _set("tables", value=[]),
    "files a list": _set("files", value=[]),
    "files null": _set("files", value=None),
    "a hash not hex": _set("files", "findings.parquet", value="not a hash"),
    "a hashed path outside": _set("files", "../outside.txt", value="0" * 64),
    "findings null": _set("findings", value=None),
    "longitudinal as text": _set("longitudinal", value="yes"),
    "protocol as text": _set("protocol", value="cbt-adjunct"),
    "source a list": _set("source", value=[]),
    "created_at a number": _set("created_at", value=20250101),
}


def _removed_key_edits() -> dict[str, Edit]:
    keys = [
        "format",
        "kind",
        "created_at",
        "studyman_version",
        "source",
        "redcap",
        "protocol",
        "missing_data_codes",
        "record_id_field",
        "longitudinal",
        "repeating",
        "records",
        "conformance_findings",
        "tables",
        "findings",
        "files",
    ]
    return {f"key {key!r} removed": _delete(key) for key in keys}


ALL_EDITS = {**EDITS, **_removed_key_edits()}


def _assert_detected(snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify says not OK (or refuses in one line); reading refuses; show never tracebacks."""
    refusal = ""
    try:
        verification = verify_snapshot(snapshot)
    except SnapshotError as error:
        refusal = str(error)
    if refusal:
        assert "\n" not in refusal
    else:
        assert not verification.ok
        assert verification.manifest, verification.describe()
    code: Any
    try:
        code = main(["snapshot", "verify", str(snapshot)])
    except SystemExit as exited:
        code = exited.code
    assert code not in (0, None)
    with pytest.raises(SnapshotError) as refused:
        read_snapshot(snapshot)
    assert "\n" not in str(refused.value)
    with pytest.raises(SnapshotError):
        snapshot_id(snapshot)
    capsys.readouterr()
    try:
        code = main(["snapshot", "show", str(snapshot)])
    except SystemExit as exited:
        code = exited.code
    shown = capsys.readouterr()
    if code in (0, None):
        assert "integrity: CHANGED" in shown.out
    else:
        assert shown.err.startswith("error: ")
        assert len(shown.err.strip().splitlines()) == 1


@pytest.mark.parametrize("attack", sorted(ALL_EDITS))
def test_every_edit_of_the_manifest_is_detected(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str
) -> None:
    snapshot = _copy(original, tmp_path / "snapshot")
    manifest = _manifest(snapshot)
    before = copy.deepcopy(manifest)
    ALL_EDITS[attack](manifest)
    assert json.dumps(manifest) != json.dumps(before), "the attack must change something"
    (snapshot / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    _assert_detected(snapshot, capsys)


RAW_EDITS: dict[str, Callable[[bytes], bytes]] = {
    "a key given twice (the last wins in JSON)": lambda data: data.replace(
        b'"records":', b'"records": 1, "records":', 1
    ),
    "NaN as a count": lambda data: data.replace(b'"findings": ', b'"findings": NaN, "x": ', 1),
    "cut in half": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "a list, not an object": lambda data: b"[" + data + b"]",
    "UTF-16": lambda data: data.decode("utf-8").encode("utf-16"),
    "not UTF-8": lambda data: data.replace(b'"kind"', b'"k\xe9nd"', 1),
    "nested 10,000 deep": lambda data: b"[" * 10_000 + b"]" * 10_000,
}


@pytest.mark.parametrize("attack", sorted(RAW_EDITS))
def test_a_manifest_broken_as_a_file_is_one_line_and_never_a_traceback(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str
) -> None:
    snapshot = _copy(original, tmp_path / "snapshot")
    path = snapshot / MANIFEST_NAME
    path.write_bytes(RAW_EDITS[attack](path.read_bytes()))
    _assert_detected(snapshot, capsys)


ID_EDITS: dict[str, Callable[[Path], None]] = {
    "removed": lambda path: path.unlink(),
    "emptied": lambda path: path.write_text(""),
    "another snapshot's id": lambda path: path.write_text("ab" * 32 + "\n"),
    "upper-cased": lambda path: path.write_text(path.read_text().upper()),
    "not text": lambda path: path.write_bytes(b"\xff\xfe" + b"\0" * 64),
}


@pytest.mark.parametrize("attack", sorted(ID_EDITS))
def test_an_edited_or_missing_snapshot_id_is_detected(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str
) -> None:
    snapshot = _copy(original, tmp_path / "snapshot")
    ID_EDITS[attack](snapshot / SNAPSHOT_ID_NAME)
    _assert_detected(snapshot, capsys)


RESEALED: dict[str, Edit] = {
    name: EDITS[name]
    for name in (
        "a table left out",
        "two tables' files swapped",
        "a table that was never pulled",
        "a table file renamed",
        "a hashed file added",
        "a file's hash removed",
        "rows as text",
        "rows as a boolean",
        "tables a list",
        "files a list",
        "created_at not a time",
        "format of an older version",
        "longitudinal as text",
    )
}


@pytest.mark.parametrize("attack", sorted(RESEALED))
def test_a_manifest_edited_and_sealed_again_still_fails_its_own_invariants(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str
) -> None:
    # Whoever recomputes the id after an edit still meets the manifest's checks of itself.
    snapshot = _copy(original, tmp_path / "snapshot")
    manifest = _manifest(snapshot)
    RESEALED[attack](manifest)
    (snapshot / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    (snapshot / SNAPSHOT_ID_NAME).write_text(manifest_id(manifest) + "\n")
    verification = verify_snapshot(snapshot)
    assert not verification.ok
    with pytest.raises(SnapshotError):
        read_snapshot(snapshot)


@pytest.mark.parametrize("what", ["rows", "columns"])
def test_counts_edited_and_sealed_again_are_refused_when_the_table_is_read(
    original: Path, tmp_path: Path, what: str
) -> None:
    snapshot = _copy(original, tmp_path / "snapshot")
    manifest = _manifest(snapshot)
    table = _first_table(manifest)
    manifest["tables"][table][what] += 1
    (snapshot / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    (snapshot / SNAPSHOT_ID_NAME).write_text(manifest_id(manifest) + "\n")
    with pytest.raises(SnapshotError, match=rf"the manifest says \d+ \(tables\.{table}\.{what}\)"):
        read_snapshot(snapshot)


def test_snapshot_id_is_the_sha256_of_the_canonical_manifest_and_survives_reindenting(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(original)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert snapshot_id(original) == expected
    assert (original / SNAPSHOT_ID_NAME).read_text() == expected + "\n"
    assert read_snapshot(original).snapshot_id == expected
    assert verify_snapshot(original).snapshot_id == expected
    # The id is of the content: the same manifest written another way keeps it.
    snapshot = _copy(original, tmp_path / "snapshot")
    (snapshot / MANIFEST_NAME).write_text(json.dumps(manifest, sort_keys=True), encoding="utf-8")
    assert verify_snapshot(snapshot).ok
    assert snapshot_id(snapshot) == expected
    assert main(["snapshot", "show", str(snapshot)]) in (0, None)
    shown = capsys.readouterr().out
    assert f"snapshot id: {expected}" in shown
    assert "integrity: OK" in shown


def test_an_import_reports_its_snapshot_id(tmp_path: Path) -> None:
    result = import_snapshot(
        None, PROJECT / "data.csv", PROJECT / "dictionary.csv", tmp_path, name="again"
    )
    assert result.snapshot_id == snapshot_id(result.path)
    assert (result.path / SNAPSHOT_ID_NAME).stat().st_mode & 0o222 == 0  # read-only, as the rest
