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
from studyman.facts import StudyFacts, derive_facts, write_facts_json
from studyman.private_files import make_private_directory
from studyman.protocol.models import Protocol
from studyman.sources.blinding import blind_dictionary, blind_findings, blind_flat_records
from studyman.sources.randomization import read_randomization_list
from studyman.sources.snapshot import snapshot_id
from studyman.validation.catalogue import CATALOGUE, CheckDefinition
from studyman.validation.custom import CustomCheck, load_custom_checks
from studyman.validation.dictionary import DataDictionary, dictionary_from_frame
from studyman.validation.engine import run_checks
from studyman.validation.outputs import OutputBatch, deviation_log, write_outputs
from studyman.validation.query_log import Coverage, QueryLog, SyncResult
from studyman.validation.records import (
    EVENT,
    INSTANCE,
    REPEAT,
    flat_records_from_tables,
    normalise_records,
    text,
    text_tables,
)
from studyman.validation.workbooks import ListingContext

__all__ = [
    "QUERY_LOG_NAME",
    "ValidationRunReport",
    "blinded_queries",
    "custom_checks_for",
    "dictionary_for",
    "input_coverage",
    "listing_context",
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
        Rows in the deviation log (-1: a partial run, which does not rewrite it).
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
            f"{self.open_queries} open in {self.query_log}; "
            + (
                f"{len(self.sync.kept)} left as they were (their place is not in this input); "
                if self.sync.kept
                else ""
            )
            + (
                f"{self.deviations} deviations; "
                if self.deviations >= 0
                else "partial run: deviation log not rewritten; "
            )
            + f"listings in {self.out_dir}"
        )


def dictionary_for(
    protocol: Any, *, blinded: bool = False
) -> tuple[DataDictionary, frozenset[str]]:
    """The protocol's data dictionary and missing-data codes (from its REDCap project).

    With *blinded*, the dictionary of the blinded view
    (:func:`studyman.sources.blinding.blind_dictionary`): masked codes merged, hidden fields out.
    """
    project = protocol.redcap
    if project is None:
        raise ValidationError("the protocol has no REDCap project loaded (redcap_project)")
    source = blind_dictionary(project.dictionary, protocol) if blinded else project.dictionary
    dictionary = dictionary_from_frame(pd.DataFrame(source.as_rows()))
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
    return _read_input(source, dictionary, skip_tables)[0]


def _read_input(
    source: Path, dictionary: DataDictionary, skip_tables: frozenset[str]
) -> tuple[pd.DataFrame, frozenset[str]]:
    """Flat records and the columns the input exported (a snapshot's empty tables count)."""
    if source.suffix.lower() == ".csv" and not source.is_dir():
        # The reader of offline import: a damaged, truncated, empty or non-UTF-8 export is an
        # error naming the line (a silently short export would close the queries of the
        # participants cut off).
        from studyman.sources.offline import parse_records_csv, read_records_file

        frame = parse_records_csv(read_records_file(source), str(source))
        records = normalise_records(frame, dictionary.record_id_field)
        return records, frozenset(map(str, frame.columns))
    from studyman.sources.snapshot import read_snapshot

    snapshot = read_snapshot(source)
    kept = {name: table for name, table in snapshot.tables.items() if name not in skip_tables}
    tables = text_tables(kept, dictionary)
    columns = frozenset(str(column) for table in kept.values() for column in table.columns)
    return flat_records_from_tables(tables, dictionary.record_id_field), columns


