"""Running the whole analysis plan on derived data sets, one analysis at a time.

A failing analysis (unusable data, an empty population, a model that no prespecified structure
fits) is reported for that analysis alone; the others still run. Without the randomisation list
every analysis that compares arms is refused and a pooled, blinded data review is produced
instead.

Comparisons: each experimental arm of the plan is compared with the reference arm
(:attr:`~studyman.analysis.sap.Treatment.comparisons`). Each comparison is its own analysis of
the participants of its two arms (pairwise), so that with two arms the result is exactly the
two-arm analysis; every table carries a ``comparison`` column (``"A vs B"``), and with several
comparisons the outcome holds one part per comparison (:attr:`AnalysisOutcome.parts`).

Intercurrent events and administrative censoring come from the data
(:mod:`studyman.analysis.intercurrent`): a responder analysis leaves out a participant whose
analysis visit was not yet due at the cut-off (ongoing, not a non-responder; counted per arm in
the ``administratively_censored`` column of its ``responders`` table and in its message), and the
imputation analyses receive each participant's treatment discontinuation (``ICEFL``) and the
first analysis visit after it (``ICEVISIT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from studyman.analysis.adam import AdamDatasets
from studyman.analysis.executor import Executor, SerialExecutor, single_threaded_blas
from studyman.analysis.intercurrent import first_visit_after_event
from studyman.analysis.models import (
    AnalysisOutcome,
    NotApplicableError,
    ae_exposure_adjusted,
    ae_glmm,
    ae_highest_severity,
    ae_incidence,
    ae_negative_binomial,
    ae_time_to_first,
    mmrm_analysis,
    multiple_imputation_analysis,
    random_slope_analysis,
    responder_logistic_analysis,
    tipping_point_analysis,
)
from studyman.analysis.multiplicity import MULTIPLICITY_ID, multiplicity_outcome
from studyman.analysis.populations import population_members
from studyman.analysis.safety import SafetyData, run_safety_assessment
from studyman.analysis.sap import (
    AEAnalysis,
    Analysis,
    AnalysisPlan,
    MMRMAnalysis,
    MultipleImputationAnalysis,
    RandomSlopeAnalysis,
    ResponderLogisticAnalysis,
    SafetyAssessmentAnalysis,
    TippingPointAnalysis,
)
from studyman.analysis.strata import pool_sites, site_levels
from studyman.errors import AnalysisError, StudymanError

__all__ = [
    "PlanNotRunnableError",
    "PlanRun",
    "blinded_review",
    "combine_comparisons",
    "comparison_label",
    "run_plan",
    "with_comparison",
]


@dataclass(frozen=True)
class PlanRun:
    """Outcomes of every analysis of the plan, in plan order, and the blinded review."""

    outcomes: tuple[AnalysisOutcome, ...]
    blinded: bool
    review: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    #: What the plan names but could not be run as written (one line each, analysis id first).
    warnings: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[AnalysisOutcome, ...]:
        """Analyses that did not produce a result."""
        return tuple(o for o in self.outcomes if o.status == "failed")


class PlanNotRunnableError(AnalysisError):
    """Something the plan names is not in the data (an empty population, an arm nobody is in)."""


def _missing_visits(analysis: Analysis, plan: AnalysisPlan, visits: list[int]) -> tuple[str, ...]:
    """A deviation naming the planned analysis visits without any data (left out of the fit)."""
    parameter = str(getattr(analysis, "parameter", ""))
    planned = list(plan.visits.get(parameter.lower(), ()))
    empty = [v for v in planned if v not in visits]
    if not empty:
        return ()
    weeks = ", ".join(str(v) for v in empty)
    return (
        f"planned {parameter} analysis visit(s) week {weeks} have no data in population "
        f"{analysis.population!r}; the analysis runs without them",
    )


class _Data:
    """Frames of one comparison of a plan run (experimental, reference), built on demand."""

    def __init__(
        self,
        plan: AnalysisPlan,
        adam: AdamDatasets,
        safety: SafetyData | None = None,
        arms: tuple[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self.adam = adam
        self.safety_data = safety
        # Strata as randomised: the site levels by the plan's pooling rule, counted over the
        # randomised participants (studyman.analysis.strata).
        randomised = adam.adsl[adam.adsl["RANDFL"] == "Y"]
        self.site_levels = site_levels(randomised["SITEID"], plan.site_pooling)
        self.arms = arms if arms is not None else plan.treatment.comparisons[0]

    def members(self, population_id: str) -> pd.DataFrame:
        population = self.plan.populations[population_id]
        if population.flag not in self.adam.adsl.columns:
            raise AnalysisError(f"ADSL has no population flag {population.flag}")
        chosen = population_members(self.adam.adsl, population)
        adsl = self.adam.adsl[self.adam.adsl["SUBJID"].isin(chosen)]
        if adsl.empty:
            raise PlanNotRunnableError(
                f"population {population_id!r} ({population.label}) is empty"
            )
        return adsl

    def efficacy(
        self, analysis: Analysis, parameter: str
    ) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
        """(visit rows, one row per participant, analysis visits present) for *parameter*."""
        adsl = self.members(analysis.population)
        arm_variable = self.plan.treatment.variable
        adsl = adsl[adsl[arm_variable].isin(self.arms)]
        if adsl.empty:
            raise PlanNotRunnableError(
                f"no participant of population {analysis.population!r} has an arm"
            )
        for arm in self.arms:
            if not (adsl[arm_variable] == arm).any():
                raise PlanNotRunnableError(
                    f"population {analysis.population!r} has nobody in arm {arm!r}"
                )
        adqs = self.adam.adqs
        adqs = adqs[(adqs["PARAMCD"] == parameter) & adqs["SUBJID"].isin(set(adsl["SUBJID"]))]
        planned = list(self.plan.visits[parameter.lower()])
        rows = adqs[(adqs["ANL01FL"] == "Y") & adqs["AVISITN"].isin(planned)]
        visits = [v for v in planned if (rows["AVISITN"] == v).any()]
        if not visits:
            raise AnalysisError(f"no post-baseline {parameter} value at any analysis visit")
        arm_type = pd.CategoricalDtype([self.arms[1], self.arms[0]])
        base = adqs[adqs["ABLFL"] == "Y"].drop_duplicates("SUBJID").set_index("SUBJID")["AVAL"]
        subjects = pd.DataFrame(
            {
                "SUBJID": adsl["SUBJID"].astype(str).to_numpy(),
                "ARM": adsl[arm_variable].astype(str).to_numpy(),
                "STRATSEV": adsl["STRATSEV"].astype("string").to_numpy(),
                "SITEID": pool_sites(adsl["SITEID"], self.site_levels).to_numpy(),
            }
        )
        subjects["BASE"] = subjects["SUBJID"].map(base).astype(float)
        subjects["ARM"] = subjects["ARM"].astype(arm_type)
        frame = rows[["SUBJID", "AVISITN", "AVAL", "CHG", "PCHG"]].merge(
            subjects, on="SUBJID", how="inner"
        )
        frame["VISIT"] = frame["AVISITN"].astype(pd.CategoricalDtype(visits))
        frame["SUBJID"] = frame["SUBJID"].astype(str)
        return frame.reset_index(drop=True), subjects, visits

    def safety(self, analysis: AEAnalysis) -> tuple[pd.DataFrame, pd.DataFrame]:
        adsl = self.members(analysis.population)
        adsl = adsl[adsl["TRT01A"].isin(self.arms)]
        if adsl.empty:
            raise AnalysisError(f"no participant of population {analysis.population!r} has an arm")
        # Reference arm first: the model contrasts are experimental versus reference.
        arm_type = pd.CategoricalDtype([self.arms[1], self.arms[0]])
        safety = adsl[["SUBJID", "TRTSDT", "EXPDAYS"]].assign(
            ARM=adsl["TRT01A"].astype(str).astype(arm_type)
        )
        # events of the comparison's arms (and of participants without an arm, as before)
        adae = self.adam.adae
        other_arm = adae["TRT01A"].notna() & ~adae["TRT01A"].isin(self.arms)
        adae = adae[~other_arm.fillna(False).to_numpy(bool)]
        adae = adae.assign(ARM=lambda f: f["TRT01A"].astype(str).astype(arm_type))
        return adae, safety.reset_index(drop=True)


def _administratively_censored(
    subjects: pd.DataFrame, censored: pd.DataFrame, visit: int
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Participants without a value at *visit* because it was not yet due at the cut-off.

    Returns the participants kept, those left out (``SUBJID, ARM``) and a note counting them.
    A visit that was due and has no value is not censored (it stays, as missing data).
    """
    pending = set(censored.loc[censored["AVISITN"] == visit, "SUBJID"].astype(str))
    out = subjects["SUBJID"].astype(str).isin(pending) & subjects["AVAL"].isna()
    left_out = subjects.loc[out, ["SUBJID", "ARM"]].reset_index(drop=True)
    if left_out.empty:
        return subjects, left_out, ""
    note = (
        f"{len(left_out)} participant(s) still on study and not yet due for week {visit} at the "
        "data cut-off left out (administratively censored, not non-responders)"
    )
    return subjects[~out].reset_index(drop=True), left_out, note


