"""Immutable snapshots: one directory per pull or import.

Layout of a snapshot directory::

    <name>/
        manifest.json               what, when, from where, and the sha256 of every other file
        snapshot-id.txt             the snapshot id: sha256 of the canonical manifest
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

Identity
--------
The manifest's hashes cover every other file; the **snapshot id** covers the manifest: the
sha256 of its canonical JSON (keys sorted, no spaces, UTF-8; :func:`manifest_id`), written to
``snapshot-id.txt`` beside it and read back with :func:`snapshot_id` (what analyses, validation
runs and DSMB reports record as their input). :func:`verify_snapshot` recomputes it, so any edit
of the manifest's content (a count, the table map, a date, a key removed or retyped) is detected;
it also checks the manifest against itself, which holds even for someone who recomputes the id:
every key studyman reads has its type, every table's file is hashed and every hashed table file is
in the table map. Row and column counts are checked against each table when it is read.
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
from datetime import datetime
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
    "SNAPSHOT_ID_NAME",
    "Snapshot",
    "SnapshotResult",
    "SnapshotVerification",
    "json_bytes",
    "list_snapshots",
    "manifest_id",
    "parquet_bytes",
    "read_manifest",
    "read_snapshot",
    "read_snapshot_file",
    "read_snapshot_tables",
    "snapshot_id",
    "verify_snapshot",
    "write_bytes_atomic",
    "write_snapshot",
    "write_tidy_snapshot",
]

MANIFEST_NAME = "manifest.json"
SNAPSHOT_ID_NAME = "snapshot-id.txt"
SNAPSHOT_FORMAT = "studyman-snapshot/2"
_OLDER_FORMATS = ("studyman-snapshot/1",)
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
    snapshot_id
        The snapshot id (sha256 of the canonical manifest, see :func:`snapshot_id`).
    """

    path: Path
    table_rows: Mapping[str, int]
    findings: int
    records: int
    snapshot_id: str = ""


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
    manifest
        What is wrong with the manifest itself: edited since the snapshot id was taken (or no
        id), a key of the wrong type, a table map that disagrees with the hashed files.
    snapshot_id
        The id recorded in ``snapshot-id.txt`` ("" when there is none).
    """

    path: Path
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    manifest: tuple[str, ...] = ()
    snapshot_id: str = ""

    @property
    def ok(self) -> bool:
        """True when the manifest is intact and every file is present, unchanged, none added."""
        return not (self.changed or self.missing or self.extra or self.manifest)

    def _problems(self) -> list[str]:
        return (
            [f"manifest: {problem}" for problem in self.manifest]
            + [f"changed: {name}" for name in self.changed]
            + [f"missing: {name}" for name in self.missing]
            + [f"not in manifest: {name}" for name in self.extra]
        )

    def describe(self) -> str:
        """One line per problem (or ``OK``)."""
        if self.ok:
            return f"{self.path}: OK, every file matches the manifest and the snapshot id"
        lines = [f"{self.path}: differs from its manifest"]
        lines += [f"  {problem}" for problem in self._problems()]
        return "\n".join(lines)

    def summary(self) -> str:
        """The problems on one line (for an error message)."""
        if self.ok:
            return self.describe()
        return f"{self.path}: differs from its manifest ({'; '.join(self._problems())})"


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read back: typed tables, findings and manifest."""

    path: Path
    manifest: Mapping[str, Any]
    tables: Mapping[str, pd.DataFrame]
    findings: pd.DataFrame
    snapshot_id: str = ""


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
        # The id of what a reader will parse, not of the dict in memory (tuples become lists).
        identity = manifest_id(json.loads(text)) + "\n"
        if private:
            for file_name, content in ((MANIFEST_NAME, text), (SNAPSHOT_ID_NAME, identity)):
                handle = os.open(temporary / file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
                with os.fdopen(handle, "wb") as stream:
                    stream.write(content.encode("utf-8"))
        else:
            (temporary / MANIFEST_NAME).write_text(text, encoding="utf-8")
            (temporary / SNAPSHOT_ID_NAME).write_text(identity, encoding="ascii")
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
        snapshot_id=snapshot_id(path),
    )


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def manifest_id(manifest: Mapping[str, Any]) -> str:
    """The snapshot id of *manifest*: the sha256 of its canonical JSON.

    Canonical: keys sorted at every level, no white space, UTF-8 (``ensure_ascii=False``), so
    the id depends on the manifest's content only, never on how the file is indented.
    """
    try:
        text = json.dumps(
            manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as error:
        raise SnapshotError(f"a manifest must be plain JSON data ({error})") from None
    return _sha256(text.encode("utf-8"))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} appears more than once")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_manifest(path: Path, *, require_files: bool = True) -> dict[str, Any]:
    """The manifest of the snapshot at *path*, parsed (not verified: see :func:`verify_snapshot`).

    Raises
    ------
    SnapshotError
        No manifest, not UTF-8 JSON, not an object, a key given twice, NaN or Infinity, or
        (with *require_files*) no ``files`` table of hashes. One line, naming the file.
    """
    manifest_path = Path(path) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise SnapshotError(f"{path} is not a snapshot: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(
            decode_utf8(manifest_path.read_bytes()),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
        )
    except TextEncodingError as problem:
        raise SnapshotError(f"{manifest_path}: {problem}") from None
    except json.JSONDecodeError as error:
        raise SnapshotError(f"{manifest_path}: not valid JSON ({error})") from None
    except (ValueError, RecursionError) as error:
        raise SnapshotError(f"{manifest_path}: not a studyman manifest ({error})") from None
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{manifest_path}: expected a JSON object")
    if require_files and not isinstance(manifest.get("files"), dict):
        raise SnapshotError(f"{manifest_path}: no 'files' table of hashes")
    return manifest


