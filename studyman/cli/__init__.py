"""The ``studyman`` command: a thin layer over the package.

Each area registers its commands from its own module (``register(app)``), so the command tree
is assembled here in one place. A :class:`~studyman.errors.StudymanError`, or an ``OSError`` about
a named file (an output directory that cannot be created, a full disk), is printed as one line
with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from studyman import __version__
from studyman.cli import (
    analyze,
    demo,
    emulator,
    generate,
    protocol,
    pull,
    report,
    snapshot,
    validate,
)
from studyman.errors import StudymanError

app = typer.Typer(
    name="studyman",
    help="Trial data from REDCap: snapshots, validation, prespecified analyses, DSMB reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"studyman {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """studyman: the data side of a randomized clinical trial."""


for _module in (protocol, generate, emulator, pull, snapshot, validate, analyze, report, demo):
    _module.register(app)


def main(argv: list[str] | None = None) -> Any:
    """Run the command line; a StudymanError becomes one line on stderr and exit code 2."""
    try:
        return app(args=argv, standalone_mode=False)
    except StudymanError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except OSError as error:
        if error.filename is None:
            raise  # not about a file: a bug, keep the traceback
        # An output that cannot be written (directory not writable, a file where a directory
        # should be, disk full) or an input that cannot be read: one line naming the file.
        names = [str(name) for name in (error.filename, error.filename2) if name is not None]
        typer.echo(f"error: {' -> '.join(names)}: {error.strerror or error}", err=True)
        sys.exit(2)
    except Exception as error:  # click's own usage errors
        if isinstance(error, _USAGE_ERRORS):
            error.show()  # type: ignore[attr-defined]
            sys.exit(error.exit_code)  # type: ignore[attr-defined]
        if isinstance(error, typer.Abort):
            sys.exit(1)
        raise


#: Click's usage-error base class as typer raises it: click's own, or the copy typer >= 0.2x
#: bundles (typer.BadParameter derives from whichever typer uses).
_USAGE_ERRORS: tuple[type[Exception], ...] = tuple(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)
