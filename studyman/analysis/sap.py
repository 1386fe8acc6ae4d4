"""The statistical analysis plan (SAP) as typed, frozen data, read from ``analysis/sap.yaml``.

The plan declares *what* is analysed (estimands, populations, models and their prespecified
options); :mod:`studyman.analysis.run` decides *how* it runs. Unknown keys are rejected and every
error names the file and the key path (``analyses[3].fallbacks[1]``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from studyman.errors import ProtocolError
from studyman.protocol.text_files import read_yaml
from studyman.stats.multiplicity import (
    TestingGraph,
    fixed_sequence_graph,
    graph_problems,
    holm_graph,
)

__all__ = [
    "AEAnalysis",
    "Amendment",
    "Analysis",
    "AnalysisPlan",
    "Criterion",
    "Estimand",
    "Futility",
    "Hypothesis",
    "ImputationModel",
    "IntercurrentEvent",
    "Interim",
    "LoadedPlan",
    "MMRMAnalysis",
    "MultipleImputationAnalysis",
    "Multiplicity",
    "Population",
    "RandomSlopeAnalysis",
    "ResponderLogisticAnalysis",
    "ResponderRule",
    "SafetyAssessmentAnalysis",
    "SitePooling",
    "SparseData",
    "TippingPointAnalysis",
    "Treatment",
    "load_sap",
    "plan_sha256",
]

#: An ADaM PARAMCD: a rating scale's ``scoring.paramcd`` in the protocol (``HAMD17``).
Parameter = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$")]
#: The plan's analysis-visit key of a parameter: its PARAMCD in lower case (``hamd17``).
ParameterKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,7}$")]
Role = Literal["primary", "secondary", "sensitivity", "safety"]
CovarianceName = Literal[
    "unstructured",
    "toeplitz",
    "heterogeneous_toeplitz",
    "ar1",
    "heterogeneous_ar1",
    "compound_symmetry",
    "heterogeneous_compound_symmetry",
    "ante_dependence",
]
Strategy = Literal[
    "treatment_policy", "hypothetical", "composite", "while_on_treatment", "principal_stratum"
]
Covariate = Literal["STRATSEV", "SITEID"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Amendment(_Frozen):
    """A recorded change of the plan after it was locked."""

    version: str
    date: dt.date
    reason: str = Field(min_length=1)


class Futility(_Frozen):
    """A non-binding futility rule: advise stopping when conditional power is below a threshold.

    Non-binding (rpact ``bindingFutility = FALSE``): the rule does not change the efficacy
    boundaries, so the type I error holds whether or not the DSMB follows it.
    """

    rule: Literal["conditional_power"] = "conditional_power"
    under: Literal["current_trend", "design_effect"] = "current_trend"
    threshold: float = Field(gt=0, lt=1)


class Interim(_Frozen):
    """Interim looks: efficacy in a closed DSMB report only when prespecified.

    Notes
    -----
    Without ``information_fractions`` the plan has no group-sequential look (today's reference
    plan). With them, the closed DSMB report shows the Lan–DeMets boundaries
    (:mod:`studyman.stats.group_sequential`) at the information fraction reached
    (participants with the primary endpoint over ``planned_participants``, by default the
    protocol's enrolment target), the observed standardised statistic of ``analysis`` and the
    conditional power; ``alpha`` and ``sidedness`` default to the plan's significance level and
    ``benefit`` to the direction its multiplicity section declares for ``analysis``.
    """

    dsmb_efficacy: bool = False
    analysis: str | None = None
    information_fractions: tuple[float, ...] = ()
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"
    alpha: float | None = Field(default=None, gt=0, lt=0.5)
    sidedness: Literal["one_sided", "two_sided"] | None = None
    benefit: Literal["lower", "higher"] | None = None
    power: float = Field(default=0.9, gt=0, lt=1)
    planned_participants: int | None = Field(default=None, gt=1)
    futility: Futility | None = None

    @model_validator(mode="after")
    def _looks_are_a_design(self) -> Interim:
        fractions = self.information_fractions
        if not fractions:
            for name in ("analysis", "futility", "planned_participants"):
                if getattr(self, name) is not None:
                    raise _KeyedError(
                        f"interim.{name}", "needs interim looks: declare 'information_fractions'"
                    )
            return self
        if not self.dsmb_efficacy:
            raise _KeyedError(
                "interim.dsmb_efficacy",
                "interim looks show efficacy to the closed DSMB session: set it to true",
            )
        if self.analysis is None:
            raise _KeyedError("interim.analysis", "name the analysis the interim looks monitor")
        if len(fractions) < 2:
            raise _KeyedError(
                "interim.information_fractions",
                "expected at least one interim look and the final analysis (…, 1.0)",
            )
        previous = 0.0
        for index, fraction in enumerate(fractions):
            if not previous < fraction <= 1.0:
                raise _KeyedError(
                    f"interim.information_fractions[{index}]",
                    f"{fraction}: expected increasing fractions in (0, 1]",
                )
            previous = fraction
        if fractions[-1] != 1.0:
            raise _KeyedError(
                f"interim.information_fractions[{len(fractions) - 1}]",
                f"{fractions[-1]}: the last look is the final analysis, 1.0",
            )
        return self


class Treatment(_Frozen):
    """The randomised comparisons: ADSL variable, the experimental arm(s) and the reference.

    ``experimental`` is one arm label, or a list of them when the study has more than two arms;
    each experimental arm is compared with ``reference`` (pairwise, in the order listed).
    """

    variable: Literal["TRT01P", "TRT01A"] = "TRT01P"
    experimental: str | tuple[str, ...]
    reference: str

    @model_validator(mode="after")
    def _arms_are_distinct(self) -> Treatment:
        arms = self.experimental_arms
        if not arms:
            raise ValueError("'experimental' names no arm")
        if len(set(arms)) != len(arms) or self.reference in arms:
            raise ValueError(
                f"arms must be distinct: experimental {list(arms)}, reference {self.reference!r}"
            )
        return self

    @property
    def experimental_arms(self) -> tuple[str, ...]:
        """The experimental arm labels, in the order declared."""
        return (self.experimental,) if isinstance(self.experimental, str) else self.experimental

    @property
    def arms(self) -> tuple[str, ...]:
        """Every arm label of the plan: the experimental arms, then the reference."""
        return (*self.experimental_arms, self.reference)

    @property
    def comparisons(self) -> tuple[tuple[str, str], ...]:
        """(experimental, reference) for each comparison, in the order declared."""
        return tuple((arm, self.reference) for arm in self.experimental_arms)


class Criterion(_Frozen):
    """One condition on ADSL/ADQS/deviation data that a population member must meet.

    ``randomized``: randomised; ``post_baseline``: at least one non-missing post-baseline value of
    *parameter*; ``no_major_deviation``: no deviation with ``dv_major`` = yes; ``treated``: at least
    one attended CBT session or one dose taken; ``adherent``: attended at least *threshold* of
    the CBT sessions planned up to the end of the treatment period or the data cut-off, whichever
    comes first (pro rata; the dosing log is not used, so that the population is the same in
    the blinded and unblinded views).
    """

    kind: Literal["randomized", "post_baseline", "no_major_deviation", "treated", "adherent"]
    parameter: Parameter | None = None
    threshold: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _parameter_only_for_post_baseline(self) -> Criterion:
        if (self.kind == "post_baseline") != (self.parameter is not None):
            raise ValueError("'parameter' is required for post_baseline and only there")
        if (self.kind == "adherent") != (self.threshold is not None):
            raise ValueError("'threshold' is required for adherent and only there")
        return self


class Population(_Frozen):
    """An analysis population defined on the data, with its ADSL flag name."""

    label: str
    flag: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,7}$")
    criteria: tuple[Criterion, ...] = Field(min_length=1)


#: Words that describe leaving the study (missing data), not an event after randomisation that
#: affects the interpretation or existence of the outcome (ICH E9(R1), A.3.1 and A.5).
_MISSING_DATA_WORDS = re.compile(
    r"withdraw\w* (?:from|of) (?:the )?study|missing outcome|lost to follow|drop-?out",
    re.IGNORECASE,
)


class IntercurrentEvent(_Frozen):
    """An intercurrent event and the ICH E9(R1) strategy that handles it.

    Leaving the study is not an intercurrent event but the cause of missing data (ICH E9(R1),
    A.5): an event that says so is refused, and its handling belongs in the estimand's
    ``missing_data``.
    """

    event: str
    strategy: Strategy
    note: str = ""

    @model_validator(mode="after")
    def _not_missing_data(self) -> IntercurrentEvent:
        if _MISSING_DATA_WORDS.search(self.event):
            raise ValueError(
                f"{self.event!r} is missing data, not an intercurrent event (ICH E9(R1) A.5); "
                "state how such data are handled under the estimand's 'missing_data'"
            )
        return self


class Estimand(_Frozen):
    """An estimand with the five ICH E9(R1) attributes and the analyses that estimate it.

    ``missing_data`` says how outcomes missing for the estimand (withdrawal from the study, a
    missed visit, administrative censoring at the data cut) are handled by the main analysis
    and its sensitivity analyses, with the assumption made; ``rationale`` justifies the
    strategies chosen.
    """

    id: str
    label: str
    treatment: str
    population: str
    variable: str
    intercurrent_events: tuple[IntercurrentEvent, ...] = Field(min_length=1)
    summary: str
    main_analysis: str
    sensitivity_analyses: tuple[str, ...] = ()
    missing_data: str = ""
    rationale: str = ""


class ImputationModel(_Frozen):
    """The imputation model of the multiple-imputation analyses, in the plan's words.

    ``variables`` are the model's covariates besides arm and visit (each with its own
    coefficient by visit); the MI analyses must use exactly these (checked on load).
    """

    outcome: str
    variables: tuple[Literal["BASE", "STRATSEV", "SITEID"], ...]
    model: str
    draws: str
    reference_based: str
    pooling: str


class _AnalysisBase(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    role: Role
    label: str
    population: str
    estimand: str | None = None
    #: Essential: when the analysis cannot be run exactly as written (a planned visit without
    #: data, a covariate with a single level, an empty population) it fails and ``analyze``
    #: exits non-zero; otherwise it runs as far as it can and the change is a warning on the
    #: command line and at the top of the report.
    essential: bool = False


class MMRMAnalysis(_AnalysisBase):
    """MMRM of change from baseline: arm, visit, arm × visit, baseline (× visit), strata.

    Notes
    -----
    Fitted by :func:`studyman.stats.fit_mmrm`; when ``covariance`` does not converge the
    ``fallbacks`` are tried in order and the result records the structure used. ``vcov:
    empirical`` (SAS ``EMPIRICAL``, the sandwich) is the usual sensitivity analysis for a
    misspecified covariance structure; it needs ``df_method`` ``between-within`` or ``residual``.
    """

    kind: Literal["mmrm"]
    parameter: Parameter
    response: Literal["CHG", "AVAL"] = "CHG"
    baseline: Literal["BASE"] | None = "BASE"
    baseline_by_visit: bool = True
    strata: tuple[Covariate, ...] = ()
    covariance: CovarianceName = "unstructured"
    fallbacks: tuple[CovarianceName, ...] = ()
    method: Literal["reml", "ml"] = "reml"
    df_method: Literal[
        "kenward-roger", "kenward-roger-linear", "satterthwaite", "residual", "between-within"
    ] = "kenward-roger"
    vcov: Literal["model", "empirical"] = "model"
    contrast_visit: int

    def inference_text(self) -> str:
        """Which covariance of the estimates and which degrees of freedom, in words."""
        if self.df_method == "kenward-roger":
            return (
                "Kenward-Roger (1997) as SAS PROC MIXED DDFM=KR: the adjusted covariance of the "
                "fixed effects and the approximate F degrees of freedom, with first and (for "
                "structures non-linear in their parameters) second derivatives of the "
                "covariance in the structure's own parameters. For the unstructured covariance "
                "these are its elements, so it equals R mmrm's 'Kenward-Roger-Linear' (not "
                "mmrm's 'Kenward-Roger', which parametrises by the Cholesky factor)."
            )
        if self.df_method == "kenward-roger-linear":
            return (
                "Kenward-Roger without the second-derivative term (SAS DDFM=KR(LINEAR), R mmrm "
                "'Kenward-Roger-Linear')."
            )
        if self.df_method == "satterthwaite":
            return "Model-based covariance; Satterthwaite degrees of freedom (SAS DDFM=SATTERTH)."
        covariance = "sandwich (SAS EMPIRICAL)" if self.vcov == "empirical" else "model-based"
        return f"{covariance} covariance; {self.df_method} degrees of freedom."

    @model_validator(mode="after")
    def _empirical_needs_design_df(self) -> MMRMAnalysis:
        if self.vcov == "empirical" and self.df_method not in {"between-within", "residual"}:
            raise ValueError(
                f"vcov 'empirical' (the sandwich) goes with df_method 'between-within' or "
                f"'residual', not {self.df_method!r}"
            )
        return self


class ResponderRule(_Frozen):
    """Responder definition: ``percent_reduction`` ≥ threshold %, or ``at_most`` threshold."""

    kind: Literal["percent_reduction", "at_most"]
    threshold: float


class SparseData(_Frozen):
    """What a responder analysis does when events are few.

    ``firth``: Firth's penalised likelihood with profile penalised-likelihood CIs and a penalised
    likelihood-ratio test (:func:`studyman.stats.firth.fit_firth_logistic`) whenever an arm has
    fewer than ``min_events`` responders or fewer than ``min_events`` non-responders; otherwise
    maximum likelihood with Wald CIs.
    """

    method: Literal["firth"] = "firth"
    min_events: int = Field(ge=1)


class ResponderLogisticAnalysis(_AnalysisBase):
    """Logistic regression of a responder variable at one visit (missing = non-responder)."""

    kind: Literal["responder_logistic"]
    parameter: Parameter
    visit: int
    rule: ResponderRule
    baseline: Literal["BASE"] | None = "BASE"
    strata: tuple[Covariate, ...] = ()
    sparse_data: SparseData | None = None


class RandomSlopeAnalysis(_AnalysisBase):
    """Linear mixed model with random intercept and slope on time in weeks."""

    kind: Literal["random_slope"]
    parameter: Parameter
    response: Literal["CHG", "AVAL"] = "CHG"
    baseline: Literal["BASE"] | None = "BASE"
    strata: tuple[Covariate, ...] = ()


class MultipleImputationAnalysis(_AnalysisBase):
    """Multiple imputation (MAR or reference-based) then ANCOVA at one visit, Rubin's rules."""

    kind: Literal["multiple_imputation"]
    parameter: Parameter
    method: Literal["mar", "jump_to_reference", "copy_reference"]
    visit: int
    baseline: Literal["BASE"] = "BASE"
    strata: tuple[Covariate, ...] = ()
    imputations: int | None = Field(default=None, ge=2)


