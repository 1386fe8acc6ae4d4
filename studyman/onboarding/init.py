"""``studyman protocol init``: a study folder (draft ``protocol.yaml`` + ``redcap/``) from REDCap.

:func:`init_protocol` builds the whole folder beside its destination and moves it into place
in one rename, so a failure (a refused token, a malformed export) leaves nothing behind, and an
existing folder is replaced only when asked (``force``) and only when it holds nothing but what
``init`` writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from studyman.errors import ProtocolError
from studyman.onboarding.decisions import Decision, apply_answers, find_decisions
from studyman.onboarding.draft import draft_protocol
from studyman.onboarding.project_files import replace_directory
from studyman.protocol.redcap_project import RedcapProject
from studyman.sources.snapshot import write_bytes_atomic

__all__ = ["InitResult", "init_protocol", "render_draft"]

#: What ``init`` writes; ``--force`` replaces a folder holding nothing else.
_OWN_ENTRIES = frozenset({"protocol.yaml", "redcap"})


@dataclass(frozen=True, slots=True)
class InitResult:
    """What ``init`` wrote.

    Attributes
    ----------
    directory
        The study folder.
    decisions
        The ``TODO(decide)`` values left in ``protocol.yaml``.
    guesses
        Values recognised from labels, for review (``(key, what)``).
    """

    directory: Path
    decisions: tuple[Decision, ...]
    guesses: tuple[tuple[str, str], ...]

    @property
    def protocol_file(self) -> Path:
        """The draft ``protocol.yaml``."""
        return self.directory / "protocol.yaml"


def render_draft(
    tree: Mapping[str, Any],
    *,
    source: str,
    guesses: tuple[tuple[str, str], ...] = (),
) -> str:
    """The text of a draft ``protocol.yaml``: a header that says what is left, then the YAML."""
    decisions = find_decisions(tree)
    lines = [
        f"# Draft protocol written by `studyman protocol init` from {source}.",
        "# Field, form and event names, codes and labels come from the REDCap project (redcap/).",
    ]
    if decisions:
        lines += [
            f"# Not a protocol yet: {len(decisions)} value(s) read 'TODO(decide): ...', each a",
            "# decision for a person; `studyman protocol check` lists them by key.",
        ]
    if guesses:
        lines.append("# Recognised from labels and choices (review each):")
        lines += [f"#   {key}: {what}" for key, what in guesses]
    body = yaml.safe_dump(
        dict(tree), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return "\n".join(lines) + "\n" + body


def _check_destination(out: Path, force: bool) -> None:
    if out.is_symlink():
        raise ProtocolError("is a symbolic link: give a new folder", file=str(out))
    if not out.exists():
        return
    if not force:
        raise ProtocolError(
            "exists already: give a new folder, or --force to replace a folder written by init",
            file=str(out),
        )
    if not out.is_dir():
        raise ProtocolError("exists and is not a folder: give a new folder", file=str(out))
    others = sorted(entry.name for entry in out.iterdir() if entry.name not in _OWN_ENTRIES)
    if others:
        raise ProtocolError(
            f"holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''} besides "
            "protocol.yaml and redcap/: --force replaces only a folder written by init",
            file=str(out),
        )


def init_protocol(
    out: Path,
    make_project: Callable[[Path], RedcapProject],
    *,
    source: str,
    answers: Mapping[str, Any] | None = None,
    answers_file: str = "<answers>",
    force: bool = False,
) -> InitResult:
    """Write the study folder *out*: ``redcap/`` (the project's design) and ``protocol.yaml``.

    Parameters
    ----------
    out
        The study folder; must not exist unless *force*.
    make_project
        Writes the project directory it is given (new) and returns it read back
        (:func:`~studyman.onboarding.project_files.fetch_project_dir` or
        :func:`~studyman.onboarding.project_files.write_exported_project_dir`).
    source
        Where the design came from, for the draft's header (never a token).
    answers, answers_file
        Decisions already made (key path -> value), applied to the draft, and their file's name.
    force
        Replace an existing folder written by ``init``.

    Raises
    ------
    ProtocolError
        *out* exists (without *force*, or holding other files), an export is malformed, or an
        answer's key path does not lead into the draft.
    SourceError
        The live project could not be read.
    """
    out = Path(out)
    _check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".init", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staged.chmod(0o777 & ~umask)
        project = make_project(staged / "redcap")
        draft = draft_protocol(project)
        tree = draft.tree
        if answers:
            tree = apply_answers(tree, answers, file=answers_file)
        text = render_draft(tree, source=source, guesses=draft.guesses)
        write_bytes_atomic(staged / "protocol.yaml", text.encode("utf-8"))
        _check_destination(out, force)
        replace_directory(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return InitResult(directory=out, decisions=find_decisions(tree), guesses=draft.guesses)
