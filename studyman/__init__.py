"""studyman: the data side of a randomized clinical trial.

REDCap pulls into verified snapshots, protocol-driven validation, prespecified mixed-model
analyses and DSMB safety reports. Neutral trial infrastructure: it reports what the data show.
"""

from __future__ import annotations

from studyman.errors import (
    AnalysisError,
    ProtocolError,
    SnapshotError,
    SourceError,
    StudymanError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "AnalysisError",
    "ProtocolError",
    "SnapshotError",
    "SourceError",
    "StudymanError",
    "ValidationError",
    "__version__",
]
