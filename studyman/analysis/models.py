"""The prespecified analyses, one function per kind, on ADaM-style frames.

Each function takes the plan entry, the data it needs and the executor, and returns an
:class:`AnalysisOutcome`: result tables plus a headline (estimate, CI, p) for the forest plot.
Numbers come from :mod:`studyman.stats` (MMRM, NB2, GLMM), statsmodels (logistic regression,
random intercept and slope) and :mod:`studyman.analysis.imputation`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from studyman.analysis.adam import lookup
from studyman.analysis.executor import Executor
from studyman.analysis.imputation import (
    ImputationData,
    ImputationMethod,
    MIResult,
    PooledEstimate,
    prepare_imputation_data,
    run_multiple_imputation,
)
from studyman.analysis.sap import (
    AEAnalysis,
    MMRMAnalysis,
    MultipleImputationAnalysis,
    RandomSlopeAnalysis,
    ResponderLogisticAnalysis,
    TippingPointAnalysis,
)
from studyman.errors import AnalysisError

__all__ = [
    "AnalysisOutcome",
    "Headline",
    "NotApplicableError",
    "ae_exposure_adjusted",
    "ae_glmm",
    "ae_highest_severity",
    "ae_incidence",
    "ae_negative_binomial",
    "ae_time_to_first",
    "kaplan_meier",
    "mmrm_analysis",
    "multiple_imputation_analysis",
    "newcombe_interval",
    "random_slope_analysis",
    "responder_logistic_analysis",
    "tipping_point_analysis",
    "wilson_interval",
]

#: ``not_applicable``: the study lacks what the analysis needs (an optional form the protocol
#: does not declare); the report says the section does not apply, and the run does not fail.
Status = Literal["ok", "failed", "refused", "not_applicable"]


class NotApplicableError(AnalysisError):
    """The study does not have what an analysis needs (the protocol declares no such form):
    the analysis does not apply, which is not a failure."""


@dataclass(frozen=True)
class Headline:
    """The one number an analysis is summarised by (forest plot, report summary)."""

    measure: str
    estimate: float
    ci_lower: float
    ci_upper: float
    p_value: float | None
    null_value: float = 0.0


@dataclass(frozen=True)
class AnalysisOutcome:
    """Result of one analysis of the plan (or why it has none)."""

    id: str
    kind: str
    role: str
    label: str
    status: Status
    message: str = ""
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    headline: Headline | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: Where the analysis could not be run as the plan wrote it (a covariate with one level
    #: left out, a planned visit without data); each becomes a warning of the run.
    deviations: tuple[str, ...] = ()
    #: The comparison of arms this outcome estimates (``"A vs B"``: experimental vs
    #: reference); empty for an outcome that compares no arms.
    comparison: str = ""
    #: The arms of that comparison: (experimental, reference).
    arms: tuple[str, ...] = ()
    #: With more than one comparison (a plan with several experimental arms): one outcome per
    #: comparison, in the plan's order. This outcome then has their tables stacked (told apart
    #: by their ``comparison`` column) and no headline of its own.
    comparisons: tuple[AnalysisOutcome, ...] = ()

    @property
    def parts(self) -> tuple[AnalysisOutcome, ...]:
        """The outcome of each comparison (this outcome alone when it has one comparison)."""
        return self.comparisons or (self,)

    def part(self, experimental: str) -> AnalysisOutcome:
        """The outcome of the comparison of arm *experimental* with the reference.

        Raises
        ------
        KeyError
            No comparison of *experimental*.
        """
        for part in self.parts:
            if part.arms[:1] == (experimental,):
                return part
        raise KeyError(experimental)


def _usable_covariates(frame: pd.DataFrame, covariates: Sequence[str]) -> tuple[list[str], str]:
    """Covariates with at least two levels in *frame*; a note naming any left out."""
    kept = [c for c in covariates if frame[c].nunique(dropna=True) >= 2]
    dropped = [c for c in covariates if c not in kept]
    note = (
        f"covariate(s) {', '.join(dropped)} named by the plan have a single level in the data "
        "and were left out of the model"
        if dropped
        else ""
    )
    return kept, note


def _as_deviations(note: str) -> tuple[str, ...]:
    return (note,) if note else ()


def mmrm_analysis(
    analysis: MMRMAnalysis, frame: pd.DataFrame, *, confidence_level: float
) -> AnalysisOutcome:
    """MMRM with arm, visit, arm × visit, baseline (× visit) and strata; LS-mean differences.

    Parameters
    ----------
    frame
        One row per participant and analysis visit: ``SUBJID, ARM`` (categorical, reference
        first), ``VISIT`` (categorical, in time order), the response, ``BASE`` and the strata.

    Notes
    -----
    Fitted by :func:`studyman.stats.fit_mmrm` with the plan's covariance structure, estimation
    method and df method; the prespecified fallbacks are tried in order and the structure used is
    reported. The headline is the arm difference in LS means at ``contrast_visit``.
    """
    from studyman.stats import fit_mmrm

    strata, note = _usable_covariates(frame, analysis.strata)
    terms = ["ARM", "VISIT", "ARM:VISIT"]
    if analysis.baseline:
        terms.append(analysis.baseline)
        if analysis.baseline_by_visit:
            terms.append(f"{analysis.baseline}:VISIT")
    terms.extend(strata)
    formula = f"{analysis.response} ~ " + " + ".join(terms)
    result = fit_mmrm(
        frame,
        formula,
        subject="SUBJID",
        visit="VISIT",
        covariance=analysis.covariance.replace("_", "-"),
        method=analysis.method,
        df_method=analysis.df_method,
        vcov=analysis.vcov,
        fallbacks=tuple(name.replace("_", "-") for name in analysis.fallbacks),
    )
    contrasts = result.lsmeans_contrasts("ARM", level=confidence_level)
    lsmeans = result.lsmeans("ARM", level=confidence_level)
    # CONSORT 2025 items 22a/26: analysed per arm, and with data at each visit.
    observed = frame.dropna(subset=[analysis.response])
    counts = observed.groupby(["ARM", "VISIT"], observed=False)["SUBJID"].nunique()
    participants = counts.unstack("VISIT").reset_index()
    participants.columns = ["arm", *(f"with_data_visit_{v}" for v in participants.columns[1:])]
    analysed = observed.groupby("ARM", observed=False)["SUBJID"].nunique()
    participants.insert(1, "analysed", participants["arm"].map(analysed).astype(int))
    coefficients = result.coefficients.reset_index()
    at_visit = contrasts[contrasts["visit"] == analysis.contrast_visit]
    if at_visit.empty:
        raise AnalysisError(f"no LS-mean difference at visit {analysis.contrast_visit}")
    row = at_visit.iloc[0]
    covariance = result.covariance.copy()
    covariance.index = covariance.index.astype(str)
    covariance.columns = covariance.columns.astype(str)
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        message=note,
        deviations=_as_deviations(note),
        tables={
            "lsmean_differences": contrasts,
            "lsmeans": lsmeans,
            "coefficients": coefficients,
            "covariance": covariance.reset_index(names="visit"),
            "participants": participants,
        },
        headline=Headline(
            measure=f"LS-mean difference in {analysis.parameter} {analysis.response} "
            f"at week {analysis.contrast_visit}",
            estimate=float(row["estimate"]),
            ci_lower=float(row["ci_lower"]),
            ci_upper=float(row["ci_upper"]),
            p_value=float(row["p_value"]),
        ),
        details={
            "formula": formula,
            "covariance_structure": result.covariance_structure,
            "fallback_reason": result.fallback_reason,
            "method": result.method,
            "df_method": result.df_method,
            "vcov": result.vcov,
            "deviance": result.deviance,
            "n_subjects": result.n_subjects,
            "n_observations": result.n_observations,
            "n_dropped": result.n_dropped,
        },
    )


def responder_logistic_analysis(
    analysis: ResponderLogisticAnalysis, subjects: pd.DataFrame, *, confidence_level: float
) -> AnalysisOutcome:
    """Logistic regression of responder status at one visit on arm, baseline and strata.

    Parameters
    ----------
    subjects
        One row per population member: ``SUBJID, ARM, BASE``, strata and ``AVAL``, ``PCHG`` at
        the visit (missing when not assessed).

    Notes
    -----
    Composite strategy: a participant without a value at the visit is a non-responder. A
    participant whose visit was not yet due at the data cut-off (still on study) is not in
    *subjects*: the plan run leaves them out as administratively censored
    (:mod:`studyman.analysis.run`).
    Response is ``PCHG ≤ −threshold`` (``percent_reduction``) or ``AVAL ≤ threshold``
    (``at_most``). Maximum likelihood (statsmodels GLM, binomial, logit) with a Wald CI of the
    odds ratio experimental vs reference; when the plan declares ``sparse_data`` and an arm has
    fewer responders (or non-responders) than its ``min_events``, Firth's penalised likelihood
    with a profile penalised-likelihood CI and a penalised likelihood-ratio p-value instead
    (:func:`studyman.stats.firth.fit_firth_logistic`; Heinze & Schemper 2002), which stays finite
    under separation.
    """
    import statsmodels.formula.api as smf

    rule = analysis.rule
    if rule.kind == "percent_reduction":
        responder = subjects["PCHG"] <= -rule.threshold
    else:
        responder = subjects["AVAL"] <= rule.threshold
    data = subjects.assign(RESPONDER=responder.fillna(False).astype(float))
    strata, note = _usable_covariates(data, analysis.strata)
    terms = ["ARM", *([analysis.baseline] if analysis.baseline else []), *strata]
    formula = "RESPONDER ~ " + " + ".join(terms)
    counts = (
        data.groupby("ARM", observed=False)["RESPONDER"]
        .agg(["count", "sum"])
        .rename(columns={"count": "n", "sum": "responders"})
        .reset_index()
    )
    counts["percent"] = 100 * counts["responders"] / counts["n"]
    if data["RESPONDER"].nunique() < 2:
        raise AnalysisError("every participant has the same responder status; no odds ratio")
    fewest = int(min(counts["responders"].min(), (counts["n"] - counts["responders"]).min()))
    sparse = analysis.sparse_data
    if sparse is not None and fewest < sparse.min_events:
        return _firth_responder(analysis, data, formula, counts, fewest, note, confidence_level)
    separated = counts[(counts["responders"] == 0) | (counts["responders"] == counts["n"])]
    if len(separated):
        arms = ", ".join(
            f"{arm} ({responders:g} of {n:g})"
            for arm, responders, n in zip(
                separated["ARM"].astype(str),
                separated["responders"].astype(float),
                separated["n"].astype(float),
                strict=True,
            )
        )
        raise AnalysisError(
            f"responders in arm(s) {arms}: the odds ratio is not estimable (separation)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = smf.glm(formula, data=data, family=_binomial()).fit()
    arm_term = next(name for name in fit.params.index if name.startswith("ARM"))
    z = stats.norm.ppf(0.5 + confidence_level / 2)
    log_or, se = float(fit.params[arm_term]), float(fit.bse[arm_term])
    if not (math.isfinite(se) and abs(log_or) + z * se < 700):
        raise AnalysisError(
            f"logistic fit diverged (log odds ratio {log_or:.3g}, SE {se:.3g}): "
            "quasi-complete separation by a covariate"
        )
    table = pd.DataFrame(
        {
            "term": fit.params.index,
            "estimate": fit.params.to_numpy(),
            "std_error": fit.bse.to_numpy(),
            "p_value": fit.pvalues.to_numpy(),
        }
    )
    notes = [note, *sorted({str(w.message).splitlines()[0] for w in caught})]
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        message="; ".join(n for n in notes if n),
        deviations=_as_deviations(note),
        tables={"responders": counts, "coefficients": table},
        headline=Headline(
            measure=f"odds ratio at week {analysis.visit}",
            estimate=math.exp(log_or),
            ci_lower=math.exp(log_or - z * se),
            ci_upper=math.exp(log_or + z * se),
            p_value=float(fit.pvalues[arm_term]),
            null_value=1.0,
        ),
        details={
            "formula": formula,
            "n": len(data),
            "method": "maximum likelihood, Wald CI",
            "fewest_events_in_an_arm": fewest,
        },
    )


def _firth_responder(
    analysis: ResponderLogisticAnalysis,
    data: pd.DataFrame,
    formula: str,
    counts: pd.DataFrame,
    fewest: int,
    note: str,
    confidence_level: float,
) -> AnalysisOutcome:
    """The responder analysis by Firth's penalised likelihood (sparse data)."""
    import patsy  # type: ignore[import-untyped]

    from studyman.stats.firth import fit_firth_logistic

    assert analysis.sparse_data is not None  # the caller checked
    _, design = patsy.dmatrices(formula, data, return_type="dataframe")
    try:
        fit = fit_firth_logistic(design, data["RESPONDER"], confidence_level=confidence_level)
    except (ValueError, np.linalg.LinAlgError) as error:
        raise AnalysisError(f"Firth logistic regression failed: {error}") from None
    table = fit.coefficients.reset_index()
    arm_term = next(str(t) for t in table["term"] if str(t).startswith("ARM"))
    values = fit.coefficients.loc[arm_term].to_numpy(dtype=float)
    row = dict(zip(fit.coefficients.columns, (float(v) for v in values), strict=True))
    threshold = analysis.sparse_data.min_events
    why = (
        f"Firth penalised likelihood with profile-likelihood CI: fewest responders or "
        f"non-responders in an arm {fewest} < {threshold} (plan: sparse_data)"
    )
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        message="; ".join(n for n in (why, note) if n),
        deviations=_as_deviations(note),
        tables={"responders": counts, "coefficients": table},
        headline=Headline(
            measure=f"odds ratio at week {analysis.visit} (Firth)",
            estimate=math.exp(row["estimate"]),
            ci_lower=math.exp(row["ci_lower"]),
            ci_upper=math.exp(row["ci_upper"]),
            p_value=row["p_value"],
            null_value=1.0,
        ),
        details={
            "formula": formula,
            "n": len(data),
            "method": "Firth penalised likelihood, profile penalised-likelihood CI, "
            "penalised likelihood-ratio p-value",
            "fewest_events_in_an_arm": fewest,
            "sparse_threshold": threshold,
        },
    )


