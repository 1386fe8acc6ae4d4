"""Offline import: a snapshot from the files a coordinator downloads from REDCap's web pages.

``import_snapshot`` reads the raw CSV record export ("CSV / Microsoft Excel (raw data)") and the
data dictionary CSV (REDCap's human headers or the API's raw headers) and writes a snapshot with
the same tables and findings, byte for byte, as a pull of the same data
(:func:`studyman.sources.pull.pull_snapshot`): both parse REDCap's CSV the same way and both go
through :class:`~studyman.sources.tidy.TidyBuilder`.

Without a protocol
------------------
A study protocol is optional. Without one, everything comes from the two files:

* the record-ID field is the first field of the dictionary (REDCap's rule);
* the project is longitudinal when the export has a ``redcap_event_name`` column, and has
  repeating instruments or events when it has ``redcap_repeat_instrument`` /
  ``redcap_repeat_instance`` columns; a row's ``redcap_repeat_instrument`` says which form
  repeats, so no repeating-forms setting is needed;
* missing-data codes are a project setting the two files do not carry: pass them
  (``missing_data_codes``, ``--missing-codes``) or they are not recognised (a code in a numeric
  field is then reported as a value that does not cast, and kept as text);
* the manifest records ``"protocol": null``.

With a protocol, the missing-data codes come from the protocol's REDCap project
(``project.json``) unless given, and the manifest records the protocol's id, version and hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from studyman import __version__
from studyman.errors import SourceError
from studyman.findings import findings_frame
from studyman.protocol import Protocol, read_data_dictionary
from studyman.protocol.conformance import check_conformance
from studyman.protocol.text_files import TextEncodingError, decode_utf8
from studyman.sources.blinding import blind_export, is_blinded_export
from studyman.sources.casting import ProjectDictionary, parse_missing_data_codes
from studyman.sources.snapshot import (
    SnapshotResult,
    json_bytes,
    parquet_bytes,
    write_tidy_snapshot,
)
from studyman.sources.tidy import TidyBuilder, TidyTables

__all__ = [
    "conformance_file",
    "default_snapshot_name",
    "import_snapshot",
    "parse_records_csv",
    "parse_records_table",
    "protocol_manifest",
    "read_dictionary_csv",
    "read_records_file",
    "snapshot_manifest_tables",
]


def parse_records_table(data: bytes | str, source: str) -> pa.Table:
    """Parse REDCap's flat CSV record export into a pyarrow table of text columns.

    Parameters
    ----------
    data
        The CSV (UTF-8; a byte-order mark is allowed).
    source
        Where it came from, for error messages (a file name, or ``records batch 3 of 9``).

    Raises
    ------
    SourceError
        When the text is not a well-formed CSV table (a row with too few or too many cells, an
        unterminated quote, repeated column names): REDCap never writes such a file, so it is
        damaged or truncated.

    Notes
    -----
    Every cell is read as text: typing is the data dictionary's business (``"F"`` stays ``"F"``,
    ``"007"`` stays ``"007"``, ``"NA"`` stays ``"NA"``). Empty lines are skipped; lines of empty
    cells are kept. An empty text gives a table without columns.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        return pa.table({})
    try:
        first_line = raw.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
        names = next(csv.reader([first_line]))
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise SourceError(
                f"{source}: line 1: the CSV header repeats column(s) {', '.join(repeated)}; "
                "expected each column once"
            )
        table = pacsv.read_csv(
            io.BytesIO(raw),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
            read_options=pacsv.ReadOptions(block_size=1 << 24),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError, StopIteration) as error:
        detail = _csv_problem(raw) or str(error).splitlines()[0][:200]
        raise SourceError(f"{source}: not a well-formed REDCap CSV export ({detail})") from None
    if table.column_names != names:
        raise SourceError(f"{source}: the CSV header has unreadable column names")
    return table.combine_chunks()


def _csv_problem(raw: bytes) -> str | None:
    """Where and how *raw* is not a well-formed CSV table (run only after a parse failed).

    Names the line: text that is not UTF-8, or the first row whose cell count differs from the
    header's (a damaged or truncated file). None when neither is found.
    """
    try:
        text = decode_utf8(raw)
    except TextEncodingError as problem:
        return str(problem)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        start = reader.line_num + 1
        for row in reader:
            if row and len(row) != len(header):
                return (
                    f"line {start}: {len(row)} cells for {len(header)} columns; "
                    "the file is damaged or truncated"
                )
            start = reader.line_num + 1
    except csv.Error as error:
        return f"line {reader.line_num}: {error}; the file is damaged or truncated"
    except StopIteration:
        return None
    return None


def parse_records_csv(data: bytes | str, source: str) -> pd.DataFrame:
    """Parse REDCap's flat CSV record export into a DataFrame of text (blanks ``""``).

    See :func:`parse_records_table`.
    """
    table = parse_records_table(data, source)
    frame: pd.DataFrame = table.to_pandas(
        types_mapper=lambda t: pd.StringDtype() if t == pa.string() else None
    )
    return frame


