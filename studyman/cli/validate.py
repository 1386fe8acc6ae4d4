"""`studyman validate`, `studyman checks list`, `studyman queries respond|import`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from studyman.errors import ValidationError
from studyman.validation.catalogue import catalogue_frame
from studyman.validation.outputs import read_listing
from studyman.validation.query_log import RESPONSES, QueryLog
from studyman.validation.run import custom_checks_for, dictionary_for, validate_study


def _protocol(path: Path) -> Any:
    from studyman.protocol.loader import load_protocol

    return load_protocol(path)


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
        partial: Annotated[
            bool,
            typer.Option(
                "--partial",
                help="The input is knowingly incomplete (a site's export, a subset): run it; "
                "queries outside it stay as they are. Without it, input covering less than the "
                "log's last run is refused.",
            ),
        ] = False,
    ) -> None:
        """Run every edit check, update the query log and write the listings."""
        cut = None
        if data_cut:
            try:
                cut = date.fromisoformat(data_cut)
            except ValueError:
                raise ValidationError(f"--data-cut {data_cut!r}: expected YYYY-MM-DD") from None
        report = validate_study(
            _protocol(protocol_path),
            snapshot,
            out,
            query_log=query_log,
            randomization=randomization,
            checks_file=checks_file,
            data_cut=cut,
            who=who,
            partial=partial,
        )
        typer.echo(report.describe())

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
            dictionary, _ = dictionary_for(protocol)
            extra = tuple(check.definition for check in custom_checks_for(protocol, dictionary))
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
