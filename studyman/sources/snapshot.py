"""Immutable snapshots: one directory per pull or import.

Layout of a snapshot directory::

    <name>/
        manifest.json               what, when, from where, and the sha256 of every other file
        tables/<instrument>.parquet one typed table per instrument (see studyman.sources.tidy)
        findings.parquet            values that did not cast, unknown columns, ... (FINDING_COLUMNS)
        conformance.parquet         with a protocol: protocol against REDCap metadata (findings)
        redcap/metadata.json        the data dictionary (API keys), as pulled or imported
        redcap/<other>.json         events, arms, mappings, repeating forms, project info (pull)

A snapshot is written into a hidden temporary directory beside the target (``.tmp-<name>-*``)
and renamed into place only when complete, so an interrupted pull leaves nothing that looks like
a snapshot (no directory of that name, no manifest). An existing snapshot is never overwritten.

Parquet files are written deterministically (fixed compression, row-group and page settings,
no time stamps inside the files), so the same tables always give the same bytes and hashes; the
only time in a snapshot is ``created_at`` in the manifest. The manifest never holds an API token.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from studyman.errors import SnapshotError
from studyman.protocol.text_files import TextEncodingError, decode_utf8
from studyman.sources.tidy import TidyTables

__all__ = [
    "MANIFEST_NAME",
    "SNAPSHOT_FORMAT",
    "Snapshot",
    "SnapshotResult",
    "SnapshotVerification",
    "json_bytes",
    "list_snapshots",
    "parquet_bytes",
    "read_snapshot",
    "read_snapshot_file",
    "read_snapshot_tables",
    "verify_snapshot",
    "write_bytes_atomic",
    "write_snapshot",
    "write_tidy_snapshot",
]

MANIFEST_NAME = "manifest.json"
SNAPSHOT_FORMAT = "studyman-snapshot/1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def parquet_bytes(
    frame: pd.DataFrame, *, schema_metadata: Mapping[bytes, bytes] | None = None
) -> bytes:
    """Return *frame* as Parquet bytes, identical for identical data.

    Parameters
    ----------
    frame
        The table (its index is not stored).
    schema_metadata
        Extra key-value pairs for the Parquet schema (e.g. provenance), merged over pandas'.

    Notes
    -----
    The settings are pinned (format 2.6, zstd level 3, dictionary encoding, statistics, one row
    group of up to a million rows, 1 MiB pages) so that the bytes depend only on the data, the
    dtypes and the library versions, never on the time or the machine.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if schema_metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **schema_metadata})
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        version="2.6",
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        row_group_size=1_000_000,
        data_page_size=1 << 20,
        data_page_version="1.0",
        store_schema=True,
    )
    return buffer.getvalue()