class TippingPointAnalysis(_AnalysisBase):
    """Delta adjustment of MAR imputations in the experimental arm over a grid of deltas."""

    kind: Literal["tipping_point"]
    parameter: Parameter
    visit: int
    baseline: Literal["BASE"] = "BASE"
    strata: tuple[Covariate, ...] = ()
    deltas: tuple[float, ...] = Field(min_length=1)
    imputations: int | None = Field(default=None, ge=2)


class AEAnalysis(_AnalysisBase):
    """An adverse-event analysis on ADAE and ADSL (treatment-emergent events, safety population)."""

    kind: Literal[
        "ae_incidence",
        "ae_highest_severity",
        "ae_exposure_adjusted",
        "ae_negative_binomial",
        "ae_glmm",
        "ae_time_to_first",
    ]
    subset: Literal["all", "serious", "aesi"] = "all"
    quadrature_points: int = Field(default=20, ge=1)
    #: NB2 only: the model used when the NB2 dispersion diverges (no overdispersion).
    fallback: Literal["poisson"] | None = None


class SafetyAssessmentAnalysis(_AnalysisBase):
    """A safety assessment by arm (:mod:`studyman.analysis.safety`), names from the protocol.

    ``cssrs``: C-SSRS in the FDA (2012) categories, post-baseline occurrence versus baseline
    and the shift table, Newcombe risk differences and Fisher's exact test; ``vital_signs``:
    change from baseline by visit of each vital sign (``method`` ``descriptive``: n, mean, SD,
    median, range per arm; ``mmrm``: also an MMRM of the change on arm, visit, arm x visit,
    baseline and baseline x visit with LS-mean differences at each visit; ``parameters``
    restricts to some of the protocol's vital signs);
    ``liver_tests``: shift tables (normal, above ULN, above 3 x ULN) and potential Hy's law
    cases; ``withdrawal_scale``: the maximum post-baseline total of the protocol's withdrawal
    scale; ``conmed_starts``: concomitant medications started on or after the day of
    randomisation, by class; ``deaths_discontinuations``: deaths and discontinuations (for an
    adverse event, of the study, of treatment), counted from the study's facts.
    """

    kind: Literal[
        "cssrs",
        "vital_signs",
        "liver_tests",
        "withdrawal_scale",
        "conmed_starts",
        "deaths_discontinuations",
    ]
    method: Literal["descriptive", "mmrm"] = "descriptive"
    parameters: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _parameters_only_for_vitals(self) -> SafetyAssessmentAnalysis:
        if self.parameters and self.kind != "vital_signs":
            raise ValueError("'parameters' applies to kind 'vital_signs' only")
        if self.method == "mmrm" and self.kind != "vital_signs":
            raise ValueError("method 'mmrm' applies to kind 'vital_signs' only")
        return self


