"""`studyman emulator`: serve a REDCap project over REDCap's API, or convert an ODM file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from studyman.errors import StudymanError

_TOKEN = re.compile(r"^[0-9A-Fa-f]{32}$")
_SUPER_TOKEN = re.compile(r"^[0-9A-Fa-f]{64}$")


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""
    group = typer.Typer(help="A REDCap API emulator for tests and the demo.", no_args_is_help=True)

    @group.command("serve")
    def serve(
        project: Annotated[
            Path, typer.Argument(help="A REDCap project directory or an ODM XML file.")
        ],
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 0,
        token: Annotated[
            list[str] | None,
            typer.Option(
                "--token", help="Add a full-rights API user with this token (32 hex characters)."
            ),
        ] = None,
        super_token: Annotated[
            list[str] | None,
            typer.Option(
                "--super-token",
                help="Allow this super token (64 hex characters) to create projects from ODM.",
            ),
        ] = None,
        faults: Annotated[
            Path | None,
            typer.Option(help="A JSON fault-plan control file, re-read when it changes."),
        ] = None,
    ) -> None:
        """Serve PROJECT at http://HOST:PORT/api/ until interrupted."""
        from studyman.sources.emulator import EmulatorServer

        tokens: dict[str, str] = {}
        token = token or []
        for number, value in enumerate(token, start=1):
            if not _TOKEN.match(value):
                # Never echo the token itself.
                raise StudymanError(f"--token #{number} must be 32 hexadecimal characters")
            tokens[value] = "api_user" if len(token) == 1 else f"api_user_{number}"
        supers = super_token or []
        for number, value in enumerate(supers, start=1):
            if not _SUPER_TOKEN.match(value):
                raise StudymanError(f"--super-token #{number} must be 64 hexadecimal characters")
        server = EmulatorServer(
            project,
            host=host,
            port=port,
            tokens=tokens,
            super_tokens=supers,
            control_file=faults,
        )
        server.start()
        title = server.project.info.get("project_title", "")
        typer.echo(f"Serving {title!s} ({len(server.store.record_ids())} records) at {server.url}")
        typer.echo("Press Ctrl+C to stop.")
        server.wait()

    @group.command("convert")
    def convert(
        odm: Annotated[Path, typer.Argument(help="A REDCap ODM XML file (project.xml).")],
        out: Annotated[Path, typer.Option("--out", help="The project directory to write.")],
    ) -> None:
        """Write the project directory equivalent to a REDCap ODM file."""
        from studyman.sources.emulator.convert import convert_odm

        written = convert_odm(odm, out)
        typer.echo(f"Wrote {len(written)} files to {out}")

    app.add_typer(group, name="emulator")