def _binomial() -> Any:
    import statsmodels.api as sm

    return sm.families.Binomial()


def random_slope_analysis(
    analysis: RandomSlopeAnalysis, frame: pd.DataFrame, *, confidence_level: float
) -> AnalysisOutcome:
    """Linear mixed model with random intercept and slope on time in weeks.

    Notes
    -----
    ``response ~ ARM * WEEK + BASE + strata`` with a random intercept and a random slope on
    ``WEEK`` per participant (unstructured 2 × 2), REML, by
    :func:`studyman.stats.fit_random_slope` (lme4-style GLS standard errors). The headline is
    the arm difference in slope (points per week); Wald inference on the normal reference.
    """
    from studyman.stats import fit_random_slope

    data = frame.assign(WEEK=frame["AVISITN"].astype(float)).dropna(subset=[analysis.response])
    strata, note = _usable_covariates(data, analysis.strata)
    terms = ["ARM * WEEK", *([analysis.baseline] if analysis.baseline else []), *strata]
    formula = f"{analysis.response} ~ " + " + ".join(terms)
    fit = fit_random_slope(data, formula, group="SUBJID", time="WEEK", method="REML")
    coefficients = fit.coefficients
    names = [str(name) for name in coefficients.index]
    slope_term = next(n for n in names if n.startswith("ARM[") and ":WEEK" in n)
    row = coefficients.iloc[names.index(slope_term)]
    estimate, se = float(row["estimate"]), float(row["std_error"])
    z = float(stats.norm.ppf(0.5 + confidence_level / 2))
    notes = [note] + ([] if fit.converged else [fit.message])
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok" if fit.converged else "failed",
        message="; ".join(n for n in notes if n),
        deviations=_as_deviations(note),
        tables={
            "coefficients": coefficients.reset_index(names="term"),
            "random_effects_covariance": fit.random_effects_covariance.reset_index(names="effect"),
        },
        headline=Headline(
            measure="difference in slope (points per week)",
            estimate=estimate,
            ci_lower=estimate - z * se,
            ci_upper=estimate + z * se,
            p_value=float(2 * stats.norm.sf(abs(estimate / se))),
        )
        if fit.converged
        else None,
        details={
            "formula": formula,
            "random_effects": "intercept + WEEK (unstructured)",
            "residual_variance": fit.residual_variance,
            "optimiser": fit.optimiser,
            "n_observations": fit.n_observations,
            "n_groups": fit.n_groups,
        },
    )


