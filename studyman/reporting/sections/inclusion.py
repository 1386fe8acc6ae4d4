"""Race, and the NIH inclusion enrolment table (sex × race × ethnicity) of the randomised."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _choice_labels,
    _codes,
    _count_table,
    _denominators,
    _groups,
    _member,
)
from studyman.reporting.sections.executive_summary import randomised_ids

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "inclusion"
TITLE = "Race and the NIH inclusion enrolment table"
TABLE_IDS: tuple[str, ...] = (
    "inclusion.race",
    "inclusion.nih-inclusion-enrolment-sex-race-and-ethnicity",
)

NOT_RECORDED = "Not recorded"


def _first_values(inputs: DsmbInputs, field_name: str) -> pd.Series | None:
    """*field_name* per record (first non-missing row, as REDCap codes), from the form the
    dictionary puts it on; None when the study has no such field."""
    key = inputs.protocol.study.record_id_field
    for frame in inputs.tables.values():
        if field_name in frame.columns and key in frame.columns:
            rows = frame[[key, field_name]].dropna(subset=[field_name]).drop_duplicates(key)
            return pd.Series(
                _codes(rows[field_name]).to_numpy(), index=rows[key].astype(str).to_numpy()
            )
    return None


def _labelled(inputs: DsmbInputs, field_name: str, ids: pd.Index) -> tuple[pd.Series, list[str]]:
    """Each of *ids*' label of *field_name* (``Not recorded`` when missing or unknown) and the
    categories in dictionary order (``Not recorded`` last, only when it occurs)."""
    values = _first_values(inputs, field_name)
    labels = _choice_labels(inputs, field_name)
    codes = values.reindex(ids) if values is not None else pd.Series(pd.NA, index=ids)
    named = pd.Series(
        [labels.get(str(code), NOT_RECORDED) if pd.notna(code) else NOT_RECORDED for code in codes],
        index=ids,
        dtype=object,
    )
    categories = list(labels.values())
    if (named == NOT_RECORDED).any():
        categories.append(NOT_RECORDED)
    return named, categories


def inclusion_section(inputs: DsmbInputs) -> Section:
    """Race by arm (closed) or pooled (open), and the NIH sex × race × ethnicity table (pooled)."""
    enrolment = inputs.protocol.enrolment
    fields = (enrolment.race_field, enrolment.ethnicity_field, enrolment.sex_field)
    absent = [name for name in fields if _first_values(inputs, name) is None]
    if enrolment.race_field in absent:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                f"Race is not reported: the snapshot holds no race field "
                f"'{enrolment.race_field}' (protocol enrolment.race_field).",
            ),
            missing=(enrolment.race_field,),
        )
    ids = randomised_ids(inputs)
    race, race_categories = _labelled(inputs, enrolment.race_field, ids)
    groups = _groups(inputs, ids)

    def having(value: str) -> Callable[[pd.Index], int]:
        chosen = race.index[(race == value).to_numpy()]
        return lambda members: int(_member(members, chosen).sum())

    race_table = _count_table(
        [(category, having(category)) for category in race_categories],
        groups,
        first="Race",
    )
    ethnicity, ethnicity_categories = _labelled(inputs, enrolment.ethnicity_field, ids)
    sex, sex_categories = _labelled(inputs, enrolment.sex_field, ids)
    frame = pd.DataFrame({"r": race, "e": ethnicity, "s": sex})
    counts = frame.groupby(["r", "e", "s"]).size()
    columns = [(e, s) for e in ethnicity_categories for s in sex_categories]
    rows = []
    for category in race_categories:
        cells = [int(counts.get((category, e, s), 0)) for e, s in columns]
        rows.append([category, *[str(c) for c in cells], str(sum(cells))])
    totals = [int(((frame["e"] == e) & (frame["s"] == s)).sum()) for e, s in columns]
    rows.append([TOTAL, *[str(c) for c in totals], str(len(frame))])
    nih = pd.DataFrame(rows, columns=["Race", *[f"{e}: {s}" for e, s in columns], TOTAL])
    missing_note = (
        " Not collected in this study: " + ", ".join(f"'{name}'" for name in absent) + "."
        if absent
        else ""
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"Race, ethnicity and sex of the {len(ids)} randomised participants as recorded on "
            "the participant form (one category per participant; categories as the data "
            "dictionary codes them).",
        ),
        tables=(
            ReportTable("Race", race_table, "Randomised", _denominators(groups)),
            ReportTable(
                "NIH inclusion enrolment: sex, race and ethnicity",
                nih,
                "Randomised",
                ((TOTAL, len(ids)),),
                note="Columns: ethnicity, then sex. Pooled over arms in both sessions, as the "
                "NIH inclusion enrolment report is." + missing_note,
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, inclusion_section)
