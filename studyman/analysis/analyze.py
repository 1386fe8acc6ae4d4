"""``studyman analyze``: locked plan + snapshot (+ randomisation list) → derived data and results.

The file-reading edge of the analysis layer: it checks the plan lock, reads the snapshot
(verified against its manifest) and the randomisation list, then hands data frames to the pure
modules (:mod:`~studyman.analysis.adam`, :mod:`~studyman.analysis.run`) and writes the outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from studyman import __version__
from studyman.analysis.adam import AdamDatasets, choice_labels, derive_adam, normalise_randomization
from studyman.analysis.executor import Executor, make_executor
from studyman.analysis.lock import check_lock, record_unblinding
from studyman.analysis.outputs import write_outputs
from studyman.analysis.populations import flag_populations
from studyman.analysis.run import PlanRun, run_plan
from studyman.analysis.safety import safety_data
from studyman.analysis.sap import LoadedPlan, load_sap
from studyman.analysis.strata import unstratified_analyses
from studyman.errors import AnalysisError, SnapshotError, SourceError
from studyman.facts import StudyFacts, cut_tables, derive_facts, rules_from_plan
from studyman.protocol import Protocol, load_protocol
from studyman.protocol.reference import default_protocol_path
from studyman.sources.randomization import read_randomization_list
from studyman.sources.snapshot import snapshot_id

__all__ = ["AnalyzeResult", "analyze", "check_plan_arms", "plan_facts", "read_randomization"]


@dataclass(frozen=True)
class AnalyzeResult:
    """What ``analyze`` did: the run, where it wrote, and the sha256 of every output."""

    run: PlanRun
    out: Path
    files: dict[str, str]
    provenance: dict[str, Any]


def read_randomization(
    path: Path, arm_labels: dict[str, str], protocol: Protocol | None = None
) -> pd.DataFrame:
    """Read the randomisation list (CSV or Parquet) into ``SUBJID, TRT01P``.

    The file is read by :func:`studyman.sources.randomization.read_randomization_list` (headers:
    the *protocol*'s record-ID and arm fields, or the accepted legacy ones); codes are decoded
    with *arm_labels* by :func:`~studyman.analysis.adam.normalise_randomization`. A participant
    with a blank arm is left out (and reported by :func:`analyze` as randomised without an arm
    when the snapshot says randomised).

    Raises
    ------
    AnalysisError
        The file is missing or unreadable, lacks the record-ID or arm column, lists a
        participant twice or holds an unknown arm.
    """
    try:
        frame = read_randomization_list(path, protocol)
    except SourceError as error:
        raise AnalysisError(str(error)) from None
    record_column, arm_column = frame.columns[0], frame.columns[1]
    frame[arm_column] = frame[arm_column].replace("", pd.NA)
    try:
        return normalise_randomization(
            frame, arm_labels, record_id_field=record_column, arm_field=arm_column
        )
    except AnalysisError as error:
        raise AnalysisError(f"{path}: {error}") from None


def _snapshot_tables(
    snapshot: Path, protocol: Protocol | None
) -> tuple[dict[str, pd.DataFrame], list[dict[str, str]], str]:
    """The snapshot's tables and metadata; with *protocol*, its blinded view (the gate)."""
    from studyman.sources.blinding import blind_metadata_rows, read_blinded_snapshot
    from studyman.sources.snapshot import MANIFEST_NAME, read_snapshot

    manifest = snapshot / MANIFEST_NAME
    if not manifest.is_file():
        raise SnapshotError(f"{snapshot} is not a snapshot (no {MANIFEST_NAME})")
    loaded = (
        read_snapshot(snapshot) if protocol is None else read_blinded_snapshot(snapshot, protocol)
    )
    metadata_path = snapshot / "redcap" / "metadata.json"
    metadata = (
        json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.is_file() else []
    )
    if protocol is not None and metadata:
        metadata = blind_metadata_rows(metadata, protocol)
    return dict(loaded.tables), metadata, hashlib.sha256(manifest.read_bytes()).hexdigest()


def plan_facts(
    loaded: LoadedPlan,
    protocol: Protocol,
    tables: dict[str, pd.DataFrame],
    randomization: pd.DataFrame | None,
    *,
    snapshot: str = "",
) -> StudyFacts:
    """The study's facts for an analysis run: the plan's rules, in the run's view.

    Blinded (*randomization* None): *tables* are the blinded view; unblinded: the arms are the
    list's ``TRT01P``. The cut-off is the protocol's data cut-off; ``as_of`` is that day (the
    analysis reads no query log, and its outputs depend on nothing but their inputs).
    """
    cutoff = protocol.reporting.data_cut or date.today()
    arms = None
    if randomization is not None:
        arms = randomization.set_index("SUBJID")["TRT01P"]
    plan = loaded.plan
    return derive_facts(
        protocol,
        tables,
        cutoff=cutoff,
        rules=rules_from_plan(plan),
        arms=arms,
        arm_order=plan.treatment.arms,
        as_of=datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC),
        snapshot_id=snapshot,
    )