class Hypothesis(_Frozen):
    """A null hypothesis of the confirmatory family: no difference in one analysis's headline.

    ``benefit`` is the direction of the headline that favours the experimental arm (``lower``
    for a change in a depression score, ``higher`` for an odds ratio of response); a one-sided
    test rejects only in that direction.
    """

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    analysis: str
    benefit: Literal["lower", "higher"]
    label: str = ""
    #: The experimental arm whose comparison with the reference is tested; required when the
    #: plan has more than one experimental arm.
    comparison: str | None = None


#: Analysis kinds whose headline carries the p-value of a comparison of arms.
TESTABLE_KINDS = frozenset({"mmrm", "responder_logistic", "random_slope", "multiple_imputation"})


class Multiplicity(_Frozen):
    """Familywise error control over the primary and key secondary hypotheses.

    Notes
    -----
    ``procedure: graphical`` declares the initial ``weights`` and the ``transitions`` matrix
    (Bretz et al. 2009), rows and columns in the order of ``hypotheses``; ``fixed_sequence`` and
    ``holm`` are the special cases and take no weights or transitions. ``alpha`` is the
    familywise level in the declared ``sidedness``; it must agree with the plan's
    ``confidence_level`` (``1 - level`` two-sided, ``(1 - level) / 2`` one-sided), so that every
    interval and every test of the plan speaks of the same error rate.
    """

    alpha: float = Field(gt=0, lt=0.5)
    sidedness: Literal["one_sided", "two_sided"]
    procedure: Literal["graphical", "fixed_sequence", "holm"]
    hypotheses: tuple[Hypothesis, ...] = Field(min_length=1)
    weights: tuple[float, ...] | None = None
    transitions: tuple[tuple[float, ...], ...] | None = None
    rationale: str = ""

    @model_validator(mode="after")
    def _graph_is_valid(self) -> Multiplicity:
        names = [h.id for h in self.hypotheses]
        if len(set(names)) != len(names):
            raise _KeyedError("multiplicity.hypotheses", "hypothesis ids must be unique")
        if self.procedure == "graphical":
            if self.weights is None or self.transitions is None:
                raise _KeyedError(
                    "multiplicity", "procedure 'graphical' needs 'weights' and 'transitions'"
                )
            problems = graph_problems(names, self.weights, self.transitions)
            if problems:
                first = problems[0]
                entry = re.match(r"(weights|transitions)(\[\d+\])*", first)
                key = "multiplicity" + (f".{entry.group(0)}" if entry else "")
                raise _KeyedError(key, first)
        elif self.weights is not None or self.transitions is not None:
            raise _KeyedError(
                "multiplicity",
                f"procedure {self.procedure!r} fixes its own graph; remove 'weights' and "
                "'transitions' (or use procedure 'graphical')",
            )
        return self

    def graph(self) -> TestingGraph:
        """The testing graph of the declared procedure."""
        names = [h.id for h in self.hypotheses]
        if self.procedure == "holm":
            return holm_graph(names)
        if self.procedure == "fixed_sequence":
            return fixed_sequence_graph(names)
        assert self.weights is not None
        assert self.transitions is not None
        return TestingGraph(names=tuple(names), weights=self.weights, transitions=self.transitions)


