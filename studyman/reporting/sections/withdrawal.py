"""AESI: withdrawal (COWS)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
    _KEY,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    _does_not_apply,
    _group_table,
    _member,
    _pct,
)
from studyman.reporting.sections.shared import _arm_column, _safety_form, _visit_labels


def _band_of(value: float, bands: Sequence[tuple[str, float, float]]) -> str:
    for name, low, high in bands:
        if low <= value <= high:
            return name
    return "out of range"


def withdrawal_section(inputs: DsmbInputs) -> Section:
    """AESI withdrawal: COWS totals by band at taper and follow-up."""
    protocol = inputs.protocol
    spec = protocol.withdrawal
    if spec is None:
        return _does_not_apply("aesi-withdrawal", "AESI: withdrawal (COWS)", "withdrawal scale")
    found = _safety_form(inputs, spec.instrument, "aesi-withdrawal", "AESI: withdrawal (COWS)")
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
                in_group = _member(at[_KEY], ids)
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
            in_group = _member(at[_KEY], ids)
            row.append(str(int(at_totals[in_group].notna().sum())))
        rows.append(row)
    high = frame.loc[(totals >= spec.aesi_threshold).fillna(False).to_numpy()]
    listing = pd.DataFrame(
        {
            "Participant": high[_KEY].astype(str),
            "Visit": high[_EVENT].map(lambda e: labels.get(str(e), str(e))),
            "COWS total": totals[high.index].map(lambda v: f"{v:g}"),
            "Band": totals[high.index].map(lambda v: _band_of(float(v), bands)),
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, high[_KEY]))
    return Section(
        id="aesi-withdrawal",
        title="AESI: withdrawal (COWS)",
        paragraphs=(
            "COWS bands: "
            + "; ".join(f"{name} {low:g}–{high:g}" for name, low, high in bands)
            + f". A total of {spec.aesi_threshold:g} or more is reviewed as a possible "
            "withdrawal AESI.",
        ),
        tables=(
            _group_table(
                "COWS total by band",
                rows,
                "Visit: band",
                groups,
                "Safety population",
                note="Percentages of participants assessed at the visit.",
            ),
            ReportTable(
                f"Participants with a COWS total of {spec.aesi_threshold:g} or more",
                listing.reset_index(drop=True),
            ),
        ),
        figures=(
            FigureData(
                kind="cows",
                title="COWS bands at taper and follow-up",
                data={"bars": pd.DataFrame(bars)},
            ),
        ),
    )
