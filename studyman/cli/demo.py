"""`studyman demo`: the whole pipeline on the embedded reference study."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""

    @app.command("demo")
    def demo(
        out: Annotated[Path, typer.Option("--out", help="Where every output goes.")] = Path(
            "demo-out"
        ),
        participants: Annotated[
            int, typer.Option("--participants", min=10, help="Randomised participants.")
        ] = 300,
        seed: Annotated[int, typer.Option("--seed", help="Seed of every random step.")] = 20250203,
        protocol: Annotated[
            Path | None,
            typer.Option("--protocol", help="Another study's protocol (default: embedded)."),
        ] = None,
    ) -> None:
        """Generate a synthetic trial, serve it as REDCap, pull, validate, analyse and report."""
        from studyman.demo import run_demo

        console = Console(stderr=True)
        started = time.perf_counter()
        with console.status("starting") as status:

            def step(message: str) -> None:
                console.log(message)
                status.update(message)

            result = run_demo(
                out, n_participants=participants, seed=seed, protocol_path=protocol, step=step
            )
        for note in result.notes:
            console.print(f"[dim]{note}[/dim]")
        typer.echo(f"demo finished in {time.perf_counter() - started:.1f} s; outputs:")
        width = max(len(name) for name in result.outputs)
        for name, path in result.outputs.items():
            typer.echo(f"  {name:<{width}}  {path}")