def _impute(
    analysis: MultipleImputationAnalysis | TippingPointAnalysis,
    frame: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    method: ImputationMethod,
    deltas: Sequence[float],
    visits: Sequence[int],
    experimental: str,
    imputations: int,
    seed: int,
    executor: Executor,
    confidence_level: float,
) -> tuple[ImputationData, MIResult, str]:
    """Impute CHG for every population member at every visit and pool the ANCOVA at the
    analysis visit; also a note naming any stratum left out (single level).

    With the columns ``ICEFL``, ``ICEDT`` and ``ICEVISIT`` in *subjects* (the data's treatment
    discontinuation, :mod:`studyman.analysis.run`), the reference-based methods take the event
    from them; without, the dropout rule (:mod:`studyman.analysis.imputation`).
    """
    strata, note = _usable_covariates(subjects, analysis.strata)
    # Every population member gets a row per visit (missing where not observed), so that
    # participants without post-baseline data are imputed too.
    grid = subjects[["SUBJID", "ARM", "BASE", *strata]].merge(
        pd.DataFrame({"AVISITN": list(visits)}), how="cross"
    )
    observed = frame[["SUBJID", "AVISITN", "CHG"]]
    long = grid.merge(observed, on=["SUBJID", "AVISITN"], how="left")
    long["ARM"] = long["ARM"].astype(str)
    data = prepare_imputation_data(
        long,
        subject="SUBJID",
        visit="AVISITN",
        outcome="CHG",
        arm="ARM",
        experimental=experimental,
        baseline="BASE",
        covariates=strata,
        visits=visits,
    )
    if {"ICEFL", "ICEDT", "ICEVISIT"} <= set(subjects.columns):
        data = data.with_events(_first_visits_after_event(subjects))
    result = run_multiple_imputation(
        data,
        method=method,
        imputations=analysis.imputations or imputations,
        seed=seed,
        analysis_visit=analysis.visit,
        deltas=deltas,
        executor=executor,
        confidence_level=confidence_level,
    )
    return data, result, note