def check_plan_arms(loaded: LoadedPlan, protocol: Protocol) -> None:
    """The plan's arms are the protocol's, with the same reference arm.

    Raises
    ------
    AnalysisError
        The plan names an arm the protocol lacks, or another reference arm.
    """
    treatment = loaded.plan.treatment
    names = [arm.name for arm in protocol.arms.items]
    unknown = [arm for arm in treatment.arms if arm not in names]
    if unknown:
        raise AnalysisError(
            f"{loaded.path}: treatment names arm(s) {', '.join(map(repr, unknown))} that the "
            f"protocol does not declare (arms.items: {', '.join(names)})"
        )
    reference = protocol.arms.reference_arm.name
    if treatment.reference != reference:
        raise AnalysisError(
            f"{loaded.path}: treatment.reference is {treatment.reference!r} but the protocol's "
            f"reference arm is {reference!r} (arms.reference)"
        )


def derive_for_plan(
    loaded: LoadedPlan,
    tables: dict[str, pd.DataFrame],
    metadata: list[dict[str, str]],
    randomization: pd.DataFrame | None,
    facts: StudyFacts | None = None,
    protocol: Protocol | None = None,
) -> AdamDatasets:
    """ADaM data sets with the plan's population flags, from the study's facts.

    The tables are cut at the facts' cut-off (:func:`studyman.facts.cut_tables`) first, so that
    ADSL, ADQS and ADAE hold exactly the rows the facts count. *protocol* defaults to the
    embedded reference study; without *facts* they are derived here (:func:`plan_facts`).
    """
    plan = loaded.plan
    if protocol is None:
        protocol = load_protocol(default_protocol_path())
    if facts is None:
        facts = plan_facts(loaded, protocol, tables, randomization)
    choices = choice_labels(metadata)
    # one cut for every output: the ADaM rows are the facts' rows (dated after the cut-off: out)
    adam = derive_adam(
        cut_tables(protocol, tables, facts.cutoff),
        protocol=protocol,
        study=plan.study,
        choices=choices,
        randomization=randomization,
        analysis_visits={str(k): v for k, v in plan.visits.items()},
        facts=facts,
    )
    adsl = flag_populations(adam.adsl, facts, plan.populations)
    return dataclasses.replace(adam, adsl=adsl)


