"""`studyman pull` (REDCap API through PyCap) and `studyman import` (REDCap web exports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from studyman.protocol import Protocol, load_protocol
from studyman.sources.snapshot import SnapshotResult


def _protocol(path: Path | None) -> Protocol | None:
    return load_protocol(path) if path is not None else None


def _summary(result: SnapshotResult) -> None:
    tables = ", ".join(f"{name} {rows}" for name, rows in result.table_rows.items())
    typer.echo(f"records: {result.records}; rows per table: {tables}", err=True)
    typer.echo(f"findings: {result.findings}", err=True)
    typer.echo(f"snapshot id: {result.snapshot_id}", err=True)
    typer.echo(str(result.path))


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""

    @app.command("pull")
    def pull(
        url: Annotated[str, typer.Option("--url", help="REDCap's API URL, ending in /api/.")],
        out: Annotated[
            Path, typer.Option("--out", help="Snapshots directory (the snapshot goes inside).")
        ],
        protocol: Annotated[
            Path | None,
            typer.Option(
                "--protocol", help="protocol.yaml or its directory (recorded in the manifest)."
            ),
        ] = None,
        token_file: Annotated[
            Path | None,
            typer.Option(
                "--token-file",
                help="File holding the API token (mode 600). Default: $STUDYMAN_REDCAP_TOKEN.",
            ),
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Record IDs per request.")] = 100,
        concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 2,
        retries: Annotated[int, typer.Option(help="Retries of a failed request.")] = 5,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 60.0,
        backoff: Annotated[
            float, typer.Option(help="Seconds before the first retry (doubling after).")
        ] = 1.0,
        name: Annotated[
            str | None, typer.Option(help="Snapshot directory name (default: UTC time-pull).")
        ] = None,
    ) -> None:
        """Pull a REDCap project through PyCap into a new, verified snapshot; print its path."""
        from studyman.sources.pull import PullProgress, pull_snapshot, read_token

        token = read_token(token_file)
        study = _protocol(protocol)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
            console=Console(stderr=True),
        ) as bar:
            task = bar.add_task("metadata", total=None)

            def show(progress: PullProgress) -> None:
                bar.update(
                    task, description=progress.stage, completed=progress.done, total=progress.total
                )

            result = pull_snapshot(
                study,
                url,
                token,
                out,
                batch_size=batch_size,
                concurrency=concurrency,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                progress=show,
                name=name,
            )
        _summary(result)

    @app.command("import")
    def import_(
        records: Annotated[Path, typer.Option("--records", help="REDCap's raw CSV record export.")],
        dictionary: Annotated[
            Path,
            typer.Option("--dictionary", help="The data dictionary CSV (raw or human headers)."),
        ],
        out: Annotated[
            Path, typer.Option("--out", help="Snapshots directory (the snapshot goes inside).")
        ],
        protocol: Annotated[
            Path | None,
            typer.Option("--protocol", help="protocol.yaml or its directory (optional)."),
        ] = None,
        missing_codes: Annotated[
            str | None,
            typer.Option(
                "--missing-codes",
                help='Missing-data codes, e.g. "UNK, Unknown | NASK, Not asked" '
                "(default: the protocol's, else none).",
            ),
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="Snapshot directory name (default: UTC time-import).")
        ] = None,
    ) -> None:
        """Import a raw CSV export and data dictionary into a new snapshot; print its path."""
        from studyman.sources.offline import import_snapshot

        result = import_snapshot(
            _protocol(protocol),
            records,
            dictionary,
            out,
            name=name,
            missing_data_codes=missing_codes,
        )
        _summary(result)