def json_bytes(value: Any) -> bytes:
    """*value* as indented UTF-8 JSON with a final newline (the snapshot's JSON files)."""
    return (json.dumps(value, indent=1, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def write_file_atomic(
    path: Path, write: Callable[[Path], None], *, mode: int | None = None
) -> None:
    """Have *write* fill a temporary file in *path*'s directory, then rename it to *path*.

    A reader sees the old file or the new one, never a part; an interrupted write leaves at most
    a hidden ``.<name>.*`` temporary file, removed when the failure is an exception. The parent
    directory is created when missing. *mode* sets the file's permissions (``0o600`` for what only
    its owner may read); by default the usual mode under the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, (0o666 & ~_UMASK) if mode is None else mode)  # mkstemp made 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write *data* to *path* atomically (see :func:`write_file_atomic`)."""

    def write(temporary: Path) -> None:
        temporary.write_bytes(data)

    write_file_atomic(path, write, mode=mode)


def _read_umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


#: Read once at import (reading it means setting it, which other threads would see).
_UMASK = _read_umask()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class SnapshotResult:
    """Where a snapshot was written and what it holds.

    Attributes
    ----------
    path
        The snapshot directory.
    table_rows
        Instrument → number of rows.
    findings
        Number of findings.
    records
        Number of distinct records.
    """

    path: Path
    table_rows: Mapping[str, int]
    findings: int
    records: int


@dataclass(frozen=True)
class SnapshotVerification:
    """The outcome of re-hashing a snapshot against its manifest.

    Attributes
    ----------
    path
        The snapshot directory.
    changed
        Files whose content differs from the manifest's hash.
    missing
        Files named in the manifest that are gone.
    extra
        Files present but not named in the manifest.
    """

    path: Path
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every file is present and unchanged and nothing was added."""
        return not (self.changed or self.missing or self.extra)

    def describe(self) -> str:
        """One line per problem (or ``OK``)."""
        if self.ok:
            return f"{self.path}: OK, every file matches the manifest"
        lines = [f"{self.path}: differs from its manifest"]
        lines += [f"  changed: {name}" for name in self.changed]
        lines += [f"  missing: {name}" for name in self.missing]
        lines += [f"  not in manifest: {name}" for name in self.extra]
        return "\n".join(lines)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read back: typed tables, findings and manifest."""

    path: Path
    manifest: Mapping[str, Any]
    tables: Mapping[str, pd.DataFrame]
    findings: pd.DataFrame


def write_snapshot(
    out_dir: Path,
    name: str,
    *,
    tables: Mapping[str, pd.DataFrame],
    findings: pd.DataFrame,
    manifest: Mapping[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
    private: bool = False,
) -> Path:
    """Write a snapshot atomically as ``out_dir/name`` and return its path.

    Parameters
    ----------
    out_dir
        The snapshots directory (created if missing).
    name
        The snapshot's directory name (letters, digits, ``.``, ``_``, ``-``).
    tables
        Instrument → typed table.
    findings
        The findings frame.
    manifest
        Manifest entries (kind, source, protocol, ...); ``files``, ``tables`` and ``format`` are
        added here.
    extra_files
        Relative path → bytes, e.g. ``redcap/metadata.json``.
    private
        The snapshot reveals the allocation: its folders are 0700 and its files 0400 from their
        creation (else 0755 and 0444).

    Raises
    ------
    SnapshotError
        When ``out_dir/name`` exists already, or the name is not a plain directory name.
    """
    if not _NAME.fullmatch(name):
        raise SnapshotError(
            f"snapshot name {name!r} is not a plain directory name (letters, digits, . _ -)"
        )
    out_dir = Path(out_dir)
    target = out_dir / name
    if target.exists():
        raise SnapshotError(f"snapshot {target} exists already; snapshots are never overwritten")
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=out_dir))
    try:
        files: dict[str, bytes] = {}
        for table_name, frame in tables.items():
            files[f"tables/{table_name}.parquet"] = parquet_bytes(frame)
        files["findings.parquet"] = parquet_bytes(findings)
        for relative, data in (extra_files or {}).items():
            files[relative] = data
        hashes: dict[str, str] = {}
        for relative, data in sorted(files.items()):
            path = temporary / relative
            if private:
                # mkdtemp made *temporary* 0700; its folders and files are born private
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            hashes[relative] = _sha256(data)
        document = {
            "format": SNAPSHOT_FORMAT,
            **manifest,
            "tables": {
                table_name: {
                    "file": f"tables/{table_name}.parquet",
                    "rows": len(frame),
                    "columns": len(frame.columns),
                }
                for table_name, frame in tables.items()
            },
            "findings": len(findings),
            "files": hashes,
        }
        text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
        if private:
            handle = os.open(temporary / MANIFEST_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(handle, "wb") as stream:
                stream.write(text.encode("utf-8"))
        else:
            (temporary / MANIFEST_NAME).write_text(text, encoding="utf-8")
            # Read-only files say "do not edit"; directories stay writable so that a snapshots
            # directory can still be cleaned up with ordinary tools.
            for path in temporary.rglob("*"):
                if path.is_file():
                    os.chmod(path, 0o444)
            os.chmod(temporary, 0o755)
        if target.exists():
            raise SnapshotError(
                f"snapshot {target} appeared while writing; snapshots are never overwritten"
            )
        try:
            os.rename(temporary, target)
        except OSError as error:
            raise SnapshotError(
                f"snapshot {target} could not be put in place ({error.strerror}); "
                "snapshots are never overwritten"
            ) from None
    except BaseException:
        _remove_tree(temporary)
        raise
    return target


def write_tidy_snapshot(
    out_dir: Path,
    name: str,
    tidy: TidyTables,
    *,
    manifest: Mapping[str, Any],
    extra_files: Mapping[str, bytes],
    private: bool = False,
) -> SnapshotResult:
    """Write the typed tables of one export as a snapshot (:func:`write_snapshot`) and say what
    it holds; the one ending of a pull and of an offline import."""
    path = write_snapshot(
        Path(out_dir),
        name,
        tables=tidy.tables,
        findings=tidy.findings,
        manifest=manifest,
        extra_files=extra_files,
        private=private,
    )
    return SnapshotResult(
        path=path,
        table_rows={table: len(frame) for table, frame in tidy.tables.items()},
        findings=len(tidy.findings),
        records=len(tidy.record_ids),
    )


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _load_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise SnapshotError(f"{path} is not a snapshot: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(decode_utf8(manifest_path.read_bytes()))
    except TextEncodingError as problem:
        raise SnapshotError(f"{manifest_path}: {problem}") from None
    except json.JSONDecodeError as error:
        raise SnapshotError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SnapshotError(f"{manifest_path}: no 'files' table of hashes")
    return manifest


def verify_snapshot(path: Path) -> SnapshotVerification:
    """Re-hash every file of the snapshot at *path* and compare with its manifest.

    Raises
    ------
    SnapshotError
        When *path* has no readable manifest.
    """
    path = Path(path)
    manifest = _load_manifest(path)
    expected: dict[str, str] = manifest["files"]
    changed: list[str] = []
    missing: list[str] = []
    for relative, digest in sorted(expected.items()):
        file = path / relative
        if not file.is_file():
            missing.append(relative)
        elif _file_sha256(file) != digest:
            changed.append(relative)
    present = {item.relative_to(path).as_posix() for item in path.rglob("*") if item.is_file()} - {
        MANIFEST_NAME
    }
    extra = sorted(present - set(expected))
    return SnapshotVerification(path, tuple(changed), tuple(missing), tuple(extra))


def read_snapshot(path: Path, *, verify: bool = True) -> Snapshot:
    """Read the snapshot at *path* (verified first unless ``verify=False``).

    Raises
    ------
    SnapshotError
        When the snapshot has no manifest, or (with ``verify``) differs from it.
    """
    path = Path(path)
    manifest = _load_manifest(path)
    if verify:
        verification = verify_snapshot(path)
        if not verification.ok:
            raise SnapshotError(verification.describe())
    tables = read_snapshot_tables(path, manifest)
    findings = read_snapshot_file(path, "findings.parquet")
    return Snapshot(path=path, manifest=manifest, tables=tables, findings=findings)


def read_snapshot_tables(
    path: Path, manifest: Mapping[str, Any], skip: Collection[str] = ()
) -> dict[str, pd.DataFrame]:
    """The instrument tables the manifest lists (those named in *skip* are not even opened).

    Raises
    ------
    SnapshotError
        The manifest's ``tables`` entry is malformed or names a file outside the snapshot, or a
        table is not a readable Parquet file.
    """
    entries = manifest.get("tables", {})
    where = Path(path) / MANIFEST_NAME
    if not isinstance(entries, Mapping):
        raise SnapshotError(f"{where}: 'tables' is not a table of files")
    tables: dict[str, pd.DataFrame] = {}
    for name, entry in entries.items():
        if name in skip:
            continue
        relative = entry.get("file") if isinstance(entry, Mapping) else None
        if not isinstance(relative, str) or not relative:
            raise SnapshotError(f"{where}: tables.{name}: expected an entry with its 'file'")
        tables[str(name)] = read_snapshot_file(Path(path), relative)
    return tables


def read_snapshot_file(path: Path, relative: str) -> pd.DataFrame:
    """One Parquet file of the snapshot at *path*.

    Raises
    ------
    SnapshotError
        *relative* leaves the snapshot directory, or the file is missing or not readable Parquet
        (damaged after its hash was recorded, or the manifest was edited).
    """
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts:
        raise SnapshotError(
            f"{Path(path) / MANIFEST_NAME}: {relative!r} is outside the snapshot directory"
        )
    file = Path(path) / relative
    try:
        return pd.read_parquet(file)
    except (OSError, ValueError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SnapshotError(
            f"{file}: not a readable Parquet table ({detail}); the snapshot is damaged, take "
            "a new one"
        ) from None


def list_snapshots(out_dir: Path) -> list[Path]:
    """Return the snapshots in *out_dir* (directories with a manifest, not temporary), by name."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted(
        child
        for child in out_dir.iterdir()
        if child.is_dir() and not child.name.startswith(".") and (child / MANIFEST_NAME).is_file()
    )
