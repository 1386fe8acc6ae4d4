"""``studyman sap lock`` and ``studyman analyze``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""
    sap_group = typer.Typer(help="The statistical analysis plan.", no_args_is_help=True)

    @sap_group.command("lock")
    def lock(
        sap: Annotated[Path, typer.Option("--sap", help="The analysis plan (sap.yaml).")],
        lock_file: Annotated[
            Path | None,
            typer.Option("--lock", help="Lock file (default: sap.lock.json beside the plan)."),
        ] = None,
    ) -> None:
        """Record the plan's sha256 and version; a changed plan needs a recorded amendment."""
        from studyman.analysis.lock import default_lock_path, lock_sap

        record = lock_sap(sap, lock_file)
        target = lock_file or default_lock_path(sap)
        typer.echo(f"locked {sap} version {record.version} sha256 {record.sha256} in {target}")

    app.add_typer(sap_group, name="sap")

    @app.command("analyze")
    def analyze_command(
        sap: Annotated[Path, typer.Option("--sap", help="The locked analysis plan.")],
        snapshot: Annotated[Path, typer.Option("--snapshot", help="A snapshot directory.")],
        out: Annotated[Path, typer.Option("--out", help="Output directory.")],
        randomization: Annotated[
            Path | None,
            typer.Option(
                "--randomization",
                help="Unblinded randomisation list (CSV or Parquet: the protocol's record-ID "
                "and arm fields as headers). "
                "Without it only a pooled, blinded review is produced.",
            ),
        ] = None,
        workers: Annotated[
            int | None, typer.Option("--workers", help="Local processes (default: all cores).")
        ] = None,
        dask: Annotated[
            str | None,
            typer.Option("--dask", help="Dask scheduler address (tcp://host:port) to run on."),
        ] = None,
        lock_file: Annotated[
            Path | None, typer.Option("--lock", help="Lock file (default beside the plan).")
        ] = None,
        protocol: Annotated[
            Path | None,
            typer.Option(
                "--protocol",
                help="The study (protocols/<study>); default: the embedded reference study. "
                "Its blinding policy decides what a blinded run may read.",
            ),
        ] = None,
        post_unblinding_amendment: Annotated[
            str | None,
            typer.Option(
                "--post-unblinding-amendment",
                metavar="REASON",
                help="Run a plan amended after the allocation was first read, for this reason "
                "(refused without it; stated at the top of the report and in the provenance).",
            ),
        ] = None,
    ) -> None:
        """Run the prespecified analyses; write results (CSV, JSON), figures and a report."""
        from studyman.analysis.analyze import analyze

        result = analyze(
            sap,
            snapshot,
            out,
            randomization=randomization,
            protocol=protocol,
            lock=lock_file,
            workers=workers,
            dask_address=dask,
            post_unblinding_amendment=post_unblinding_amendment,
        )
        late = result.provenance["plan"].get("post_unblinding_amendment")
        if late:
            versions = ", ".join(f"{a['version']} ({a['date']})" for a in late["amendments"])
            typer.echo(
                f"WARNING: plan amended after unblinding (version {versions}); run for the "
                f"reason given: {late['reason']}",
                err=True,
            )
        for warning in result.run.warnings:
            typer.echo(f"WARNING: {warning}", err=True)
        for whole in result.run.outcomes:
            for outcome in whole.parts:
                line = f"{outcome.status:8} {outcome.id}"
                if whole.comparisons:
                    line += f" [{outcome.comparison}]"
                if outcome.headline is not None:
                    h = outcome.headline
                    line += f"  {h.estimate:.3f} ({h.ci_lower:.3f}, {h.ci_upper:.3f})"
                if outcome.status != "ok" and outcome.message:
                    line += f"  {outcome.message}"
                typer.echo(line)
        if result.run.blinded:
            typer.echo("blinded run: arm comparisons refused; pooled review in review/")
        typer.echo(f"report: {out / 'report.html'} ({len(result.files)} files)")
        if result.run.failed:
            raise typer.Exit(1)