def _first_visits_after_event(subjects: pd.DataFrame) -> dict[str, int | None]:
    """Participant → first analysis visit after treatment discontinuation (None: no date).

    Participants who did not discontinue, or did so after the last analysis visit's target
    date, are left out (no intercurrent event in the window).
    """
    events: dict[str, int | None] = {}
    stopped = subjects[subjects["ICEFL"].astype(bool)]
    for subject, when, visit in zip(
        stopped["SUBJID"].astype(str), stopped["ICEDT"], stopped["ICEVISIT"], strict=True
    ):
        if pd.isna(when):
            events[subject] = None
        elif pd.notna(visit):
            events[subject] = int(visit)
    return events


def _pooled_headline(measure: str, pooled: PooledEstimate) -> Headline:
    return Headline(
        measure=measure,
        estimate=pooled.estimate,
        ci_lower=pooled.ci_lower,
        ci_upper=pooled.ci_upper,
        p_value=pooled.p_value,
    )


def _pooled_row(pooled: PooledEstimate) -> dict[str, float]:
    return {
        "estimate": pooled.estimate,
        "std_error": pooled.std_error,
        "df": pooled.df,
        "t_value": pooled.t_value,
        "p_value": pooled.p_value,
        "ci_lower": pooled.ci_lower,
        "ci_upper": pooled.ci_upper,
        "within_variance": pooled.within,
        "between_variance": pooled.between,
        "imputations": float(pooled.imputations),
        "monte_carlo_error": pooled.monte_carlo_error,
    }


def multiple_imputation_analysis(
    analysis: MultipleImputationAnalysis,
    frame: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    visits: Sequence[int],
    experimental: str,
    imputations: int,
    seed: int,
    executor: Executor,
    confidence_level: float,
) -> AnalysisOutcome:
    """MI under MAR, jump to reference or copy reference; ANCOVA at the visit; Rubin's rules.

    Notes
    -----
    See :mod:`studyman.analysis.imputation`. The seed of each MI analysis is the plan seed,
    so its imputations are reproducible on any executor.
    """
    data, result, note = _impute(
        analysis,
        frame,
        subjects,
        method=analysis.method,
        deltas=(0.0,),
        visits=visits,
        experimental=experimental,
        imputations=imputations,
        seed=seed,
        executor=executor,
        confidence_level=confidence_level,
    )
    pooled = result.pooled[0.0]
    missing = int(np.isnan(data.outcome[:, data.visits.index(analysis.visit)]).sum())
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        message=note,
        deviations=_as_deviations(note),
        tables={
            "pooled": pd.DataFrame([{"visit": analysis.visit, **_pooled_row(pooled)}]),
            "per_imputation": result.per_imputation,
        },
        headline=_pooled_headline(
            f"difference in {analysis.parameter} CHG at week {analysis.visit} "
            f"(MI, {analysis.method.replace('_', ' ')})",
            pooled,
        ),
        details={
            "method": analysis.method,
            "imputations": pooled.imputations,
            "monte_carlo_error": pooled.monte_carlo_error,
            "participants": len(data.subjects),
            "missing_at_visit": missing,
            # experimental-arm participants imputed under the reference from their event on
            "reference_based_participants": int(
                (data.experimental & (data.reference_from < len(data.visits))).sum()
            )
            if analysis.method != "mar"
            else 0,
            "intercurrent_event": "dropout (visit after the last observed value)"
            if data.event_index is None
            else "treatment discontinuation from the data",
        },
    )


