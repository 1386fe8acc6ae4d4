"""Vital signs and weight: summary by visit and notable values (outside the data dictionary's
validation range), in the safety population."""

from __future__ import annotations

import pandas as pd

from studyman.protocol.models import VitalSign
from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _denominators,
    _does_not_apply,
    _fmt_num,
    _groups,
    _header,
    _member,
    _pct,
    _unavailable,
)
from studyman.reporting.sections.executive_summary import safety_ids

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "vital-signs"
TITLE = "Vital signs and weight"
TABLE_IDS: tuple[str, ...] = (
    "vital-signs.vital-signs-and-weight-by-visit",
    "vital-signs.participants-with-a-notable-value",
)

_EVENT = "redcap_event_name"


def notable_limits(inputs: DsmbInputs, parameter: VitalSign) -> tuple[float | None, float | None]:
    """The limits outside which a value of *parameter* is notable: those the protocol declares
    (``notable_low``, ``notable_high``), else the data dictionary's validation minimum and
    maximum (None: no limit)."""
    project = inputs.protocol.redcap
    spec = project.dictionary.get(parameter.field) if project is not None else None
    low = spec.range_min_number() if spec is not None else None
    high = spec.range_max_number() if spec is not None else None
    return (
        parameter.notable_low if parameter.notable_low is not None else low,
        parameter.notable_high if parameter.notable_high is not None else high,
    )


def vital_signs_section(inputs: DsmbInputs) -> Section:
    """Each measurement by visit (n, mean (SD)) and participants with a notable value."""
    protocol = inputs.protocol
    spec = protocol.vital_signs
    if spec is None:
        return _does_not_apply(SECTION_ID, TITLE, "vital signs")
    frame = inputs.table(spec.form)
    if frame is None:
        return _unavailable(SECTION_ID, TITLE, (spec.form,))
    key = protocol.study.record_id_field
    safety = safety_ids(inputs)
    frame = frame[_member(frame[key], safety)]
    groups = _groups(inputs, safety)
    visits = [v for v in protocol.visits if spec.form in v.instruments]
    first_scheduled = next((v.event for v in visits if v.kind != "screening"), None)
    ids = frame[key].astype(str).to_numpy()
    events = frame[_EVENT].astype(str).to_numpy() if _EVENT in frame.columns else None
    # each row's group membership, once (not per measurement and visit)
    in_group = [_member(pd.Series(ids), members) for _, members in groups]
    summary_rows: list[list[str]] = []
    notable_rows: list[list[str]] = []
    limits_text: list[str] = []
    for parameter in spec.parameters:
        if parameter.field not in frame.columns:
            raise KeyError(parameter.field)
        values = pd.to_numeric(frame[parameter.field], errors="coerce").astype(float)
        data = pd.DataFrame({"id": ids, "event": events, "value": values.to_numpy()})
        for index, mask in enumerate(in_group):
            data[f"g{index}"] = mask
        data = data.dropna(subset=["value"])
        summary_rows.append([f"{parameter.label} ({parameter.unit})", *["" for _ in groups]])
        for visit in visits:
            at = data[data["event"] == visit.event]
            cells = []
            for index in range(len(groups)):
                v = at.loc[at[f"g{index}"].to_numpy(bool), "value"]
                if len(v):
                    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
                    cells.append(f"{len(v)}; {v.mean():.1f} ({_fmt_num(sd)})")
                else:
                    cells.append("0")
            summary_rows.append([f"  {visit.label}", *cells])
        low, high = notable_limits(inputs, parameter)
        if low is None and high is None:
            continue
        after = data
        if first_scheduled is not None and events is not None:
            screening = {v.event for v in visits if v.kind == "screening"}
            after = data[~data["event"].isin(screening)]
        below = set(after.loc[after["value"] < low, "id"]) if low is not None else set()
        above = set(after.loc[after["value"] > high, "id"]) if high is not None else set()
        for label, found, limit in (("below", below, low), ("above", above, high)):
            if limit is None:
                continue
            notable_rows.append(
                [
                    f"{parameter.label} {label} {limit:g} {parameter.unit}",
                    *[
                        _pct(int(_member(members, found).sum()), len(members))
                        for _, members in groups
                    ],
                ]
            )
        limits_text.append(
            f"{parameter.label}: {'' if low is None else f'{low:g}'}–"
            f"{'' if high is None else f'{high:g}'} {parameter.unit}"
        )
    columns = [_header(label, len(members)) for label, members in groups]
    summary = pd.DataFrame(summary_rows, columns=["Measurement / visit", *columns])
    notable = pd.DataFrame(notable_rows, columns=["Participants with a value", *columns])
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{', '.join(p.label for p in spec.parameters)} in the safety population, as "
            "recorded at each visit; observed values, no imputation.",
        ),
        tables=(
            ReportTable(
                "Vital signs and weight by visit",
                summary,
                "Safety population",
                _denominators(groups),
                note="Cells: n; mean (SD) of the values recorded at the visit.",
            ),
            ReportTable(
                "Participants with a notable value",
                notable,
                "Safety population",
                _denominators(groups),
                note="Notable: outside the limits the protocol declares (vital_signs "
                "notable_low/notable_high), else the data dictionary's validation range, at any "
                "visit after screening (" + "; ".join(limits_text) + ").",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, vital_signs_section)
