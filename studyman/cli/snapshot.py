"""`studyman snapshot verify` and `studyman snapshot show`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from studyman.sources.snapshot import read_manifest, verify_snapshot


def _get(value: Any, key: str) -> Any:
    """``value[key]`` when *value* is an object, else None (an edited manifest may be anything)."""
    return value.get(key) if isinstance(value, Mapping) else None


def manifest_lines(manifest: Mapping[str, Any], directory: Path) -> list[str]:
    """What ``snapshot show`` prints of *manifest*; never fails, whatever the manifest holds."""
    lines = [f"snapshot {directory} ({_get(manifest, 'kind')}, {_get(manifest, 'created_at')})"]
    protocol = _get(manifest, "protocol")
    if protocol:
        lines.append(f"protocol: {_get(protocol, 'study_id')} version {_get(protocol, 'version')}")
    version = _get(_get(manifest, "redcap"), "version")
    if version:
        lines.append(f"REDCap {version}")
    lines.append(f"records: {_get(manifest, 'records')}")
    tables = _get(manifest, "tables")
    for name, entry in tables.items() if isinstance(tables, Mapping) else ():
        lines.append(f"  {name}: {_get(entry, 'rows')} rows, {_get(entry, 'columns')} columns")
    lines.append(f"findings: {_get(manifest, 'findings')}")
    return lines


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""
    group = typer.Typer(help="Check and describe snapshots.", no_args_is_help=True)

    @group.command("verify")
    def verify(
        directory: Annotated[Path, typer.Argument(metavar="DIR", help="A snapshot directory.")],
    ) -> None:
        """Re-hash every file of DIR against its manifest and the manifest against the snapshot
        id; exit 1 when anything changed."""
        verification = verify_snapshot(directory)
        typer.echo(verification.describe())
        if verification.ok:
            typer.echo(f"snapshot id: {verification.snapshot_id}")
        else:
            raise typer.Exit(1)

    @group.command("show")
    def show(
        directory: Annotated[Path, typer.Argument(metavar="DIR", help="A snapshot directory.")],
    ) -> None:
        """Print what DIR holds: source, protocol, tables and their row counts, findings, id."""
        verification = verify_snapshot(directory)  # one-line SnapshotError without a manifest
        manifest = read_manifest(directory, require_files=False)
        for line in manifest_lines(manifest, directory):
            typer.echo(line)
        typer.echo(f"snapshot id: {verification.snapshot_id or 'none'}")
        typer.echo("integrity: " + ("OK" if verification.ok else "CHANGED (run snapshot verify)"))

    app.add_typer(group, name="snapshot")