def tipping_point_analysis(
    analysis: TippingPointAnalysis,
    frame: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    visits: Sequence[int],
    experimental: str,
    imputations: int,
    seed: int,
    executor: Executor,
    confidence_level: float,
    alpha: float,
    sidedness: Literal["one_sided", "two_sided"] = "two_sided",
    benefit: Literal["lower", "higher"] | None = None,
) -> AnalysisOutcome:
    """Delta-adjusted MAR imputation over the plan's grid; the tipping point is the first delta
    at which the difference is no longer significant at the plan's declared *alpha*.

    Parameters
    ----------
    alpha, sidedness, benefit
        The plan's significance level and sidedness (``multiplicity``, else two-sided at
        ``1 - confidence_level``) and the favourable direction of the primary estimand. One-sided,
        "significant" means significant in the direction of benefit.

    Notes
    -----
    The same imputations serve every delta (delta added to imputed experimental-arm values at
    the analysis visit), so the grid is monotone up to Monte-Carlo error only in the data.
    """
    from studyman.analysis.multiplicity import directional_p_value, is_significant

    _, result, note = _impute(
        analysis,
        frame,
        subjects,
        method="mar",
        deltas=analysis.deltas,
        visits=visits,
        experimental=experimental,
        imputations=imputations,
        seed=seed,
        executor=executor,
        confidence_level=confidence_level,
    )
    grid = pd.DataFrame(
        [{"delta": delta, **_pooled_row(pooled)} for delta, pooled in result.pooled.items()]
    )
    headlines = [_pooled_headline("", pooled) for pooled in result.pooled.values()]
    if sidedness == "one_sided" and benefit is not None:
        grid["p_value_one_sided"] = [
            directional_p_value(h, "one_sided", benefit) for h in headlines
        ]
    significant = pd.Series(
        [is_significant(h, alpha, sidedness, benefit) for h in headlines], index=grid.index
    )
    grid["significant"] = significant
    tipping = grid.loc[~significant, "delta"]
    tipping_delta = float(tipping.iloc[0]) if bool(significant.iloc[0]) and len(tipping) else None
    first = result.pooled[analysis.deltas[0]]
    level = f"{alpha:g} {sidedness.replace('_', '-')}"
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        message=note,
        deviations=_as_deviations(note),
        tables={"grid": grid},
        headline=_pooled_headline(f"difference at delta {analysis.deltas[0]:g} (MI, MAR)", first),
        details={
            "tipping_delta": tipping_delta,
            "alpha": alpha,
            "sidedness": sidedness,
            "benefit": benefit,
            "interpretation": (
                f"not significant at delta 0 (alpha {level}): no tipping point"
                if not bool(significant.iloc[0])
                else f"significant at alpha {level} over the whole grid"
                if tipping_delta is None
                else f"significance at alpha {level} lost at delta {tipping_delta:g}"
            ),
        },
    )


# --- adverse events --------------------------------------------------------------------------


