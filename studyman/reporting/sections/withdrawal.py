"""AESI: withdrawal (the protocol's withdrawal scale, COWS in the reference study)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _does_not_apply,
    _group_table,
    _member,
    _pct,
    _scale_label,
)
from studyman.reporting.sections.shared import _arm_column, _safety_form, _visit_labels

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "aesi-withdrawal"
TITLE = "AESI: withdrawal"
TABLE_IDS: tuple[str, ...] = (
    "aesi-withdrawal.total-score-by-band",
    "aesi-withdrawal.participants-at-or-above-the-aesi-threshold",
)


def _band_of(value: float, bands: Sequence[tuple[str, float, float]]) -> str:
    for name, low, high in bands:
        if low <= value <= high:
            return name
    return "out of range"


def withdrawal_section(inputs: DsmbInputs) -> Section:
    """AESI withdrawal: the withdrawal scale's totals by band at its visits (taper and follow-up);
    "Does not apply" when the protocol declares no withdrawal scale."""
    protocol = inputs.protocol
    spec = protocol.withdrawal
    if spec is None:
        return _does_not_apply(SECTION_ID, TITLE, "withdrawal scale")
    scale = _scale_label(protocol, spec.instrument)
    title = f"{TITLE} ({scale})"
    found = _safety_form(inputs, spec.instrument, SECTION_ID, title)
    if isinstance(found, Section):
        return found
    frame, groups = found
    scoring = next((s for s in protocol.scoring if s.instrument == spec.instrument), None)
    bands = [(b.name, b.min, b.max) for b in scoring.bands] if scoring else []
    totals = pd.to_numeric(frame[spec.total_field], errors="coerce")
    labels = _visit_labels(protocol)
    rows: list[list[str]] = []
    bars = []
    for event in spec.events:
        at = frame[frame[_EVENT] == event]
        at_totals = totals[at.index]
        for name, _low, _high in bands:
            row = [f"{labels.get(event, event)}: {name}"]
            for label, ids in groups:
                in_group = _member(at[inputs.key], ids)
                values = at_totals[in_group].dropna()
                count = int(sum(_band_of(float(v), bands) == name for v in values))
                row.append(_pct(count, len(values)))
                bars.append(
                    {
                        "event": labels.get(event, event),
                        "band": name,
                        "group": label,
                        "count": count,
                    }
                )
            rows.append(row)
        row = [f"{labels.get(event, event)}: assessed"]
        for _, ids in groups:
            in_group = _member(at[inputs.key], ids)
            row.append(str(int(at_totals[in_group].notna().sum())))
        rows.append(row)
    high = frame.loc[(totals >= spec.aesi_threshold).fillna(False).to_numpy()]
    listing = pd.DataFrame(
        {
            "Participant": high[inputs.key].astype(str),
            "Visit": high[_EVENT].map(lambda e: labels.get(str(e), str(e))),
            f"{scale} total": totals[high.index].map(lambda v: f"{v:g}"),
            "Band": totals[high.index].map(lambda v: _band_of(float(v), bands)),
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, high[inputs.key]))
    return Section(
        id=SECTION_ID,
        title=title,
        paragraphs=(
            f"{scale} bands: "
            + "; ".join(f"{name} {low:g}–{high:g}" for name, low, high in bands)
            + f". A total of {spec.aesi_threshold:g} or more is reviewed as a possible "
            "withdrawal AESI.",
        ),
        tables=(
            _group_table(
                "Total score by band",
                rows,
                "Visit: band",
                groups,
                "Safety population",
                note="Percentages of participants assessed at the visit.",
            ),
            ReportTable(
                "Participants at or above the AESI threshold",
                listing.reset_index(drop=True),
            ),
        ),
        figures=(
            FigureData(
                kind="withdrawal_bands",
                title=f"{scale} bands at taper and follow-up",
                data={"bars": pd.DataFrame(bars)},
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, withdrawal_section)