def _intercurrent_events(
    subjects: pd.DataFrame, adam: AdamDatasets, visits: list[int]
) -> pd.DataFrame:
    """*subjects* with ``ICEFL`` (discontinued treatment), ``ICEDT`` (its date, ADSL ``DCTDT``)
    and ``ICEVISIT`` (the first analysis visit whose target date is after it; missing when no
    analysis visit is, or the date is unknown).

    Without target days (data sets not derived from a protocol) *subjects* is returned as it
    is, and the imputations use the dropout rule.
    """
    adsl = adam.adsl
    if not adam.target_days or "EOTSTT" not in adsl.columns:
        return subjects
    adsl = adsl.drop_duplicates("SUBJID").set_index(adsl["SUBJID"].astype(str))
    ids = subjects["SUBJID"].astype(str).tolist()
    stopped = adsl["EOTSTT"].reindex(ids) == "DISCONTINUED"
    ice = pd.DataFrame(
        {
            "TRTDISFL": np.where(stopped.fillna(False).to_numpy(bool), "Y", "N"),
            "TRTDISDT": pd.to_datetime(adsl["DCTDT"]).reindex(ids).to_numpy(),
        },
        index=pd.Index(ids),
    )
    randomised_on = pd.to_datetime(adsl["RANDDT"]).reindex(ids)
    index = first_visit_after_event(
        ids,
        visits,
        {v: adam.target_days[v] for v in visits if v in adam.target_days},
        ice,
        {
            s: (None if pd.isna(d) else pd.Timestamp(d))
            for s, d in zip(ids, randomised_on.tolist(), strict=True)
        },
    )
    first = [float(visits[i]) if i < len(visits) else np.nan for i in index]
    return subjects.assign(
        ICEFL=stopped.fillna(False).to_numpy(bool),
        ICEDT=ice["TRTDISDT"].to_numpy(),
        ICEVISIT=np.asarray(first, dtype=float),
    )


