"""Baseline characteristics of the randomised participants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
    _KEY,
    DsmbInputs,
    Section,
    SectionSpec,
    _codes,
    _group_table,
    _groups,
    _missing,
    _pct,
    _randomised,
    _unavailable,
)
from studyman.reporting.sections.shared import _continuous_rows

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "baseline"
TITLE = "Baseline characteristics"
TABLE_IDS: tuple[str, ...] = ("baseline.baseline-characteristics",)


def _categorical_rows(
    name: str,
    values: pd.Series,
    labels: Mapping[str, str],
    groups: Sequence[tuple[str, pd.Index]],
) -> list[list[str]]:
    rows = [[name, *["" for _ in groups]]]
    codes = list(labels.keys())
    for code in [*codes, None]:
        row = [f"  {labels[code]}" if code is not None else "  Missing"]
        any_value = False
        for _, ids in groups:
            v = values.reindex(ids)
            count = int(v.isna().sum()) if code is None else int((v == code).fillna(False).sum())
            any_value = any_value or count > 0
            row.append(_pct(count, len(ids)))
        if code is not None or any_value:
            rows.append(row)
    return rows


def baseline_section(inputs: DsmbInputs) -> Section:
    """Baseline characteristics of the randomised participants (by arm when closed)."""
    protocol = inputs.protocol
    missing = _missing(inputs, ("participant", "enrollment"))
    if "enrollment" in missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    rows: list[list[str]] = []
    participant = inputs.table("participant")
    if participant is not None:
        first = participant.drop_duplicates(_KEY).set_index(_KEY)
        first.index = first.index.astype("string")
        rows += _continuous_rows("Age (years)", first["age"], groups)
        rows += _categorical_rows(
            "Sex", _codes(first["sex"]), {"1": "Female", "2": "Male", "3": "Other"}, groups
        )
        if "ethnicity" in first.columns:
            rows += _categorical_rows(
                "Ethnicity",
                _codes(first["ethnicity"]),
                {"1": "Hispanic or Latino", "2": "Not Hispanic or Latino", "3": "Unknown"},
                groups,
            )
        if "prior_ad" in first.columns:
            rows += _categorical_rows(
                "Prior antidepressant use",
                _codes(first["prior_ad"]),
                {"1": "Yes", "0": "No"},
                groups,
            )
    enrollment = inputs.table("enrollment")
    severity = next((f for f in protocol.randomization.stratification if f.recorded_field), None)
    if enrollment is not None and severity is not None and severity.recorded_field:
        first = enrollment.drop_duplicates(_KEY).set_index(_KEY)
        if severity.recorded_field in first.columns:
            rows += _categorical_rows(
                severity.label or severity.id,
                _codes(first[severity.recorded_field]),
                {str(level.code): level.label or level.name for level in severity.levels},
                groups,
            )
    subjects = inputs.subjects()
    rows += _categorical_rows(
        "Site", subjects["site"].astype("string"), {s.id: s.id for s in protocol.sites}, groups
    )
    for instrument, total_field, label in (
        ("hamd17", "hamd_total", "HAM-D-17 total at baseline"),
        ("phq9", "phq9_total", "PHQ-9 total at baseline"),
        ("gad7", "gad7_total", "GAD-7 total at baseline"),
    ):
        frame = inputs.table(instrument)
        if frame is None or total_field not in frame.columns:
            continue
        base = frame[frame[_EVENT] == protocol.endpoints.primary.baseline_event]
        series = base.drop_duplicates(_KEY).set_index(_KEY)[total_field]
        series.index = series.index.astype("string")
        rows += _continuous_rows(label, series, groups)
    return Section(
        id=SECTION_ID,
        title=TITLE,
        tables=(
            _group_table("Baseline characteristics", rows, "Characteristic", groups, "Randomised"),
        ),
        missing=missing,
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, baseline_section)
