"""``studyman report dsmb``: the DSMB safety report (open or closed session), HTML and PDF."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated

import typer

from studyman.errors import SourceError


def parse_as_of(text: str) -> datetime:
    """``--as-of``: an ISO date (the end of that day, UTC) or date and time (UTC when no offset
    is given).

    Raises
    ------
    SourceError
        *text* is neither.
    """
    try:
        if len(text.strip()) == 10:
            return datetime.combine(date.fromisoformat(text.strip()), time(23, 59, 59), UTC)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SourceError(
            f"--as-of {text!r} is not a date (YYYY-MM-DD) or a date and time "
            "(YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""
    report_group = typer.Typer(help="Reports: the DSMB safety report.", no_args_is_help=True)

    @report_group.command("dsmb")
    def dsmb(
        session: Annotated[
            str, typer.Option("--session", help="open (pooled, no arm) or closed (by arm).")
        ],
        snapshot: Annotated[Path, typer.Option("--snapshot", help="A snapshot directory.")],
        out: Annotated[Path, typer.Option("--out", help="Output directory.")],
        randomization: Annotated[
            Path | None,
            typer.Option(
                "--randomization",
                help="Randomisation list (CSV: the protocol's record-ID and arm fields). "
                "Required for a closed session; never read for an open one.",
            ),
        ] = None,
        cutoff: Annotated[
            str | None,
            typer.Option("--cutoff", help="Data cut-off YYYY-MM-DD (default: the protocol's)."),
        ] = None,
        unmask: Annotated[
            bool, typer.Option("--unmask", help="Closed session: name the arms (not A/B).")
        ] = False,
        arm_key: Annotated[
            Path | None,
            typer.Option(
                "--arm-key",
                help="Closed session: the secret key that codes the arms (default: "
                "dsmb-arm-key beside the randomisation list, created 0600 on first use; "
                "keep it with the list, away from the DSMB).",
            ),
        ] = None,
        query_log: Annotated[
            Path | None, typer.Option("--query-log", help="The validation query log (SQLite).")
        ] = None,
        protocol_path: Annotated[
            Path | None,
            typer.Option("--protocol", help="protocol.yaml or its directory (default: embedded)."),
        ] = None,
        sap: Annotated[
            Path | None,
            typer.Option(
                "--sap",
                help="Analysis plan, for its version and interim rule (default: the embedded "
                "study's plan when --protocol is not given).",
            ),
        ] = None,
        no_pdf: Annotated[bool, typer.Option("--no-pdf", help="Write the HTML only.")] = False,
        as_of: Annotated[
            str | None,
            typer.Option(
                "--as-of",
                help="The time query ages count to, for a reproducible report: YYYY-MM-DD (end "
                "of that day, UTC) or YYYY-MM-DDTHH:MM[:SS][+HH:MM] (default: now). Never the "
                "data cut-off.",
            ),
        ] = None,
    ) -> None:
        """Write DIR/dsmb-<session>-<cutoff>.html, .pdf and .json (every table as data) and
        DIR/facts.json."""
        from studyman.protocol.loader import load_protocol
        from studyman.reporting.report import render_dsmb_report

        if session not in ("open", "closed"):
            raise SourceError(f"--session must be 'open' or 'closed', not {session!r}")
        if protocol_path is None:
            from studyman.protocol.reference import default_plan_path, default_protocol_path

            protocol_path = default_protocol_path()
            if sap is None:
                # the embedded study's plan (inside the installed package or the checkout), so
                # the report states its version and applies its rules
                sap = default_plan_path()
        try:
            cut = date.fromisoformat(cutoff) if cutoff else None
        except ValueError:
            raise SourceError(f"--cutoff {cutoff!r} is not a date (YYYY-MM-DD)") from None
        moment = parse_as_of(as_of) if as_of is not None else None
        protocol = load_protocol(protocol_path)
        result = render_dsmb_report(
            protocol,
            snapshot,
            out,
            session="open" if session == "open" else "closed",
            randomization=randomization if session == "closed" else None,
            cutoff=cut,
            unmask=unmask,
            arm_key=arm_key,
            query_log=query_log,
            sap=sap,
            pdf=not no_pdf,
            as_of=moment,
        )
        typer.echo(f"{session} session, data cut-off {result.cutoff.isoformat()}")
        typer.echo(f"  html: {result.html}")
        if result.pdf is not None:
            typer.echo(f"  pdf:  {result.pdf}")
        if result.data is not None:
            typer.echo(f"  tables as data: {result.data}")
        if result.facts is not None:
            typer.echo(f"  facts: {result.facts}")
        if result.arm_key is not None:
            made = "created, " if result.arm_key_created else ""
            typer.echo(
                f"  arm-code key: {result.arm_key} ({made}fingerprint {result.arm_key_fingerprint})"
            )
        for section in result.incomplete:
            typer.echo(f"  section {section}: forms missing from the snapshot (see the report)")

    app.add_typer(report_group, name="report")