def wilson_interval(events: int, n: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (``(nan, nan)`` when ``n == 0``).

    statsmodels' ``proportion_confint(method="wilson")``; checked against R in the tests.
    """
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return math.nan, math.nan
    lower, upper = proportion_confint(events, n, alpha=1 - confidence_level, method="wilson")
    return max(0.0, float(lower)), min(1.0, float(upper))


def newcombe_interval(
    x1: int, n1: int, x2: int, n2: int, confidence_level: float = 0.95
) -> tuple[float, float, float]:
    """Risk difference p1 − p2 with Newcombe's hybrid score interval (method 10, 1998).

    statsmodels' ``confint_proportions_2indep(method="newcomb")``; ``nan`` when an arm is empty.
    """
    from statsmodels.stats.proportion import confint_proportions_2indep

    if n1 == 0 or n2 == 0:
        return math.nan, math.nan, math.nan
    lower, upper = confint_proportions_2indep(
        x1, n1, x2, n2, method="newcomb", compare="diff", alpha=1 - confidence_level
    )
    return x1 / n1 - x2 / n2, float(lower), float(upper)


def _subset(adae: pd.DataFrame, subset: str) -> pd.DataFrame:
    teae = adae[adae["TRTEMFL"] == "Y"]
    if subset == "serious":
        return teae[teae["AESER"] == "Y"]
    if subset == "aesi":
        return teae[teae["AESI"].fillna("") != ""]
    return teae


def ae_incidence(
    analysis: AEAnalysis,
    adae: pd.DataFrame,
    safety: pd.DataFrame,
    *,
    arms: tuple[str, str],
    confidence_level: float,
) -> AnalysisOutcome:
    """Participants with at least one event, by SOC and PT, per arm; risk differences (Newcombe).

    Notes
    -----
    Incidence counts a participant once per term; event counts count every event; denominators
    are the safety population per arm (``TRT01A``). Risk difference = experimental − reference
    with Newcombe's hybrid score interval.
    """
    events = _subset(adae, analysis.subset)
    events = events[events["SUBJID"].isin(set(safety["SUBJID"]))]
    denominators = {arm: int((safety["ARM"] == arm).sum()) for arm in arms}
    rows = []
    levels: list[tuple[str, str, pd.DataFrame]] = [("ANY", "ANY", events)]
    for soc, by_soc in events.groupby("AESOC", sort=True):
        levels.append((str(soc), "ANY", by_soc))
        for pt, by_pt in by_soc.groupby("AEDECOD", sort=True):
            levels.append((str(soc), str(pt), by_pt))
    experimental, reference = arms
    for soc, pt, part in levels:
        row: dict[str, Any] = {"AESOC": soc, "AEDECOD": pt}
        for arm in arms:
            in_arm = part[part["ARM"] == arm]
            row[f"n_{arm}"] = int(in_arm["SUBJID"].nunique())
            row[f"events_{arm}"] = len(in_arm)
            row[f"N_{arm}"] = denominators[arm]
            row[f"pct_{arm}"] = (
                100 * row[f"n_{arm}"] / denominators[arm] if denominators[arm] else math.nan
            )
        difference, lower, upper = newcombe_interval(
            row[f"n_{experimental}"],
            denominators[experimental],
            row[f"n_{reference}"],
            denominators[reference],
            confidence_level,
        )
        row.update(risk_difference=difference, rd_ci_lower=lower, rd_ci_upper=upper)
        rows.append(row)
    table = pd.DataFrame(rows)
    any_row = rows[0]
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        tables={"incidence": table},
        headline=Headline(
            measure="risk difference, any event",
            estimate=float(any_row["risk_difference"]),
            ci_lower=float(any_row["rd_ci_lower"]),
            ci_upper=float(any_row["rd_ci_upper"]),
            p_value=None,
        ),
        details={"subset": analysis.subset, "denominators": denominators},
    )


def ae_highest_severity(
    analysis: AEAnalysis, adae: pd.DataFrame, safety: pd.DataFrame, *, arms: tuple[str, str]
) -> AnalysisOutcome:
    """Participants by their highest severity of any treatment-emergent event, per arm.

    Notes
    -----
    Severities rank by ``AESEVN`` (the study dictionary's order, mildest first); the categories
    are ``NONE`` and the CDISC ``MILD``, ``MODERATE``, ``SEVERE``, or the study's own labels when
    its scale has others (each label observed, in rank order).
    """
    standard = {"MILD": 1, "MODERATE": 2, "SEVERE": 3}
    events = _subset(adae, analysis.subset)
    observed: dict[int, str] = {}
    if "AESEVN" in adae.columns:
        pairs = adae[["AESEVN", "AESEV"]].dropna().drop_duplicates().sort_values("AESEVN")
        observed = {
            int(n): str(label) for n, label in zip(pairs["AESEVN"], pairs["AESEV"], strict=True)
        }
    if set(observed.values()) <= set(standard):  # the CDISC terms rank as CDISC orders them
        ranks = pd.to_numeric(events["AESEV"].astype(object).map(standard), errors="coerce")
        scale = {n: label for label, n in standard.items()}
    else:
        ranks = pd.to_numeric(events["AESEVN"], errors="coerce")
        scale = observed
    worst = events.assign(rank=ranks).dropna(subset=["rank"]).groupby("SUBJID")["rank"].max()
    labels = {0: "NONE", **scale}
    highest = pd.to_numeric(safety["SUBJID"].map(worst), errors="coerce").fillna(0).astype(int)
    people = safety.assign(HIGHEST=highest.map(labels))
    rows = []
    for category in labels.values():
        row: dict[str, Any] = {"highest_severity": category}
        for arm in arms:
            n = int((people["ARM"] == arm).sum())
            count = int(((people["ARM"] == arm) & (people["HIGHEST"] == category)).sum())
            row[f"n_{arm}"] = count
            row[f"pct_{arm}"] = 100 * count / n if n else math.nan
        rows.append(row)
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        tables={"highest_severity": pd.DataFrame(rows)},
    )


def _counts_per_participant(adae: pd.DataFrame, safety: pd.DataFrame, subset: str) -> pd.DataFrame:
    events = _subset(adae, subset)
    counts = events.groupby("SUBJID").size()
    frame = safety[["SUBJID", "ARM", "EXPDAYS"]].copy()
    frame["N_AE"] = frame["SUBJID"].map(counts).fillna(0).astype(float)
    frame["ANY_AE"] = (frame["N_AE"] > 0).astype(float)
    frame["EXPDAYS"] = pd.to_numeric(frame["EXPDAYS"], errors="coerce").astype(float)
    return frame[frame["EXPDAYS"] > 0]


def ae_exposure_adjusted(
    analysis: AEAnalysis,
    adae: pd.DataFrame,
    safety: pd.DataFrame,
    *,
    arms: tuple[str, str],
    confidence_level: float,
) -> AnalysisOutcome:
    """Exposure-adjusted incidence rates (participants with an event per 100 participant-years).

    Notes
    -----
    EAIR = participants with ≥ 1 event / total exposure (days / 365.25); exposure runs from the
    first treatment to the last contact (ADSL ``EXPDAYS``), not censored at the first event.
    Rate ratio experimental / reference with a Wald CI on the log scale
    (SE = sqrt(1/x₁ + 1/x₂)).
    """
    frame = _counts_per_participant(adae, safety, analysis.subset)
    rows = []
    for arm in arms:
        part = frame[frame["ARM"] == arm]
        years = float(part["EXPDAYS"].sum()) / 365.25
        with_event = int(part["ANY_AE"].sum())
        rows.append(
            {
                "arm": arm,
                "participants": len(part),
                "with_event": with_event,
                "events": int(part["N_AE"].sum()),
                "participant_years": years,
                "eair_per_100py": 100 * with_event / years if years > 0 else math.nan,
            }
        )
    table = pd.DataFrame(rows)
    x1, x2 = int(table["with_event"].iloc[0]), int(table["with_event"].iloc[1])
    t1 = float(table["participant_years"].iloc[0])
    t2 = float(table["participant_years"].iloc[1])
    if min(x1, x2) == 0 or min(t1, t2) <= 0:
        raise AnalysisError("an arm has no participant with an event or no exposure: no rate ratio")
    ratio = (x1 / t1) / (x2 / t2)
    se = math.sqrt(1 / x1 + 1 / x2)
    z = float(stats.norm.ppf(0.5 + confidence_level / 2))
    p_value = float(2 * stats.norm.sf(abs(math.log(ratio) / se)))
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        tables={"rates": table},
        headline=Headline(
            measure="exposure-adjusted incidence rate ratio",
            estimate=ratio,
            ci_lower=ratio * math.exp(-z * se),
            ci_upper=ratio * math.exp(z * se),
            p_value=p_value,
            null_value=1.0,
        ),
    )


def _rate_ratio_outcome(
    analysis: AEAnalysis,
    coefficients: pd.DataFrame,
    measure: str,
    details: dict[str, Any],
    converged: bool,
    message: str,
    confidence_level: float,
) -> AnalysisOutcome:
    arm_term = next(name for name in coefficients.index if str(name).startswith("ARM"))
    estimate, se = (
        float(coefficients.loc[arm_term, "estimate"]),
        float(coefficients.loc[arm_term, "std_error"]),
    )
    z = float(stats.norm.ppf(0.5 + confidence_level / 2))
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok" if converged else "failed",
        message=message,
        tables={"coefficients": coefficients.reset_index(names="term")},
        headline=Headline(
            measure=measure,
            estimate=math.exp(estimate),
            ci_lower=math.exp(estimate - z * se),
            ci_upper=math.exp(estimate + z * se),
            p_value=float(2 * stats.norm.sf(abs(estimate / se))),
            null_value=1.0,
        )
        if converged
        else None,
        details=details,
    )


def ae_negative_binomial(
    analysis: AEAnalysis,
    adae: pd.DataFrame,
    safety: pd.DataFrame,
    *,
    confidence_level: float,
) -> AnalysisOutcome:
    """NB2 of treatment-emergent event counts per participant with log(exposure) offset.

    Notes
    -----
    :func:`studyman.stats.fit_negative_binomial` (dispersion estimated jointly, glmmTMB-style
    standard errors); the headline is the rate ratio experimental / reference.
    """
    from studyman.stats import fit_negative_binomial, fit_poisson

    frame = _counts_per_participant(adae, safety, analysis.subset)
    result = fit_negative_binomial(frame, "N_AE ~ ARM", exposure="EXPDAYS")
    measure, message = "rate ratio (NB2)", ""
    if not result.converged and analysis.fallback == "poisson" and "theta" in result.message:
        message = f"NB2 {result.message}; prespecified fallback: Poisson"
        result = fit_poisson(frame, "N_AE ~ ARM", exposure="EXPDAYS")
        measure = "rate ratio (Poisson, NB2 fallback)"
    if not result.converged:
        message = "; ".join(part for part in (message, result.message) if part)
    return _rate_ratio_outcome(
        analysis,
        result.coefficients,
        measure,
        {"model": result.family, "theta": result.theta, "n": result.n_observations},
        result.converged,
        message,
        confidence_level,
    )


def ae_glmm(
    analysis: AEAnalysis,
    adae: pd.DataFrame,
    safety: pd.DataFrame,
    visits: pd.DataFrame,
    *,
    confidence_level: float,
) -> AnalysisOutcome:
    """Random-intercept logistic GLMM of any treatment-emergent event per visit interval.

    Notes
    -----
    One row per participant and post-baseline visit with a date; ``ANY_AE`` = an event started
    after the previous visit and on or before this one. ``ANY_AE ~ ARM + C(VISIT)`` with a
    random intercept per participant, adaptive Gauss–Hermite quadrature
    (:func:`studyman.stats.fit_glmm`); the headline is the odds ratio.
    """
    from studyman.stats import fit_glmm

    events = _subset(adae, analysis.subset)
    members = safety[["SUBJID", "ARM"]]
    rows = visits[(visits["AVISITN"] >= 0) & visits["SUBJID"].isin(set(members["SUBJID"]))]
    rows = rows.sort_values(["SUBJID", "AVISITN"]).copy()
    rows["START"] = rows.groupby("SUBJID")["ADT"].shift(1)
    rows = rows[rows["AVISITN"] > 0].dropna(subset=["START"])
    merged = rows.merge(events[["SUBJID", "ASTDT"]], on="SUBJID", how="left")
    inside = (merged["ASTDT"] > merged["START"]) & (merged["ASTDT"] <= merged["ADT"])
    merged["HIT"] = inside.fillna(False).astype(float)
    per_visit = merged.groupby(["SUBJID", "AVISITN"], as_index=False).agg(ANY_AE=("HIT", "max"))
    per_visit = per_visit.rename(columns={"AVISITN": "VISIT"})
    per_visit = per_visit.merge(members, on="SUBJID")
    per_visit["VISIT"] = per_visit["VISIT"].astype(str)
    if per_visit["ANY_AE"].nunique() < 2:
        raise AnalysisError("no variation in adverse-event occurrence per visit: no GLMM")
    result = fit_glmm(
        per_visit,
        "ANY_AE ~ ARM + C(VISIT)",
        group="SUBJID",
        family="binomial",
        n_quadrature=analysis.quadrature_points,
    )
    return _rate_ratio_outcome(
        analysis,
        result.coefficients,
        "odds ratio per visit (GLMM)",
        {
            "random_intercept_sd": result.random_intercept_sd,
            "n_observations": result.n_observations,
            "n_groups": result.n_groups,
            "quadrature_points": result.n_quadrature,
        },
        result.converged,
        result.message,
        confidence_level,
    )


def kaplan_meier(time: Sequence[float], event: Sequence[bool]) -> pd.DataFrame:
    """Kaplan–Meier estimate at each distinct event time, with Greenwood standard errors.

    statsmodels' ``SurvfuncRight`` (product-limit estimate, Greenwood's variance).
    """
    from statsmodels.duration.survfunc import SurvfuncRight

    columns = ["time", "at_risk", "events", "survival", "std_error"]
    t = np.asarray(time, dtype=float)
    d = np.asarray(event, dtype=bool)
    if not d.any():
        return pd.DataFrame(columns=columns)
    fitted = SurvfuncRight(t, d.astype(int))
    return pd.DataFrame(
        {
            "time": np.asarray(fitted.surv_times, dtype=float),
            "at_risk": np.asarray(fitted.n_risk, dtype=int),
            "events": np.asarray(fitted.n_events, dtype=int),
            "survival": np.asarray(fitted.surv_prob, dtype=float),
            "std_error": np.asarray(fitted.surv_prob_se, dtype=float),
        },
        columns=columns,
    )


def numbers_at_risk(time: Sequence[float], days: Sequence[float]) -> list[int]:
    """Participants still at risk (time to event or censoring at least *day*) at each of *days*."""
    t = np.asarray(time, dtype=float)
    return [int((t >= day).sum()) for day in days]


def at_risk_days(longest: float) -> list[float]:
    """Days at which a Kaplan–Meier figure states the numbers at risk: whole weeks, at most 9."""
    if not math.isfinite(longest) or longest <= 0:
        return [0.0]
    step = 7 * max(1, math.ceil(longest / 7 / 8))
    return [float(day) for day in range(0, int(longest) + 1, step)]


def _log_rank(time: FloatLike, event: BoolLike, group: BoolLike) -> float:
    """Log-rank test p-value (statsmodels' ``survdiff``); ``nan`` when it is not defined."""
    from statsmodels.duration.survfunc import survdiff

    t = np.asarray(time, dtype=float)
    d = np.asarray(event, dtype=bool)
    g = np.asarray(group, dtype=bool)
    if not d.any() or g.all() or not g.any():
        return math.nan
    _, p_value = survdiff(t, d.astype(int), g.astype(int))
    return float(p_value)


FloatLike = Any
BoolLike = Any


def ae_time_to_first(
    analysis: AEAnalysis,
    adae: pd.DataFrame,
    safety: pd.DataFrame,
    *,
    arms: tuple[str, str],
) -> AnalysisOutcome:
    """Time from first treatment to the first event (Kaplan–Meier per arm, log-rank test).

    Notes
    -----
    Participants without an event are censored at their last contact (``EXPDAYS``).
    """
    events = _subset(adae, analysis.subset)
    first = events.groupby("SUBJID")["ASTDT"].min()
    frame = safety[["SUBJID", "ARM", "TRTSDT", "EXPDAYS"]].copy()
    onset = pd.to_datetime(lookup(frame["SUBJID"], first), errors="coerce")
    start = pd.to_datetime(frame["TRTSDT"], errors="coerce")
    days = ((onset - start) / pd.Timedelta(days=1)).to_numpy(dtype=float, na_value=np.nan) + 1
    exposure = pd.to_numeric(frame["EXPDAYS"], errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )
    frame["EVENT"] = onset.notna().to_numpy()
    frame["TIME"] = np.where(frame["EVENT"], days, exposure)
    frame = frame.dropna(subset=["TIME"])
    curves = []
    medians = []
    at_risk = []
    grid = at_risk_days(float(frame["TIME"].max()) if len(frame) else math.nan)
    for arm in arms:
        part = frame[frame["ARM"] == arm]
        at_risk += [
            {"arm": arm, "day": day, "at_risk": count}
            for day, count in zip(grid, numbers_at_risk(part["TIME"].tolist(), grid), strict=True)
        ]
        curve = kaplan_meier(part["TIME"].tolist(), part["EVENT"].tolist())
        curve.insert(0, "arm", arm)
        curves.append(curve)
        below = curve[curve["survival"] <= 0.5]
        medians.append(
            {
                "arm": arm,
                "participants": len(part),
                "events": int(part["EVENT"].sum()),
                "median_days": float(below["time"].iloc[0]) if len(below) else math.nan,
            }
        )
    p_value = _log_rank(frame["TIME"], frame["EVENT"], frame["ARM"] == arms[0])
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        tables={
            "kaplan_meier": pd.concat(curves, ignore_index=True),
            "summary": pd.DataFrame(medians),
            # numbers at risk under the Kaplan–Meier figure of the report
            "at_risk": pd.DataFrame(at_risk, columns=["arm", "day", "at_risk"]),
        },
        details={"log_rank_p_value": p_value},
    )
