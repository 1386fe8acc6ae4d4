"""Baseline characteristics of the randomised participants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
    DsmbInputs,
    Section,
    SectionSpec,
    _choice_labels,
    _codes,
    _enrolment_form,
    _field_label,
    _group_table,
    _groups,
    _missing,
    _participant_form,
    _pct,
    _randomised,
    _scale_label,
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
    """Baseline characteristics of the randomised participants (by arm when closed): the
    participant form's age, sex, race, ethnicity and the protocol's further baseline fields
    (``enrolment.baseline_fields``), the recorded stratum, site and every scale's total at
    the baseline visit. Codes are labelled from the dictionary in the session's view."""
    protocol = inputs.protocol
    enrolment = protocol.enrolment
    participant_form = _participant_form(inputs)
    enrolment_form = _enrolment_form(inputs)
    missing = _missing(inputs, [form for form in (participant_form, enrolment_form) if form])
    if not enrolment_form or enrolment_form in missing:
        return _unavailable(
            SECTION_ID, TITLE, missing or (protocol.randomization.randomized_field,)
        )
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    rows: list[list[str]] = []
    participant = inputs.table(participant_form) if participant_form else None
    if participant is not None:
        first = participant.drop_duplicates(inputs.key).set_index(inputs.key)
        first.index = first.index.astype("string")
        rows += _continuous_rows("Age (years)", first[enrolment.age_field], groups)
        named = {enrolment.sex_field: "Sex", enrolment.race_field: "Race"}
        named[enrolment.ethnicity_field] = "Ethnicity"
        for field_name in (*named, *enrolment.baseline_fields):
            if field_name not in first.columns:
                continue
            name = named.get(field_name) or _field_label(inputs, field_name)
            labels = _choice_labels(inputs, field_name)
            if labels:
                rows += _categorical_rows(name, _codes(first[field_name]), labels, groups)
            else:
                rows += _continuous_rows(name, first[field_name], groups)
    enrollment = inputs.table(enrolment_form)
    severity = next((f for f in protocol.randomization.stratification if f.recorded_field), None)
    if enrollment is not None and severity is not None and severity.recorded_field:
        first = enrollment.drop_duplicates(inputs.key).set_index(inputs.key)
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
    baseline_event = protocol.endpoints.primary.baseline_event
    at_baseline = next((v.instruments for v in protocol.visits if v.event == baseline_event), ())
    for scoring in protocol.scoring:
        frame = inputs.table(scoring.instrument)
        if (
            scoring.instrument not in at_baseline
            or frame is None
            or scoring.total_field not in frame.columns
        ):
            continue
        base = frame[frame[_EVENT] == baseline_event]
        series = base.drop_duplicates(inputs.key).set_index(inputs.key)[scoring.total_field]
        series.index = series.index.astype("string")
        label = scoring.label or _scale_label(protocol, scoring.instrument)
        rows += _continuous_rows(f"{label} total at baseline", series, groups)
    return Section(
        id=SECTION_ID,
        title=TITLE,
        tables=(
            _group_table("Baseline characteristics", rows, "Characteristic", groups, "Randomised"),
        ),
        missing=missing,
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, baseline_section)
