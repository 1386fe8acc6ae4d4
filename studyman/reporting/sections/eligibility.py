"""Eligibility violations (randomised although not eligible, or a criterion recorded not met)
and randomised participants never treated: counts in both sessions, listings in the closed one."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _codes,
    _count_table,
    _denominators,
    _groups,
    _member,
)
from studyman.reporting.sections.executive_summary import randomised_ids
from studyman.reporting.sections.shared import _arm_column, _fmt_date

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "eligibility-violations"
TITLE = "Eligibility violations and participants never treated"
TABLE_IDS: tuple[str, ...] = (
    "eligibility-violations.randomised-participants-with-an-eligibility-violation-or-never-treated",
    "eligibility-violations.listing-of-eligibility-violations",
    "eligibility-violations.listing-of-randomised-participants-never-treated",
)

NOT_ELIGIBLE = "Randomised although recorded not eligible"
CRITERION_NOT_MET = "Randomised with an eligibility criterion recorded not met"
NEVER_TREATED = "Randomised, never treated"


def criteria_not_met(inputs: DsmbInputs) -> pd.DataFrame:
    """One row per participant with the eligibility form at its event and one boolean column
    per criterion id: the criterion recorded not met (an inclusion criterion ``0``, an exclusion
    criterion ``1``), as the ``ELG-FORM`` check reads the form."""
    eligibility = inputs.protocol.eligibility
    key = inputs.protocol.study.record_id_field
    frame = inputs.table(eligibility.form)
    ids = [criterion.id for criterion in eligibility.criteria]
    if frame is None or frame.empty:
        return pd.DataFrame(columns=ids, dtype=bool)
    if "redcap_event_name" in frame.columns:
        frame = frame[(frame["redcap_event_name"].astype(str) == eligibility.event).to_numpy()]
    frame = frame.drop_duplicates(key)
    result = pd.DataFrame(index=pd.Index(frame[key].astype(str).to_numpy(), name=key))
    for criterion in eligibility.criteria:
        if criterion.field not in frame.columns:
            result[criterion.id] = False
            continue
        failing = "0" if criterion.kind == "inclusion" else "1"
        result[criterion.id] = (
            (_codes(frame[criterion.field]) == failing).fillna(False).to_numpy(bool)
        )
    return result


def eligibility_section(inputs: DsmbInputs) -> Section:
    """Counts of eligibility violations and of the never treated; their listings (closed)."""
    protocol = inputs.protocol
    facts = inputs.facts().subjects
    randomised = randomised_ids(inputs)
    subjects = facts.loc[randomised]
    failed = criteria_not_met(inputs).reindex(randomised).fillna(False).astype(bool)
    not_eligible = randomised[~subjects["is_eligible"].to_numpy(bool)]
    any_failed = (
        randomised[failed.any(axis=1).to_numpy(bool)] if len(failed.columns) else randomised[:0]
    )
    violations = pd.Index(sorted(set(not_eligible) | set(any_failed)), dtype=object)
    never = randomised[~subjects["treated"].to_numpy(bool)]
    groups = _groups(inputs, randomised)

    def among(found: Iterable[object]) -> Callable[[pd.Index], int]:
        return lambda ids: int(_member(ids, found).sum())

    rows: list[tuple[str, Callable[[pd.Index], int]]] = [
        (NOT_ELIGIBLE, among(not_eligible)),
        (CRITERION_NOT_MET, among(any_failed)),
    ]
    for criterion in protocol.eligibility.criteria:
        if criterion.id in failed.columns and failed[criterion.id].any():
            chosen = randomised[failed[criterion.id].to_numpy(bool)]
            rows.append((f"  {criterion.kind.capitalize()}: {criterion.text}", among(chosen)))
    rows.append((NEVER_TREATED, among(never)))
    counts = _count_table(rows, groups, first="Participants")
    texts = {criterion.id: criterion.text for criterion in protocol.eligibility.criteria}
    sites = facts["site"]
    listing = pd.DataFrame(
        {
            "Participant": [str(i) for i in violations],
            "Site": [str(sites.get(i, "")) for i in violations],
            "Randomised": [_fmt_date(facts.at[i, "randomisation_date"]) for i in violations],
            "Recorded eligible": [
                "yes" if bool(facts.at[i, "is_eligible"]) else "no" for i in violations
            ],
            "Criteria recorded not met": [
                "; ".join(texts[c] for c in failed.columns if bool(failed.at[i, c])) or "–"
                for i in violations
            ],
        }
    )
    never_listing = pd.DataFrame(
        {
            "Participant": [str(i) for i in never],
            "Site": [str(sites.get(i, "")) for i in never],
            "Randomised": [_fmt_date(facts.at[i, "randomisation_date"]) for i in never],
            "Disposition": [
                "ongoing" if pd.isna(label) else str(label)
                for label in facts["disposition_label"].reindex(never).tolist()
            ],
            "Disposition date": [_fmt_date(facts.at[i, "disposition_date"]) for i in never],
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, listing["Participant"]))
        never_listing.insert(1, "Arm", _arm_column(inputs, never_listing["Participant"]))
    treated_note = (
        "Treated: at least one study-treatment session attended or dose taken."
        if inputs.closed
        else "Treated: at least one study-treatment session attended (the open session's view "
        "holds no dosing log, so a participant dosed without any session counts as never "
        "treated here)."
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{len(violations)} randomised participant{'' if len(violations) == 1 else 's'} with "
            f"an eligibility violation; {len(never)} randomised and never treated.",
        ),
        tables=(
            ReportTable(
                "Randomised participants with an eligibility violation or never treated",
                counts,
                "Randomised",
                _denominators(groups),
                note="Eligibility as recorded on the eligibility form (inclusion criterion "
                "recorded no, exclusion criterion recorded yes, or not eligible). " + treated_note,
            ),
            ReportTable("Listing of eligibility violations", listing),
            ReportTable("Listing of randomised participants never treated", never_listing),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, eligibility_section)