_load_manifest = read_manifest  # the name studyman.sources.blinding imports
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _manifest_problems(manifest: Mapping[str, Any]) -> list[str]:
    """What is wrong with *manifest* on its own terms (types, table map against files)."""
    problems: list[str] = []

    def expect(key: str, ok: bool, expected: str, value: Any) -> None:
        if not ok:
            problems.append(f"{key}: expected {expected}, found {_shown(value)}")

    missing = object()
    fmt = manifest.get("format", missing)
    if fmt in _OLDER_FORMATS:
        problems.append(
            f"format {fmt}: written by an older studyman, without a snapshot id; take a new "
            "snapshot"
        )
    elif fmt is missing:
        problems.append(f"format: missing (expected {SNAPSHOT_FORMAT!r})")
    else:
        expect("format", fmt == SNAPSHOT_FORMAT, repr(SNAPSHOT_FORMAT), fmt)
    kind = manifest.get("kind", missing)
    expect("kind", isinstance(kind, str) and bool(kind), "a non-empty text", kind)
    if "created_at" in manifest:
        created = manifest["created_at"]
        try:
            valid = isinstance(created, str) and bool(datetime.fromisoformat(created))
        except ValueError:
            valid = False
        expect("created_at", valid, "an ISO 8601 time", created)
    optional: dict[str, tuple[Callable[[Any], bool], str]] = {
        "studyman_version": (lambda v: isinstance(v, str), "a text"),
        "records": (lambda v: v is None or _is_count(v), "a count"),
        "record_id_field": (lambda v: v is None or isinstance(v, str), "a field name"),
        "longitudinal": (lambda v: isinstance(v, bool), "true or false"),
        "repeating": (lambda v: isinstance(v, bool), "true or false"),
        "missing_data_codes": (
            lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
            "a list of codes",
        ),
        "conformance_findings": (lambda v: v is None or _is_count(v), "a count"),
        "protocol": (lambda v: v is None or isinstance(v, dict), "an object or null"),
        "source": (lambda v: isinstance(v, dict), "an object"),
        "redcap": (lambda v: isinstance(v, dict), "an object"),
    }
    for key, (check, expected) in optional.items():
        if key in manifest:
            expect(key, check(manifest[key]), expected, manifest[key])
    files = manifest.get("files", missing)
    hashed: set[str] = set()
    if not isinstance(files, dict):
        problems.append(f"files: expected a table of sha256 hashes, found {_shown(files)}")
    else:
        for relative, digest in files.items():
            parts = Path(relative).parts
            if (
                not relative
                or Path(relative).is_absolute()
                or ".." in parts
                or relative in (MANIFEST_NAME, SNAPSHOT_ID_NAME)
            ):
                problems.append(f"files: {relative!r} is not a file of the snapshot")
            elif not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                problems.append(f"files.{relative}: expected a sha256, found {_shown(digest)}")
            else:
                hashed.add(relative)
    tables = manifest.get("tables", missing)
    mapped: set[str] = set()
    if not isinstance(tables, dict):
        problems.append(f"tables: expected a table map, found {_shown(tables)}")
    else:
        for name, entry in tables.items():
            where = f"tables.{name}"
            if not isinstance(entry, dict):
                problems.append(f"{where}: expected an object, found {_shown(entry)}")
                continue
            expected_file = f"tables/{name}.parquet"
            expect(
                f"{where}.file",
                entry.get("file") == expected_file,
                expected_file,
                entry.get("file"),
            )
            expect(f"{where}.rows", _is_count(entry.get("rows")), "a count", entry.get("rows"))
            expect(
                f"{where}.columns", _is_count(entry.get("columns")), "a count", entry.get("columns")
            )
            mapped.add(expected_file)
            if isinstance(files, dict) and expected_file not in hashed:
                problems.append(f"{where}: its file {expected_file} has no hash in 'files'")
        for relative in sorted(hashed):
            if relative.startswith("tables/") and relative not in mapped:
                problems.append(f"files: {relative} is in no entry of 'tables'")
    findings = manifest.get("findings", missing)
    expect("findings", _is_count(findings), "a count", None if findings is missing else findings)
    if isinstance(files, dict) and "findings.parquet" not in hashed:
        problems.append("files: findings.parquet has no hash")
    return problems


