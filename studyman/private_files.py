"""Files and folders for their owner only, private from the moment they exist.

What derives from the allocation (the randomisation list, an unblinded snapshot, analyses by
arm, the DSMB closed report, an unblinded run's query log) must never be readable by anyone but
its owner, not even for the instant between creating a file and narrowing its mode. So nothing
here creates with the umask's mode and narrows it after (``chmod``): a folder is made with
``mkdir(mode=0o700)``, a file is born 0600 (``mkstemp`` or ``os.open(..., O_CREAT | O_EXCL,
0o600)``) and, when it replaces an older file, renamed into place complete
(:func:`studyman.sources.snapshot.write_file_atomic`).

A folder that exists already is left as it is: its owner chose its mode, and the files written
into it are 0600 whatever it is.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from studyman.sources.snapshot import write_file_atomic

__all__ = [
    "PRIVATE_DIRECTORY_MODE",
    "PRIVATE_FILE_MODE",
    "create_private_file",
    "make_private_directory",
    "write_private_bytes",
    "write_private_file",
]

#: Read and write for the owner, nothing for the group or others.
PRIVATE_FILE_MODE: Final = 0o600
#: Read, write and enter for the owner, nothing for the group or others.
PRIVATE_DIRECTORY_MODE: Final = 0o700


def make_private_directory(path: str | Path) -> Path:
    """Create *path* and its missing parents, each 0700 at creation; return *path*.

    Directories that exist already are left unchanged (see the module's notes).

    Raises
    ------
    OSError
        A parent is not a directory, or cannot be written to.
    """
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        # exist_ok: another process may create it between the test above and here
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, PRIVATE_DIRECTORY_MODE)
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} exists and is not a directory")
    return path


def write_private_file(path: str | Path, write: Callable[[Path], None]) -> None:
    """Have *write* fill *path* atomically; the file is 0600 from its creation.

    Missing parent folders are created 0700 (:func:`make_private_directory`); the file is written
    as a hidden temporary (created 0600 by ``mkstemp``) and renamed into place.
    """
    path = Path(path)
    make_private_directory(path.parent)
    write_file_atomic(path, write, mode=PRIVATE_FILE_MODE)


def write_private_bytes(path: str | Path, data: bytes) -> None:
    """Write *data* to *path* atomically, 0600 from creation (see :func:`write_private_file`)."""

    def write(temporary: Path) -> None:
        temporary.write_bytes(data)

    write_private_file(path, write)


def create_private_file(path: str | Path, data: bytes) -> None:
    """Create *path* holding *data*, 0600, only if no file of that name exists.

    The content is written and synced in a temporary file (``mkstemp``: ``O_CREAT | O_EXCL``,
    0600) and then hard-linked to *path*: the link fails when *path* exists, so a file is never
    overwritten, and whoever sees *path* sees it complete. Of two processes creating the same
    file at once, one wins and the other gets :class:`FileExistsError`.

    Raises
    ------
    FileExistsError
        *path* exists already.
    """
    path = Path(path)
    make_private_directory(path.parent)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.link(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