def input_coverage(
    records: pd.DataFrame,
    columns: frozenset[str],
    dictionary: DataDictionary,
    protocol: Any,
    *,
    skip_forms: frozenset[str] = frozenset(),
) -> Coverage:
    """What an input holds: records, events, fields, sites and rows (see :class:`Coverage`).

    A field counts when one of its columns was exported (a checkbox by any of its boxes); the
    fields of *skip_forms* (the unblinded forms in a blinded run) never count. A record's site
    is its data access group when exported, else its record-ID prefix.
    """
    id_field = dictionary.record_id_field
    record_ids = text(records, id_field)
    events = text(records, EVENT)
    repeats = text(records, REPEAT)
    instances = text(records, INSTANCE)
    expected = frozenset(
        (spec.form, spec.name)
        for spec in dictionary.fields
        if spec.holds_data and spec.form not in skip_forms
    )
    fields = frozenset(
        (spec.form, spec.name)
        for spec in dictionary.fields
        if (spec.form, spec.name) in expected and any(column in columns for column in spec.columns)
    )
    known = {site.id for site in protocol.sites}
    by_dag = {site.dag: site.id for site in protocol.sites}
    groups = (
        text(records, "redcap_data_access_group")
        if "redcap_data_access_group" in records.columns
        else [""] * len(records)
    )
    sites = set()
    for record_id, group in zip(record_ids, groups, strict=True):
        if not record_id:
            continue
        site = by_dag.get(group) if group else None
        prefix = record_id.split("-", 1)[0]
        sites.add(site or (prefix if prefix in known else "unknown"))
    return Coverage(
        records=frozenset(record_id for record_id in record_ids if record_id),
        events=frozenset(event for event in events if event),
        fields=fields,
        sites=frozenset(sites),
        rows=frozenset(
            (str(r), str(e), str(f), str(i))
            for r, e, f, i in zip(record_ids, events, repeats, instances, strict=True)
            if r
        ),
        columns=columns,
        lacking=frozenset(name for form, name in expected - fields),
        expected=expected,
    )


def listing_context(
    protocol: Any,
    dictionary: DataDictionary,
    records: pd.DataFrame,
    checks: tuple[CheckDefinition, ...] = CATALOGUE,
) -> ListingContext:
    """Labels (visit, form, field), visit dates, sites and contact for the query workbooks.

    A row's visit date is its ``visit_date`` when filled, else its first filled date field in
    dictionary order (a repeating form's instance: the first date of that form, such as an
    adverse event's onset).
    """
    project = protocol.redcap
    event_labels = {
        event.unique_event_name: event.custom_event_label or event.event_name
        for event in (project.events if project is not None else ())
    }
    form_labels = {
        instrument.instrument_name: instrument.instrument_label
        for instrument in (project.instruments if project is not None else ())
    }
    id_field = dictionary.record_id_field
    date_fields = [
        spec
        for spec in dictionary.fields
        if spec.validation.startswith(("date", "datetime")) and spec.name in records.columns
    ]
    ids, events = text(records, id_field), text(records, EVENT)
    repeats, instances = text(records, REPEAT), text(records, INSTANCE)
    visit_date_field = protocol.visit_form.date_field
    visit = text(records, visit_date_field) if visit_date_field in records.columns else None
    found: dict[tuple[str, ...], str] = {}
    columns = {spec.name: text(records, spec.name) for spec in date_fields}
    for position in range(len(records)):
        repeat = str(repeats[position])
        day = str(visit[position]) if visit is not None and not repeat else ""
        for spec in date_fields:
            if day:
                break
            if repeat and spec.form != repeat:
                continue
            day = str(columns[spec.name][position])
        if not day:
            continue
        key: tuple[str, ...] = (str(ids[position]), str(events[position]))
        if repeat:
            key = (*key, repeat, str(instances[position]))
        found.setdefault(key, day[:10])
    study = protocol.study
    return ListingContext(
        event_labels=event_labels,
        form_labels=form_labels,
        # a form's status field is not in the dictionary: REDCap labels it "Complete?"
        field_labels={
            **{f"{form}_complete": f"{label}: Complete?" for form, label in form_labels.items()},
            **{spec.name: spec.label for spec in dictionary.fields},
        },
        visit_dates=found,
        study=f"{study.id}: {study.title}",
        contact=f"the data manager of the coordinating centre ({study.sponsor})",
        sites=tuple(site.id for site in protocol.sites),
        check_titles={check.check_id: check.description for check in (*CATALOGUE, *checks)},
    )


