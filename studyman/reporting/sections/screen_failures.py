"""Screen failures and eligible participants not randomised, by reason."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _missing,
    _pct,
    _unavailable,
)
from studyman.reporting.sections.shared import _PENDING, _UNRECORDED, _not_randomised_reasons

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "screen-failures"
TITLE = "Screen failures"
TABLE_IDS: tuple[str, ...] = ("screen-failures.screen-failures-by-reason-and-site",)


def screen_failure_section(inputs: DsmbInputs) -> Section:
    """Screen failures with reasons, overall and by site."""
    protocol = inputs.protocol
    missing = _missing(inputs, (protocol.eligibility.form,))
    if missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    subjects = inputs.subjects()
    failures = subjects[~subjects["randomised"]]
    labels = _not_randomised_reasons(protocol, failures)
    sites = [s.id for s in protocol.sites]
    order = [r.label for r in protocol.disposition.screen_fail_reasons] + [_PENDING, _UNRECORDED]
    data: dict[str, list[str]] = {"Reason": [], **{s: [] for s in sites}, TOTAL: []}
    n_failed = len(failures)
    for reason in order:
        mask = labels == reason
        if not mask.any():
            continue
        data["Reason"].append(reason)
        for site in sites:
            data[site].append(str(int((mask & (failures["site"] == site)).sum())))
        data[TOTAL].append(_pct(int(mask.sum()), n_failed))
    data["Reason"].append("All screen failures")
    for site in sites:
        data[site].append(str(int((failures["site"] == site).sum())))
    data[TOTAL].append(str(n_failed))
    rate = 100.0 * n_failed / len(subjects) if len(subjects) else 0.0
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{n_failed} of {len(subjects)} screened participants ({rate:.1f}%) were not "
            "randomised.",
        ),
        tables=(
            ReportTable(
                "Screen failures by reason and site",
                pd.DataFrame(data),
                population="Screen failures",
                denominators=(("Screen failures", n_failed),),
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, screen_failure_section)