def _with_baseline(
    subjects: pd.DataFrame, strata: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, str]:
    """Participants with a baseline value and every stratum; a note counts those left out."""
    missing = subjects[["BASE", *strata]].isna().any(axis=1)
    if missing.any():
        what = "a baseline value" + (" or a stratum" if strata else "")
        note = f"{int(missing.sum())} participant(s) without {what} left out"
        return subjects[~missing].reset_index(drop=True), note
    return subjects, ""


@dataclass(frozen=True)
class _Prepared:
    """One analysis with exactly the data it needs (small enough to send to a worker)."""

    analysis: Analysis
    level: float
    arms: tuple[str, str]
    frames: dict[str, pd.DataFrame]
    visits: tuple[int, ...] = ()
    imputations: int = 0
    seed: int = 0
    note: str = ""
    alpha: float = 0.05
    sidedness: Literal["one_sided", "two_sided"] = "two_sided"
    benefit: Literal["lower", "higher"] | None = None
    deviations: tuple[str, ...] = ()
    safety: SafetyData | None = None


def _prepare(analysis: Analysis, data: _Data, plan: AnalysisPlan) -> _Prepared:
    """Select the rows and columns of *analysis* (in the main process)."""
    level, arms = plan.confidence_level, data.arms
    if isinstance(analysis, MMRMAnalysis):
        frame, _, visits = data.efficacy(analysis, analysis.parameter)
        deviations = _missing_visits(analysis, plan, visits)
        return _Prepared(analysis, level, arms, frames={"frame": frame}, deviations=deviations)
    if isinstance(analysis, ResponderLogisticAnalysis):
        frame, subjects, _ = data.efficacy(analysis, analysis.parameter)
        at_visit = frame[frame["AVISITN"] == analysis.visit].set_index("SUBJID")
        subjects = subjects.assign(
            AVAL=subjects["SUBJID"].map(at_visit["AVAL"]),
            PCHG=subjects["SUBJID"].map(at_visit["PCHG"]),
        )
        subjects, censored, pending = _administratively_censored(
            subjects, data.adam.censored, analysis.visit
        )
        subjects, note = _with_baseline(subjects, analysis.strata)
        note = "; ".join(part for part in (pending, note) if part)
        return _Prepared(
            analysis, level, arms, frames={"subjects": subjects, "censored": censored}, note=note
        )
    if isinstance(analysis, RandomSlopeAnalysis):
        frame, _, visits = data.efficacy(analysis, analysis.parameter)
        return _Prepared(
            analysis,
            level,
            arms,
            frames={"frame": frame.dropna(subset=["BASE"])},
            deviations=_missing_visits(analysis, plan, visits),
        )
    if isinstance(analysis, MultipleImputationAnalysis | TippingPointAnalysis):
        frame, subjects, visits = data.efficacy(analysis, analysis.parameter)
        subjects, note = _with_baseline(subjects, analysis.strata)
        subjects = _intercurrent_events(subjects, data.adam, visits)
        alpha, sidedness = plan.significance_level()
        return _Prepared(
            analysis,
            level,
            arms,
            frames={"frame": frame, "subjects": subjects},
            visits=tuple(visits),
            imputations=plan.imputations,
            seed=plan.seed,
            note=note,
            alpha=alpha,
            sidedness=sidedness,
            benefit=plan.benefit_of(analysis.id),
            deviations=_missing_visits(analysis, plan, visits),
        )
    if isinstance(analysis, SafetyAssessmentAnalysis):
        if data.safety_data is None:
            raise AnalysisError("safety assessments need the snapshot's tables (no safety data)")
        # As treated in a population of the treated (safety), else as randomised.
        criteria = plan.populations[analysis.population].criteria
        variable = (
            "TRT01A" if any(c.kind == "treated" for c in criteria) else plan.treatment.variable
        )
        adsl = data.members(analysis.population)
        adsl = adsl[adsl[variable].isin(arms)]
        subjects = pd.DataFrame(
            {"SUBJID": adsl["SUBJID"].astype(str), "ARM": adsl[variable].astype(str)}
        ).reset_index(drop=True)
        return _Prepared(
            analysis, level, arms, frames={"subjects": subjects}, safety=data.safety_data
        )
    adae, safety = data.safety(analysis)
    frames = {"adae": adae, "safety": safety}
    if analysis.kind == "ae_glmm":
        frames["visits"] = data.adam.visits
    return _Prepared(analysis, level, arms, frames=frames)