def _randomization_table(path: Path, protocol: Any, record_id_field: str) -> pd.DataFrame:
    """The randomisation list as the checks want it: record-ID field and arm field (raw codes).

    Read by :func:`studyman.sources.randomization.read_randomization_list`; arm names are turned
    into the protocol's codes (the checks compare codes), anything else is kept as written.
    """
    frame = read_randomization_list(path, protocol)
    # the reader puts the record-ID and arm columns first, whatever their names
    record_column, arm_column = str(frame.columns[0]), str(frame.columns[1])
    by_name = {arm.name: str(arm.code) for arm in protocol.arms.items}
    frame[arm_column] = frame[arm_column].map(lambda value: by_name.get(value, value))
    codes = set(by_name.values())
    unknown = sorted({value for value in frame[arm_column] if value and value not in codes})
    if unknown:
        column = frame.attrs.get("arm_column", arm_column)
        shown = ", ".join(repr(value) for value in unknown[:10])
        raise ValidationError(
            f"{path}: column {column}: unknown arm value(s) {shown}; expected the protocol's arm "
            f"codes ({', '.join(sorted(codes))}) or names ({', '.join(sorted(by_name))})"
        )
    renamed = {record_column: record_id_field, arm_column: str(protocol.arms.field)}
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
    keep = ~queries["check_id"].isin(arm_checks)
    # the blinding gate: no query on a hidden form or masked field, masked codes merged
    return blind_findings(queries[keep].reset_index(drop=True), protocol)


