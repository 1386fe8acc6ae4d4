"""Enrolment against target, overall and per site."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _enrolment_form,
    _missing,
    _unavailable,
)

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "enrolment"
TITLE = "Enrolment against target"
TABLE_IDS: tuple[str, ...] = ("enrolment.enrolment-by-site",)


def enrolment_section(inputs: DsmbInputs) -> Section:
    """Enrolment against target over time, overall and by site."""
    protocol = inputs.protocol
    missing = _missing(inputs, (_enrolment_form(inputs),))
    if missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    subjects = inputs.subjects()
    randomised = subjects[subjects["randomised"]]
    rows = []
    for site in protocol.sites:
        n = int((randomised["site"] == site.id).sum())
        screened = int((subjects["site"] == site.id).sum())
        rows.append(
            {
                "Site": f"{site.id} {site.name}",
                "Activated": site.activation_date.isoformat(),
                "Screened": str(screened),
                "Randomised": str(n),
                "Target": str(site.enrolment_target),
                "% of target": f"{100.0 * n / site.enrolment_target:.1f}%"
                if site.enrolment_target
                else "–",
            }
        )
    total = len(randomised)
    rows.append(
        {
            "Site": "All sites",
            "Activated": protocol.enrolment.start.isoformat(),
            "Screened": str(len(subjects)),
            "Randomised": str(total),
            "Target": str(protocol.enrolment.target),
            "% of target": f"{100.0 * total / protocol.enrolment.target:.1f}%",
        }
    )
    # the figure's columns: site and date of randomisation, one row per participant
    curve = (
        randomised[["site", "randomisation_date"]]
        .rename(columns={"randomisation_date": "date"})
        .sort_values("date")
        .reset_index(drop=True)
    )
    targets = pd.DataFrame(
        [
            {
                "site": s.id,
                "target": s.enrolment_target,
                "activation": pd.Timestamp(s.activation_date),
            }
            for s in protocol.sites
        ]
    )
    plan = pd.DataFrame(
        {
            "start": [pd.Timestamp(protocol.enrolment.start)],
            "end": [pd.Timestamp(protocol.enrolment.end)],
            "target": [protocol.enrolment.target],
            "cutoff": [pd.Timestamp(inputs.cutoff)],
        }
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        tables=(
            ReportTable(
                "Enrolment by site",
                pd.DataFrame(rows),
                population="Randomised",
                denominators=(("All sites", total),),
                note="Target: the protocol's enrolment target per site.",
            ),
        ),
        figures=(
            FigureData(
                kind="enrolment",
                title="Cumulative randomisation against target, overall and by site",
                data={"curve": curve, "sites": targets, "plan": plan},
                caption="The dashed line is a linear accrual to the target between the "
                "planned start and end of enrolment (per site: from its activation).",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, enrolment_section)
