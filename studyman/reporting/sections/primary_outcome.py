"""The primary outcome by visit (closed session, descriptive, when the plan prespecifies an
interim efficacy look) and its missing values by visit: missing when the visit was due, not yet
due, or not expected because the participant had left (pooled open, by arm closed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _denominators,
    _fmt_num,
    _groups,
    _header,
    _member,
    _pct,
    _scale_label,
)
from studyman.reporting.sections.executive_summary import randomised_ids

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "primary-outcome"
TITLE = "Primary outcome and its missing values by visit"
TABLE_IDS: tuple[str, ...] = (
    "primary-outcome.primary-outcome-by-visit-observed",
    "primary-outcome.primary-outcome-recorded-missing-and-not-yet-due-by-visit",
)

RECORDED = "Recorded"
MISSING = "Missing (visit due)"
NOT_YET_DUE = "Not yet due"
NOT_EXPECTED = "Not expected (left the study)"
STATUSES = (RECORDED, MISSING, NOT_YET_DUE, NOT_EXPECTED)


def outcome_status(inputs: DsmbInputs) -> pd.DataFrame:
    """One row per randomised participant and scheduled visit of the primary outcome's scale
    (the facts' visits): ``record_id``, ``event``, ``label``, ``value`` (the outcome, NaN when
    not recorded) and ``status`` (one of :data:`STATUSES`)."""
    protocol = inputs.protocol
    primary = protocol.endpoints.primary
    key = protocol.study.record_id_field
    visits = inputs.facts().visits
    events = [v.event for v in protocol.visits if primary.instrument in v.instruments]
    visits = visits[visits["event"].isin(events)].reset_index(drop=True)
    frame = inputs.table(primary.instrument)
    if frame is None or primary.field not in frame.columns:
        values = pd.Series(np.nan, index=pd.MultiIndex.from_arrays([[], []]), dtype=float)
    else:
        values = pd.Series(
            pd.to_numeric(frame[primary.field], errors="coerce").astype(float).to_numpy(),
            index=pd.MultiIndex.from_arrays(
                [frame[key].astype(str).to_numpy(), frame["redcap_event_name"].astype(str)]
            ),
        )
        values = values[~values.index.duplicated()]
    keys = pd.MultiIndex.from_arrays(
        [visits["subject"].astype(str).to_numpy(), visits["event"].astype(str).to_numpy()]
    )
    value = values.reindex(keys).to_numpy(dtype=float)
    recorded = ~np.isnan(value)
    due = visits["due"].astype(bool).to_numpy()
    pending = visits["not_yet_due"].astype(bool).to_numpy()
    status = np.where(
        recorded,
        RECORDED,
        np.where(due, MISSING, np.where(pending, NOT_YET_DUE, NOT_EXPECTED)),
    )
    return pd.DataFrame(
        {
            "subject": visits["subject"].astype(str).to_numpy(),
            "event": visits["event"].to_numpy(),
            "label": visits["label"].to_numpy(),
            "value": value,
            "status": status,
        }
    )


def primary_outcome_section(inputs: DsmbInputs) -> Section:
    """Missing outcome by visit (both sessions) and the outcome by arm and visit (closed, with a
    prespecified interim efficacy look)."""
    protocol = inputs.protocol
    primary = protocol.endpoints.primary
    scale = _scale_label(protocol, primary.instrument)
    status = outcome_status(inputs)
    groups = _groups(inputs, randomised_ids(inputs))
    columns = [_header(label, len(ids)) for label, ids in groups]
    member = [_member(status["subject"], ids) for _, ids in groups]
    order = list(dict.fromkeys(status["event"]))
    labels = dict(zip(status["event"], status["label"], strict=True))
    missing_rows: list[list[str]] = []
    for event in order:
        at = (status["event"] == event).to_numpy()
        missing_rows.append([labels[event], *["" for _ in groups]])
        for name in STATUSES:
            flags = at & (status["status"] == name).to_numpy()
            missing_rows.append(
                [
                    f"  {name}",
                    *[
                        _pct(int((flags & m).sum()), len(ids))
                        for m, (_, ids) in zip(member, groups, strict=True)
                    ],
                ]
            )
    tables = [
        ReportTable(
            "Primary outcome: recorded, missing and not yet due, by visit",
            pd.DataFrame(missing_rows, columns=["Visit / status", *columns]),
            "Randomised",
            _denominators(groups),
            note="Per randomised participant and scheduled visit (the facts' visit status): "
            "missing when the visit window had closed by the cut-off with no value; not yet due "
            "when it had not closed and the participant was still on study; not expected when "
            "the participant left the study before the window opened or before it closed.",
        )
    ]
    paragraphs = [
        f"The primary outcome ({primary.name}; {scale}) at each scheduled visit of the "
        "randomised participants: a value not yet due is not missing data.",
    ]
    if inputs.closed and inputs.interim_efficacy:
        baseline = status[status["event"] == primary.baseline_event].set_index("subject")["value"]
        change = status["value"] - baseline.reindex(status["subject"]).to_numpy()
        rows: list[list[str]] = []
        for event in order:
            at = (status["event"] == event).to_numpy()
            for what, series in (("value", status["value"]), ("change from baseline", change)):
                if what != "value" and event == primary.baseline_event:
                    continue
                cells = []
                for m in member:
                    v = series[at & m].dropna()
                    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
                    cells.append(f"{len(v)}; {v.mean():.1f} ({_fmt_num(sd)})" if len(v) else "0")
                rows.append([f"{labels[event]}: {what}", *cells])
        tables.insert(
            0,
            ReportTable(
                "Primary outcome by visit (observed)",
                pd.DataFrame(rows, columns=["Visit", *columns]),
                "Randomised",
                _denominators(groups),
                note="Cells: n; mean (SD) of the observed values, no imputation; descriptive only "
                "(no test).",
            ),
        )
    elif inputs.closed:
        paragraphs.append(
            "The analysis plan prespecifies no interim efficacy look for the DSMB: the outcome's "
            "values are not shown, only whether they were recorded."
        )
    else:
        paragraphs.append("The outcome's values by arm are in the closed report only.")
    return Section(id=SECTION_ID, title=TITLE, paragraphs=tuple(paragraphs), tables=tuple(tables))


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, primary_outcome_section)