def analyze(
    sap: Path,
    snapshot: Path,
    out: Path,
    *,
    randomization: Path | None = None,
    protocol: Protocol | Path | None = None,
    lock: Path | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    executor: Executor | None = None,
    post_unblinding_amendment: str | None = None,
) -> AnalyzeResult:
    """Run the locked plan on a snapshot and write every output under *out*.

    Parameters
    ----------
    sap
        The analysis plan (must be locked, or amended since; see :mod:`~studyman.analysis.lock`).
    snapshot
        A snapshot directory (verified against its manifest before use).
    out
        Output directory (created; files of the same name are replaced).
    randomization
        The unblinded randomisation list; without it the run is blinded and reads the snapshot
        only through the protocol's blinding gate (:mod:`studyman.sources.blinding`): an
        unblinded snapshot's randomisation and dosing forms are never opened.
    protocol
        The study (a loaded protocol or its directory); default: the embedded reference study.
    workers, dask_address, executor
        Where imputations run: an executor, else a Dask scheduler address, else local processes.
    post_unblinding_amendment
        The reason for running a plan amended after the allocation was first read (see
        :func:`~studyman.analysis.lock.check_lock`); stated in the provenance and the report.

    Raises
    ------
    ProtocolError
        The plan is invalid, not locked, or changed without an amendment.
    SnapshotError
        The snapshot is missing or altered.
    AnalysisError
        The randomisation list cannot be used, or no participant table exists.
    """
    loaded = load_sap(sap)
    plan_status = check_lock(loaded, lock, post_unblinding_amendment=post_unblinding_amendment)
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol if protocol is not None else default_protocol_path())
    blinded = randomization is None
    tables, metadata, snapshot_sha256 = _snapshot_tables(snapshot, protocol if blinded else None)
    check_plan_arms(loaded, protocol)
    arms = {str(arm.code): arm.name for arm in protocol.arms.items}
    random_list = (
        None if randomization is None else read_randomization(randomization, arms, protocol)
    )
    unblinding = plan_status.unblinding
    if random_list is not None:  # the lock records the first time allocation is read
        unblinding = record_unblinding(loaded, snapshot_id(snapshot), lock)
    if random_list is not None:
        expected = set(loaded.plan.treatment.arms)
        unknown = sorted(set(random_list["TRT01P"].dropna()) - expected)
        if unknown:
            raise AnalysisError(
                f"{randomization}: arm(s) {', '.join(unknown)} are not the plan's "
                f"treatment arms {sorted(expected)}"
            )
    facts = plan_facts(loaded, protocol, tables, random_list, snapshot=snapshot_id(snapshot))
    adam = derive_for_plan(loaded, tables, metadata, random_list, facts, protocol)
    unmatched: dict[str, list[str]] = {}
    if random_list is not None:
        randomised = set(adam.adsl.loc[adam.adsl["RANDFL"] == "Y", "SUBJID"].astype(str))
        listed = set(random_list["SUBJID"].astype(str))
        # Reported, not fatal: such participants have no arm and drop out of arm comparisons.
        unmatched = {
            "randomised_without_arm": sorted(randomised - listed),
            "listed_not_randomised": sorted(listed - randomised),
        }
    provenance: dict[str, Any] = {
        "snapshot": {
            "name": snapshot.name,
            "id": snapshot_id(snapshot),
            "sha256": snapshot_sha256,
        },
        "plan": {
            "file": Path(loaded.path).name,
            "version": plan_status.version,
            "sha256": plan_status.sha256,
            "locked_version": plan_status.locked_version,
            "locked_sha256": plan_status.locked_sha256,
            "amendments": [a.model_dump(mode="json") for a in plan_status.amendments],
            "unblinding": None if unblinding is None else unblinding.model_dump(mode="json"),
            "post_unblinding_amendment": None
            if plan_status.post_unblinding_amendment is None
            else plan_status.post_unblinding_amendment.model_dump(mode="json"),
        },
        "studyman_version": __version__,
        "seed": loaded.plan.seed,
        "imputations": loaded.plan.imputations,
        "randomization_sha256": None
        if randomization is None
        else hashlib.sha256(randomization.read_bytes()).hexdigest(),
        "blinded": randomization is None,
        "randomization_mismatches": unmatched,
        "interim_dsmb_efficacy": loaded.plan.interim.dsmb_efficacy,
    }
    runner = executor if executor is not None else make_executor(workers, dask_address)
    try:
        run = run_plan(
            loaded.plan,
            adam,
            blinded=randomization is None,
            executor=runner,
            safety=None if blinded else safety_data(protocol, tables, facts),
        )
    finally:
        if executor is None:
            runner.close()
    # Strata as randomised: a model that adjusts for strata but leaves out a factor the
    # randomisation was stratified by is a warning of the run (studyman.analysis.strata).
    omitted = unstratified_analyses(loaded.plan, protocol)
    if omitted:
        run = dataclasses.replace(
            run,
            warnings=(
                *run.warnings,
                *(
                    f"{analysis_id}: adjusts for strata but leaves out {', '.join(covariates)}, "
                    "a factor the randomisation was stratified by"
                    for analysis_id, covariates in omitted.items()
                ),
            ),
        )
    files = write_outputs(
        out,
        plan=loaded.plan,
        run=run,
        adam=adam,
        provenance=provenance,
        facts=facts,
        protocol=protocol,
    )
    return AnalyzeResult(run=run, out=out, files=files, provenance=provenance)
