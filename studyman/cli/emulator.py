"""`studyman emulator`: serve a REDCap project over REDCap's API, or convert an ODM file."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Annotated

import typer

from studyman.errors import StudymanError

_TOKEN = re.compile(r"^[0-9A-Fa-f]{32}$")
_SUPER_TOKEN = re.compile(r"^[0-9A-Fa-f]{64}$")


def _read_token_file(path: Path | None, pattern: re.Pattern[str], digits: str) -> list[str]:
    """The tokens of an owner-only file, one a line (blank lines and ``#`` comments skipped).

    Raises
    ------
    StudymanError
        When the file is missing, readable by its group or others, or holds a line that is not
        a token of *digits* hexadecimal characters (named by line number, never echoed).
    """
    if path is None:
        return []
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudymanError(f"{path}: no such token file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudymanError(
            f"{path}: cannot read the token file ({type(error).__name__})"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StudymanError(
            f"{path}: a token file must be readable by its owner only (chmod 600 {path})"
        )
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if not pattern.match(value):
            raise StudymanError(
                f"{path}: line {number} is not a token of {digits} hexadecimal characters"
            )
        tokens.append(value)
    if not tokens:
        raise StudymanError(f"{path}: the token file holds no token")
    return tokens


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""
    group = typer.Typer(help="A REDCap API emulator for tests and the demo.", no_args_is_help=True)

    @group.command(
        "serve",
        help="Serve PROJECT at http://HOST:PORT/api/ until interrupted.\n\n"
        "Tokens: --token and --super-token put the token on the command line, where any user "
        "of the machine can read it (ps, /proc): they are for tests. --token-file and "
        "--super-token-file read tokens from files only their owner can read (a file readable "
        "by its group or by others is refused).",
    )
    def serve(
        project: Annotated[
            Path, typer.Argument(help="A REDCap project directory or an ODM XML file.")
        ],
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 0,
        token: Annotated[
            list[str] | None,
            typer.Option(
                "--token",
                help="For tests only: add a full-rights API user with this token (32 hex "
                "characters). A token on the command line is visible to every user of the "
                "machine (ps); use --token-file otherwise.",
            ),
        ] = None,
        token_file: Annotated[
            Path | None,
            typer.Option(
                "--token-file",
                help="A file readable only by its owner (mode 0600) holding one API token a "
                "line (32 hex characters): each becomes a full-rights API user.",
            ),
        ] = None,
        super_token: Annotated[
            list[str] | None,
            typer.Option(
                "--super-token",
                help="For tests only: allow this super token (64 hex characters) to create "
                "projects from ODM. Visible in ps; use --super-token-file otherwise.",
            ),
        ] = None,
        super_token_file: Annotated[
            Path | None,
            typer.Option(
                "--super-token-file",
                help="A file readable only by its owner (mode 0600) holding one super token a "
                "line (64 hex characters).",
            ),
        ] = None,
        faults: Annotated[
            Path | None,
            typer.Option(help="A JSON fault-plan control file, re-read when it changes."),
        ] = None,
        storage: Annotated[
            Path | None,
            typer.Option(
                help="Keep uploaded documents (file fields, File Repository) here, one "
                "project-<id>/ folder per project (default: a private temporary folder removed "
                "when the emulator stops)."
            ),
        ] = None,
    ) -> None:
        """Serve PROJECT at http://HOST:PORT/api/ until interrupted.

        Tokens: --token and --super-token put the token on the command line, where any user of
        the machine can read it (ps, /proc); they are for tests. --token-file and
        --super-token-file read tokens from files only their owner can read, and are refused
        when the file is readable by its group or by others.
        """
        from studyman.sources.emulator import EmulatorServer

        values = list(token or []) + _read_token_file(token_file, _TOKEN, "32")
        for number, value in enumerate(values, start=1):
            if not _TOKEN.match(value):
                # Never echo the token itself.
                raise StudymanError(f"--token #{number} must be 32 hexadecimal characters")
        tokens = {
            value: "api_user" if len(values) == 1 else f"api_user_{number}"
            for number, value in enumerate(values, start=1)
        }
        supers = list(super_token or []) + _read_token_file(super_token_file, _SUPER_TOKEN, "64")
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
            storage=storage,
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