def read_records_file(path: Path) -> bytes:
    """The bytes of a raw CSV record export file, for :func:`parse_records_table`.

    Raises
    ------
    SourceError
        The file is missing or unreadable (a directory, no permission). An empty file is REDCap's
        export of a project without records (it writes no header then), so it is accepted.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{path}: records export not found") from None
    except OSError as error:
        raise SourceError(f"{path}: cannot read the records export ({error.strerror})") from None
    return data


def read_dictionary_csv(path: Path) -> list[dict[str, str]]:
    """Read a data dictionary CSV (raw API headers or the web page's human headers).

    Returns the rows as REDCap's ``content=metadata`` answers them (raw keys, text values), read
    by :func:`studyman.protocol.read_data_dictionary`.

    Raises
    ------
    ProtocolError
        When the file is missing or not a REDCap data dictionary (names file, line, column).
    """
    return read_data_dictionary(Path(path)).as_rows()


def default_snapshot_name(kind: str, now: datetime | None = None) -> str:
    """Return ``YYYYMMDDTHHMMSSZ-<kind>`` for the current UTC time."""
    moment = now or datetime.now(UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{kind}"


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def protocol_manifest(protocol: Protocol | None) -> dict[str, Any] | None:
    """The manifest's ``protocol`` entry: study id, version, file and sha256 (None without one)."""
    if protocol is None:
        return None
    return {
        "study_id": protocol.study.id,
        "version": protocol.study.version,
        "file": Path(protocol.source_file).name if protocol.source_file else "",
        "sha256": protocol.source_sha256,
    }


def protocol_missing_codes(protocol: Protocol | None) -> tuple[str, ...]:
    """The missing-data codes of the protocol's REDCap project (none without one)."""
    if protocol is None or protocol.redcap is None:
        return ()
    return parse_missing_data_codes(protocol.redcap.project.missing_data_codes)


def conformance_file(
    protocol: Protocol | None,
    metadata: list[dict[str, Any]],
    *,
    events: list[dict[str, Any]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    repeating: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, bytes], int | None]:
    """``conformance.parquet`` (protocol against REDCap metadata, as findings) and its count.

    Kept apart from ``findings.parquet`` (findings about the data): a pull sees more of the
    project (events, mappings, repeating forms) than the two files of an import, so only the data
    findings are comparable between the two.
    """
    if protocol is None:
        return {}, None
    findings = check_conformance(
        protocol, metadata, events=events, mappings=mappings, repeating=repeating
    )
    frame = findings_frame(findings).astype("string")
    return {"conformance.parquet": parquet_bytes(frame)}, len(findings)


def snapshot_manifest_tables(tidy: TidyTables) -> dict[str, Any]:
    """Manifest entries from the tables: record-ID field, longitudinal, repeating, records."""
    columns = set(tidy.columns)
    return {
        "record_id_field": tidy.columns[0] if tidy.columns else None,
        "longitudinal": "redcap_event_name" in columns,
        "repeating": "redcap_repeat_instance" in columns,
        "records": len(tidy.record_ids),
    }


def import_snapshot(
    protocol: Protocol | None,
    records_csv: Path,
    dictionary_csv: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    missing_data_codes: str | Sequence[str] | None = None,
) -> SnapshotResult:
    """Write a snapshot from a raw CSV record export and a data dictionary CSV.

    Parameters
    ----------
    protocol
        The study protocol, or None (see the module notes: import works without one).
    records_csv
        REDCap's raw CSV record export (raw values, raw headers).
    dictionary_csv
        The data dictionary, human or raw headers.
    out_dir
        The snapshots directory; the snapshot is ``out_dir/<name>``.
    name
        The snapshot's directory name (default ``<UTC time>-import``).
    missing_data_codes
        The project's missing-data codes (``"UNK, Unknown | NASK, Not asked"`` or a list of codes);
        default: the protocol's, else none.

    Returns
    -------
    SnapshotResult

    Raises
    ------
    SourceError
        When a file is missing or not a REDCap export / dictionary.
    SnapshotError
        When the snapshot exists already.
    """
    records_csv = Path(records_csv)
    dictionary_csv = Path(dictionary_csv)
    metadata = read_dictionary_csv(dictionary_csv)
    data = read_records_file(records_csv)
    if isinstance(missing_data_codes, str):
        codes = parse_missing_data_codes(missing_data_codes)
    elif missing_data_codes is not None:
        codes = tuple(missing_data_codes)
    else:
        codes = protocol_missing_codes(protocol)
    dictionary = ProjectDictionary(metadata)
    builder = TidyBuilder(dictionary, codes)
    builder.add_batch(parse_records_table(data, str(records_csv)))
    tidy = builder.finish()
    manifest: dict[str, Any] = {
        "kind": "import",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "studyman_version": __version__,
        "source": {
            "records_file": records_csv.name,
            "records_sha256": hashlib.sha256(data).hexdigest(),
            "dictionary_file": dictionary_csv.name,
            "dictionary_sha256": _sha256_file(dictionary_csv),
        },
        "redcap": {"version": None, "project": None},
        "protocol": protocol_manifest(protocol),
        "missing_data_codes": list(codes),
        **snapshot_manifest_tables(tidy),
    }
    conformance, conformance_count = conformance_file(protocol, metadata)
    manifest["conformance_findings"] = conformance_count
    extra = {"redcap/metadata.json": json_bytes(metadata), **conformance}
    # An export holding a form that reveals the allocation (or, without a protocol, one that
    # cannot be ruled out) makes a snapshot for its owner only, from its creation.
    private = not is_blinded_export(tidy.tables, protocol)
    if protocol is not None and is_blinded_export(tidy.tables, protocol):
        # the blinding gate: a blinded export's snapshot holds only the blinded view
        tidy, blinded_metadata = blind_export(tidy, metadata, protocol)
        extra["redcap/metadata.json"] = json_bytes(blinded_metadata)
        manifest["view"] = "blinded"
    return write_tidy_snapshot(
        Path(out_dir),
        name or default_snapshot_name("import"),
        tidy,
        manifest=manifest,
        extra_files=extra,
        private=private,
    )
