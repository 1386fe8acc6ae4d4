"""The DSMB's history: past meetings, their recommendations and the study's responses.

``dsmb-history.yaml`` sits beside ``protocol.yaml``. It is written by the study team after each
meeting and read by the DSMB report, which shows the recommendations of the meetings before the
data cut-off with the responses, and the protocol amendments since the last report::

    meetings:
      - date: 2026-03-16
        kind: open_and_closed        # organisational | open_and_closed | ad_hoc
        data_cutoff: 2026-02-28      # the cut-off of the report the meeting reviewed
        information_fraction: 0.5    # only when an interim look was taken at this meeting
        recommendations:
          - id: 2026-03-R1
            text: Continue the study without modification.
            response: The study continues unchanged.
            response_date: 2026-03-20
            status: implemented      # implemented | in_progress | not_adopted | no_action_needed
    protocol_amendments:
      - version: "2.0"
        date: 2026-05-04
        summary: Eligibility extended to participants aged 18 to 70.

Loaded strictly: an unknown key, a missing one, an impossible date, meetings out of order, a
response dated before its meeting or a recommendation id given twice is a
:class:`~studyman.errors.ProtocolError` naming the file, the key path and its line.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from studyman.errors import ProtocolError
from studyman.protocol.loader import _line_of
from studyman.protocol.text_files import read_yaml

__all__ = [
    "DSMB_HISTORY_FILE",
    "DsmbHistory",
    "Meeting",
    "ProtocolAmendment",
    "Recommendation",
    "dsmb_history_path",
    "load_dsmb_history",
]

#: The file name, in the protocol's folder.
DSMB_HISTORY_FILE = "dsmb-history.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _KeyedError(ValueError):
    """A cross-field problem that knows its key path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class Recommendation(_Frozen):
    """One recommendation of the board and the study's response to it."""

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    response: str = ""
    response_date: dt.date | None = None
    status: Literal["implemented", "in_progress", "not_adopted", "no_action_needed", "open"] = (
        "open"
    )

    @model_validator(mode="after")
    def _answered_when_closed(self) -> Recommendation:
        if self.status != "open" and not self.response.strip():
            raise _KeyedError("response", f"status {self.status!r} needs the study's response")
        return self


class Meeting(_Frozen):
    """A DSMB meeting: when, what kind, the data it reviewed and what it recommended."""

    date: dt.date
    kind: Literal["organisational", "open_and_closed", "ad_hoc"] = "open_and_closed"
    data_cutoff: dt.date | None = None
    #: The information fraction of the interim look the meeting reviewed, if one was taken
    #: (the report's boundaries then count that look as taken at this fraction).
    information_fraction: float | None = Field(default=None, gt=0, le=1)
    recommendations: tuple[Recommendation, ...] = ()

    @model_validator(mode="after")
    def _dates_in_order(self) -> Meeting:
        if self.data_cutoff is not None and self.data_cutoff > self.date:
            raise _KeyedError(
                "data_cutoff", f"{self.data_cutoff} is after the meeting ({self.date})"
            )
        seen: set[str] = set()
        for index, recommendation in enumerate(self.recommendations):
            if recommendation.id in seen:
                raise _KeyedError(
                    f"recommendations[{index}].id", f"{recommendation.id!r} is given twice"
                )
            seen.add(recommendation.id)
            answered = recommendation.response_date
            if answered is not None and answered < self.date:
                raise _KeyedError(
                    f"recommendations[{index}].response_date",
                    f"{answered} is before the meeting ({self.date})",
                )
        return self

    @property
    def reviewed_until(self) -> dt.date:
        """The last day of data the meeting saw: its data cut-off, else the meeting date."""
        return self.data_cutoff or self.date


class ProtocolAmendment(_Frozen):
    """A protocol amendment: version, date of approval and what changed."""

    version: str = Field(min_length=1)
    date: dt.date
    summary: str = Field(min_length=1)


