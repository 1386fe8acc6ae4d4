"""Screen failures and eligible participants not randomised, by reason."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    ReportTable,
    Section,
    _missing,
    _pct,
    _unavailable,
)
from studyman.reporting.sections.shared import _PENDING, _UNRECORDED, _not_randomised_reasons


def screen_failure_section(inputs: DsmbInputs) -> Section:
    """Screen failures with reasons, overall and by site."""
    protocol = inputs.protocol
    missing = _missing(inputs, (protocol.eligibility.form,))
    if missing:
        return _unavailable("screen-failures", "Screen failures", missing)
    subjects = inputs.subjects()
    failures = subjects[~subjects["randomized"]]
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
        id="screen-failures",
        title="Screen failures",
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
