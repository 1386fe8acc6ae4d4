"""Study status: screened, eligible, randomised, treated, completed, discontinued (CONSORT)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _denominators,
    _enrolment_form,
    _groups,
    _header,
    _missing,
    _participant_form,
    _pct,
    _randomised,
    _status_code_named,
    _unavailable,
)
from studyman.reporting.sections.shared import _not_randomised_reasons

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "status"
TITLE = "Study status"
TABLE_IDS: tuple[str, ...] = (
    "status.participant-flow-after-randomisation",
    "status.screening",
    "status.discontinuations-by-reason",
)


def study_status_section(inputs: DsmbInputs) -> Section:
    """CONSORT-style flow: assessed, excluded with reasons, randomised, ..., analysed."""
    protocol = inputs.protocol
    needed = (_participant_form(inputs), protocol.eligibility.form, _enrolment_form(inputs))
    missing = _missing(inputs, needed)
    if len(missing) == len(needed):
        return _unavailable(SECTION_ID, TITLE, missing)
    subjects = inputs.subjects()
    not_randomised = subjects[~subjects["randomised"]]
    excluded_reasons = _not_randomised_reasons(protocol, not_randomised)
    excluded_counts = excluded_reasons.value_counts().sort_index()
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    facts = inputs.facts().subjects
    mitt = inputs.rules.population("mitt")
    analysed_ids = (
        set(facts.index[facts[f"population_{mitt.name}"].to_numpy(bool)].astype(str))
        if mitt is not None
        else set()
    )
    lost_code = _status_code_named(protocol, "lost_to_follow_up")
    flow: list[dict[str, object]] = []
    nodes: dict[str, object] = {
        "assessed": len(subjects),
        "excluded": len(not_randomised),
        "excluded_reasons": {str(k): int(v) for k, v in excluded_counts.items()},
        "randomised": len(randomised),
    }
    arm_nodes = []
    for label, ids in groups:
        sub = subjects.loc[ids]
        received = int(sub["safety"].sum())
        left = sub["discontinued_study"].to_numpy(bool)
        is_lost = (
            (sub["disposition_code"] == lost_code).fillna(False).to_numpy(bool)
            if lost_code
            else np.zeros(len(sub), dtype=bool)
        )
        lost = int((left & is_lost).sum())
        discontinued = sub[left & ~is_lost]
        reason_of = sub["disposition_label"].astype("string").fillna("Not recorded").astype(str)
        every_reason = reason_of[left].value_counts().sort_index()
        disc_reasons = reason_of[left & ~is_lost].value_counts().sort_index()
        node = {
            "label": label,
            "allocated": len(ids),
            "received": received,
            "lost": lost,
            "discontinued": len(discontinued),
            "discontinued_study": int(left.sum()),
            "discontinued_treatment": int(sub["discontinued_treatment"].sum()),
            "discontinued_due_to_ae": int(sub["discontinued_due_to_ae"].sum()),
            "discontinued_reasons": {str(k): int(v) for k, v in disc_reasons.items()},
            "every_reason": {str(k): int(v) for k, v in every_reason.items()},
            "completed": int(sub["completed"].sum()),
            "ongoing": int(sub["disposition_code"].isna().sum()),
            "analysed": len(set(ids.astype(str)) & analysed_ids),
        }
        arm_nodes.append(node)
        flow.append(node)
    rows = [
        ("Allocated", "allocated"),
        ("Received allocated intervention (safety population)", "received"),
        ("Discontinued the study (any reason)", "discontinued_study"),
        ("  Lost to follow-up", "lost"),
        ("  Other reasons", "discontinued"),
        ("Discontinued study treatment", "discontinued_treatment"),
        ("Discontinued the study due to an adverse event", "discontinued_due_to_ae"),
        ("Completed the study", "completed"),
        ("Ongoing at the cut-off", "ongoing"),
        ("Analysed (modified intention-to-treat population)", "analysed"),
    ]
    data: dict[str, list[str]] = {"Stage": [label for label, _ in rows]}
    for node in arm_nodes:
        n = int(str(node["allocated"]))
        data[_header(str(node["label"]), n)] = [
            _pct(int(str(node[key])), n) if key != "allocated" else str(n) for _, key in rows
        ]
    stage_table = ReportTable(
        "Participant flow after randomisation",
        pd.DataFrame(data),
        population="Randomised",
        denominators=_denominators(groups),
    )
    screen_rows = pd.DataFrame(
        {
            "Stage": ["Assessed for eligibility", "Not randomised (excluded or pending)"]
            + [f"  {reason}" for reason in excluded_counts.index]
            + ["Randomised"],
            "n": [str(len(subjects)), str(len(not_randomised))]
            + [str(int(v)) for v in excluded_counts.to_numpy()]
            + [str(len(randomised))],
        }
    )
    disc_rows: dict[str, list[str]] = {}
    all_reasons = sorted(
        {r for node in arm_nodes for r in dict(node["every_reason"])}  # type: ignore[call-overload]
    )
    if all_reasons:
        disc_rows["Reason"] = [*all_reasons, "All reasons"]
        for node in arm_nodes:
            n = int(str(node["allocated"]))
            reasons_of = dict(node["every_reason"])  # type: ignore[call-overload]
            disc_rows[_header(str(node["label"]), n)] = [
                *[_pct(int(reasons_of.get(r, 0)), n) for r in all_reasons],
                _pct(int(str(node["discontinued_study"])), n),
            ]
    tables = [
        ReportTable(
            "Screening",
            screen_rows,
            population="Screened",
            denominators=(("Screened", len(subjects)),),
        ),
        stage_table,
    ]
    if disc_rows:
        tables.append(
            ReportTable(
                "Discontinuations by reason",
                pd.DataFrame(disc_rows),
                population="Randomised",
                denominators=_denominators(groups),
            )
        )
    nodes["arms"] = arm_nodes
    figure = FigureData(
        kind="consort",
        title="Participant flow (CONSORT)",
        data={"flow": pd.DataFrame([{"nodes": nodes}])},
        caption="Drawn from the snapshot at the data cut-off.",
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        tables=tuple(tables),
        figures=(figure,),
        missing=missing,
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, study_status_section)
