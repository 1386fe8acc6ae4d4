"""`studyman generate`: a seeded synthetic trial as REDCap's raw CSV export."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from studyman.errors import ProtocolError


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""

    @app.command("generate")
    def generate(
        protocol: Annotated[
            Path, typer.Option("--protocol", help="protocol.yaml or the directory holding it.")
        ],
        out: Annotated[Path, typer.Option("--out", help="Directory for the CSV files.")],
        participants: Annotated[
            int, typer.Option("--participants", min=1, help="Participants randomised.")
        ] = 300,
        seed: Annotated[
            int, typer.Option("--seed", help="Seed (same seed, same bytes).")
        ] = 20250203,
        plant_errors: Annotated[
            bool,
            typer.Option(
                "--plant-errors", help="Plant known data errors; write their ground truth."
            ),
        ] = False,
        dropout: Annotated[
            str, typer.Option("--dropout", help="Dropout mechanism: mar or mnar.")
        ] = "mar",
        data_cut: Annotated[
            str | None,
            typer.Option("--data-cut", help="Data cut-off YYYY-MM-DD (default: the protocol's)."),
        ] = None,
        treatment_effect: Annotated[
            float,
            typer.Option(
                "--treatment-effect",
                help="Adjunct minus CBT alone, mean HAM-D-17 change at week 12 (points).",
            ),
        ] = -3.0,
        errors_per_type: Annotated[
            int,
            typer.Option("--errors-per-type", min=1, help="Planted errors of each type."),
        ] = 3,
    ) -> None:
        """Generate a synthetic trial: records.csv, randomization.csv, planted_errors.csv."""
        from studyman.protocol import load_protocol
        from studyman.synthetic import generate_trial, write_trial

        if dropout not in ("mar", "mnar"):
            raise ProtocolError(f"--dropout must be mar or mnar, got {dropout!r}", key="--dropout")
        cut: date | None = None
        if data_cut is not None:
            try:
                cut = date.fromisoformat(data_cut)
            except ValueError:
                raise ProtocolError(
                    f"--data-cut must be a date YYYY-MM-DD, got {data_cut!r}", key="--data-cut"
                ) from None
        study = load_protocol(protocol)
        trial = generate_trial(
            study,
            n_participants=participants,
            seed=seed,
            dropout="mnar" if dropout == "mnar" else "mar",
            plant_errors=plant_errors,
            data_cut=cut,
            treatment_effect=treatment_effect,
            errors_per_type=errors_per_type,
        )
        paths = write_trial(trial, out)
        randomized = len(trial.randomization)
        records = trial.records[study.study.record_id_field].nunique()
        typer.echo(
            f"{records} participants screened, {randomized} randomised, "
            f"{len(trial.records)} rows; data cut {trial.data_cut.isoformat()}"
        )
        if plant_errors:
            typer.echo(f"{len(trial.planted_errors)} planted errors")
        for name, path in paths.items():
            typer.echo(f"{name}: {path}")