class DsmbHistory(_Frozen):
    """Past DSMB meetings and protocol amendments, each in date order."""

    meetings: tuple[Meeting, ...] = ()
    protocol_amendments: tuple[ProtocolAmendment, ...] = ()
    source_file: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _in_date_order(self) -> DsmbHistory:
        for index in range(1, len(self.meetings)):
            if self.meetings[index].date <= self.meetings[index - 1].date:
                raise _KeyedError(
                    f"meetings[{index}].date",
                    f"{self.meetings[index].date}: meetings must be listed in date order, "
                    f"after {self.meetings[index - 1].date}",
                )
        ids: set[str] = set()
        for m_index, meeting in enumerate(self.meetings):
            for r_index, recommendation in enumerate(meeting.recommendations):
                if recommendation.id in ids:
                    raise _KeyedError(
                        f"meetings[{m_index}].recommendations[{r_index}].id",
                        f"{recommendation.id!r} is the id of an earlier recommendation",
                    )
                ids.add(recommendation.id)
        versions: set[str] = set()
        for index, amendment in enumerate(self.protocol_amendments):
            if amendment.version in versions:
                raise _KeyedError(
                    f"protocol_amendments[{index}].version",
                    f"{amendment.version!r} is given twice",
                )
            versions.add(amendment.version)
            if index and amendment.date < self.protocol_amendments[index - 1].date:
                raise _KeyedError(
                    f"protocol_amendments[{index}].date",
                    f"{amendment.date}: amendments must be listed in date order",
                )
        return self

    def meetings_before(self, cutoff: dt.date) -> tuple[Meeting, ...]:
        """The meetings held before the data cut-off *cutoff* (the report being written)."""
        return tuple(m for m in self.meetings if m.date < cutoff)

    def last_meeting_before(self, cutoff: dt.date) -> Meeting | None:
        """The latest meeting before *cutoff*, or None (this is the first report)."""
        earlier = self.meetings_before(cutoff)
        return earlier[-1] if earlier else None

    def amendments_since_last_report(self, cutoff: dt.date) -> tuple[ProtocolAmendment, ...]:
        """Amendments after the data the last meeting reviewed, up to *cutoff* (all of them
        up to *cutoff* when there was no meeting before)."""
        last = self.last_meeting_before(cutoff)
        start = last.reviewed_until if last is not None else dt.date.min
        return tuple(a for a in self.protocol_amendments if start < a.date <= cutoff)


def dsmb_history_path(protocol_file: str | Path) -> Path:
    """Where the history of the study whose protocol is *protocol_file* lives."""
    path = Path(protocol_file)
    folder = path if path.is_dir() else path.parent
    return folder / DSMB_HISTORY_FILE


def _key_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def load_dsmb_history(protocol_file: str | Path) -> DsmbHistory | None:
    """Read ``dsmb-history.yaml`` beside the protocol; None when the study has none yet.

    Parameters
    ----------
    protocol_file
        ``protocol.yaml`` or its folder.

    Returns
    -------
    DsmbHistory or None

    Raises
    ------
    ProtocolError
        The file is not UTF-8 YAML, or a key is unknown, missing or invalid; the message names
        the file, the key path and its line.
    """
    file = dsmb_history_path(protocol_file)
    if not file.exists():
        return None
    root, content = read_yaml(file, what="DSMB history")
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise ProtocolError(
            "expected a mapping with 'meetings' and 'protocol_amendments'", file=str(file)
        )
    try:
        history = DsmbHistory.model_validate(content)
    except PydanticValidationError as error:
        problems = error.errors()
        first = next((p for p in problems if p["type"] == "extra_forbidden"), problems[0])
        location = tuple(first["loc"])
        context = first.get("ctx", {}).get("error")
        if isinstance(context, _KeyedError):
            # a validator's key is relative to the model that raised it
            location = (*location, *_split_key(context.key))
            message = context.message
        elif first["type"] == "extra_forbidden":
            message = "unknown key (expected meetings, protocol_amendments and their fields)"
        else:
            message = first["msg"].removeprefix("Value error, ")
        key = _key_path(location)
        line = _line_of(root, location)
        raise ProtocolError(
            message, file=str(file), key=f"{key} (line {line})" if line else key or None
        ) from None
    return history.model_copy(update={"source_file": str(file)})


def _split_key(key: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for chunk in key.replace("[", ".[").split("."):
        if chunk.startswith("[") and chunk.endswith("]"):
            parts.append(int(chunk[1:-1]))
        elif chunk:
            parts.append(chunk)
    return tuple(parts)