Analysis = Annotated[
    MMRMAnalysis
    | ResponderLogisticAnalysis
    | RandomSlopeAnalysis
    | MultipleImputationAnalysis
    | TippingPointAnalysis
    | AEAnalysis
    | SafetyAssessmentAnalysis,
    Field(discriminator="kind"),
]


class SitePooling(_Frozen):
    """The prespecified pooling of small sites for the site covariate (strata as randomised).

    Sites with fewer than ``min_participants`` randomised participants are pooled into one
    level named ``pool_into``; when that level itself has fewer, it joins the smallest site
    that has enough (:mod:`studyman.analysis.strata`).
    """

    min_participants: int = Field(ge=1)
    pool_into: str = Field(default="POOLED", min_length=1)


class SafetyRules(_Frozen):
    """Safety definitions every output uses (the facts layer, :mod:`studyman.facts`).

    ``treatment_emergent_from``: an adverse event is treatment-emergent when it starts on or
    after the day of randomisation (``randomisation``; evaluable in every view, blinded or not)
    or of the first study treatment (``first_treatment``).
    """

    treatment_emergent_from: Literal["randomisation", "first_treatment"] = "randomisation"


class AnalysisPlan(_Frozen):
    """The whole statistical analysis plan."""

    study: str
    title: str
    version: str
    date: dt.date
    amendments: tuple[Amendment, ...] = ()
    seed: int = Field(ge=0)
    imputations: int = Field(ge=2)
    confidence_level: float = Field(default=0.95, gt=0, lt=1)
    interim: Interim = Interim()
    treatment: Treatment
    visits: dict[ParameterKey, tuple[int, ...]]
    populations: dict[str, Population]
    safety: SafetyRules = SafetyRules()
    estimands: tuple[Estimand, ...]
    analyses: tuple[Analysis, ...] = Field(min_length=1)
    multiplicity: Multiplicity | None = None
    imputation_model: ImputationModel | None = None
    site_pooling: SitePooling | None = None

    @model_validator(mode="after")
    def _interim_resolves(self) -> AnalysisPlan:
        monitored = self.interim.analysis
        if monitored is None:
            return self
        found = next((a for a in self.analyses if a.id == monitored), None)
        if found is None:
            raise _KeyedError("interim.analysis", f"unknown analysis {monitored!r}")
        if self.interim.benefit is None and self.benefit_of(monitored) is None:
            raise _KeyedError(
                "interim.benefit",
                f"the plan declares no favourable direction for {monitored!r}: give 'benefit' "
                "(lower or higher)",
            )
        return self

    def interim_benefit(self) -> Literal["lower", "higher"] | None:
        """The favourable direction of the analysis the interim looks monitor (None: no looks)."""
        if self.interim.analysis is None:
            return None
        return self.interim.benefit or self.benefit_of(self.interim.analysis)

    def interim_significance(self) -> tuple[float, Literal["one_sided", "two_sided"]]:
        """Alpha and sidedness the interim boundaries spend (default: the plan's level)."""
        alpha, sidedness = self.significance_level()
        return self.interim.alpha or alpha, self.interim.sidedness or sidedness

    @model_validator(mode="after")
    def _references_resolve(self) -> AnalysisPlan:
        analysis_ids = [analysis.id for analysis in self.analyses]
        estimand_ids = [estimand.id for estimand in self.estimands]
        for kind, ids in (("analysis", analysis_ids), ("estimand", estimand_ids)):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} id(s): {', '.join(duplicates)}")
        for index, estimand in enumerate(self.estimands):
            where = f"estimands[{index}]"
            if estimand.population not in self.populations:
                raise _KeyedError(
                    f"{where}.population", f"unknown population {estimand.population!r}"
                )
            for name in (estimand.main_analysis, *estimand.sensitivity_analyses):
                if name not in analysis_ids:
                    raise _KeyedError(f"{where}", f"names unknown analysis {name!r}")
        for index, analysis in enumerate(self.analyses):
            where = f"analyses[{index}]"
            if analysis.population not in self.populations:
                raise _KeyedError(
                    f"{where}.population", f"unknown population {analysis.population!r}"
                )
            if analysis.estimand is not None and analysis.estimand not in estimand_ids:
                raise _KeyedError(f"{where}.estimand", f"unknown estimand {analysis.estimand!r}")
            visit = getattr(analysis, "contrast_visit", None) or getattr(analysis, "visit", None)
            parameter = getattr(analysis, "parameter", None)
            if visit is not None and parameter is not None:
                visits = self.visits.get(parameter.lower(), ())
                if visit not in visits:
                    raise _KeyedError(
                        where, f"visit {visit} is not an analysis visit of {parameter} {visits}"
                    )
        if self.multiplicity is not None:
            self._check_multiplicity(self.multiplicity)
        if self.imputation_model is not None:
            declared = set(self.imputation_model.variables) - {"BASE"}
            for index, analysis in enumerate(self.analyses):
                imputes = isinstance(analysis, MultipleImputationAnalysis | TippingPointAnalysis)
                if imputes and set(getattr(analysis, "strata", ())) != declared:
                    raise _KeyedError(
                        f"analyses[{index}].strata",
                        f"{list(getattr(analysis, 'strata', ()))} differ from the declared "
                        f"imputation model's variables {sorted(declared)} "
                        "(imputation_model.variables)",
                    )
        versions = [amendment.version for amendment in self.amendments]
        if len(set(versions)) != len(versions):
            raise ValueError("amendments: each version may be recorded once")
        return self

    def _check_multiplicity(self, multiplicity: Multiplicity) -> None:
        experimental = self.treatment.experimental_arms
        for index, hypothesis in enumerate(multiplicity.hypotheses):
            if hypothesis.comparison is None and len(experimental) > 1:
                raise _KeyedError(
                    f"multiplicity.hypotheses[{index}].comparison",
                    f"the plan compares {len(experimental)} arms with the reference; name the "
                    f"experimental arm this hypothesis tests (one of {list(experimental)})",
                )
            if hypothesis.comparison is not None and hypothesis.comparison not in experimental:
                raise _KeyedError(
                    f"multiplicity.hypotheses[{index}].comparison",
                    f"unknown experimental arm {hypothesis.comparison!r}; expected one of "
                    f"{list(experimental)}",
                )
            where = f"multiplicity.hypotheses[{index}].analysis"
            found = next((a for a in self.analyses if a.id == hypothesis.analysis), None)
            if found is None:
                raise _KeyedError(where, f"unknown analysis {hypothesis.analysis!r}")
            if found.kind not in TESTABLE_KINDS:
                raise _KeyedError(
                    where,
                    f"analysis {found.id!r} ({found.kind}) has no test of arms to adjust; "
                    f"expected one of {', '.join(sorted(TESTABLE_KINDS))}",
                )
        two_sided = round(1 - self.confidence_level, 12)
        expected = two_sided if multiplicity.sidedness == "two_sided" else two_sided / 2
        if abs(multiplicity.alpha - expected) > 1e-9:
            raise _KeyedError(
                "multiplicity.alpha",
                f"alpha {multiplicity.alpha:g} ({multiplicity.sidedness.replace('_', '-')}) "
                f"does not match confidence_level {self.confidence_level:g}; expected "
                f"{expected:g}",
            )

    def significance_level(self) -> tuple[float, Literal["one_sided", "two_sided"]]:
        """The declared significance level and sidedness (from ``multiplicity``; without it,
        two-sided at ``1 - confidence_level``)."""
        if self.multiplicity is not None:
            return self.multiplicity.alpha, self.multiplicity.sidedness
        return round(1 - self.confidence_level, 12), "two_sided"

    def benefit_of(self, analysis_id: str) -> Literal["lower", "higher"] | None:
        """The favourable direction declared for *analysis_id* (or its estimand's main
        analysis) in the multiplicity section; None when none is declared."""
        if self.multiplicity is None:
            return None
        candidates = [analysis_id]
        analysis = next((a for a in self.analyses if a.id == analysis_id), None)
        if analysis is not None and analysis.estimand is not None:
            estimand = next((e for e in self.estimands if e.id == analysis.estimand), None)
            if estimand is not None:
                candidates.append(estimand.main_analysis)
        for candidate in candidates:
            for hypothesis in self.multiplicity.hypotheses:
                if hypothesis.analysis == candidate:
                    return hypothesis.benefit
        return None

    def analysis(self, analysis_id: str) -> Analysis:
        """Return the analysis called *analysis_id*."""
        for analysis in self.analyses:
            if analysis.id == analysis_id:
                return analysis
        raise KeyError(analysis_id)