def _recorded_id(path: Path) -> str:
    """The id in ``snapshot-id.txt`` (SnapshotError, one line, when missing or malformed)."""
    id_path = Path(path) / SNAPSHOT_ID_NAME
    try:
        text = id_path.read_bytes().decode("ascii").strip()
    except FileNotFoundError:
        raise SnapshotError(
            f"{id_path} is missing: nothing vouches for the manifest (written by an older "
            "studyman, or removed); take a new snapshot"
        ) from None
    except (OSError, UnicodeDecodeError):
        text = ""
    if not _HEX64.fullmatch(text):
        raise SnapshotError(f"{id_path}: expected the 64 hexadecimal digits of a sha256")
    return text


def snapshot_id(path: Path) -> str:
    """The id of the snapshot at *path*: the sha256 of its canonical manifest.

    Checked against the manifest (so an edited manifest is refused), not against the other files:
    :func:`read_snapshot` and :func:`verify_snapshot` re-hash those. Record it as the input of
    anything derived from the snapshot.

    Raises
    ------
    SnapshotError
        No readable manifest, no ``snapshot-id.txt``, or a manifest edited since (one line).
    """
    path = Path(path)
    manifest = read_manifest(path, require_files=False)
    recorded = _recorded_id(path)
    if manifest_id(manifest) != recorded:
        raise SnapshotError(
            f"{path / MANIFEST_NAME} was edited: its content no longer matches the snapshot id "
            f"in {SNAPSHOT_ID_NAME}; take a new snapshot"
        )
    return recorded


def verify_snapshot(path: Path) -> SnapshotVerification:
    """Re-hash every file of the snapshot at *path* and check its manifest against its id.

    Raises
    ------
    SnapshotError
        When *path* has no manifest that parses as a JSON object.
    """
    path = Path(path)
    manifest = read_manifest(path, require_files=False)
    problems = _manifest_problems(manifest)
    recorded = ""
    try:
        recorded = _recorded_id(path)
    except SnapshotError as error:
        problems.insert(0, str(error))
    else:
        if manifest_id(manifest) != recorded:
            problems.insert(
                0,
                f"{MANIFEST_NAME} was edited: its content no longer matches the snapshot id "
                f"{recorded[:12]}... in {SNAPSHOT_ID_NAME}",
            )
    files = manifest.get("files")
    expected: dict[str, str] = (
        {
            str(k): v
            for k, v in files.items()
            if isinstance(v, str)
            and not Path(str(k)).is_absolute()
            and ".." not in Path(str(k)).parts
        }
        if isinstance(files, dict)
        else {}
    )
    changed: list[str] = []
    missing: list[str] = []
    for relative, digest in sorted(expected.items()):
        file = path / relative
        if not file.is_file():
            missing.append(relative)
        elif _file_sha256(file) != digest:
            changed.append(relative)
    present = {item.relative_to(path).as_posix() for item in path.rglob("*") if item.is_file()} - {
        MANIFEST_NAME,
        SNAPSHOT_ID_NAME,
    }
    extra = sorted(present - set(expected)) if isinstance(files, dict) else []
    return SnapshotVerification(
        path, tuple(changed), tuple(missing), tuple(extra), tuple(problems), recorded
    )


def read_snapshot(path: Path, *, verify: bool = True) -> Snapshot:
    """Read the snapshot at *path* (verified first unless ``verify=False``).

    Raises
    ------
    SnapshotError
        When the snapshot has no manifest, or (with ``verify``) differs from it.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        verification = verify_snapshot(path)
        if not verification.ok:
            raise SnapshotError(verification.summary())
    tables = read_snapshot_tables(path, manifest)
    findings = read_snapshot_file(path, "findings.parquet")
    count = manifest.get("findings")
    if _is_count(count) and count != len(findings):
        raise SnapshotError(
            f"{path / 'findings.parquet'}: {len(findings)} findings, the manifest says {count}"
        )
    identity = manifest_id(manifest) if verify else ""
    return Snapshot(
        path=path, manifest=manifest, tables=tables, findings=findings, snapshot_id=identity
    )


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
        frame = read_snapshot_file(Path(path), relative)
        # The counts in the manifest are a second check of the table map (see module notes).
        for what, count, found in (
            ("rows", entry.get("rows"), len(frame)),
            ("columns", entry.get("columns"), len(frame.columns)),
        ):
            if _is_count(count) and count != found:
                raise SnapshotError(
                    f"{Path(path) / relative}: {found} {what}, the manifest says {count} "
                    f"(tables.{name}.{what}); the snapshot is damaged, take a new one"
                )
        tables[str(name)] = frame
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
