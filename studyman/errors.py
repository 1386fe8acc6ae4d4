"""The one error tree of studyman.

::

    StudymanError                 every error studyman raises on purpose
    ├── ProtocolError             a protocol, analysis plan or REDCap project file is malformed
    ├── SourceError               REDCap (or the emulator) could not be read as REDCap data
    ├── SnapshotError             a snapshot is missing, incomplete, altered or would be overwritten
    ├── ValidationError           a check definition is unusable (a custom rule that does not parse)
    └── AnalysisError             a model or analysis cannot be run on the data given

Bad *data* is never an exception: it becomes a finding, a query or a row in a table.
Messages say what is wrong, where (file and key, record and field) and what to do, and never
contain an API token.
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "ProtocolError",
    "SnapshotError",
    "SourceError",
    "StudymanError",
    "ValidationError",
]


class StudymanError(Exception):
    """Base class of every error studyman raises on purpose (a user error, not a bug)."""


class ProtocolError(StudymanError):
    """A study definition file (protocol, analysis plan, REDCap project file) is malformed.

    Parameters
    ----------
    message
        What was expected.
    file
        The file concerned, when known.
    key
        The key path (``visits[2].window.start``) or line, when known.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class SourceError(StudymanError):
    """REDCap, the emulator or an offline export could not be read as REDCap data."""


class SnapshotError(StudymanError):
    """A snapshot is missing, incomplete, altered, or would overwrite another."""


class ValidationError(StudymanError):
    """A check definition cannot be used (for example a custom rule that does not parse)."""


class AnalysisError(StudymanError):
    """A model or analysis cannot be run on the data given; the message names rows or terms."""