def _compute(prepared: _Prepared, executor: Executor) -> AnalysisOutcome:
    """Run one prepared analysis (in a worker, or here for the imputation analyses)."""
    analysis, level, frames = prepared.analysis, prepared.level, prepared.frames
    experimental, _ = prepared.arms
    if isinstance(analysis, MMRMAnalysis):
        return mmrm_analysis(analysis, frames["frame"], confidence_level=level)
    if isinstance(analysis, ResponderLogisticAnalysis):
        outcome = responder_logistic_analysis(analysis, frames["subjects"], confidence_level=level)
        counts = outcome.tables["responders"].copy()
        per_arm = frames["censored"]["ARM"].astype(str).value_counts()
        counts["administratively_censored"] = (
            counts["ARM"].astype(str).map(per_arm).fillna(0).astype(int)
        )
        details = {**outcome.details, "administratively_censored": len(frames["censored"])}
        outcome = replace(outcome, tables={**outcome.tables, "responders": counts}, details=details)
        return _add_note(outcome, prepared.note)
    if isinstance(analysis, RandomSlopeAnalysis):
        return random_slope_analysis(analysis, frames["frame"], confidence_level=level)
    if isinstance(analysis, MultipleImputationAnalysis | TippingPointAnalysis):
        frame, subjects = frames["frame"], frames["subjects"]
        if isinstance(analysis, MultipleImputationAnalysis):
            outcome = multiple_imputation_analysis(
                analysis,
                frame,
                subjects,
                visits=prepared.visits,
                experimental=experimental,
                imputations=prepared.imputations,
                seed=prepared.seed,
                executor=executor,
                confidence_level=level,
            )
        else:
            outcome = tipping_point_analysis(
                analysis,
                frame,
                subjects,
                visits=prepared.visits,
                experimental=experimental,
                imputations=prepared.imputations,
                seed=prepared.seed,
                executor=executor,
                confidence_level=level,
                alpha=prepared.alpha,
                sidedness=prepared.sidedness,
                benefit=prepared.benefit,
            )
        return _add_note(outcome, prepared.note)
    if isinstance(analysis, SafetyAssessmentAnalysis):
        assert prepared.safety is not None
        return run_safety_assessment(
            analysis,
            prepared.safety,
            frames["subjects"],
            arms=prepared.arms,
            confidence_level=level,
        )
    adae, safety, arms = frames["adae"], frames["safety"], prepared.arms
    if analysis.kind == "ae_incidence":
        return ae_incidence(analysis, adae, safety, arms=arms, confidence_level=level)
    if analysis.kind == "ae_highest_severity":
        return ae_highest_severity(analysis, adae, safety, arms=arms)
    if analysis.kind == "ae_exposure_adjusted":
        return ae_exposure_adjusted(analysis, adae, safety, arms=arms, confidence_level=level)
    if analysis.kind == "ae_negative_binomial":
        return ae_negative_binomial(analysis, adae, safety, confidence_level=level)
    if analysis.kind == "ae_glmm":
        return ae_glmm(analysis, adae, safety, frames["visits"], confidence_level=level)
    return ae_time_to_first(analysis, adae, safety, arms=arms)


