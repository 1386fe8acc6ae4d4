"""Protocol checks: one module per area of the catalogue, found from the check id.

=========================  ====================================================================
check id                   module
=========================  ====================================================================
``STR-*``                  :mod:`~studyman.validation.protocol_checks.structure`
``DAT-*``, ``VIS-*``       :mod:`~studyman.validation.protocol_checks.visits` (dates, windows)
``ELG-*``, ``SCO-RAND-LOW``  :mod:`~studyman.validation.protocol_checks.eligibility`
``SCO-*``                  :mod:`~studyman.validation.protocol_checks.scores`
``AE-*``, ``CSR-*``,       :mod:`~studyman.validation.protocol_checks.safety` (adverse events
``LIV-*``, ``COWS-*``      and their clocks, C-SSRS, liver, withdrawal)
``CM-*``, ``ADH-*``,       :mod:`~studyman.validation.protocol_checks.treatment` (medications,
``ARM-*``                  adherence, allocation)
``DS-*``                   :mod:`~studyman.validation.protocol_checks.disposition`
=========================  ====================================================================

:func:`module_of` gives that module's name for a check id. Each check reads its parameters from
the protocol (windows, thresholds, codes, clocks) and works on whole columns at once; the
participant-level facts most checks need (consent, randomisation, disposition dates) are built
once in :class:`~studyman.validation.protocol_checks.view.StudyView`.

Notes
-----
* Study days count from the randomisation date (baseline = day 0), as the protocol states.
* Dates that are not real dates are ignored by date-order checks (the dictionary check reports
  them), so one bad value never raises.
* Each area module's docstring states the choices of its checks (overdue visits, proration of
  totals, the reporting clocks).
"""

from __future__ import annotations

from typing import Final

import pandas as pd

from studyman.validation.protocol_checks.disposition import check_disposition
from studyman.validation.protocol_checks.eligibility import check_eligibility
from studyman.validation.protocol_checks.safety import (
    check_adverse_events,
    check_cssrs,
    check_liver_and_withdrawal,
)
from studyman.validation.protocol_checks.scores import check_scores
from studyman.validation.protocol_checks.structure import check_structure
from studyman.validation.protocol_checks.treatment import check_adherence, check_arms, check_conmeds
from studyman.validation.protocol_checks.view import Emitter, ProtocolCheckInput, StudyView
from studyman.validation.protocol_checks.visits import check_dates, check_visits

__all__ = ["ProtocolCheckInput", "StudyView", "module_of", "run_protocol_checks"]

_MODULE_OF_PREFIX: Final = {
    "STR": "structure",
    "DAT": "visits",
    "VIS": "visits",
    "ELG": "eligibility",
    "SCO": "scores",
    "AE": "safety",
    "CSR": "safety",
    "LIV": "safety",
    "COWS": "safety",
    "CM": "treatment",
    "ADH": "treatment",
    "ARM": "treatment",
    "DS": "disposition",
}
#: checks whose module is not their prefix's
_MODULE_OF_CHECK: Final = {"SCO-RAND-LOW": "eligibility"}


def module_of(check_id: str) -> str:
    """The module of this package that holds protocol check *check_id* ("" for none)."""
    if check_id in _MODULE_OF_CHECK:
        return _MODULE_OF_CHECK[check_id]
    return _MODULE_OF_PREFIX.get(check_id.split("-", 1)[0], "")


def run_protocol_checks(records: pd.DataFrame, inputs: ProtocolCheckInput) -> pd.DataFrame:
    """Run every protocol check (arm checks only when ``inputs.arms`` is given).

    Returns
    -------
    pandas.DataFrame
        Findings with :data:`studyman.findings.FINDING_COLUMNS`.
    """
    view = StudyView(records, inputs)
    out = Emitter(view)
    for check in (
        check_structure,
        check_dates,
        check_visits,
        check_eligibility,
        check_scores,
        check_cssrs,
        check_adverse_events,
        check_conmeds,
        check_liver_and_withdrawal,
        check_disposition,
        check_adherence,
    ):
        check(view, out)
    if inputs.arms is not None:
        check_arms(view, out)
    return out.frame()
