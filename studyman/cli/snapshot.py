"""`studyman snapshot verify` and `studyman snapshot show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from studyman.sources.snapshot import MANIFEST_NAME, verify_snapshot


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""
    group = typer.Typer(help="Check and describe snapshots.", no_args_is_help=True)

    @group.command("verify")
    def verify(
        directory: Annotated[Path, typer.Argument(metavar="DIR", help="A snapshot directory.")],
    ) -> None:
        """Re-hash every file of DIR against its manifest; exit 1 when anything changed."""
        verification = verify_snapshot(directory)
        typer.echo(verification.describe())
        if not verification.ok:
            raise typer.Exit(1)

    @group.command("show")
    def show(
        directory: Annotated[Path, typer.Argument(metavar="DIR", help="A snapshot directory.")],
    ) -> None:
        """Print what DIR holds: source, protocol, tables and their row counts, findings."""
        verification = verify_snapshot(directory)
        manifest = json.loads((Path(directory) / MANIFEST_NAME).read_text(encoding="utf-8"))
        typer.echo(f"snapshot {directory} ({manifest.get('kind')}, {manifest.get('created_at')})")
        protocol = manifest.get("protocol")
        if protocol:
            typer.echo(f"protocol: {protocol.get('study_id')} version {protocol.get('version')}")
        redcap = manifest.get("redcap") or {}
        if redcap.get("version"):
            typer.echo(f"REDCap {redcap['version']}")
        typer.echo(f"records: {manifest.get('records')}")
        for name, entry in manifest.get("tables", {}).items():
            typer.echo(f"  {name}: {entry['rows']} rows, {entry['columns']} columns")
        typer.echo(f"findings: {manifest.get('findings')}")
        typer.echo("integrity: " + ("OK" if verification.ok else "CHANGED (run snapshot verify)"))

    app.add_typer(group, name="snapshot")
