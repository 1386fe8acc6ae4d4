"""Running every check: dictionary rules, protocol checks, custom checks, in one call.

:func:`run_checks` takes flat records (a live export, an offline file, or a snapshot rebuilt by
:func:`~studyman.validation.records.flat_records_from_tables`) and returns a
:class:`ValidationResult`. It is pure: no file is read or written here.

Blinding: without randomisation data the run is blinded. It then drops every row and column of
the protocol's unblinded forms (randomisation, dosing) before any check runs, so no finding,
message or value can reveal an arm, and the checks that need the arm do not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import numpy as np
import pandas as pd

from studyman.errors import ValidationError
from studyman.findings import FINDING_COLUMNS
from studyman.sources.blinding import blind_flat_records
from studyman.validation.catalogue import CATALOGUE, CheckDefinition
from studyman.validation.custom import CustomCheck, run_custom_checks
from studyman.validation.dictionary import DataDictionary
from studyman.validation.dictionary_checks import run_dictionary_checks
from studyman.validation.protocol_checks import ProtocolCheckInput, run_protocol_checks
from studyman.validation.reconciliation import run_reconciliation_checks
from studyman.validation.records import clear_caches, normalise_records, text

__all__ = ["RESULT_COLUMNS", "ValidationResult", "blind_records", "run_checks"]

RESULT_COLUMNS: Final = [*FINDING_COLUMNS, "site"]

# A protocol check that reports the same place as a dictionary rule replaces it, so one
# problem raises one query (the protocol's message is the more specific).
_SUPERSEDES: Final[dict[str, tuple[str, ...]]] = {
    "SCO-TOTAL": ("DQ-H",),
    "SCO-TOTAL-MISSING-ITEMS": ("DQ-H",),
    "CSR-SKIP": ("DQ-F",),
    "AE-SERIOUS-CRITERION": ("DQ-B",),
    "AE-SAE-DATES": ("DQ-B",),
    "AE-MISSING": ("DQ-B",),
    "CM-INCOMPLETE": ("DQ-B",),
    "DS-DEATH-DATE": ("DQ-B",),
    "REC-FATAL-NO-DEATH-DATE": ("DS-DEATH-DATE", "DQ-B"),
}
_PLACE: Final = ["record_id", "event", "instrument", "instance", "field"]


@dataclass(frozen=True)
class ValidationResult:
    """The findings of one run and what ran.

    Attributes
    ----------
    findings
        One row per problem (:data:`RESULT_COLUMNS`), sorted by site, record, check.
    checks_run
        Ids of the checks that ran (only their earlier queries may close).
    checks
        The catalogue entries of every check that ran (built-in and custom).
    unblinded
        Whether arm data were used.
    """

    findings: pd.DataFrame
    checks_run: frozenset[str]
    checks: tuple[CheckDefinition, ...]
    unblinded: bool


def blind_records(records: pd.DataFrame, protocol: Any, dictionary: DataDictionary) -> pd.DataFrame:
    """The blinded view of flat records (the blinding gate,
    :func:`studyman.sources.blinding.blind_flat_records`); idempotent."""
    project = getattr(protocol, "redcap", None)
    if project is None:
        raise ValidationError("the protocol has no REDCap project loaded (redcap_project)")
    return blind_flat_records(records, protocol, project.dictionary)


def _supersede(findings: pd.DataFrame) -> pd.DataFrame:
    drop = np.zeros(len(findings), dtype=bool)
    for winner, losers in _SUPERSEDES.items():
        winners = findings.loc[findings["check_id"] == winner, _PLACE]
        if winners.empty:
            continue
        keys = set(map(tuple, winners.to_numpy().tolist()))
        candidates = findings["check_id"].isin(list(losers)).to_numpy()
        if not candidates.any():
            continue
        places = findings.loc[candidates, _PLACE].to_numpy().tolist()
        hits = np.array([tuple(place) in keys for place in places], dtype=bool)
        index = np.flatnonzero(candidates)[hits]
        drop[index] = True
    return findings.loc[~drop].reset_index(drop=True)


def _site_of(
    findings: pd.DataFrame, protocol: Any, records: pd.DataFrame, id_field: str
) -> pd.Series:
    record_ids = findings["record_id"].astype(object)
    unique = pd.unique(record_ids)
    prefix_of = {rid: str(rid).split("-", 1)[0] for rid in unique}
    prefix = record_ids.map(prefix_of).astype(object)
    known = {site.id for site in protocol.sites}
    by_dag = {site.dag: site.id for site in protocol.sites}
    if "redcap_data_access_group" in records.columns:
        dag = pd.Series(text(records, "redcap_data_access_group"), index=text(records, id_field))
        dag = dag[dag != ""]
        dag = dag[~dag.index.duplicated(keep="first")].map(by_dag)
        from_dag = findings["record_id"].map(dag)
        prefix = from_dag.where(from_dag.notna(), prefix)
    return prefix.where(prefix.isin(list(known)), "unknown")


def run_checks(
    records: pd.DataFrame,
    protocol: Any,
    dictionary: DataDictionary,
    *,
    missing_codes: frozenset[str] = frozenset(),
    data_cut: date | None = None,
    randomization: pd.DataFrame | None = None,
    custom_checks: tuple[CustomCheck, ...] = (),
    source: str = "",
) -> ValidationResult:
    """Run every check on flat *records*.

    Parameters
    ----------
    records
        Flat records (REDCap ``type=flat``), text values.
    protocol
        The loaded protocol.
    dictionary
        The project's data dictionary.
    missing_codes
        The project's missing-data codes.
    data_cut
        Dates after it are in the future; defaults to the protocol's ``reporting.data_cut``, else
        today.
    randomization
        Unblinded runs only: a table with the record-ID column and the arm field (and, when
        present, the stratum field) of the protocol's randomisation form. ``None``: blinded run.
    custom_checks
        Compiled custom checks (:func:`studyman.validation.custom.load_custom_checks`).
    source
        What was validated (written into the findings).
    """
    clear_caches()
    try:
        return _run_checks(
            records,
            protocol,
            dictionary,
            missing_codes=missing_codes,
            data_cut=data_cut,
            randomization=randomization,
            custom_checks=custom_checks,
            source=source,
        )
    finally:
        clear_caches()


def _run_checks(
    records: pd.DataFrame,
    protocol: Any,
    dictionary: DataDictionary,
    *,
    missing_codes: frozenset[str],
    data_cut: date | None,
    randomization: pd.DataFrame | None,
    custom_checks: tuple[CustomCheck, ...],
    source: str,
) -> ValidationResult:
    id_field = dictionary.record_id_field
    cut = data_cut or protocol.reporting.data_cut or date.today()
    today = datetime(cut.year, cut.month, cut.day)
    unblinded = randomization is not None
    # a blinded run drops the unblinded forms before anything else looks at the records
    source_records = records if unblinded else blind_records(records, protocol, dictionary)
    frame = normalise_records(source_records, id_field)
    arms = strata = None
    if randomization is not None:
        table = normalise_records(randomization, id_field)
        arm_field = protocol.arms.field
        if arm_field in table.columns:
            arms = pd.Series(text(table, arm_field), index=text(table, id_field))
            arms = arms[arms != ""]
            arms = arms[~arms.index.duplicated(keep="first")]
        stratum_field = protocol.randomization.stratum_field
        if stratum_field in table.columns:
            strata = pd.Series(text(table, stratum_field), index=text(table, id_field))
            strata = strata[strata != ""]
            strata = strata[~strata.index.duplicated(keep="first")]
    inputs = ProtocolCheckInput(
        protocol=protocol, dictionary=dictionary, data_cut=cut, arms=arms, strata=strata
    )
    parts = [
        run_dictionary_checks(
            frame, dictionary, missing_codes=missing_codes, today=today, source=source
        ),
        run_protocol_checks(frame, inputs),
        run_reconciliation_checks(frame, inputs),
        run_custom_checks(
            frame, custom_checks, dictionary, today=today, missing_codes=missing_codes
        ),
    ]
    findings = pd.concat(
        [part for part in parts if not part.empty] or [parts[0]], ignore_index=True
    )
    findings = findings.drop_duplicates(subset=["check_id", *_PLACE], keep="first")
    findings = _supersede(findings)
    findings["site"] = _site_of(findings, protocol, frame, id_field) if len(findings) else []
    findings = findings.sort_values(
        ["site", "record_id", "check_id", "event", "instance", "field"], kind="stable"
    )
    checks = tuple(check for check in CATALOGUE if unblinded or not check.needs_arm) + tuple(
        check.definition for check in custom_checks
    )
    return ValidationResult(
        findings=findings.reset_index(drop=True)[RESULT_COLUMNS],
        checks_run=frozenset(check.check_id for check in checks),
        checks=checks,
        unblinded=unblinded,
    )
