"""Derived data several sections read: visit status, adverse events, the listings' arm and date
cells, the safety forms."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from studyman.errors import SnapshotError
from studyman.protocol.models import Protocol
from studyman.reporting.sections.base import (
    DsmbInputs,
    Section,
    _codes,
    _fmt_num,
    _groups,
    _member,
    _missing,
    _present,
    _safety,
    _unavailable,
)


def _as_of_text(inputs: DsmbInputs) -> str:
    return inputs.facts().as_of.strftime("%Y-%m-%d %H:%M UTC")


_PENDING = "Eligible, not randomised by the cut-off"


_UNRECORDED = "Not recorded"


def _not_randomised_reasons(protocol: Protocol, subjects: pd.DataFrame) -> pd.Series:
    """Why each screened, not randomised participant was not randomised.

    The recorded screen-failure reason; else, for a participant recorded eligible, "eligible,
    not randomised by the cut-off" (still in screening or awaiting baseline); else "not
    recorded".
    """
    reasons = {str(r.code): r.label for r in protocol.disposition.screen_fail_reasons}
    labels = [
        reasons[str(code)]
        if pd.notna(code) and str(code) in reasons
        else (_PENDING if bool(eligible) else _UNRECORDED)
        for code, eligible in zip(
            subjects["screen_fail_code"], subjects["is_eligible"], strict=True
        )
    ]
    return pd.Series(labels, index=subjects.index, dtype="string")


def _continuous_rows(
    name: str, values: pd.Series, groups: Sequence[tuple[str, pd.Index]], digits: int = 1
) -> list[list[str]]:
    """n, mean (SD) and median (min, max) of *values* in each group.

    Notes
    -----
    Observed values only (no imputation); the SD uses the n − 1 denominator, as SAS PROC MEANS
    and R's ``sd`` do.
    """
    rows = [[name, *["" for _ in groups]]]
    stats: list[list[str]] = [["  n"], ["  Mean (SD)"], ["  Median (min, max)"]]
    for _, ids in groups:
        v = pd.to_numeric(values.reindex(ids), errors="coerce").dropna().astype(float)
        stats[0].append(str(len(v)))
        if len(v):
            sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            stats[1].append(f"{v.mean():.{digits}f} ({_fmt_num(sd, digits)})")
            stats[2].append(f"{v.median():.{digits}f} ({v.min():.{digits}f}, {v.max():.{digits}f})")
        else:
            stats[1].append("–")
            stats[2].append("–")
    return rows + stats


def _visit_status(inputs: DsmbInputs) -> pd.DataFrame:
    """:func:`_derive_visit_status`, computed once per report (two sections read it)."""
    if "visit_status" not in inputs._cache:
        inputs._cache["visit_status"] = _derive_visit_status(inputs)
    status: pd.DataFrame = inputs._cache["visit_status"]
    return status


def _derive_visit_status(inputs: DsmbInputs) -> pd.DataFrame:
    """One row per randomised participant and scheduled visit: due, done, missed, overdue.

    Notes
    -----
    The facts' visit status (:attr:`studyman.facts.StudyFacts.visits`, defined there once): a
    visit is *due* when its window has closed by the cut-off and the participant had not left
    the study before the window opened; *done* / *missed*: the visit form records it done / not
    done; *overdue*: due with no visit form at all.
    """
    visits = inputs.facts().visits
    frame = visits[["subject", "event", "label", "due", "done", "missed", "overdue"]]
    return frame.rename(columns={"subject": inputs.key}).reset_index(drop=True)


def _adverse_events(inputs: DsmbInputs) -> pd.DataFrame | None:
    """The treatment-emergent adverse events (the facts' ``teae`` rows), with display columns.

    Treatment emergence, seriousness and a fatal outcome are the facts'
    (:attr:`studyman.facts.StudyFacts.adverse_events`, one row per row of the form, in order).
    """
    protocol = inputs.protocol
    ae_spec = protocol.adverse_events
    frame = inputs.table(ae_spec.form)
    if frame is None:
        return None
    facts = inputs.facts().adverse_events.reset_index(drop=True)
    if len(facts) != len(frame) or (
        len(frame)
        and not (facts["subject"].to_numpy() == frame[inputs.key].astype(str).to_numpy()).all()
    ):
        raise SnapshotError("the facts' adverse events do not follow the form row for row")
    teae = facts["teae"].to_numpy(bool)
    frame = frame.loc[teae].copy()
    pts = {str(t.code): t.pt for t in ae_spec.coding_list}
    socs = {str(s.code): s.name for s in ae_spec.socs}
    frame["PT"] = _codes(frame[ae_spec.pt_field]).map(lambda c: pts.get(str(c), "Uncoded"))
    frame["SOC"] = _codes(frame[ae_spec.soc_field]).map(lambda c: socs.get(str(c), "Uncoded"))
    frame["severity"] = pd.to_numeric(_codes(frame[ae_spec.severity_field]), errors="coerce")
    frame["serious"] = facts.loc[teae, "serious"].to_numpy(bool)
    frame["related"] = _codes(frame[ae_spec.related_field]).isin(
        [str(c) for c in ae_spec.related_codes]
    )
    frame["fatal"] = facts.loc[teae, "fatal"].to_numpy(bool)
    action, withdrawn = ae_spec.action_field, ae_spec.treatment_withdrawn_action_code
    frame["withdrawn"] = (
        _codes(frame[action]) == str(withdrawn)
        if action is not None and withdrawn is not None and action in frame.columns
        else False
    )
    frame[inputs.key] = frame[inputs.key].astype("string")
    return frame.reset_index(drop=True)


def _adverse_events_or_unavailable(
    inputs: DsmbInputs, section_id: str, title: str
) -> pd.DataFrame | Section:
    """:func:`_adverse_events`, or the section's "could not be produced" stub without the form."""
    form = inputs.protocol.adverse_events.form
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable(section_id, title, missing)
    events = _adverse_events(inputs)
    if events is None:
        raise SnapshotError(f"the snapshot has no '{form}' form")
    return events


_SEVERITY = {1: "Mild", 2: "Moderate", 3: "Severe"}


def _arm_column(inputs: DsmbInputs, record_ids: pd.Series) -> list[str]:
    arms = inputs.arms if inputs.arms is not None else pd.Series(dtype="string")
    return [str(arms.get(r, "–")) for r in record_ids.astype(str)]


def _fmt_date(value: object) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        if pd.isna(value):  # type: ignore[call-overload]
            return ""
    except (TypeError, ValueError):
        pass
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    if stamp.hour or stamp.minute:
        return stamp.strftime("%Y-%m-%d %H:%M")
    return stamp.strftime("%Y-%m-%d")


def _safety_form(
    inputs: DsmbInputs, form: str, section_id: str, title: str
) -> tuple[pd.DataFrame, list[tuple[str, pd.Index]]] | Section:
    """The rows of *form* for the safety population and that population's column groups;
    or the section's "could not be produced" stub when the snapshot has no *form*."""
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable(section_id, title, missing)
    frame = _present(inputs, form)
    safety = _safety(inputs)
    frame = frame[_member(frame[inputs.key], safety)]
    return frame, _groups(inputs, safety)


def _visit_labels(protocol: Protocol) -> dict[str, str]:
    return {v.event: v.label for v in protocol.visits}