def _add_note(outcome: AnalysisOutcome, note: str) -> AnalysisOutcome:
    if not note:
        return outcome
    message = "; ".join(part for part in (outcome.message, note) if part)
    return replace(outcome, message=message)


def run_plan(
    plan: AnalysisPlan,
    adam: AdamDatasets,
    *,
    blinded: bool,
    executor: Executor | None = None,
    safety: SafetyData | None = None,
) -> PlanRun:
    """Run every analysis of *plan*; each failure is reported for its analysis alone.

    Parameters
    ----------
    plan
        The (locked) analysis plan.
    adam
        Derived data sets with population flags.
    blinded
        True when no randomisation list was given: every analysis compares arms, so each is
        refused and :func:`blinded_review` runs instead.
    executor
        Runs the imputations; default this process.
    safety
        The snapshot's safety assessments (:func:`studyman.analysis.safety.safety_data`), for
        the plan's C-SSRS, vital-sign, liver, withdrawal-scale, medication and disposition
        entries; without them those entries fail.
    """
    runner = executor if executor is not None else SerialExecutor()
    if blinded:
        refused = tuple(
            AnalysisOutcome(
                id=analysis.id,
                kind=analysis.kind,
                role=analysis.role,
                label=analysis.label,
                status="refused",
                message="compares arms; needs the randomisation list (--randomization)",
            )
            for analysis in plan.analyses
        )
        if plan.multiplicity is not None:
            refused += (
                AnalysisOutcome(
                    id=MULTIPLICITY_ID,
                    kind="multiplicity",
                    role="confirmatory",
                    label="Familywise error control over the confirmatory family",
                    status="refused",
                    message="tests arm comparisons; needs the randomisation list (--randomization)",
                ),
            )
        return PlanRun(outcomes=refused, blinded=True, review=blinded_review(plan, adam))
    # Two phases, both on the executor: the analyses without imputation run as one task each
    # (per comparison); then each imputation analysis spreads its chains over the workers.
    # Every task is deterministic, so the outcomes do not depend on the executor.
    imputing = (MultipleImputationAnalysis, TippingPointAnalysis)
    comparisons = plan.treatment.comparisons
    several = len(comparisons) > 1
    done: dict[tuple[str, tuple[str, str]], AnalysisOutcome] = {}
    prepared: list[_Prepared] = []
    warnings: list[str] = []
    for arms in comparisons:
        data = _Data(plan, adam, safety, arms)
        where = f" ({comparison_label(arms)})" if several else ""
        for analysis in plan.analyses:
            try:
                prepared.append(_prepare(analysis, data, plan))
            except _EXPECTED as error:
                done[analysis.id, arms] = _failure(analysis, error)
                if isinstance(error, PlanNotRunnableError):
                    warnings.append(f"{analysis.id}{where}: not run: {error}")
    single = [p for p in prepared if not isinstance(p.analysis, imputing)]
    for item, outcome in zip(single, runner.map(_execute, single), strict=True):
        done[item.analysis.id, item.arms] = outcome
    for item in prepared:
        if isinstance(item.analysis, imputing):
            done[item.analysis.id, item.arms] = _guarded(item, runner)
    for item in prepared:
        key = (item.analysis.id, item.arms)
        outcome = done[key]
        deviations = (*item.deviations, *outcome.deviations)
        if not deviations:
            continue
        outcome = replace(outcome, deviations=deviations)
        if item.analysis.essential and outcome.status == "ok":
            outcome = replace(
                outcome,
                status="failed",
                message="essential analysis cannot be run as the plan wrote it: "
                + "; ".join(deviations),
                headline=None,
            )
        done[key] = outcome
        where = f" ({comparison_label(item.arms)})" if several else ""
        warnings.extend(f"{item.analysis.id}{where}: {deviation}" for deviation in deviations)
    by_id: dict[str, AnalysisOutcome] = {}
    for analysis in plan.analyses:
        parts = [with_comparison(done[analysis.id, arms], arms) for arms in comparisons]
        outcome = combine_comparisons(parts)
        failed = [part.comparison for part in parts if part.status != "ok"]
        if analysis.essential and failed and outcome.status == "ok":
            outcome = replace(outcome, status="failed")  # every comparison of it is essential
        by_id[analysis.id] = outcome
    outcomes = [by_id[a.id] for a in plan.analyses]
    adjusted = multiplicity_outcome(plan, by_id)
    if adjusted is not None:
        outcomes.append(adjusted)
    return PlanRun(outcomes=tuple(outcomes), blinded=False, warnings=tuple(warnings))