class _KeyedError(ValueError):
    """A cross-reference error that knows its key path (turned into a ProtocolError)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class LoadedPlan(BaseModel):
    """A plan together with the file it came from and the sha256 of that file's bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: AnalysisPlan
    path: str
    sha256: str


def plan_sha256(path: Path) -> str:
    """Return the sha256 (hex) of the plan file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _analysis_kinds() -> frozenset[str]:
    kinds: set[str] = set()
    for model in (
        MMRMAnalysis,
        ResponderLogisticAnalysis,
        RandomSlopeAnalysis,
        MultipleImputationAnalysis,
        TippingPointAnalysis,
        AEAnalysis,
        SafetyAssessmentAnalysis,
    ):
        kinds.update(get_args(model.model_fields["kind"].annotation))
    return frozenset(kinds)


def _key_path(location: tuple[int | str, ...]) -> str:
    kinds = _analysis_kinds()
    parts: list[str] = []
    for index, item in enumerate(location):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in kinds and index >= 1 and isinstance(location[index - 1], int):
            continue  # the discriminator tag pydantic inserts after analyses[i]
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def load_sap(path: str | Path) -> LoadedPlan:
    """Read and check an analysis plan file.

    Parameters
    ----------
    path
        The YAML plan (``analysis/sap.yaml``).

    Returns
    -------
    LoadedPlan
        The typed plan, its path and the sha256 of the file.

    Raises
    ------
    ProtocolError
        The file is missing, not YAML, or a key is unknown, missing or invalid; the message names
        the file and the key path.
    """
    file = Path(path)
    if not file.is_file():
        raise ProtocolError("analysis plan file not found", file=str(file))
    _, raw = read_yaml(file, what="analysis plan")
    if not isinstance(raw, dict):
        raise ProtocolError("expected a mapping at the top level", file=str(file))
    try:
        plan = AnalysisPlan.model_validate(raw)
    except PydanticValidationError as error:
        problems = error.errors()
        # A misspelt key is both unknown and (its right spelling) missing: name the misspelling.
        first = next((p for p in problems if p["type"] == "extra_forbidden"), problems[0])
        context = first.get("ctx", {}).get("error")
        if isinstance(context, _KeyedError):
            raise ProtocolError(context.message, file=str(file), key=context.key) from None
        key = _key_path(tuple(first["loc"])) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key (not part of the analysis plan)"
        raise ProtocolError(message, file=str(file), key=key) from None
    return LoadedPlan(plan=plan, path=str(file), sha256=plan_sha256(file))
