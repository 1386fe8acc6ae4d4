"""What every protocol check reads: the inputs, the participant-level view, the emitter.

The participant-level facts most checks need (consent, randomisation, disposition dates) are built
once in :class:`StudyView`; checks report through :class:`Emitter`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from studyman.findings import FINDING_COLUMNS
from studyman.validation.catalogue import check_by_id
from studyman.validation.dictionary import DataDictionary
from studyman.validation.records import EVENT, INSTANCE, REPEAT, form_present, text

__all__ = [
    "Emitter",
    "ProtocolCheckInput",
    "StudyView",
    "compare",
    "format_day",
    "parse_dates",
    "parse_numbers",
]


@dataclass(frozen=True)
class ProtocolCheckInput:
    """What the protocol checks need besides the records.

    Attributes
    ----------
    protocol
        The loaded protocol (:class:`studyman.protocol.models.Protocol`).
    dictionary
        The data dictionary.
    data_cut
        The data cut-off date (dates after it are in the future).
    arms
        Record ID -> arm code, only in an unblinded run (``None`` in a blinded run).
    strata
        Record ID -> randomisation stratum text, only in an unblinded run.
    """

    protocol: Any
    dictionary: DataDictionary
    data_cut: date
    arms: pd.Series | None = None
    strata: pd.Series | None = None
    dags: pd.Series | None = field(default=None)


def parse_dates(values: np.ndarray | pd.Series) -> pd.Series:
    """Parse ISO dates or date-times (invalid or blank -> NaT)."""
    series = pd.Series(np.asarray(values, dtype=object), dtype=object)
    series = series.where(series != "", None)
    return pd.to_datetime(series, format="ISO8601", errors="coerce")


def parse_numbers(values: np.ndarray | pd.Series) -> np.ndarray:
    return np.asarray(
        pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce"),
        dtype=np.float64,
    )


def compare(values: np.ndarray, op: str, threshold: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        result = {
            "lt": values < threshold,
            "le": values <= threshold,
            "gt": values > threshold,
            "ge": values >= threshold,
            "eq": values == threshold,
            "ne": values != threshold,
        }[op]
    return np.asarray(result, dtype=bool)


class StudyView:
    """Participant-level lookups over the flat records (built lazily, once)."""

    def __init__(self, records: pd.DataFrame, inputs: ProtocolCheckInput) -> None:
        self.records = records
        self.inputs = inputs
        self.protocol = inputs.protocol
        self.id_field = inputs.dictionary.record_id_field
        self.ids = text(records, self.id_field)
        self.events = text(records, EVENT)
        self.repeat = text(records, REPEAT)
        self.base = self.repeat == ""

    def rows_of(self, form: str) -> np.ndarray:
        """Rows holding data of *form*."""
        return form_present(self.records, self.inputs.dictionary, form)

    def value(self, event: str, field_name: str) -> pd.Series:
        """Record ID -> text of *field_name* at *event* (first base row)."""
        mask = self.base & (self.events == event)
        values = text(self.records, field_name)[mask]
        series = pd.Series(values, index=self.ids[mask], dtype=object)
        return series[~series.index.duplicated(keep="first")]

    def date(self, event: str, field_name: str) -> pd.Series:
        """Record ID -> date of *field_name* at *event* (NaT when blank or invalid)."""
        series = self.value(event, field_name)
        return pd.Series(parse_dates(series.to_numpy()).to_numpy(), index=series.index)

    def per_row(self, lookup: pd.Series) -> pd.Series:
        """The participant-level *lookup* aligned to every record row (``NaN``/``NaT`` if absent).

        ``reindex`` rather than ``map``: pandas cannot map an empty object Series onto dates.
        """
        return pd.Series(lookup.reindex(self.ids).to_numpy())

    @cached_property
    def consent(self) -> pd.Series:
        """Record ID -> date of informed consent (the protocol's consent-date field)."""
        return self.date(
            self.protocol.eligibility.event, self.protocol.enrolment.consent_date_field
        )

    def form_of(self, field_name: str) -> str:
        """The form of *field_name* in the dictionary (``""`` when it has none)."""
        spec = self.inputs.dictionary.by_name.get(field_name)
        return spec.form if spec is not None else ""

    def assessment_date_fields(self) -> tuple[str, ...]:
        """The dates of assessments and treatment given, as the protocol and dictionary declare.

        Every date field of a form due at a scheduled visit (in dictionary order), then the
        dates of the treatment logs (sessions, doses); without the dates that define the
        milestones themselves (screening, consent, randomisation), which have their own checks.
        """
        protocol = self.protocol
        scheduled = {
            form for visit in protocol.visits if visit.is_scheduled for form in visit.instruments
        }
        milestones = {
            protocol.enrolment.screening_date_field,
            protocol.enrolment.consent_date_field,
            protocol.randomization.date_field,
        }
        names = [
            spec.name
            for spec in self.inputs.dictionary.fields
            if spec.form in scheduled
            and spec.validation.startswith(("date", "datetime"))
            and spec.name not in milestones
        ]
        treatment = protocol.treatment
        for log in (treatment.sessions, treatment.doses):
            if log is not None and log.date_field not in names:
                names.append(log.date_field)
        return tuple(names)

    @cached_property
    def screening_date(self) -> pd.Series:
        visit = self.visit("screening")
        if visit is None or not visit.date_field:
            return pd.Series(dtype="datetime64[ns]")
        return self.date(visit.event, visit.date_field)

    def visit(self, kind: str) -> Any:
        for visit in self.protocol.visits:
            if visit.kind == kind:
                return visit
        return None

    @cached_property
    def randomization_event(self) -> str:
        return str(self.protocol.arms.event)

    @cached_property
    def randomized(self) -> pd.Series:
        values = self.value(self.randomization_event, self.protocol.randomization.randomized_field)
        return values == "1"

    @cached_property
    def rand_date(self) -> pd.Series:
        return self.date(self.randomization_event, self.protocol.randomization.date_field)

    @cached_property
    def disposition(self) -> tuple[pd.Series, pd.Series, pd.Series]:
        ds = self.protocol.disposition
        return (
            self.value(ds.event, ds.status_field),
            self.date(ds.event, ds.date_field),
            self.date(ds.event, ds.death_date_field),
        )

    @cached_property
    def left_study(self) -> pd.Series:
        """Record ID -> date the participant left early (withdrawal, loss, death; NaT otherwise)."""
        status, ds_date, death = self.disposition
        completed = {str(code.code) for code in self.protocol.disposition.codes if code.completed}
        left = ds_date.where(
            ~status.reindex(ds_date.index).isin(list(completed))
            & (status.reindex(ds_date.index) != "")
        )
        return left.combine_first(death) if len(death) else left

    @cached_property
    def site(self) -> pd.Series:
        """Record ID -> site (the record ID's prefix), one entry per participant."""
        unique = pd.unique(self.ids)
        return pd.Series([rid.split("-", 1)[0] for rid in unique], index=unique, dtype=object)


class Emitter:
    def __init__(self, view: StudyView) -> None:
        self.view = view
        self.parts: list[pd.DataFrame] = []

    def rows(
        self,
        check_id: str,
        mask: np.ndarray,
        *,
        instrument: str,
        field: str | np.ndarray,
        value: np.ndarray | str | None,
        message: str | np.ndarray | Callable[[np.ndarray], list[str]],
    ) -> None:
        """Findings at record rows selected by *mask* (a callable message gets the row numbers)."""
        check = check_by_id(check_id)
        if check is None:  # pragma: no cover - ids are fixed in this module
            raise KeyError(check_id)
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(rows) == 0:
            return
        records = self.view.records

        def pick(item: Any) -> Any:
            if item is None:
                return ""
            if callable(item):
                return np.asarray(item(rows), dtype=object)
            return item if isinstance(item, str) else np.asarray(item, dtype=object)[rows]

        self.parts.append(
            pd.DataFrame(
                {
                    "check_id": check.check_id,
                    "severity": check.severity,
                    "message": pick(message),
                    "record_id": self.view.ids[rows],
                    "event": self.view.events[rows],
                    "instrument": instrument,
                    "instance": text(records, INSTANCE)[rows],
                    "field": pick(field),
                    "value": [str(item) for item in pick(value)]
                    if not isinstance(pick(value), str)
                    else pick(value),
                    "source": "protocol",
                },
                columns=FINDING_COLUMNS,
                dtype=object,
            )
        )

    def participants(
        self,
        check_id: str,
        record_ids: Iterable[str],
        *,
        event: str,
        instrument: str,
        field: str,
        values: Sequence[str] | None = None,
        messages: Sequence[str] | str,
    ) -> None:
        """Findings at participant level (one per record)."""
        check = check_by_id(check_id)
        if check is None:  # pragma: no cover
            raise KeyError(check_id)
        ids = list(record_ids)
        if not ids:
            return
        self.parts.append(
            pd.DataFrame(
                {
                    "check_id": check.check_id,
                    "severity": check.severity,
                    "message": messages if isinstance(messages, str) else list(messages),
                    "record_id": ids,
                    "event": event,
                    "instrument": instrument,
                    "instance": "",
                    "field": field,
                    "value": list(values) if values is not None else "",
                    "source": "protocol",
                },
                columns=FINDING_COLUMNS,
                dtype=object,
            )
        )

    def frame(self) -> pd.DataFrame:
        parts = [part for part in self.parts if not part.empty]
        if not parts:
            return pd.DataFrame(columns=FINDING_COLUMNS)
        return pd.concat(parts, ignore_index=True)


def format_day(day: Any) -> str:
    return "" if pd.isna(day) else pd.Timestamp(day).strftime("%Y-%m-%d")