def comparison_label(arms: tuple[str, ...]) -> str:
    """``"A vs B"``: the experimental arm, then the reference."""
    return " vs ".join(arms)


def with_comparison(outcome: AnalysisOutcome, arms: tuple[str, str]) -> AnalysisOutcome:
    """*outcome* of the comparison *arms*, each table led by a ``comparison`` column."""
    label = comparison_label(arms)
    tables = {}
    for name, frame in outcome.tables.items():
        table = frame.copy()
        if "comparison" not in table.columns:
            table.insert(0, "comparison", label)
        tables[name] = table
    return replace(outcome, comparison=label, arms=arms, tables=tables)


def combine_comparisons(parts: list[AnalysisOutcome]) -> AnalysisOutcome:
    """One outcome per analysis: the single comparison itself, or the comparisons together.

    Several comparisons: the tables stacked in comparison order, status ``ok`` when any
    comparison has a result (a failed one is named in the message), deviations of all, and no
    headline of its own (each part keeps its own).
    """
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    names = list(dict.fromkeys(name for part in parts for name in part.tables))
    tables = {
        name: pd.concat(
            [part.tables[name] for part in parts if name in part.tables], ignore_index=True
        )
        for name in names
    }
    ok = [part for part in parts if part.status == "ok"]
    messages = [
        f"{part.comparison}: {part.status}{': ' + part.message if part.message else ''}"
        for part in parts
        if part.status != "ok" or part.message
    ]
    deviations = tuple(
        f"{part.comparison}: {deviation}" for part in parts for deviation in part.deviations
    )
    return AnalysisOutcome(
        id=first.id,
        kind=first.kind,
        role=first.role,
        label=first.label,
        status="ok" if ok else first.status,
        message="; ".join(messages),
        tables=tables,
        headline=None,
        details={part.comparison: part.details for part in parts},
        deviations=deviations,
        arms=tuple(dict.fromkeys(arm for part in parts for arm in part.arms)),
        comparisons=tuple(parts),
    )


