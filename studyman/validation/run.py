"""One validation run with its files: read the data, check, update the query log, write listings.

This is the edge of the validation layer (it reads and writes files); the checks themselves
(:func:`studyman.validation.engine.run_checks`) stay pure. ``studyman validate`` and the demo call
:func:`validate_study`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from studyman.errors import ValidationError
from studyman.private_files import make_private_directory
from studyman.protocol.models import Protocol
from studyman.sources.randomization import read_randomization_list
from studyman.validation.catalogue import CATALOGUE
from studyman.validation.custom import CustomCheck, load_custom_checks
from studyman.validation.dictionary import DataDictionary, dictionary_from_frame
from studyman.validation.engine import run_checks
from studyman.validation.outputs import deviation_log, write_outputs
from studyman.validation.query_log import QueryLog, SyncResult
from studyman.validation.records import (
    flat_records_from_tables,
    normalise_records,
    text_tables,
)

__all__ = [
    "QUERY_LOG_NAME",
    "ValidationRunReport",
    "blinded_queries",
    "custom_checks_for",
    "dictionary_for",
    "read_flat_records",
    "validate_study",
]

QUERY_LOG_NAME = "queries.sqlite"


@dataclass(frozen=True)
class ValidationRunReport:
    """What one ``validate`` run did.

    Attributes
    ----------
    findings
        Number of findings (problems found now).
    sync
        Queries opened, re-opened, closed and still open in the log.
    open_queries
        Queries open, answered or re-opened after the run.
    deviations
        Rows in the deviation log.
    query_log, out_dir
        Where the log and the listings are.
    files
        The files written.
    unblinded
        Whether arm data were used.
    """

    findings: int
    sync: SyncResult
    open_queries: int
    deviations: int
    query_log: Path
    out_dir: Path
    files: tuple[Path, ...]
    unblinded: bool

    def describe(self) -> str:
        """One line for the command line."""
        return (
            f"{self.findings} findings; queries: {len(self.sync.opened)} new, "
            f"{len(self.sync.reopened)} re-opened, {len(self.sync.closed)} closed, "
            f"{self.open_queries} open in {self.query_log}; {self.deviations} deviations; "
            f"listings in {self.out_dir}"
        )


def dictionary_for(protocol: Any) -> tuple[DataDictionary, frozenset[str]]:
    """The protocol's data dictionary and missing-data codes (from its REDCap project)."""
    project = protocol.redcap
    if project is None:
        raise ValidationError("the protocol has no REDCap project loaded (redcap_project)")
    dictionary = dictionary_from_frame(pd.DataFrame(project.dictionary.as_rows()))
    codes = frozenset(choice.code for choice in project.project.missing_codes)
    return dictionary, codes


def custom_checks_for(
    protocol: Any, dictionary: DataDictionary, path: Path | None = None
) -> tuple[CustomCheck, ...]:
    """Custom checks from *path*, else from ``checks.yaml`` beside the protocol file, if any."""
    if path is None:
        if not protocol.source_file:
            return ()
        path = Path(protocol.source_file).parent / "checks.yaml"
        if not path.is_file():
            return ()
    return load_custom_checks(path, dictionary)


