"""`studyman validate`, `studyman checks list`, `studyman queries ...` (respond, import, review,
list, show)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from studyman.errors import ValidationError
from studyman.validation.catalogue import catalogue_frame
from studyman.validation.outputs import excel_text, read_listing
from studyman.validation.query_log import DECISIONS, RESPONSES, QueryLog
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

    queries = typer.Typer(
        help="Data queries: list, show, site responses, medical review.", no_args_is_help=True
    )

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
        site: Annotated[
            str | None,
            typer.Option("--site", help="The site the returned workbook must be from."),
        ] = None,
    ) -> None:
        """Import the responses in a coordinator's listing or a site's returned workbook."""
        if not query_log.is_file():
            raise ValidationError(f"{query_log}: no query log there")
        if not listing.is_file():
            raise ValidationError(f"{listing}: no such file")
        table = read_listing(listing)
        declared = str(table.attrs.get("site", ""))
        if site is not None and declared != site:
            whose = f"site {declared}'s workbook" if declared else "not a site's workbook"
            raise ValidationError(f"{listing}: {whose}, expected site {site}'s; nothing imported")
        with QueryLog(query_log) as log:
            changed = log.import_responses(table, who=who, site=declared)
        typer.echo(f"{changed} responses imported from {listing}")

    @queries.command("review")
    def review(
        query_id: Annotated[str, typer.Argument(metavar="ID", help="The query id (Q-...).")],
        decision: Annotated[str, typer.Option("--decision", help=" | ".join(DECISIONS))],
        reviewer: Annotated[str, typer.Option("--reviewer", help="Who reviewed (recorded).")],
        query_log: Annotated[Path, typer.Option("--query-log", help="The SQLite query log.")],
        note: Annotated[str, typer.Option("--note", help="The reviewer's note.")] = "",
    ) -> None:
        """Medical review: accept (close) or reject (re-open) a query."""
        with _open_log(query_log) as log:
            status = log.review(query_id, decision, reviewer=reviewer, note=note)
        typer.echo(f"{query_id}: review {decision} by {reviewer.strip()}, status {status}")

    @queries.command("list")
    def list_queries(
        query_log: Annotated[Path, typer.Option("--query-log", help="The SQLite query log.")],
        site: Annotated[
            list[str] | None, typer.Option("--site", help="Only this site (repeatable).")
        ] = None,
        status: Annotated[
            list[str] | None,
            typer.Option("--status", help="open | answered | reopened | closed (repeatable)."),
        ] = None,
        severity: Annotated[
            list[str] | None,
            typer.Option("--severity", help="critical | major | minor (repeatable)."),
        ] = None,
        kind: Annotated[
            str | None, typer.Option("--kind", help="site (site queries) | review (signals).")
        ] = None,
    ) -> None:
        """A table of the queries, most severe and oldest first."""
        with _open_log(query_log) as log:
            table = log.queries()
        table = _filtered(table, site=site, status=status, severity=severity, kind=kind)
        _print_queries(table)

    @queries.command("show")
    def show_query(
        query_id: Annotated[str, typer.Argument(metavar="ID", help="The query id (Q-...).")],
        query_log: Annotated[Path, typer.Option("--query-log", help="The SQLite query log.")],
    ) -> None:
        """One query with its whole history."""
        with _open_log(query_log) as log:
            table = log.queries()
            history = log.history(query_id)
        rows = table[table["query_id"] == query_id]
        if rows.empty:
            raise ValidationError(f"query {query_id}: no such query in {query_log}")
        _print_query(rows.iloc[0], history)

    app.add_typer(queries, name="queries")


def _open_log(path: Path) -> QueryLog:
    if not path.is_file():
        raise ValidationError(f"{path}: no query log there")
    return QueryLog(path)


_SEVERITY_ORDER = {"critical": 0, "major": 1, "minor": 2}
_KINDS = {"site": "site_query", "review": "review_signal"}


def _filtered(
    table: Any,
    *,
    site: list[str] | None,
    status: list[str] | None,
    severity: list[str] | None,
    kind: str | None,
) -> Any:
    for option, values, allowed in (
        ("--status", status, ("open", "answered", "reopened", "closed")),
        ("--severity", severity, tuple(_SEVERITY_ORDER)),
    ):
        unknown = sorted(set(values or ()) - set(allowed))
        if unknown:
            raise ValidationError(
                f"{option} {', '.join(unknown)}: expected one of {', '.join(allowed)}"
            )
    if kind is not None and kind not in _KINDS:
        raise ValidationError(f"--kind {kind}: expected site or review")
    if site:
        table = table[table["site"].isin(site)]
    if status:
        table = table[table["status"].isin(status)]
    if severity:
        table = table[table["severity"].isin(severity)]
    if kind is not None:
        table = table[table["kind"] == _KINDS[kind]]
    order = table["severity"].map(_SEVERITY_ORDER).fillna(3)
    return (
        table.assign(_order=order)
        .sort_values(["_order", "days_open", "query_id"], ascending=[True, False, True])
        .drop(columns="_order")
    )


def _safe(value: object) -> str:
    """Cell text for the terminal: no rich markup, no control characters (shown as \\xNN)."""
    from rich.markup import escape

    return escape(excel_text("" if value is None else str(value)))


def _print_queries(table: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(title=f"{len(table)} queries", show_lines=False)
    for heading in ("query", "site", "record", "event", "field", "severity", "status", "days"):
        view.add_column(heading, no_wrap=True)
    view.add_column("check / message")
    for row in table.itertuples(index=False):
        view.add_row(
            *(
                _safe(value)
                for value in (
                    row.query_id,
                    row.site,
                    row.record_id,
                    row.event,
                    row.field,
                    row.severity,
                    row.status,
                    row.days_open,
                    f"{row.check_id}: {row.message}",
                )
            )
        )
    Console(width=200).print(view)


def _print_query(row: Any, history: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    details = Table(title=_safe(row["query_id"]), show_header=False)
    details.add_column("", style="bold")
    details.add_column("")
    for column in row.index:
        details.add_row(_safe(column), _safe(row[column]))
    console.print(details)
    changes = Table(title="history")
    for heading in ("at", "who", "action", "status", "value", "response", "note"):
        changes.add_column(heading)
    for entry in history.itertuples(index=False):
        before = "" if entry.status_before is None else f"{entry.status_before} -> "
        changes.add_row(
            *(
                _safe(value)
                for value in (
                    entry.at,
                    entry.who,
                    entry.action,
                    f"{before}{entry.status_after}",
                    entry.value,
                    entry.response,
                    entry.note,
                )
            )
        )
    console.print(changes)
