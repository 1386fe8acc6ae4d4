"""`studyman validate`, `studyman checks list`, `studyman queries respond|import`."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from studyman.errors import ValidationError
from studyman.validation.catalogue import catalogue_frame
from studyman.validation.custom import CustomCheck, load_custom_checks
from studyman.validation.dictionary import DataDictionary, dictionary_from_frame
from studyman.validation.engine import run_checks
from studyman.validation.outputs import deviation_log, read_listing, write_outputs
from studyman.validation.query_log import RESPONSES, QueryLog
from studyman.validation.records import flat_records_from_tables, normalise_records, text_tables

QUERY_LOG_NAME = "queries.sqlite"


def _protocol(path: Path) -> Any:
    from studyman.protocol.loader import load_protocol

    return load_protocol(path)


def _dictionary(protocol: Any) -> tuple[DataDictionary, frozenset[str]]:
    project = protocol.redcap
    if project is None:
        raise ValidationError("the protocol has no REDCap project loaded (redcap_project)")
    dictionary = dictionary_from_frame(pd.DataFrame(project.dictionary.as_rows()))
    codes = frozenset(choice.code for choice in project.project.missing_codes)
    return dictionary, codes


def _custom_checks(
    protocol: Any, dictionary: DataDictionary, path: Path | None
) -> tuple[CustomCheck, ...]:
    if path is None:
        source = Path(protocol.source_file).parent / "checks.yaml" if protocol.source_file else None
        if source is None or not source.is_file():
            return ()
        path = source
    return load_custom_checks(path, dictionary)


def _read_records(snapshot: Path, dictionary: DataDictionary) -> pd.DataFrame:
    """Flat records from a snapshot directory, or from a flat CSV export."""
    if snapshot.is_file() and snapshot.suffix.lower() == ".csv":
        frame = pd.read_csv(snapshot, dtype=str, keep_default_na=False)
        return normalise_records(frame, dictionary.record_id_field)
    from studyman.sources.snapshot import read_snapshot

    read = read_snapshot(snapshot)
    tables = text_tables(read.tables, dictionary)
    return flat_records_from_tables(tables, dictionary.record_id_field)


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""

    @app.command("validate")
    def validate(
        protocol_path: Annotated[
            Path, typer.Option("--protocol", help="protocol.yaml or its directory.")
        ],
        snapshot: Annotated[
            Path, typer.Option("--snapshot", help="A snapshot directory (or a flat CSV export).")
        ],
        out: Annotated[
            Path, typer.Option("--out", help="Directory for listings, deviations, summary.")
        ],
        query_log: Annotated[
            Path | None,
            typer.Option("--query-log", help="SQLite query log (default OUT/queries.sqlite)."),
        ] = None,
        randomization: Annotated[
            Path | None,
            typer.Option(
                "--randomization",
                help="Unblinded runs only: CSV with record_id and the arm (and stratum) fields.",
            ),
        ] = None,
        checks_file: Annotated[
            Path | None,
            typer.Option(
                "--checks", help="Custom checks YAML (default: checks.yaml beside the protocol)."
            ),
        ] = None,
        data_cut: Annotated[
            str | None,
            typer.Option("--data-cut", help="YYYY-MM-DD (default: the protocol's data cut)."),
        ] = None,
        who: Annotated[
            str, typer.Option("--who", help="Recorded in the query history.")
        ] = "studyman validate",
    ) -> None:
        """Run every edit check, update the query log and write the listings."""
        protocol = _protocol(protocol_path)
        dictionary, codes = _dictionary(protocol)
        custom = _custom_checks(protocol, dictionary, checks_file)
        records = _read_records(snapshot, dictionary)
        arms = None
        if randomization is not None:
            try:
                arms = pd.read_csv(randomization, dtype=str, keep_default_na=False)
            except (OSError, pd.errors.ParserError) as error:
                raise ValidationError(
                    f"{randomization}: cannot read the randomisation list ({error})"
                ) from None
        cut = None
        if data_cut:
            try:
                cut = date.fromisoformat(data_cut)
            except ValueError:
                raise ValidationError(f"--data-cut {data_cut!r}: expected YYYY-MM-DD") from None
        result = run_checks(
            records,
            protocol,
            dictionary,
            missing_codes=codes,
            data_cut=cut,
            randomization=arms,
            custom_checks=custom,
            source=str(snapshot),
        )
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        log_path = query_log or out / QUERY_LOG_NAME
        with QueryLog(log_path) as log:
            sync = log.sync(
                result.findings,
                checks_run=result.checks_run,
                who=who,
                at=stamp,
                source=str(snapshot),
            )
            queries = log.queries(as_of=stamp)
        deviations = deviation_log(result.findings, result.checks, records, protocol)
        write_outputs(
            out,
            queries,
            deviations,
            title=f"{protocol.study.id}: data queries and protocol deviations",
            as_of=stamp,
            unblinded=result.unblinded,
        )
        open_count = int(queries["status"].isin(["open", "answered", "reopened"]).sum())
        typer.echo(
            f"{len(result.findings)} findings; queries: "
            f"{len(sync.opened)} new, {len(sync.reopened)} re-opened, "
            f"{len(sync.closed)} closed, {open_count} open in {log_path}; "
            f"{len(deviations)} deviations; listings in {out}"
        )

    checks = typer.Typer(help="The edit-check catalogue.", no_args_is_help=True)

    @checks.command("list")
    def list_checks(
        protocol_path: Annotated[
            Path | None, typer.Option("--protocol", help="Also list the protocol's custom checks.")
        ] = None,
        as_csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
    ) -> None:
        """Print every check: id, severity, kind, description, protocol reference."""
        extra: tuple[Any, ...] = ()
        if protocol_path is not None:
            protocol = _protocol(protocol_path)
            dictionary, _ = _dictionary(protocol)
            extra = tuple(check.definition for check in _custom_checks(protocol, dictionary, None))
        table = catalogue_frame(extra)
        if as_csv:
            typer.echo(table.to_csv(index=False, lineterminator="\n"), nl=False)
            return
        for row in table.itertuples(index=False):
            flags = ", ".join(
                flag
                for flag, on in (("review", row.review_only), ("needs arm", row.needs_arm))
                if on
            )
            suffix = f" [{flags}]" if flags else ""
            typer.echo(
                f"{row.check_id:<24} {row.severity:<8} {row.description}{suffix} ({row.reference})"
            )

    app.add_typer(checks, name="checks")

    queries = typer.Typer(help="Site responses to data queries.", no_args_is_help=True)

    @queries.command("respond")
    def respond(
        query_id: Annotated[str, typer.Argument(metavar="ID", help="The query id (Q-...).")],
        response: Annotated[str, typer.Option("--response", help=" | ".join(RESPONSES))],
        query_log: Annotated[Path, typer.Option("--query-log", help="The SQLite query log.")],
        note: Annotated[str, typer.Option("--note", help="Free text.")] = "",
        who: Annotated[str, typer.Option("--who", help="Who answers.")] = "site",
    ) -> None:
        """Record a site response to one query."""
        if not query_log.is_file():
            raise ValidationError(f"{query_log}: no query log there")
        with QueryLog(query_log) as log:
            status = log.respond(query_id, response, note, who=who)
        typer.echo(f"{query_id}: {response} recorded, status {status}")

    @queries.command("import")
    def import_listing(
        listing: Annotated[
            Path, typer.Argument(metavar="FILE", help="Edited queries.xlsx (or .csv).")
        ],
        query_log: Annotated[Path, typer.Option("--query-log", help="The SQLite query log.")],
        who: Annotated[str, typer.Option("--who", help="Recorded in the history.")] = "coordinator",
    ) -> None:
        """Import the responses a coordinator entered in a listing."""
        if not query_log.is_file():
            raise ValidationError(f"{query_log}: no query log there")
        if not listing.is_file():
            raise ValidationError(f"{listing}: no such file")
        table = read_listing(listing)
        with QueryLog(query_log) as log:
            changed = log.import_responses(table, who=who)
        typer.echo(f"{changed} responses imported from {listing}")

    app.add_typer(queries, name="queries")