_EXPECTED = (StudymanError, ArithmeticError, ValueError, np.linalg.LinAlgError)


def _failure(analysis: Analysis, error: Exception) -> AnalysisOutcome:
    if isinstance(error, NotApplicableError):
        return AnalysisOutcome(
            id=analysis.id,
            kind=analysis.kind,
            role=analysis.role,
            label=analysis.label,
            status="not_applicable",
            message=f"Does not apply: {error}",
        )
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="failed",
        message=f"{type(error).__name__}: {error}",
    )


def _execute(prepared: _Prepared) -> AnalysisOutcome:
    """Run one analysis in a worker (imputations, if any, in that worker)."""
    return _guarded(prepared, SerialExecutor())


def _guarded(prepared: _Prepared, executor: Executor) -> AnalysisOutcome:
    """Run *prepared*; an error of the data or the model becomes a failed outcome."""
    try:
        with single_threaded_blas():
            return _compute(prepared, executor)
    except _EXPECTED as error:
        return _failure(prepared.analysis, error)


def blinded_review(plan: AnalysisPlan, adam: AdamDatasets) -> dict[str, pd.DataFrame]:
    """Pooled (arm-free) data review: populations, outcomes by visit, missingness, AEs, disposition.

    Notes
    -----
    Nothing here is split by arm or by any variable derived from the randomisation list.
    """
    adsl, adqs, adae = adam.adsl, adam.adqs, adam.adae
    populations = pd.DataFrame(
        [
            {
                "population": name,
                "label": population.label,
                "flag": population.flag,
                "participants": int((adsl[population.flag] == "Y").sum())
                if population.flag in adsl.columns
                else 0,
            }
            for name, population in plan.populations.items()
        ]
    )
    by_visit = (
        adqs[adqs["AVISITN"] >= 0]
        .groupby(["PARAMCD", "AVISITN", "AVISIT"], as_index=False)
        .agg(
            n=("AVAL", "count"),
            mean=("AVAL", "mean"),
            sd=("AVAL", "std"),
            n_change=("CHG", "count"),
            mean_change=("CHG", "mean"),
            sd_change=("CHG", "std"),
        )
        .sort_values(["PARAMCD", "AVISITN"])
        .reset_index(drop=True)
    )
    randomised = int((adsl["RANDFL"] == "Y").sum())
    by_visit["percent_of_randomised"] = 100 * by_visit["n"] / randomised if randomised else np.nan
    teae = adae[adae["TRTEMFL"] == "Y"]
    safety_n = int((adsl["SAFFL"] == "Y").sum()) if "SAFFL" in adsl.columns else 0
    incidence = (
        teae.groupby(["AESOC", "AEDECOD"], as_index=False)
        .agg(participants=("SUBJID", "nunique"), events=("SUBJID", "size"))
        .sort_values(["AESOC", "AEDECOD"])
        .reset_index(drop=True)
    )
    incidence["percent_of_safety"] = (
        100 * incidence["participants"] / safety_n if safety_n else np.nan
    )
    disposition = (
        adsl[adsl["RANDFL"] == "Y"]
        .assign(DCSREAS=lambda f: f["DCSREAS"].fillna(""))
        .groupby(["EOSSTT", "DCSREAS"], as_index=False)
        .size()
        .rename(columns={"size": "participants"})
    )
    return {
        "populations": populations,
        "outcomes_by_visit": by_visit,
        "adverse_events": incidence,
        "disposition": disposition,
    }
