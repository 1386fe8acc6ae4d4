"""Protocol checks: visits, eligibility, dates, scores, safety, medications, disposition.

Each check reads its parameters from the protocol (windows, thresholds, codes, clocks) and works
on whole columns at once. The participant-level facts most checks need (consent, randomisation,
disposition dates) are built once in :class:`StudyView`.

Notes
-----
* Study days count from the randomisation date (baseline = day 0), as the protocol states.
* A visit is overdue when the data cut is past the end of its window, the participant was
  randomised, the visit form holds no row at that event, and the participant had not left the
  study (disposition other than completed dated on or before the window's end).
* A stored total is compared with the protocol's scoring: the plain sum when proration is
  ``none``; ``round(mean of answered items x number of items)`` (halves away from zero) when it
  is ``prorate``; missing when more items are missing than ``max_missing_items`` allows. Items
  16A/16B count as one item (whichever is scored).
* The SAE clock runs from the awareness date-time to the report date-time, in hours. The other
  reporting clocks (SUSARs to the regulator, suicide deaths to the DSMB, unanticipated problems
  to the IRB) follow :mod:`studyman.protocol.clocks`: a late report, or no report once the
  deadline has passed at the data cut, is a finding named by the clock's id.
* Dates that are not real dates are ignored by date-order checks (the dictionary check reports
  them), so one bad value never raises.
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
from studyman.protocol.clocks import (
    clock_applies,
    clock_reading_time,
    clock_report_field,
    clock_start,
    clock_status,
)
from studyman.validation.catalogue import check_by_id
from studyman.validation.dictionary import DataDictionary
from studyman.validation.records import EVENT, INSTANCE, REPEAT, form_present, isin, text
from studyman.validation.records import dates as column_dates
from studyman.validation.records import numbers as column_numbers

__all__ = ["ProtocolCheckInput", "StudyView", "run_protocol_checks"]


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


def _dates(values: np.ndarray | pd.Series) -> pd.Series:
    """Parse ISO dates or date-times (invalid or blank -> NaT)."""
    series = pd.Series(np.asarray(values, dtype=object), dtype=object)
    series = series.where(series != "", None)
    return pd.to_datetime(series, format="ISO8601", errors="coerce")


def _numbers(values: np.ndarray | pd.Series) -> np.ndarray:
    return np.asarray(
        pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce"),
        dtype=np.float64,
    )


def _compare(values: np.ndarray, op: str, threshold: float) -> np.ndarray:
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
        return pd.Series(_dates(series.to_numpy()).to_numpy(), index=series.index)

    def per_row(self, lookup: pd.Series) -> pd.Series:
        """The participant-level *lookup* aligned to every record row (``NaN``/``NaT`` if absent).

        ``reindex`` rather than ``map``: pandas cannot map an empty object Series onto dates.
        """
        return pd.Series(lookup.reindex(self.ids).to_numpy())

    @cached_property
    def consent(self) -> pd.Series:
        return self.date(self.protocol.eligibility.event, "consent_date")

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


class _Emitter:
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


def _fmt(day: Any) -> str:
    return "" if pd.isna(day) else pd.Timestamp(day).strftime("%Y-%m-%d")


def run_protocol_checks(records: pd.DataFrame, inputs: ProtocolCheckInput) -> pd.DataFrame:
    """Run every protocol check (arm checks only when ``inputs.arms`` is given).

    Returns
    -------
    pandas.DataFrame
        Findings with :data:`studyman.findings.FINDING_COLUMNS`.
    """
    view = StudyView(records, inputs)
    out = _Emitter(view)
    for check in (
        _structure,
        _future_and_consent_dates,
        _visits,
        _eligibility,
        _scores,
        _cssrs,
        _adverse_events,
        _conmeds,
        _liver_and_withdrawal,
        _disposition,
        _adherence,
    ):
        check(view, out)
    if inputs.arms is not None:
        _arm_checks(view, out)
    return out.frame()


# ------------------------------------------------------------------------------- structure


def _structure(view: StudyView, out: _Emitter) -> None:
    records = view.records
    protocol = view.protocol
    keys = [view.id_field, EVENT, REPEAT, INSTANCE]
    duplicated = records.duplicated(subset=keys, keep="first").to_numpy()
    out.rows(
        "STR-DUP",
        duplicated,
        instrument="",
        field=view.id_field,
        value=view.ids,
        message="Duplicate row for this record, event and instance",
    )
    pattern = protocol.study.record_id_pattern
    site_ids = {site.id for site in protocol.sites}
    dag_of = {site.id: site.dag for site in protocol.sites}
    unique_ids = pd.unique(view.ids)
    bad: list[str] = []
    messages: list[str] = []
    matches = (
        pd.Series(unique_ids, dtype=object).str.fullmatch(pattern).fillna(False).tolist()
        if pattern
        else None
    )
    dags: dict[str, str] | None = None
    if "redcap_data_access_group" in records.columns:
        dag_values = text(records, "redcap_data_access_group")
        dags = {}
        for record_id, dag in zip(view.ids, dag_values, strict=True):
            if dag and record_id not in dags:
                dags[record_id] = dag
    for position, record_id in enumerate(unique_ids):
        prefix = record_id.split("-", 1)[0]
        if matches is not None and not bool(matches[position]):
            bad.append(record_id)
            messages.append(f"Record ID {record_id!r} does not match the pattern {pattern}")
        elif prefix not in site_ids:
            bad.append(record_id)
            messages.append(f"Record ID {record_id!r} names no study site")
        elif dags is not None and record_id in dags and dags[record_id] != dag_of[prefix]:
            bad.append(record_id)
            messages.append(
                f"Record ID {record_id!r} is in data access group {dags[record_id]}, "
                f"expected {dag_of[prefix]}"
            )
    out.participants(
        "STR-SITE", bad, event="", instrument="", field=view.id_field, values=bad, messages=messages
    )
    # data for participants without a participant (screening) record
    screening = view.visit("screening")
    participant_form = view.inputs.dictionary.by_name[view.id_field].form
    present = view.rows_of(participant_form)
    if screening is not None:
        present &= view.events == screening.event
    enrolled = set(view.ids[present])
    orphans = [record_id for record_id in unique_ids if record_id not in enrolled]
    out.participants(
        "STR-UNENROLLED",
        orphans,
        event="",
        instrument=participant_form,
        field=view.id_field,
        values=orphans,
        messages="Data recorded for a participant with no participant (screening) form",
    )
    # forms at events the schedule does not allow
    allowed: dict[str, set[str]] = {}
    for visit in protocol.visits:
        for form in visit.instruments:
            allowed.setdefault(form, set()).add(visit.event)
    for form, events in allowed.items():
        rows = view.rows_of(form)
        if not rows.any():
            continue
        wrong = rows & ~isin(view.events, list(events))
        out.rows(
            "STR-EVENT",
            wrong,
            instrument=form,
            field="",
            value=view.events,
            message=f"Form {form} entered at an event where the schedule does not include it",
        )
    # form marked Complete with required fields blank
    dictionary = view.inputs.dictionary
    from studyman.validation.logic import EvaluationContext, compile_logic

    context = EvaluationContext(records=records, record_id_field=view.id_field)
    for form in dictionary.forms:
        status = text(records, f"{form}_complete")
        complete = status == "2"
        if not complete.any():
            continue
        rows = view.rows_of(form) & complete
        blank_required = np.zeros(len(records), dtype=bool)
        for spec in dictionary.form_fields(form):
            if (
                not spec.required
                or spec.field_type in ("calc", "descriptive", "file")
                or spec.name == view.id_field
            ):
                continue
            if spec.field_type == "checkbox":
                blank = ~np.logical_or.reduce(
                    [text(records, column) == "1" for column in spec.columns]
                )
            else:
                blank = text(records, spec.name) == ""
            if spec.branching:
                blank &= compile_logic(spec.branching).mask(records, context)
            blank_required |= blank
        out.rows(
            "STR-COMPLETE",
            rows & blank_required,
            instrument=form,
            field=f"{form}_complete",
            value=status,
            message=f"Form {form} marked Complete with required fields blank",
        )


# ------------------------------------------------------------------------------- dates


_ASSESSMENT_DATES = (
    "visit_date",
    "lab_date",
    "cows_date",
    "scr_date",
    "elig_date",
    "cbt_date",
    "dose_date",
)


def _future_and_consent_dates(view: StudyView, out: _Emitter) -> None:
    records = view.records
    dictionary = view.inputs.dictionary
    cut = pd.Timestamp(view.inputs.data_cut)
    consent = view.per_row(view.consent)
    for spec in dictionary.fields:
        if not spec.validation.startswith(("date", "datetime")) or spec.name not in records.columns:
            continue
        values = text(records, spec.name)
        parsed = column_dates(records, spec.name)
        future = (parsed.dt.normalize() > cut).fillna(False).to_numpy(dtype=bool)
        out.rows(
            "DAT-FUTURE",
            future,
            instrument=spec.form,
            field=spec.name,
            value=values,
            message=f"{spec.label or spec.name}: after the data cut-off {cut:%Y-%m-%d}",
        )
        if spec.name in _ASSESSMENT_DATES and spec.name != "scr_date":
            before = (parsed.dt.normalize() < consent).fillna(False).to_numpy(dtype=bool) & ~future
            out.rows(
                "DAT-BEFORE-CONSENT",
                before,
                instrument=spec.form,
                field=spec.name,
                value=values,
                message=f"{spec.label or spec.name}: before informed consent",
            )
    # randomisation before consent or eligibility
    rand = view.rand_date
    elig = view.date(view.protocol.eligibility.event, view.protocol.eligibility.date_field)
    ids = rand.index[rand.notna()]
    bad: list[str] = []
    rand_values: list[str] = []
    messages: list[str] = []
    rand_of = rand.to_dict()
    references = (("consent", view.consent.to_dict()), ("eligibility confirmation", elig.to_dict()))
    for record_id in ids:
        day = rand_of[record_id]
        for label, other in references:
            reference = other.get(record_id, pd.NaT)
            if not pd.isna(reference) and day < reference:
                bad.append(record_id)
                rand_values.append(_fmt(day))
                messages.append(f"Randomised on {_fmt(day)}, before {label} on {_fmt(reference)}")
                break
    out.participants(
        "DAT-RAND-ORDER",
        bad,
        event=view.randomization_event,
        instrument="enrollment",
        field=view.protocol.randomization.date_field,
        values=rand_values,
        messages=messages,
    )


# ------------------------------------------------------------------------------- visits


def _visits(view: StudyView, out: _Emitter) -> None:
    protocol = view.protocol
    records = view.records
    cut = pd.Timestamp(view.inputs.data_cut)
    rand = view.rand_date
    rand_row = view.per_row(rand)
    left = view.left_study
    scheduled = [v for v in protocol.visits if v.window is not None and v.date_field]
    previous_dates: pd.Series | None = None
    for visit in scheduled:
        field_name = visit.date_field
        form = (
            view.inputs.dictionary.by_name[field_name].form
            if field_name in view.inputs.dictionary.by_name
            else ""
        )
        at_event = view.base & (view.events == visit.event)
        values = text(records, field_name)
        parsed = column_dates(records, field_name)
        study_day = (parsed - rand_row).dt.days
        outside = at_event & (
            (study_day < visit.window.start) | (study_day > visit.window.end)
        ).fillna(False).to_numpy(dtype=bool)
        messages = np.full(len(records), "", dtype=object)
        days = study_day.to_numpy(dtype=np.float64, na_value=np.nan)
        for index in np.flatnonzero(outside):
            messages[index] = (
                f"{visit.label}: study day {int(days[index])} outside the window "
                f"{visit.window.start} to {visit.window.end}"
            )
        out.rows(
            "VIS-WINDOW", outside, instrument=form, field=field_name, value=values, message=messages
        )
        # order against the previous scheduled visit
        dates_here = view.date(visit.event, field_name)
        if previous_dates is not None:
            earlier = previous_dates.reindex(dates_here.index)
            wrong = dates_here.notna() & earlier.notna() & (dates_here <= earlier)
            wrong_ids = set(dates_here.index[wrong.to_numpy(dtype=bool)])
            mask = at_event & isin(view.ids, list(wrong_ids))
            out.rows(
                "DAT-VISIT-ORDER",
                mask,
                instrument=form,
                field=field_name,
                value=values,
                message=f"{visit.label}: dated on or before the previous scheduled visit",
            )
            previous_dates = dates_here.combine_first(previous_dates)
        else:
            previous_dates = dates_here
        # overdue: window closed, no visit row, randomised and still in the study
        if visit.kind in ("screening", "baseline"):
            continue
        visit_rows = view.rows_of(form) & at_event if form else at_event
        seen = set(view.ids[visit_rows])
        due = rand + pd.to_timedelta(visit.window.end, unit="D")
        randomized = view.randomized.reindex(rand.index).fillna(False).astype(bool)
        overdue = []
        due_of = due.to_dict()
        left_of = left.to_dict()
        for record_id in rand.index[rand.notna() & randomized.to_numpy(dtype=bool)]:
            if record_id in seen:
                continue
            end = due_of[record_id]
            if end >= cut:
                continue
            gone = left_of.get(record_id, pd.NaT)
            if not pd.isna(gone) and gone <= end:
                continue
            overdue.append(record_id)
        out.participants(
            "VIS-OVERDUE",
            overdue,
            event=visit.event,
            instrument=form,
            field=field_name,
            messages=f"{visit.label}: overdue (window closed, no visit recorded)",
        )


# ------------------------------------------------------------------------------- eligibility


def _eligibility(view: StudyView, out: _Emitter) -> None:
    eligibility = view.protocol.eligibility
    event = eligibility.event
    randomized = view.randomized
    rand_ids = set(randomized.index[randomized.to_numpy(dtype=bool)])
    form = eligibility.form
    form_rows = view.rows_of(form) & (view.events == event)
    screened = set(view.ids[form_rows])
    for criterion in eligibility.criteria:
        recorded = view.value(event, criterion.field)
        failing_value = "0" if criterion.kind == "inclusion" else "1"
        failing = [rid for rid in recorded.index[recorded == failing_value] if rid in rand_ids]
        out.participants(
            "ELG-FORM",
            failing,
            event=event,
            instrument=form,
            field=criterion.field,
            values=[failing_value] * len(failing),
            messages=f"Randomised although {criterion.kind} criterion not met: {criterion.text}",
        )
        if criterion.derived is None:
            continue
        derived = _derived(view, criterion.derived)
        # derived "criterion met" (inclusion) / "exclusion applies"
        disagree: list[str] = []
        values: list[str] = []
        recorded_of = recorded.to_dict()
        for record_id in screened:
            verdict = derived.get(record_id)
            value = recorded_of.get(record_id, "")
            if verdict is None or value not in ("0", "1"):
                continue
            if (value == "1") != verdict:
                disagree.append(record_id)
                values.append(value)
        out.participants(
            "ELG-DERIVED",
            sorted(disagree),
            event=event,
            instrument=form,
            field=criterion.field,
            values=[v for _, v in sorted(zip(disagree, values, strict=True))],
            messages=f"{criterion.text}: the form disagrees with the data",
        )
        if criterion.id == "inc_age":
            outside = [rid for rid in rand_ids if derived.get(rid) is False]
            ages = view.value(event, criterion.derived.conditions[0].field)
            out.participants(
                "ELG-AGE",
                sorted(outside),
                event=criterion.derived.conditions[0].event,
                instrument=view.inputs.dictionary.by_name[
                    criterion.derived.conditions[0].field
                ].form,
                field=criterion.derived.conditions[0].field,
                values=[str(ages.get(rid, "")) for rid in sorted(outside)],
                messages="Randomised with age at consent outside the inclusion range",
            )
        if criterion.id == "inc_hamd":
            for condition in criterion.derived.conditions:
                if condition.event != view.randomization_event:
                    continue
                totals = view.value(condition.event, condition.field)
                numbers = pd.Series(_numbers(totals.to_numpy()), index=totals.index)
                low = [
                    rid
                    for rid in sorted(rand_ids)
                    if rid in numbers.index
                    and not np.isnan(numbers[rid])
                    and not _compare(np.array([numbers[rid]]), condition.op, condition.value)[0]
                ]
                out.participants(
                    "SCO-RAND-LOW",
                    low,
                    event=condition.event,
                    instrument=view.inputs.dictionary.by_name[condition.field].form,
                    field=condition.field,
                    values=[str(totals[rid]) for rid in low],
                    messages=(
                        f"Randomised with baseline {condition.field} below {condition.value:g}"
                    ),
                )
    eligible = view.value(event, eligibility.eligible_field)
    ineligible = [rid for rid in eligible.index[eligible == "0"] if rid in rand_ids]
    out.participants(
        "ELG-RAND-INELIGIBLE",
        ineligible,
        event=event,
        instrument=form,
        field=eligibility.eligible_field,
        values=["0"] * len(ineligible),
        messages="Randomised although the eligibility form says not eligible",
    )
    # stratum recorded by the site vs derived from the baseline score (not arm information)
    for factor in view.protocol.randomization.stratification:
        if factor.source != "score" or not factor.recorded_field or not factor.field:
            continue
        recorded = view.value(view.randomization_event, factor.recorded_field)
        scores = view.value(factor.event or view.randomization_event, factor.field)
        numbers = pd.Series(_numbers(scores.to_numpy()), index=scores.index)
        wrong: list[str] = []
        wrong_values: list[str] = []
        numbers_of = numbers.to_dict()
        recorded_of = recorded.to_dict()
        for record_id in sorted(rand_ids):
            score = numbers_of.get(record_id, np.nan)
            value = recorded_of.get(record_id, "")
            if np.isnan(score) or value == "":
                continue
            level = next(
                (
                    lv
                    for lv in factor.levels
                    if (lv.min is None or score >= lv.min) and (lv.max is None or score <= lv.max)
                ),
                None,
            )
            if level is not None and str(level.code) != value:
                wrong.append(record_id)
                wrong_values.append(value)
        out.participants(
            "ELG-STRATUM",
            wrong,
            event=view.randomization_event,
            instrument=view.inputs.dictionary.by_name[factor.recorded_field].form
            if factor.recorded_field in view.inputs.dictionary.by_name
            else "",
            field=factor.recorded_field,
            values=wrong_values,
            messages=(
                f"{factor.label or factor.id}: recorded stratum "
                f"differs from the baseline {factor.field}"
            ),
        )


def _derived(view: StudyView, rule: Any) -> dict[str, bool]:
    """Record ID -> whether the derived rule holds (absent when it cannot be decided)."""
    columns: list[pd.Series] = []
    for condition in rule.conditions:
        values = view.value(condition.event, condition.field)
        numbers = _numbers(values.to_numpy())
        verdict = np.where(
            np.isnan(numbers), np.nan, _compare(numbers, condition.op, condition.value)
        )
        columns.append(pd.Series(verdict, index=values.index, dtype=np.float64))
    if not columns:
        return {}
    table = pd.concat(columns, axis=1).to_numpy(dtype=np.float64)
    index = pd.concat(columns, axis=1).index
    unknown = np.isnan(table).any(axis=1)
    true_any = (table == 1.0).any(axis=1)
    if rule.match == "all":
        decided = ~unknown
        verdicts = (table == 1.0).all(axis=1)
    else:
        decided = ~unknown | true_any
        verdicts = true_any
    return {
        str(record_id): bool(verdict)
        for record_id, verdict, known in zip(index, verdicts, decided, strict=True)
        if known
    }


# ------------------------------------------------------------------------------- scores


def _scores(view: StudyView, out: _Emitter) -> None:
    records = view.records
    threshold = view.protocol.reporting.change_review_threshold
    for scoring in view.protocol.scoring:
        form = scoring.instrument
        rows = view.rows_of(form)
        if not rows.any():
            continue
        grouped = {name for group in scoring.exactly_one_of for name in group}
        items: list[np.ndarray] = []
        for item in scoring.items:
            if item.field in grouped:
                continue
            numbers = column_numbers(records, item.field)
            items.append(numbers)
        for group in scoring.exactly_one_of:
            stacked = np.vstack([column_numbers(records, name) for name in group])
            scored = (~np.isnan(stacked)).sum(axis=0)
            both_or_none = rows & (scored != 1)
            out.rows(
                "SCO-HAMD16",
                both_or_none,
                instrument=form,
                field=group[0],
                value=np.array([f"{int(n)} of {len(group)} scored" for n in scored], dtype=object),
                message=f"Exactly one of {', '.join(group)} must be scored",
            )
            with np.errstate(invalid="ignore"):
                combined = np.where(scored >= 1, np.nansum(stacked, axis=0), np.nan)
            items.append(combined)
        matrix = np.vstack(items)
        answered = ~np.isnan(matrix)
        n_missing = (~answered).sum(axis=0)
        n_items = matrix.shape[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            if scoring.proration == "prorate":
                mean = np.nansum(matrix, axis=0) / np.maximum(answered.sum(axis=0), 1)
                raw = mean * n_items
                expected = np.sign(raw) * np.floor(np.abs(raw) + 0.5 + 1e-9)
            else:
                expected = np.nansum(matrix, axis=0)
        too_many_missing = n_missing > scoring.max_missing_items
        expected = np.where(too_many_missing, np.nan, expected)
        stored_text = text(records, scoring.total_field)
        stored = column_numbers(records, scoring.total_field)
        present = stored_text != ""
        out.rows(
            "SCO-TOTAL-MISSING-ITEMS",
            rows & present & too_many_missing,
            instrument=form,
            field=scoring.total_field,
            value=stored_text,
            message=(
                f"{scoring.label or form} total present although "
                f"{scoring.max_missing_items} or fewer items may be missing"
            ),
        )
        with np.errstate(invalid="ignore"):
            wrong = (
                rows
                & ~too_many_missing
                & (~present | (np.abs(stored - expected) > 1e-6) | np.isnan(stored))
            )
        out.rows(
            "SCO-TOTAL",
            wrong,
            instrument=form,
            field=scoring.total_field,
            value=stored_text,
            message=_total_messages(scoring.label or form, expected),
        )
        for flag in scoring.flags:
            if not flag.requires_instrument:
                continue
            values = column_numbers(records, flag.field)
            raised = rows & _compare(values, flag.op, flag.value)
            companion = view.rows_of(flag.requires_instrument)
            keys = pd.Series(view.ids, dtype=object) + "\x1f" + pd.Series(view.events, dtype=object)
            missing = ~keys.isin(set(keys[companion])).to_numpy(dtype=bool)
            out.rows(
                "SCO-PHQ9-CSSRS",
                raised & missing,
                instrument=form,
                field=flag.field,
                value=text(records, flag.field),
                message=f"{flag.label}: no {flag.requires_instrument} at the same visit",
            )
    # large change between consecutive visits (review)
    primary = view.protocol.endpoints.primary
    order = [v.event for v in view.protocol.visits if v.window is not None]
    totals = pd.DataFrame(
        {"record": view.ids, "event": view.events, "total": column_numbers(records, primary.field)}
    )
    totals = totals[
        view.base & ~np.isnan(totals["total"].to_numpy()) & totals["event"].isin(order).to_numpy()
    ]
    if totals.empty:
        return
    totals = totals.assign(position=totals["event"].map({e: i for i, e in enumerate(order)}))
    totals = totals.sort_values(["record", "position"])
    change = totals.groupby("record")["total"].diff().abs()
    flagged_index = totals.index[(change > threshold).to_numpy(dtype=bool)]
    mask = np.zeros(len(records), dtype=bool)
    mask[flagged_index.to_numpy()] = True
    out.rows(
        "SCO-CHANGE",
        mask,
        instrument=primary.instrument,
        field=primary.field,
        value=text(records, primary.field),
        message=f"Change of more than {threshold:g} points since the previous visit (review)",
    )


# ------------------------------------------------------------------------------- C-SSRS


def _total_messages(label: str, expected: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    def messages(picked: np.ndarray) -> list[str]:
        return [
            f"{label} total should be {expected[i]:g}"
            if not np.isnan(expected[i])
            else f"{label} total should be blank"
            for i in picked
        ]

    return messages


def _late_messages(hours: np.ndarray, limit: int) -> Callable[[np.ndarray], list[str]]:
    def messages(picked: np.ndarray) -> list[str]:
        return [f"SAE reported {hours[i]:.1f} h after awareness (limit {limit} h)" for i in picked]

    return messages


#: Check ids (late report, missing report) of each reporting-clock case. ``serious`` keeps the
#: SAE clock's historical id; its missing report is ``AE-SAE-DATES``.
CLOCK_CHECKS: dict[str, tuple[str, str | None]] = {
    "serious": ("AE-SAE-LATE", None),
    "susar_fatal_life_threatening": ("AE-CLOCK-SUSAR-FLT-LATE", "AE-CLOCK-SUSAR-FLT-MISSING"),
    "susar_other": ("AE-CLOCK-SUSAR-LATE", "AE-CLOCK-SUSAR-MISSING"),
    "suicide_death": ("AE-CLOCK-SUICIDE-DEATH-LATE", "AE-CLOCK-SUICIDE-DEATH-MISSING"),
    "unanticipated_problem": ("AE-CLOCK-UP-LATE", "AE-CLOCK-UP-MISSING"),
}


def _reporting_clocks(
    view: StudyView, out: _Emitter, rows: np.ndarray, serious: np.ndarray
) -> None:
    """One late-report and one missing-report check per reporting clock.

    The ``serious`` clock (SAE to the sponsor) keeps its historical rule: hours from awareness
    to the report above the smallest ``serious`` limit (a missing report or awareness date is
    ``AE-SAE-DATES``). Every other clock follows :mod:`studyman.protocol.clocks`: day 0 is the
    awareness date-time (onset for a non-serious event), read at the end of the data-cut day; a
    report more than the limit after day 0 is late, no report when the deadline has passed is
    missing. Clocks the protocol cannot assess (no expectedness, judgement or report field
    mapped) are skipped. None of this reads the arm.
    """
    ae = view.protocol.adverse_events
    records = view.records
    sae_clocks = [c for c in view.protocol.reporting_clocks if c.applies_to == "serious"]
    if sae_clocks:
        limit = min(clock.limit_hours for clock in sae_clocks)
        field = clock_report_field(sae_clocks[0], ae) or ae.report_field
        hours = (
            column_dates(records, field) - column_dates(records, ae.awareness_field)
        ).dt.total_seconds() / 3600.0
        out.rows(
            "AE-SAE-LATE",
            rows & serious & (hours > limit).fillna(False).to_numpy(dtype=bool),
            instrument=ae.form,
            field=field,
            value=text(records, field),
            message=_late_messages(hours.to_numpy(dtype=np.float64, na_value=np.nan), limit),
        )
    as_of = clock_reading_time(view.inputs.data_cut)
    start = clock_start(
        column_dates(records, ae.awareness_field), column_dates(records, ae.start_field), serious
    )

    def codes(name: str) -> np.ndarray:
        return text(records, name)

    for clock in view.protocol.reporting_clocks:
        late_id, missing_id = CLOCK_CHECKS[clock.applies_to]
        field = clock_report_field(clock, ae)
        applies = clock_applies(clock, ae, codes)
        if clock.applies_to == "serious" or field is None or applies is None:
            continue
        clock_hours, status = clock_status(
            start, column_dates(records, field), clock.limit_hours, as_of
        )
        due = rows & applies
        deadline = (start + pd.to_timedelta(clock.limit_hours, unit="h")).dt.strftime(
            "%Y-%m-%d %H:%M"
        )
        late_messages = [
            f"{clock.id}: report to the {clock.recipient} sent {h:.1f} h after awareness, "
            f"{h - clock.limit_hours:.1f} h over the {clock.limit_hours} h limit"
            for h in clock_hours
        ]
        out.rows(
            late_id,
            due & (status == "late"),
            instrument=ae.form,
            field=field,
            value=text(records, field),
            message=np.asarray(late_messages, dtype=object),
        )
        if missing_id is None:
            continue
        missing_messages = [
            f"{clock.id}: no report to the {clock.recipient} although due by {d} "
            f"({clock.limit_hours} h after awareness)"
            for d in deadline.fillna("")
        ]
        out.rows(
            missing_id,
            due & (status == "missing"),
            instrument=ae.form,
            field=field,
            value=None,
            message=np.asarray(missing_messages, dtype=object),
        )


def _cssrs(view: StudyView, out: _Emitter) -> None:
    cssrs = view.protocol.cssrs
    records = view.records
    form = cssrs.since_last_form
    rows = view.rows_of(form)
    if not rows.any():
        return
    gates = np.vstack([text(records, name) for name in cssrs.gate_fields])
    gates_no = np.all(gates == "0", axis=0)
    for name in cssrs.follow_up_ideation_fields:
        values = text(records, name)
        out.rows(
            "CSR-SKIP",
            rows & gates_no & (values != ""),
            instrument=form,
            field=name,
            value=values,
            message=f"{name} answered although {' and '.join(cssrs.gate_fields)} are No",
        )
    need = np.zeros(len(records), dtype=bool)
    for name in (*cssrs.safety_action_required_ideation, *cssrs.behaviour_fields):
        need |= text(records, name) == "1"
    action = text(records, cssrs.safety_action_field)
    out.rows(
        "CSR-SAFETY",
        rows & need & (action != "1"),
        instrument=form,
        field=cssrs.safety_action_field,
        value=action,
        message="Ideation type 4-5 or suicidal behaviour reported without a safety action",
    )


# ------------------------------------------------------------------------------- adverse events


def _adverse_events(view: StudyView, out: _Emitter) -> None:
    ae = view.protocol.adverse_events
    records = view.records
    rows = view.rows_of(ae.form)
    if not rows.any():
        return
    start_text = text(records, ae.start_field)
    end_text = text(records, ae.end_field)
    start = column_dates(records, ae.start_field)
    end = column_dates(records, ae.end_field)
    out.rows(
        "AE-END-BEFORE-START",
        rows & (end < start).fillna(False).to_numpy(dtype=bool),
        instrument=ae.form,
        field=ae.end_field,
        value=end_text,
        message="End date before onset date",
    )
    outcome = text(records, ae.outcome_field)
    recovered = isin(outcome, [str(c) for c in ae.recovered_outcome_codes])
    ongoing = isin(outcome, [str(c) for c in ae.ongoing_outcome_codes])
    out.rows(
        "AE-OUTCOME-END",
        rows & ((recovered & (end_text == "")) | (ongoing & (end_text != ""))),
        instrument=ae.form,
        field=ae.outcome_field,
        value=outcome,
        message=np.where(
            recovered,
            "Outcome recovered without an end date",
            "Outcome ongoing but an end date is recorded",
        ).astype(object),
    )
    serious = text(records, ae.serious_field) == "1"
    spec = view.inputs.dictionary.by_name.get(ae.serious_criteria_field)
    if spec is not None:
        ticked = np.zeros(len(records), dtype=bool)
        for column in spec.columns:
            ticked |= text(records, column) == "1"
        out.rows(
            "AE-SERIOUS-CRITERION",
            rows & serious & ~ticked,
            instrument=ae.form,
            field=ae.serious_criteria_field,
            value=None,
            message="Serious adverse event without a seriousness criterion",
        )
    aware_text = text(records, ae.awareness_field)
    report_text = text(records, ae.report_field)
    out.rows(
        "AE-SAE-DATES",
        rows & serious & ((aware_text == "") | (report_text == "")),
        instrument=ae.form,
        field=np.where(aware_text == "", ae.awareness_field, ae.report_field).astype(object),
        value=None,
        message="Serious adverse event without awareness or report date and time",
    )
    _reporting_clocks(view, out, rows, serious)
    severity = text(records, ae.severity_field)
    related = text(records, ae.related_field)
    missing = rows & ((severity == "") | (related == ""))
    out.rows(
        "AE-MISSING",
        missing,
        instrument=ae.form,
        field=np.where(severity == "", ae.severity_field, ae.related_field).astype(object),
        value=None,
        message="Severity or relatedness missing",
    )
    consent = view.per_row(view.consent)
    out.rows(
        "AE-BEFORE-CONSENT",
        rows & (start < consent).fillna(False).to_numpy(dtype=bool),
        instrument=ae.form,
        field=ae.start_field,
        value=start_text,
        message="Onset before informed consent (record it as medical history)",
    )
    status, _, death_date = view.disposition
    death_codes = {str(code.code) for code in view.protocol.disposition.codes if code.death}
    dead = set(status.index[status.isin(list(death_codes))]) | set(
        death_date.index[death_date.notna()]
    )
    fatal = rows & (outcome == str(ae.fatal_outcome_code)) & ~isin(view.ids, list(dead))
    out.rows(
        "AE-FATAL-NO-DEATH",
        fatal,
        instrument=ae.form,
        field=ae.outcome_field,
        value=outcome,
        message="Fatal outcome but no death in the disposition form",
    )
    term = pd.Series(text(records, ae.term_field), dtype=object).str.strip().str.lower()
    key = pd.DataFrame({"id": view.ids, "term": term, "start": start_text})
    duplicate = (
        rows
        & key.duplicated(keep="first").to_numpy()
        & (term != "").to_numpy()
        & (start_text != "")
    )
    duplicate &= (
        pd.Series(rows).groupby([key["id"], key["term"], key["start"]]).transform("sum").to_numpy()
        > 1
    )
    out.rows(
        "AE-DUPLICATE",
        duplicate,
        instrument=ae.form,
        field=ae.term_field,
        value=text(records, ae.term_field),
        message="Same term and onset date as another adverse event of this participant",
    )
    soc_of = {str(term.code): str(term.soc) for term in ae.coding_list}
    pt = text(records, ae.pt_field)
    soc = text(records, ae.soc_field)
    expected_soc = np.full(len(records), "", dtype=object)
    for index in np.flatnonzero(rows & (pt != "")):
        expected_soc[index] = soc_of.get(pt[index], "")
    out.rows(
        "AE-CODING",
        rows & (pt != "") & (soc != "") & (expected_soc != "") & (expected_soc != soc),
        instrument=ae.form,
        field=ae.soc_field,
        value=soc,
        message=np.array(
            [f"The coding list puts this term in SOC {e}" for e in expected_soc], dtype=object
        ),
    )


# ------------------------------------------------------------------------------- medications


def _conmeds(view: StudyView, out: _Emitter) -> None:
    cm = view.protocol.concomitant_medications
    records = view.records
    rows = view.rows_of(cm.form)
    if not rows.any():
        return
    start_text = text(records, cm.start_field)
    stop_text = text(records, cm.stop_field)
    start = column_dates(records, cm.start_field)
    stop = column_dates(records, cm.stop_field)
    out.rows(
        "CM-STOP-BEFORE-START",
        rows & (stop < start).fillna(False).to_numpy(dtype=bool),
        instrument=cm.form,
        field=cm.stop_field,
        value=stop_text,
        message="Stop date before start date",
    )
    klass = text(records, cm.class_field)
    rules = {str(c.code): c.rule for c in cm.classes}
    names = {str(c.code): c.name for c in cm.classes}
    rule = np.array([rules.get(code, "") for code in klass], dtype=object)
    # prohibited from the screening visit on
    screening_event = cm.prohibited_from_event
    first_day = (
        view.date(screening_event, "scr_date")
        if screening_event
        else pd.Series(dtype="datetime64[ns]")
    )
    from_day = view.per_row(first_day.combine_first(view.consent))
    during = (stop.isna() | (stop >= from_day)).fillna(True).to_numpy(dtype=bool)
    out.rows(
        "CM-PROHIBITED",
        rows & (rule == "prohibited") & during,
        instrument=cm.form,
        field=cm.class_field,
        value=klass,
        message=np.array(
            [f"Prohibited medication class: {names.get(code, code)}" for code in klass],
            dtype=object,
        ),
    )
    rand = view.per_row(view.rand_date)
    stable = rows & (rule == "stable_dose")
    started_after = (start > rand).fillna(False).to_numpy(dtype=bool)
    # a new antidepressant: none of the same name before randomisation
    name = pd.Series(text(records, cm.name_field), dtype=object).str.strip().str.lower()
    frame = pd.DataFrame(
        {
            "id": view.ids,
            "name": name,
            "after": started_after,
            "stable": stable,
            "dose": text(records, cm.dose_field),
        }
    )
    before_names = set(
        zip(
            frame.loc[frame["stable"] & ~frame["after"], "id"],
            frame.loc[frame["stable"] & ~frame["after"], "name"],
            strict=True,
        )
    )
    continuing = np.zeros(len(records), dtype=bool)
    ids_of_rows = view.ids
    names_of_rows = name.to_numpy(dtype=object)
    for index in np.flatnonzero(stable):
        continuing[index] = (ids_of_rows[index], names_of_rows[index]) in before_names
    out.rows(
        "CM-NEW-AD",
        stable & started_after & ~continuing,
        instrument=cm.form,
        field=cm.start_field,
        value=start_text,
        message="Antidepressant started after randomisation",
    )
    end_event = cm.stable_dose.until_event
    end_day = view.per_row(view.date(end_event, "visit_date"))
    within = (start <= end_day).fillna(True).to_numpy(dtype=bool)
    out.rows(
        "CM-DOSE-CHANGE",
        stable & started_after & continuing & within,
        instrument=cm.form,
        field=cm.dose_field,
        value=text(records, cm.dose_field),
        message="Antidepressant dose changed during the stable-dose period",
    )
    dose = text(records, cm.dose_field)
    unit = text(records, cm.unit_field)
    freq = text(records, cm.frequency_field)
    incomplete = rows & ((dose == "") | (unit == "") | (freq == ""))
    field_names = np.where(
        dose == "", cm.dose_field, np.where(unit == "", cm.unit_field, cm.frequency_field)
    ).astype(object)
    out.rows(
        "CM-INCOMPLETE",
        incomplete,
        instrument=cm.form,
        field=field_names,
        value=None,
        message="Dose, unit or frequency missing",
    )


# ------------------------------------------------------------------------------- labs, COWS


def _liver_and_withdrawal(view: StudyView, out: _Emitter) -> None:
    liver = view.protocol.liver
    records = view.records
    rows = view.rows_of(liver.form)
    if rows.any():
        ratio = {test.id: column_numbers(records, test.field) / test.uln for test in liver.tests}
        field_of = {test.id: test.field for test in liver.tests}
        hys = liver.hys_law
        with np.errstate(invalid="ignore"):
            transaminase = np.zeros(len(records), dtype=bool)
            for test_id in hys.transaminases:
                transaminase |= ratio[test_id] > hys.transaminase_multiple
            bilirubin = ratio[hys.bilirubin] > hys.bilirubin_multiple
            alp_ok = ~(ratio[hys.alp] > hys.alp_max_multiple)
            alert = np.zeros(len(records), dtype=bool)
            for test_id in hys.transaminases:
                alert |= ratio[test_id] > liver.transaminase_alert_multiple
        bili_text = text(records, field_of[hys.bilirubin])
        out.rows(
            "LIV-HYS",
            rows & transaminase & bilirubin & alp_ok,
            instrument=liver.form,
            field=field_of[hys.bilirubin],
            value=bili_text,
            message=(
                "Potential Hy's law case: transaminase > 3x "
                "ULN and bilirubin > 2x ULN, ALP not > 2x ULN"
            ),
        )
        first = liver.tests[0]
        transaminase_field = np.where(
            ratio[hys.transaminases[0]] > liver.transaminase_alert_multiple,
            field_of[hys.transaminases[0]],
            field_of[hys.transaminases[-1]],
        ).astype(object)
        out.rows(
            "LIV-ALT",
            rows & alert,
            instrument=liver.form,
            field=transaminase_field,
            value=text(records, first.field),
            message=f"ALT or AST above {liver.transaminase_alert_multiple:g}x ULN",
        )
    withdrawal = view.protocol.withdrawal
    ae = view.protocol.adverse_events
    rows = view.rows_of(withdrawal.instrument) & isin(view.events, list(withdrawal.events))
    if not rows.any():
        return
    total_text = text(records, withdrawal.total_field)
    high = rows & (column_numbers(records, withdrawal.total_field) >= withdrawal.aesi_threshold)
    withdrawal_codes = [str(a.code) for a in ae.aesi if a.name == "withdrawal"]
    ae_rows = view.rows_of(ae.form)
    aesi = text(records, ae.aesi_field)
    with_aesi = set(view.ids[ae_rows & isin(aesi, withdrawal_codes)])
    out.rows(
        "COWS-AESI",
        high & ~isin(view.ids, list(with_aesi)),
        instrument=withdrawal.instrument,
        field=withdrawal.total_field,
        value=total_text,
        message=(
            f"COWS total at or above {withdrawal.aesi_threshold:g} "
            "without a withdrawal adverse event of special interest"
        ),
    )


# ------------------------------------------------------------------------------- disposition


_AFTER_LEAVING = ("visit_date", "lab_date", "cows_date", "cbt_date", "dose_date")


def _disposition(view: StudyView, out: _Emitter) -> None:
    records = view.records
    dictionary = view.inputs.dictionary
    left = view.per_row(view.left_study)
    for name in _AFTER_LEAVING:
        if name not in dictionary.by_name or name not in records.columns:
            continue
        values = text(records, name)
        after = (column_dates(records, name) > left).fillna(False).to_numpy(dtype=bool)
        out.rows(
            "DS-DATA-AFTER",
            after,
            instrument=dictionary.by_name[name].form,
            field=name,
            value=values,
            message="Dated after the participant withdrew, was lost or died",
        )
    ds = view.protocol.disposition
    status, _, death = view.disposition
    completed = {str(code.code) for code in ds.codes if code.completed}
    final_visits = [v for v in view.protocol.visits if v.window is not None and v.date_field]
    if final_visits:
        final = final_visits[-1]
        final_dates = view.value(final.event, final.date_field)
        have_final = set(final_dates.index[final_dates != ""])
        no_final = [
            rid for rid in status.index[status.isin(list(completed))] if rid not in have_final
        ]
        out.participants(
            "DS-COMPLETED-NO-FINAL",
            no_final,
            event=ds.event,
            instrument=ds.form,
            field=ds.status_field,
            values=[status[rid] for rid in no_final],
            messages=f"Completed without the final visit ({final.label})",
        )
    death_codes = {str(code.code) for code in ds.codes if code.death}
    no_date = [
        rid
        for rid in status.index[status.isin(list(death_codes))]
        if pd.isna(death.get(rid, pd.NaT))
    ]
    out.participants(
        "DS-DEATH-DATE",
        no_date,
        event=ds.event,
        instrument=ds.form,
        field=ds.death_date_field,
        values=[status[rid] for rid in no_date],
        messages="Death recorded without a date of death",
    )


def _adherence(view: StudyView, out: _Emitter) -> None:
    treatment = view.protocol.treatment
    records = view.records
    rows = view.rows_of("cbt_sessions")
    end_visit = view.value(treatment.end_of_treatment_event, "visit_date")
    finished = set(end_visit.index[end_visit != ""])
    if not finished:
        return
    attended = pd.Series(view.ids[rows & (text(records, "cbt_attended") == "1")], dtype=object)
    counts = attended.value_counts()
    needed = treatment.adherence_threshold * treatment.cbt_sessions_planned
    low = sorted(rid for rid in finished if counts.get(rid, 0) < needed)
    out.participants(
        "ADH-CBT",
        low,
        event=treatment.end_of_treatment_event,
        instrument="cbt_sessions",
        field="cbt_attended",
        values=[str(int(counts.get(rid, 0))) for rid in low],
        messages=(
            f"Fewer than {needed:g} of {treatment.cbt_sessions_planned} CBT sessions attended "
            "by the end of treatment (review)"
        ),
    )


# ------------------------------------------------------------------------------- arm checks


def _arm_checks(view: StudyView, out: _Emitter) -> None:
    arms = view.inputs.arms
    if arms is None:
        return
    protocol = view.protocol
    listed = {str(record_id) for record_id in arms.index}
    randomized = view.randomized
    without_arm = sorted(
        str(rid) for rid in randomized.index[randomized.to_numpy()] if str(rid) not in listed
    )
    out.participants(
        "ARM-LIST-MISSING",
        without_arm,
        event=view.randomization_event,
        instrument=protocol.arms.form,
        field=protocol.arms.field,
        messages="Randomised, but the randomisation list gives no arm for this participant",
    )
    in_snapshot = {str(rid) for rid in view.ids}
    unknown = sorted(rid for rid in listed if rid not in in_snapshot)
    out.participants(
        "ARM-LIST-UNKNOWN",
        unknown,
        event=view.randomization_event,
        instrument=protocol.arms.form,
        field=protocol.arms.field,
        values=[str(arms[rid]) for rid in unknown],
        messages="Listed in the randomisation list, but not a record of the snapshot",
    )
    no_adjunct = {str(arm.code) for arm in protocol.arms.items if not arm.receives_adjunct}
    dosing_forms = [
        form for form in protocol.blinding.unblinded_forms if form != protocol.arms.form
    ]
    arm_of_row = (
        pd.Series(view.ids, dtype=object).map(arms.astype(object)).fillna("").to_numpy(dtype=object)
    )
    for form in dosing_forms:
        rows = view.rows_of(form)
        out.rows(
            "ARM-ADJUNCT-WRONG-ARM",
            rows & isin(arm_of_row, list(no_adjunct)),
            instrument=form,
            field="",
            value=None,
            message=(
                "Adjunct dosing recorded for a participant allocated to an arm without the adjunct"
            ),
        )
    strata = view.inputs.strata
    if strata is None:
        return
    factors = protocol.randomization.stratification
    derived: dict[str, str] = {}
    site = view.site
    parts: dict[str, pd.Series] = {}
    for factor in factors:
        if factor.source == "site":
            parts[factor.id] = site
        elif factor.field:
            scores = view.value(factor.event or view.randomization_event, factor.field)
            numbers = pd.Series(_numbers(scores.to_numpy()), index=scores.index)
            names = {}
            for record_id, score in numbers.items():
                level = next(
                    (
                        lv
                        for lv in factor.levels
                        if not np.isnan(score)
                        and (lv.min is None or score >= lv.min)
                        and (lv.max is None or score <= lv.max)
                    ),
                    None,
                )
                if level is not None:
                    names[str(record_id)] = level.name
            parts[factor.id] = pd.Series(names, dtype=object)
    for record_id in strata.index:
        values = {key: series.get(record_id) for key, series in parts.items()}
        if any(
            value is None or (isinstance(value, float) and np.isnan(value))
            for value in values.values()
        ):
            continue
        try:
            derived[str(record_id)] = protocol.randomization.stratum_format.format(**values)
        except (KeyError, IndexError):
            continue
    wrong = [
        rid
        for rid in strata.index
        if str(rid) in derived and str(strata[rid]) != derived[str(rid)] and str(strata[rid])
    ]
    out.participants(
        "ARM-STRATUM",
        wrong,
        event=view.randomization_event,
        instrument=protocol.arms.form,
        field=protocol.randomization.stratum_field,
        values=[str(strata[rid]) for rid in wrong],
        messages=[f"Stratum {strata[rid]} recorded, {derived[str(rid)]} derived" for rid in wrong],
    )