def _facts(
    protocol: Any,
    records: pd.DataFrame,
    arms: pd.DataFrame | None,
    queries: pd.DataFrame,
    *,
    source: Path,
    data_cut: date | None,
    as_of: str,
) -> StudyFacts:
    """The study's facts for ``facts.json``: from the records the checks read (the blinded view
    unless arms are given), with the log's queries aged to the run's stamp."""
    from studyman.sources.casting import ProjectDictionary
    from studyman.sources.tidy import TidyBuilder

    project = protocol.redcap
    builder = TidyBuilder(
        ProjectDictionary(project.dictionary.as_rows()),
        [choice.code for choice in project.project.missing_codes],
    )
    builder.add_batch(records)
    arm_series = None
    if arms is not None:
        id_field = protocol.study.record_id_field
        names = {str(arm.code): arm.name for arm in protocol.arms.items}
        table = normalise_records(arms, id_field)
        codes = pd.Series(text(table, protocol.arms.field), index=text(table, id_field))
        arm_series = codes[codes != ""].map(lambda code: names.get(code, code))
    return derive_facts(
        protocol,
        builder.finish().tables,
        cutoff=data_cut or protocol.reporting.data_cut or date.today(),
        arms=arm_series,
        arm_order=tuple(arm.name for arm in protocol.arms.items),
        queries=queries,
        as_of=datetime.fromisoformat(as_of.replace("Z", "+00:00")),
        snapshot_id=snapshot_id(source) if source.is_dir() else "",
    )


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
    partial: bool = False,
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
    partial
        The input is knowingly incomplete (a site's export, a subset): run it anyway; queries
        whose place it does not hold stay as they are (a history row says so).

    Raises
    ------
    SourceError
        The randomisation file is missing or unreadable, lacks the record-ID or arm column, or
        lists a participant twice.
    CoverageError
        The input covers less than the query log's last complete run and *partial* is not set
        (the message says what is missing; nothing is written or changed).
    ValidationError
        An output cannot be written: no output of the run is kept and the log is unchanged.

    Notes
    -----
    One run is all-or-nothing: the listings are written into a hidden directory in *out_dir*,
    moved into place together, and the query log's transaction commits last; a failure at any
    point leaves the previous listings and the log as they were (a log created by the run is
    removed again).
    """
    blinded = randomization is None
    dictionary, codes = dictionary_for(protocol, blinded=blinded)
    custom = custom_checks_for(protocol, dictionary, checks_file)
    blinded_forms = frozenset(protocol.blinding.unblinded_forms)
    skipped = frozenset() if randomization is not None else blinded_forms
    records, columns = _read_input(Path(source), dictionary, skipped)
    if blinded:
        # the blinding gate: a blinded run sees the study only through its blinded view
        records = blind_flat_records(records, protocol, protocol.redcap.dictionary)
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
    coverage = input_coverage(records, columns, dictionary, protocol, skip_forms=frozenset(hidden))
    findings, checks_run = result.findings, result.checks_run
    # A field the input has no column for reads as blank to the checks: what they say about it
    # is about the export, not the data (the list-reading arm checks excepted).
    arm_checks = {check.check_id for check in result.checks if check.needs_arm}
    exported = [
        check_id in arm_checks or not name or coverage.has_field(name)
        for check_id, name in zip(
            findings["check_id"].astype(str), findings["field"].astype(str), strict=True
        )
    ]
    findings = findings.loc[pd.Series(exported, index=findings.index, dtype=bool)]
    findings = findings.reset_index(drop=True)
    if coverage.lacking:
        # the checks read across fields: no finding of such an input is evidence (without
        # partial the log refuses it below, naming the fields)
        findings = findings.iloc[0:0]
    if partial:
        # a study-wide statistic on a subset says nothing about the whole study: such checks
        # neither open nor close queries in a partial run
        across = {check.check_id for check in result.checks if check.across_participants}
        findings = findings[~findings["check_id"].isin(list(across))].reset_index(drop=True)
        checks_run = checks_run - across
    # a partial run's deviations would be a part of the log presented as all of it
    deviations = (
        None if partial else deviation_log(result.findings, result.checks, records, protocol)
    )
    new_log = not log_path.exists()
    new_out_dir = not out_dir.exists()
    batch = OutputBatch(out_dir)
    try:
        with (
            QueryLog(log_path) as log,
            log.staged_sync(
                findings,
                checks_run=checks_run,
                unchecked_instruments=hidden,
                coverage=coverage,
                partial=partial,
                who=who,
                at=stamp,
                source=str(source),
            ) as sync,
        ):
            queries = log.queries(as_of=stamp)
            if not result.unblinded:
                queries = blinded_queries(queries, protocol)
            facts = _facts(
                protocol,
                records,
                arms,
                queries,
                source=Path(source),
                data_cut=data_cut,
                as_of=stamp,
            )

            def write_facts(path: Path) -> None:
                write_facts_json(path, facts, output="validation", mode=0o600)

            batch.write("facts.json", write_facts)
            files = write_outputs(
                out_dir,
                queries,
                deviations,
                context=listing_context(protocol, dictionary, records, result.checks),
                # a site's workbook never holds an arm-derived query, even when unblinded
                site_queries=blinded_queries(queries, protocol),
                title=f"{protocol.study.id}: data queries and protocol deviations",
                as_of=stamp,
                unblinded=result.unblinded,
                batch=batch,
            )
            batch.install()
            # the log committed as the block ended: the run is complete
    except BaseException:
        batch.undo()
        if new_log:
            for leftover in (log_path, log_path.with_name(log_path.name + "-journal")):
                leftover.unlink(missing_ok=True)
        batch.discard(failed=True)
        if new_out_dir and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    batch.discard()
    open_count = int(queries["status"].isin(["open", "answered", "reopened"]).sum())
    return ValidationRunReport(
        findings=len(findings),
        sync=sync,
        open_queries=open_count,
        deviations=-1 if deviations is None else len(deviations),
        query_log=log_path,
        out_dir=out_dir,
        files=tuple(files),
        unblinded=result.unblinded,
    )