def read_flat_records(
    source: Path, dictionary: DataDictionary, *, skip_tables: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """Flat records from a snapshot directory, or from REDCap's flat CSV export (``.csv``).

    *skip_tables* names snapshot tables left out (the unblinded forms in a blinded run).
    """
    if source.suffix.lower() == ".csv" and not source.is_dir():
        # The reader of offline import: a damaged, truncated, empty or non-UTF-8 export is an
        # error naming the line (a silently short export would close the queries of the
        # participants cut off).
        from studyman.sources.offline import parse_records_csv, read_records_file

        frame = parse_records_csv(read_records_file(source), str(source))
        return normalise_records(frame, dictionary.record_id_field)
    from studyman.sources.snapshot import read_snapshot

    snapshot = read_snapshot(source)
    kept = {name: table for name, table in snapshot.tables.items() if name not in skip_tables}
    tables = text_tables(kept, dictionary)
    return flat_records_from_tables(tables, dictionary.record_id_field)


def _randomization_table(path: Path, protocol: Any, record_id_field: str) -> pd.DataFrame:
    """The randomisation list as the checks want it: record-ID field and arm field (raw codes).

    Read by :func:`studyman.sources.randomization.read_randomization_list`; arm names are turned
    into the protocol's codes (the checks compare codes), anything else is kept as written.
    """
    frame = read_randomization_list(path)
    by_name = {arm.name: str(arm.code) for arm in protocol.arms.items}
    frame["rand_arm"] = frame["rand_arm"].map(lambda value: by_name.get(value, value))
    codes = set(by_name.values())
    unknown = sorted({value for value in frame["rand_arm"] if value and value not in codes})
    if unknown:
        column = frame.attrs.get("arm_column", "rand_arm")
        shown = ", ".join(repr(value) for value in unknown[:10])
        raise ValidationError(
            f"{path}: column {column}: unknown arm value(s) {shown}; expected the protocol's arm "
            f"codes ({', '.join(sorted(codes))}) or names ({', '.join(sorted(by_name))})"
        )
    renamed = {"record_id": record_id_field, "rand_arm": str(protocol.arms.field)}
    # another column already bearing a target name would be a second record-ID or arm column
    clashing = [name for name in renamed.values() if name not in renamed and name in frame]
    return frame.drop(columns=clashing).rename(columns=renamed)


def blinded_queries(queries: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """The queries a blinded reader may see: none from a check that needs the arm, none on an
    unblinded form.

    A query log may be shared by blinded and unblinded runs; blinded listings and the DSMB open
    report read it through this filter so that no allocation reaches them.
    """
    arm_checks = [check.check_id for check in CATALOGUE if check.needs_arm]
    hidden = list(protocol.blinding.unblinded_forms)
    keep = ~queries["check_id"].isin(arm_checks) & ~queries["instrument"].isin(hidden)
    return queries[keep].reset_index(drop=True)


def validate_study(
    protocol: Any,
    source: Path,
    out_dir: Path,
    *,
    query_log: Path | None = None,
    randomization: Path | pd.DataFrame | None = None,
    checks_file: Path | None = None,
    data_cut: date | None = None,
    who: str = "studyman validate",
    at: str | None = None,
) -> ValidationRunReport:
    """Validate a snapshot (or flat CSV export) and write the listings into *out_dir*.

    Parameters
    ----------
    protocol
        The loaded protocol (with its REDCap project).
    source
        A snapshot directory or a flat CSV export.
    out_dir
        Where ``queries.csv``, ``queries.xlsx``, ``deviations.csv``/``.xlsx`` and
        ``summary.html`` go.
    query_log
        The SQLite query log (default ``out_dir/queries.sqlite``).
    randomization
        Unblinded runs only: the randomisation list (a CSV or Parquet path read by
        :func:`studyman.sources.randomization.read_randomization_list`, arm codes or names, or a
        table with the record-ID field and the arm field). Without it the run is blinded.
    checks_file
        Custom checks (default: ``checks.yaml`` beside the protocol, when present).
    data_cut
        Default: the protocol's ``reporting.data_cut``.
    who, at
        Recorded in the query history (``at``: UTC ISO time, default now).

    Raises
    ------
    SourceError
        The randomisation file is missing or unreadable, lacks the record-ID or arm column, or
        lists a participant twice.
    """
    dictionary, codes = dictionary_for(protocol)
    custom = custom_checks_for(protocol, dictionary, checks_file)
    blinded_forms = frozenset(protocol.blinding.unblinded_forms)
    records = read_flat_records(
        Path(source),
        dictionary,
        skip_tables=frozenset() if randomization is not None else blinded_forms,
    )
    arms: pd.DataFrame | None
    if isinstance(randomization, Path):
        arms = _randomization_table(randomization, protocol, dictionary.record_id_field)
    else:
        arms = randomization
    result = run_checks(
        records,
        protocol,
        dictionary,
        missing_codes=codes,
        data_cut=data_cut,
        randomization=arms,
        custom_checks=custom,
        source=str(source),
    )
    stamp = at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    log_path = query_log or out_dir / QUERY_LOG_NAME
    if result.unblinded:
        # the listings and the log name arms: the folder is its owner's only from its creation
        make_private_directory(out_dir)
    hidden = () if result.unblinded else tuple(protocol.blinding.unblinded_forms)
    with QueryLog(log_path) as log:
        sync = log.sync(
            result.findings,
            checks_run=result.checks_run,
            unchecked_instruments=hidden,
            who=who,
            at=stamp,
            source=str(source),
        )
        queries = log.queries(as_of=stamp)
    if not result.unblinded:
        queries = blinded_queries(queries, protocol)
    deviations = deviation_log(result.findings, result.checks, records, protocol)
    files = write_outputs(
        out_dir,
        queries,
        deviations,
        title=f"{protocol.study.id}: data queries and protocol deviations",
        as_of=stamp,
        unblinded=result.unblinded,
    )
    open_count = int(queries["status"].isin(["open", "answered", "reopened"]).sum())
    return ValidationRunReport(
        findings=len(result.findings),
        sync=sync,
        open_queries=open_count,
        deviations=len(deviations),
        query_log=log_path,
        out_dir=out_dir,
        files=tuple(files),
        unblinded=result.unblinded,
    )
