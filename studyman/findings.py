"""Findings: bad data (or a mismatch between files) reported as data, never as an exception."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd

__all__ = ["FINDING_COLUMNS", "Finding", "Severity", "findings_frame"]

Severity = Literal["critical", "major", "minor", "info"]

FINDING_COLUMNS = [
    "check_id",
    "severity",
    "message",
    "record_id",
    "event",
    "instrument",
    "instance",
    "field",
    "value",
    "source",
]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in data or metadata.

    Attributes
    ----------
    check_id
        Stable identifier of the rule that produced the finding (e.g. ``cast.date``).
    severity
        ``critical``, ``major``, ``minor`` or ``info``.
    message
        Human-readable statement of what is wrong and what was expected.
    record_id, event, instrument, instance, field, value
        Where the problem is, as far as it applies (empty string when it does not).
    source
        The file or table the finding came from.
    """

    check_id: str
    severity: Severity
    message: str
    record_id: str = ""
    event: str = ""
    instrument: str = ""
    instance: str = ""
    field: str = ""
    value: str = ""
    source: str = ""


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """Return *findings* as a DataFrame with :data:`FINDING_COLUMNS`, in the given order."""
    rows = [asdict(finding) for finding in findings]
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)
