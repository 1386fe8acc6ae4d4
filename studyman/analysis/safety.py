"""Safety assessments of the analysis plan: C-SSRS, vital signs, liver tests, the withdrawal
scale, concomitant-medication starts, and deaths and discontinuations for adverse events.

Two halves. :func:`safety_data` turns the snapshot's tables (cut at the data cut-off, in the
unblinded view) into tidy frames whose form and field names all come from the protocol; the
analysis functions take those frames and the safety population by arm and return an
:class:`~studyman.analysis.models.AnalysisOutcome` each, so that the plan's runner writes their
tables as CSV and JSON and the analysis report shows them.

Definitions (each stated again in the outcome's ``details``):

* *baseline* is the assessment at the protocol's baseline visit (study day 0); *post-baseline*
  every scheduled assessment after it up to the data cut-off. For the liver tests, a missing
  baseline-visit sample is replaced by the screening sample (the last before randomisation).
* C-SSRS, FDA (2012) categories: suicidal ideation types 1 to 5 (the protocol lists the ideation
  fields in the order of the types), suicidal behaviour (any of the protocol's behaviour items)
  and self-injurious behaviour without suicidal intent. A participant is evaluable when at least
  one post-baseline assessment has any item answered. A participant's category at a period is
  the most severe: behaviour above ideation type 5 above type 4 ... above none.
* Comparisons: each arm against the plan's reference arm; risk difference with Newcombe's hybrid
  score interval (statsmodels, ``method="newcomb"``) and Fisher's exact test (two-sided, scipy).
* Deaths and discontinuations are the study's facts (:mod:`studyman.facts`): counted here, never
  derived again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep

from studyman.analysis.models import AnalysisOutcome, Headline, NotApplicableError
from studyman.analysis.sap import SafetyAssessmentAnalysis
from studyman.errors import AnalysisError
from studyman.facts import StudyFacts, cut_tables
from studyman.protocol.models import Protocol

__all__ = [
    "CSSRS_CATEGORY_NAMES",
    "SafetyData",
    "compare_proportions",
    "conmed_starts_analysis",
    "cssrs_analysis",
    "deaths_discontinuations_analysis",
    "liver_analysis",
    "run_safety_assessment",
    "safety_data",
    "vital_signs_analysis",
    "withdrawal_analysis",
]

_EVENT = "redcap_event_name"
_INSTANCE = "redcap_repeat_instance"

#: C-SSRS category of an assessment, from none (0) to suicidal behaviour (6).
CSSRS_CATEGORY_NAMES: tuple[str, ...] = (
    "No suicidal ideation or behaviour",
    "Suicidal ideation type 1 (wish to be dead)",
    "Suicidal ideation type 2 (non-specific active suicidal thoughts)",
    "Suicidal ideation type 3 (active ideation with method, no intent)",
    "Suicidal ideation type 4 (active ideation with some intent, no plan)",
    "Suicidal ideation type 5 (active ideation with plan and intent)",
    "Suicidal behaviour",
)


@dataclass(frozen=True)
class SafetyData:
    """Tidy frames of the safety assessments (one per assessment kind) and their labels.

    Attributes
    ----------
    frames
        ``cssrs``: ``SUBJID, EVENT, DAY, VISIT, PERIOD``, ``IDEATION_1`` ... ``IDEATION_5``,
        ``BEHAVIOUR_1`` ... and ``NSSI`` (1.0 yes, 0.0 no, NaN not answered); ``vital_signs``:
        ``SUBJID, DAY, VISIT, PERIOD, PARAMCD, AVAL``; ``liver``: ``SUBJID, SAMPLE, DAY, PERIOD,
        PARAMCD, AVAL, ULN``; ``withdrawal``: ``SUBJID, DAY, VISIT, AVAL``; ``conmeds``:
        ``SUBJID, CLASS, START, RANDDT``; ``disposition``: the facts' ``death``,
        ``discontinued_due_to_ae``, ``discontinued_study``, ``discontinued_treatment`` by
        ``SUBJID``. ``PERIOD`` is ``screening``, ``baseline`` or ``post``.
    labels
        Words for the columns and codes: ``behaviour`` (labels of ``BEHAVIOUR_i``), ``vital``
        (PARAMCD → label with unit), ``liver`` (PARAMCD → label), ``conmed_class`` (code → name),
        ``withdrawal`` (the scale's label), ``withdrawal_threshold``, ``hys_law`` (the rule).
    cutoff
        The data cut-off the frames are cut at.
    """

    frames: Mapping[str, pd.DataFrame]
    labels: Mapping[str, Any] = field(default_factory=dict)
    cutoff: date | None = None


# ----------------------------------------------------------------------------- the frames


def _yes(series: pd.Series) -> pd.Series:
    """1.0 yes, 0.0 no, NaN unanswered; any other code is not a yes (validation reports it)."""
    numbers = pd.to_numeric(series.astype("string").str.strip(), errors="coerce")
    return numbers.where(numbers.isna(), (numbers == 1).astype(float)).astype(float)


def _numbers(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series.astype("string").str.strip(), errors="coerce").astype(float)


def _visit_rows(protocol: Protocol, frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """*frame*'s rows at scheduled visits, with ``SUBJID, EVENT, DAY, VISIT, PERIOD``."""
    visits = {
        visit.event: visit
        for visit in protocol.visits
        if visit.target_day is not None and visit.kind not in {"log", "end_of_study"}
    }
    rows = frame[frame[_EVENT].isin(list(visits))].copy()
    events = rows[_EVENT].astype(str)
    days = events.map(lambda e: visits[e].target_day)
    rows.insert(0, "SUBJID", rows[key].astype(str))
    rows.insert(1, "EVENT", events)
    rows.insert(2, "DAY", days.astype(int))
    rows.insert(3, "VISIT", events.map(lambda e: visits[e].label))
    baseline_day = next((v.target_day for v in visits.values() if v.kind == "baseline"), 0)
    period = np.where(days > baseline_day, "post", np.where(days == baseline_day, "baseline", ""))
    period = np.where(days < baseline_day, "screening", period)
    rows.insert(4, "PERIOD", period)
    return rows.reset_index(drop=True)


def _label_of(protocol: Protocol, field_name: str) -> str:
    if protocol.redcap is not None:
        spec = protocol.redcap.dictionary.get(field_name)
        if spec is not None and spec.field_label:
            return str(spec.field_label)
    return field_name


def _cssrs_frame(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], key: str
) -> tuple[pd.DataFrame, list[str]]:
    spec = protocol.cssrs
    frame = tables.get(spec.since_last_form)
    behaviour_labels = [_label_of(protocol, f) for f in spec.behaviour_fields]
    ideation = [f"IDEATION_{i + 1}" for i in range(len(spec.ideation_fields))]
    behaviour = [f"BEHAVIOUR_{i + 1}" for i in range(len(spec.behaviour_fields))]
    columns = ["SUBJID", "EVENT", "DAY", "VISIT", "PERIOD", *ideation, *behaviour, "NSSI"]
    if frame is None or frame.empty or _EVENT not in frame.columns:
        return pd.DataFrame(columns=columns), behaviour_labels
    rows = _visit_rows(protocol, frame, key)
    out = rows[["SUBJID", "EVENT", "DAY", "VISIT", "PERIOD"]].copy()
    sources = [
        *zip(ideation, spec.ideation_fields, strict=True),
        *zip(behaviour, spec.behaviour_fields, strict=True),
        ("NSSI", spec.self_injury_field),
    ]
    for name, source in sources:
        out[name] = _yes(rows[source]) if source in rows.columns else np.nan
    return out, behaviour_labels


def _vital_frame(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], key: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    columns = ["SUBJID", "DAY", "VISIT", "PERIOD", "PARAMCD", "AVAL"]
    spec = getattr(protocol, "vital_signs", None)
    if spec is None:
        return pd.DataFrame(columns=columns), {}
    labels = {p.id: f"{p.label} ({p.unit})" for p in spec.parameters}
    frame = tables.get(spec.form)
    if frame is None or frame.empty or _EVENT not in frame.columns:
        return pd.DataFrame(columns=columns), labels
    rows = _visit_rows(protocol, frame, key)
    parts = [
        rows[["SUBJID", "DAY", "VISIT", "PERIOD"]].assign(
            PARAMCD=parameter.id,
            AVAL=_numbers(rows[parameter.field]) if parameter.field in rows.columns else np.nan,
        )
        for parameter in spec.parameters
    ]
    long = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return long.dropna(subset=["AVAL"]).reset_index(drop=True)[columns], labels


def _liver_frame(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], key: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    spec = protocol.liver
    columns = ["SUBJID", "SAMPLE", "DAY", "PERIOD", "PARAMCD", "AVAL", "ULN"]
    labels = {t.id: f"{t.label} ({t.unit})" for t in spec.tests}
    frame = tables.get(spec.form)
    if frame is None or frame.empty or _EVENT not in frame.columns:
        return pd.DataFrame(columns=columns), labels
    rows = _visit_rows(protocol, frame, key)
    instance = (
        rows[_INSTANCE].astype("string").fillna("")
        if _INSTANCE in rows.columns
        else pd.Series("", index=rows.index)
    )
    sample = rows["EVENT"] + "#" + instance.astype(str)
    parts = [
        pd.DataFrame(
            {
                "SUBJID": rows["SUBJID"],
                "SAMPLE": sample,
                "DAY": rows["DAY"],
                "PERIOD": rows["PERIOD"],
                "PARAMCD": test.id,
                "AVAL": _numbers(rows[test.field]) if test.field in rows.columns else np.nan,
                "ULN": float(test.uln),
            }
        )
        for test in spec.tests
    ]
    return pd.concat(parts, ignore_index=True)[columns], labels


def _hys_law_frame(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], key: str
) -> pd.DataFrame:
    """Per liver sample: the protocol's potential Hy's law rule (True, False, or NA when a value
    needed to decide is missing), :meth:`~studyman.protocol.models.Liver.is_potential_hys_law`."""
    spec = protocol.liver
    columns = ["SUBJID", "SAMPLE", "DAY", "VISIT", "PERIOD", "HYSLAW"]
    frame = tables.get(spec.form)
    if frame is None or frame.empty or _EVENT not in frame.columns:
        return pd.DataFrame(columns=columns)
    rows = _visit_rows(protocol, frame, key)
    fields = [t.field for t in spec.tests if t.field in rows.columns]
    values = rows[fields].apply(_numbers)
    verdicts = [
        spec.is_potential_hys_law(
            {f: (None if math.isnan(v) else float(v)) for f, v in zip(fields, row, strict=True)}
        )
        for row in values.itertuples(index=False, name=None)
    ]
    instance = (
        rows[_INSTANCE].astype("string").fillna("")
        if _INSTANCE in rows.columns
        else pd.Series("", index=rows.index)
    )
    out = rows[["SUBJID", "DAY", "VISIT", "PERIOD"]].assign(
        SAMPLE=(rows["EVENT"] + "#" + instance.astype(str)).to_numpy(),
        HYSLAW=pd.array(verdicts, dtype="boolean"),
    )
    return out[columns]


def _withdrawal_frame(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], key: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    columns = ["SUBJID", "DAY", "VISIT", "AVAL"]
    spec = getattr(protocol, "withdrawal", None)
    if spec is None:
        return pd.DataFrame(columns=columns), {}
    label = spec.instrument
    bands: list[tuple[str, float, float]] = []
    try:
        scoring = protocol.scoring_of(spec.instrument)
        label = scoring.label
        bands = [(band.name, float(band.min), float(band.max)) for band in scoring.bands]
    except KeyError:
        pass
    labels = {"label": label, "threshold": float(spec.aesi_threshold), "bands": bands}
    frame = tables.get(spec.instrument)
    if frame is None or frame.empty or _EVENT not in frame.columns:
        return pd.DataFrame(columns=columns), labels
    rows = _visit_rows(protocol, frame, key)
    rows = rows[rows["EVENT"].isin(list(spec.events))]
    total = (
        _numbers(rows[spec.total_field])
        if spec.total_field in rows.columns
        else pd.Series(np.nan, index=rows.index)
    )
    out = rows[["SUBJID", "DAY", "VISIT"]].assign(AVAL=total.to_numpy())
    return out.dropna(subset=["AVAL"]).reset_index(drop=True)[columns], labels


def _conmed_frame(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], facts: StudyFacts, key: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    spec = protocol.concomitant_medications
    columns = ["SUBJID", "CLASS", "START", "RANDDT"]
    names = {str(c.code): c.name for c in spec.classes}
    frame = tables.get(spec.form)
    if frame is None or frame.empty or spec.start_field not in frame.columns:
        return pd.DataFrame(columns=columns), names
    codes = (
        frame[spec.class_field].astype("string").str.strip().str.replace(r"\.0$", "", regex=True)
    )
    subjects = frame[key].astype(str)
    rand = pd.to_datetime(facts.subjects["randomisation_date"], errors="coerce")
    out = pd.DataFrame(
        {
            "SUBJID": subjects.to_numpy(),
            "CLASS": codes.map(
                lambda c: (
                    names.get(str(c), f"unknown class {c}")
                    if c is not pd.NA
                    else "no class recorded"
                )
            ).to_numpy(),
            "START": pd.to_datetime(frame[spec.start_field], errors="coerce").to_numpy(),
            "RANDDT": subjects.map(rand).to_numpy(),
        }
    )
    return out[columns], names


def safety_data(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], facts: StudyFacts
) -> SafetyData:
    """The tidy safety frames of a snapshot, cut at the facts' data cut-off.

    Parameters
    ----------
    protocol
        The study: every form and field name comes from it.
    tables
        The snapshot's typed tables, in the reader's view (the analysis reads them unblinded).
    facts
        The study's facts (:func:`studyman.facts.derive_facts`): the cut-off, the randomisation
        dates and the disposition facts.
    """
    key = protocol.study.record_id_field
    cut = cut_tables(protocol, tables, facts.cutoff)
    cssrs, behaviour = _cssrs_frame(protocol, cut, key)
    vitals, vital_labels = _vital_frame(protocol, cut, key)
    liver, liver_labels = _liver_frame(protocol, cut, key)
    hys_law = _hys_law_frame(protocol, cut, key)
    withdrawal, withdrawal_labels = _withdrawal_frame(protocol, cut, key)
    conmeds, classes = _conmed_frame(protocol, cut, facts, key)
    subjects = facts.subjects
    disposition = pd.DataFrame(
        {
            "SUBJID": subjects.index.astype(str),
            **{
                column: subjects[column].astype(bool).to_numpy()
                for column in (
                    "death",
                    "discontinued_due_to_ae",
                    "discontinued_study",
                    "discontinued_treatment",
                )
            },
        }
    )
    hys = protocol.liver.hys_law
    rule = (
        f"{' or '.join(hys.transaminases)} above {hys.transaminase_multiple:g} x ULN and "
        f"{hys.bilirubin} above {hys.bilirubin_multiple:g} x ULN, with {hys.alp} not above "
        f"{hys.alp_max_multiple:g} x ULN, in the same sample"
    )
    return SafetyData(
        frames={
            "cssrs": cssrs,
            "vital_signs": vitals,
            "liver": liver,
            "hys_law": hys_law,
            "withdrawal": withdrawal,
            "conmeds": conmeds,
            "disposition": disposition,
        },
        labels={
            "behaviour": behaviour,
            "vital": vital_labels,
            "liver": liver_labels,
            "conmed_class": classes,
            "withdrawal": withdrawal_labels,
            "hys_law": rule,
            "liver_alert_multiple": float(protocol.liver.transaminase_alert_multiple),
            "hys_law_parts": {
                "transaminases": list(hys.transaminases),
                "transaminase_multiple": float(hys.transaminase_multiple),
                "bilirubin": hys.bilirubin,
                "bilirubin_multiple": float(hys.bilirubin_multiple),
                "alp": hys.alp,
                "alp_max_multiple": float(hys.alp_max_multiple),
            },
        },
        cutoff=facts.cutoff,
    )


# ----------------------------------------------------------------------------- comparisons


def compare_proportions(
    x1: int, n1: int, x2: int, n2: int, confidence_level: float = 0.95
) -> dict[str, float]:
    """Risk difference x1/n1 − x2/n2, Newcombe hybrid score CI, Fisher exact two-sided p.

    Returns NaNs when either denominator is zero.
    """
    if n1 == 0 or n2 == 0:
        return {
            "risk_difference": math.nan,
            "rd_ci_lower": math.nan,
            "rd_ci_upper": math.nan,
            "p_fisher": math.nan,
        }
    lower, upper = confint_proportions_2indep(
        x1, n1, x2, n2, method="newcomb", compare="diff", alpha=1 - confidence_level
    )
    p = stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="two-sided").pvalue
    return {
        "risk_difference": x1 / n1 - x2 / n2,
        "rd_ci_lower": float(lower),
        "rd_ci_upper": float(upper),
        "p_fisher": float(p),
    }


def _comparison_columns(arm: str, arms: Sequence[str]) -> dict[str, str]:
    """Column names of the comparison of *arm* with the reference (plain with two arms)."""
    names = ("risk_difference", "rd_ci_lower", "rd_ci_upper", "p_fisher")
    if len(arms) == 2:
        return {name: name for name in names}
    return {name: f"{name} ({arm})" for name in names}


def _count_rows(
    label: str,
    flags: Mapping[str, pd.Series],
    arms: Sequence[str],
    confidence_level: float,
    **extra: Any,
) -> dict[str, Any]:
    """One table row: per arm n (flag true), N (flag known), %; each arm vs the reference."""
    row: dict[str, Any] = {"category": label, **extra}
    counts: dict[str, tuple[int, int]] = {}
    for arm in arms:
        known = flags[arm].dropna()
        n, total = int(known.astype(bool).sum()), len(known)
        counts[arm] = (n, total)
        row[f"n_{arm}"] = n
        row[f"N_{arm}"] = total
        row[f"pct_{arm}"] = 100 * n / total if total else math.nan
    reference = arms[-1]
    for arm in arms[:-1]:
        result = compare_proportions(*counts[arm], *counts[reference], confidence_level)
        for name, column in _comparison_columns(arm, arms).items():
            row[column] = result[name]
    return row


def _by_arm(subjects: pd.DataFrame, arms: Sequence[str]) -> dict[str, pd.Index]:
    return {
        arm: pd.Index(subjects.loc[subjects["ARM"] == arm, "SUBJID"].astype(str)) for arm in arms
    }


def _outcome(
    analysis: SafetyAssessmentAnalysis,
    tables: dict[str, pd.DataFrame],
    *,
    headline: Headline | None,
    details: dict[str, Any],
    message: str = "",
) -> AnalysisOutcome:
    return AnalysisOutcome(
        id=analysis.id,
        kind=analysis.kind,
        role=analysis.role,
        label=analysis.label,
        status="ok",
        message=message,
        tables=tables,
        headline=headline,
        details=details,
    )


def _headline(row: Mapping[str, Any], measure: str, arms: Sequence[str]) -> Headline | None:
    if len(arms) != 2 or not math.isfinite(float(row.get("risk_difference", math.nan))):
        return None
    return Headline(
        measure=measure,
        estimate=float(row["risk_difference"]),
        ci_lower=float(row["rd_ci_lower"]),
        ci_upper=float(row["rd_ci_upper"]),
        p_value=float(row["p_fisher"]),
    )


# ----------------------------------------------------------------------------- C-SSRS


def _cssrs_category(frame: pd.DataFrame, ideation: list[str], behaviour: list[str]) -> pd.Series:
    """Most severe category of each assessment (0 none ... 5 ideation type 5, 6 behaviour);
    NaN when no item is answered."""
    answered = frame[[*ideation, *behaviour]].notna().any(axis=1)
    level = pd.Series(0.0, index=frame.index)
    for index, column in enumerate(ideation, start=1):
        level = level.where(~(frame[column] == 1), float(index))
    if behaviour:
        level = level.where(
            ~(frame[behaviour] == 1).any(axis=1), float(len(CSSRS_CATEGORY_NAMES) - 1)
        )
    return level.where(answered)


def cssrs_analysis(
    analysis: SafetyAssessmentAnalysis,
    cssrs: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    arms: Sequence[str],
    behaviour_labels: Sequence[str] = (),
    confidence_level: float = 0.95,
) -> AnalysisOutcome:
    """C-SSRS in the FDA (2012) categories: post-baseline occurrence and shift from baseline.

    Parameters
    ----------
    cssrs
        :attr:`SafetyData.frames` ``cssrs``.
    subjects
        The analysis population: ``SUBJID, ARM``.
    arms
        Arms in report order, the reference last (every other arm is compared with it).

    Notes
    -----
    ``occurrence``: per category, participants with at least one post-baseline occurrence among
    those evaluable (at least one post-baseline assessment with an item answered), with the
    same categories at baseline; emergence (post-baseline ideation or behaviour without any at
    baseline) and worsening (a post-baseline category above the baseline one) among those
    assessed at both. ``shift``: baseline category by worst post-baseline category, per arm.
    Headline: risk difference of any post-baseline suicidal ideation or behaviour.
    """
    ideation = sorted(
        (c for c in cssrs.columns if c.startswith("IDEATION_")), key=lambda c: int(c.split("_")[1])
    )
    behaviour = sorted(
        (c for c in cssrs.columns if c.startswith("BEHAVIOUR_")), key=lambda c: int(c.split("_")[1])
    )
    if len(ideation) != 5:
        raise AnalysisError(
            f"C-SSRS: the protocol lists {len(ideation)} ideation fields; the FDA categories "
            "need the five ideation types in order (cssrs.ideation_fields)"
        )
    members = _by_arm(subjects, arms)
    everyone = pd.Index(subjects["SUBJID"].astype(str))
    data = cssrs[cssrs["SUBJID"].astype(str).isin(everyone)].copy()
    data["CATEGORY"] = _cssrs_category(data, ideation, behaviour)
    data = data[data["CATEGORY"].notna()]
    post = data[data["PERIOD"] == "post"]
    base = data[data["PERIOD"] == "baseline"]
    behaviour_code = float(len(CSSRS_CATEGORY_NAMES) - 1)

    def per_subject(rows: pd.DataFrame, column: str | None = None, test: Any = None) -> pd.Series:
        """1.0/0.0 per participant with rows (NaN elsewhere), whether any row meets *test*."""
        if rows.empty:
            return pd.Series(dtype=float)
        values = test(rows) if test is not None else rows[column] == 1
        return values.groupby(rows["SUBJID"].astype(str)).any().astype(float)

    categories: list[tuple[str, Any]] = [
        ("Suicidal ideation (types 1-5)", lambda r: (r[ideation] == 1).any(axis=1)),
        *[
            (CSSRS_CATEGORY_NAMES[i + 1], (lambda c: lambda r: r[c] == 1)(column))
            for i, column in enumerate(ideation)
        ],
        ("Suicidal behaviour", lambda r: r["CATEGORY"] == behaviour_code),
        *[
            (f"Suicidal behaviour: {label}", (lambda c: lambda r: r[c] == 1)(column))
            for column, label in zip(behaviour, behaviour_labels or behaviour, strict=False)
        ],
        ("Suicidal ideation or behaviour", lambda r: r["CATEGORY"] >= 1),
        ("Self-injurious behaviour without suicidal intent", lambda r: r["NSSI"] == 1),
    ]
    rows: list[dict[str, Any]] = []
    for period, frame in (("post-baseline", post), ("baseline", base)):
        for label, test in categories:
            flags = per_subject(frame, test=test)
            by_arm = {arm: flags.reindex(members[arm]) for arm in arms}
            rows.append(_count_rows(label, by_arm, arms, confidence_level, period=period))
    worst_post = post.groupby(post["SUBJID"].astype(str))["CATEGORY"].max()
    worst_base = base.groupby(base["SUBJID"].astype(str))["CATEGORY"].max()
    both = worst_post.index.intersection(worst_base.index)
    none_at_base = both[worst_base.reindex(both) == 0]
    no_behaviour_at_base = both[worst_base.reindex(both) < behaviour_code]
    derived = [
        (
            "Emergent suicidal ideation or behaviour (none at baseline)",
            (worst_post.reindex(none_at_base) >= 1).astype(float),
        ),
        (
            "Emergent suicidal behaviour (no behaviour at baseline)",
            (worst_post.reindex(no_behaviour_at_base) == behaviour_code).astype(float),
        ),
        (
            "Worsening (most severe post-baseline category above baseline)",
            (worst_post.reindex(both) > worst_base.reindex(both)).astype(float),
        ),
    ]
    for label, flags in derived:
        by_arm = {arm: flags.reindex(members[arm]) for arm in arms}
        rows.append(
            _count_rows(label, by_arm, arms, confidence_level, period="change from baseline")
        )
    occurrence = pd.DataFrame(rows)
    occurrence.insert(1, "period", occurrence.pop("period"))
    shift_rows: list[dict[str, Any]] = []
    not_assessed = "Not assessed"
    names = [*CSSRS_CATEGORY_NAMES, not_assessed]
    for arm in arms:
        ids = members[arm]
        before = worst_base.reindex(ids).map(
            lambda v: CSSRS_CATEGORY_NAMES[int(v)] if v == v else not_assessed
        )
        after = worst_post.reindex(ids).map(
            lambda v: CSSRS_CATEGORY_NAMES[int(v)] if v == v else not_assessed
        )
        table = pd.crosstab(before, after).reindex(index=names, columns=names, fill_value=0)
        for i, name in enumerate(names):
            shift_rows.append(
                {
                    "arm": arm,
                    "baseline": name,
                    **{c: int(table.to_numpy()[i, j]) for j, c in enumerate(names)},
                }
            )
    shift = pd.DataFrame(shift_rows)
    any_row = next(
        r
        for r in rows
        if r["category"] == "Suicidal ideation or behaviour" and r["period"] == "post-baseline"
    )
    return _outcome(
        analysis,
        {"occurrence": occurrence, "shift": shift},
        headline=_headline(
            any_row, "risk difference, post-baseline suicidal ideation or behaviour", arms
        ),
        details={
            "evaluable": {arm: int(any_row[f"N_{arm}"]) for arm in arms},
            "baseline": "the C-SSRS at the baseline visit (study day 0)",
            "post_baseline": "every scheduled C-SSRS after baseline up to the data cut-off",
            "interval": "Newcombe hybrid score (statsmodels method 'newcomb')",
            "test": "Fisher's exact test, two-sided (scipy)",
            "reference_arm": arms[-1],
        },
    )


# ----------------------------------------------------------------------------- vital signs


def _describe(values: pd.Series) -> dict[str, float]:
    numbers = values.dropna().astype(float)
    if numbers.empty:
        return {
            "n": 0,
            "mean": math.nan,
            "sd": math.nan,
            "median": math.nan,
            "min": math.nan,
            "max": math.nan,
        }
    return {
        "n": len(numbers),
        "mean": float(numbers.mean()),
        "sd": float(numbers.std(ddof=1)) if len(numbers) > 1 else math.nan,
        "median": float(numbers.median()),
        "min": float(numbers.min()),
        "max": float(numbers.max()),
    }


def vital_signs_analysis(
    analysis: SafetyAssessmentAnalysis,
    vitals: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    arms: Sequence[str],
    labels: Mapping[str, str],
    confidence_level: float = 0.95,
) -> AnalysisOutcome:
    """Vital signs and weight: baseline value and change from baseline by visit and arm.

    Returns one table per measurement, ``change_<paramcd>``.

    Notes
    -----
    Descriptive (the plan's ``method``): n, mean, SD, median, minimum and maximum of the value at
    baseline and of the change from baseline (value minus the baseline-visit value) at every
    post-baseline visit, per arm; participants without a baseline value have no change.
    """
    wanted = list(analysis.parameters) or list(labels)
    unknown = [p for p in wanted if p not in labels]
    if unknown:
        raise AnalysisError(
            f"vital sign(s) {', '.join(unknown)} are not declared in the protocol "
            f"(vital_signs.parameters: {', '.join(labels) or 'none'})"
        )
    if not wanted:
        raise NotApplicableError("the protocol declares no vital signs (vital_signs)")
    arm_of = subjects.set_index(subjects["SUBJID"].astype(str))["ARM"]
    data = vitals[vitals["SUBJID"].astype(str).isin(arm_of.index)].copy()
    if not data["PARAMCD"].isin(wanted).any():
        raise AnalysisError(
            f"no value of {', '.join(wanted)} in population {analysis.population!r} "
            "(vital_signs.form and its fields)"
        )
    data["ARM"] = data["SUBJID"].astype(str).map(arm_of)
    base = (
        data[data["PERIOD"] == "baseline"]
        .drop_duplicates(["SUBJID", "PARAMCD"])
        .set_index(["SUBJID", "PARAMCD"])["AVAL"]
    )
    keys = pd.MultiIndex.from_frame(data[["SUBJID", "PARAMCD"]])
    data["BASE"] = base.reindex(keys).to_numpy()
    data["CHG"] = data["AVAL"] - data["BASE"]
    rows: list[dict[str, Any]] = []
    for parameter in wanted:
        part = data[data["PARAMCD"] == parameter]
        visits = part[part["PERIOD"].isin(["baseline", "post"])][["DAY", "VISIT"]]
        for day, visit in visits.drop_duplicates().sort_values("DAY").itertuples(index=False):
            at = part[part["DAY"] == day]
            for arm in arms:
                in_arm = at[at["ARM"] == arm]
                is_base = bool((in_arm["PERIOD"] == "baseline").all()) if len(in_arm) else day == 0
                column = "AVAL" if is_base else "CHG"
                stats_row = _describe(in_arm[column])
                rows.append(
                    {
                        "PARAMCD": parameter,
                        "parameter": labels[parameter],
                        "visit": visit,
                        "day": int(day),
                        "arm": arm,
                        "statistic": "value at baseline" if is_base else "change from baseline",
                        **stats_row,
                    }
                )
    table = pd.DataFrame(rows)
    # one table per measurement, so that the report shows each whole
    tables = {
        f"change_{parameter.lower()}": table[table["PARAMCD"] == parameter].reset_index(drop=True)
        for parameter in wanted
    }
    notes: list[str] = []
    details: dict[str, Any] = {
        "method": "descriptive (n, mean, SD, median, range per arm and visit)",
        "baseline": "the value at the baseline visit (study day 0)",
        "parameters": wanted,
    }
    if analysis.method == "mmrm":
        details["method"] += "; MMRM of the change from baseline"
        details["formula"] = _VITAL_MMRM_FORMULA
        for parameter in wanted:
            post = data[(data["PARAMCD"] == parameter) & (data["PERIOD"] == "post")]
            try:
                tables[f"mmrm_{parameter.lower()}"] = _vital_mmrm(
                    post, arms, confidence_level
                ).assign(PARAMCD=parameter)
            except (AnalysisError, ArithmeticError, ValueError, np.linalg.LinAlgError) as error:
                notes.append(f"{parameter}: MMRM not fitted ({error})")
    return _outcome(analysis, tables, headline=None, details=details, message="; ".join(notes))


_VITAL_MMRM_FORMULA = "CHG ~ ARM + VISIT + ARM:VISIT + BASE + BASE:VISIT"


def _vital_mmrm(post: pd.DataFrame, arms: Sequence[str], confidence_level: float) -> pd.DataFrame:
    """LS-mean differences (each arm minus the reference) of the change at each visit from an
    MMRM (unstructured covariance, falling back to heterogeneous Toeplitz, AR(1), compound
    symmetry; REML; Kenward-Roger), as the plan's efficacy MMRMs."""
    from studyman.stats import fit_mmrm

    frame = post.dropna(subset=["CHG", "BASE"]).copy()
    days = sorted(int(d) for d in frame["DAY"].unique())
    if len(days) < 1 or frame.empty:
        raise AnalysisError("no post-baseline change")
    labels = dict(zip(frame["DAY"].astype(int), frame["VISIT"], strict=False))
    frame["VISIT"] = frame["DAY"].astype(int).astype(pd.CategoricalDtype(days))
    frame["ARM"] = frame["ARM"].astype(pd.CategoricalDtype([arms[-1], *arms[:-1]]))
    frame["SUBJID"] = frame["SUBJID"].astype(str)
    result = fit_mmrm(
        frame[["SUBJID", "ARM", "VISIT", "CHG", "BASE"]],
        _VITAL_MMRM_FORMULA,
        subject="SUBJID",
        visit="VISIT",
        covariance="unstructured",
        fallbacks=("heterogeneous-toeplitz", "ar1", "compound-symmetry"),
        df_method="kenward-roger",
    )
    contrasts = result.lsmeans_contrasts("ARM", level=confidence_level)
    contrasts = contrasts.rename(columns={"visit": "day"})
    contrasts.insert(1, "visit", contrasts["day"].map(lambda d: labels.get(int(d), "")))
    contrasts["covariance_structure"] = result.covariance_structure
    return contrasts.reset_index(drop=True)


# ----------------------------------------------------------------------------- liver tests

_LIVER_CATEGORIES = ("Normal (at most ULN)", "Above ULN", "Above {m:g} x ULN")


def liver_analysis(
    analysis: SafetyAssessmentAnalysis,
    liver: pd.DataFrame,
    hys_law: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    arms: Sequence[str],
    labels: Mapping[str, Any],
    multiple: float,
    confidence_level: float,
) -> AnalysisOutcome:
    """Liver tests: shift from baseline to the worst post-baseline category, Hy's law cases.

    Returns ``summary``, one shift table per test (``shift_<id>``) and ``hys_law_cases``.

    Notes
    -----
    Categories of a value: at most ULN, above ULN, above *multiple* x ULN (the protocol's
    transaminase alert multiple). Baseline: the baseline-visit sample, else the screening one.
    Worst post-baseline: the highest multiple of ULN after baseline up to the data cut-off.
    Potential Hy's law: a post-baseline sample that meets the protocol's rule; ``cases`` lists
    them (participant, visit, day).
    """
    names = [_LIVER_CATEGORIES[0], _LIVER_CATEGORIES[1], _LIVER_CATEGORIES[2].format(m=multiple)]
    missing, not_assessed = "Missing", "Not assessed"
    arm_of = subjects.set_index(subjects["SUBJID"].astype(str))["ARM"]
    data = liver[liver["SUBJID"].astype(str).isin(arm_of.index)].dropna(subset=["AVAL"]).copy()
    data["RATIO"] = data["AVAL"] / data["ULN"]

    def category(ratio: float) -> str:
        if ratio != ratio:
            return ""
        return names[2] if ratio > multiple else names[1] if ratio > 1 else names[0]

    shift_rows: list[dict[str, Any]] = []
    summary_rows: list[dict[str, Any]] = []
    members = _by_arm(subjects, arms)
    for parameter, label in labels["liver"].items():
        part = data[data["PARAMCD"] == parameter]
        post = part[part["PERIOD"] == "post"].groupby("SUBJID")["RATIO"].max()
        baseline_rows = part[part["PERIOD"] == "baseline"].groupby("SUBJID")["RATIO"].last()
        screening_rows = part[part["PERIOD"] == "screening"].groupby("SUBJID")["RATIO"].last()
        base = baseline_rows.combine_first(screening_rows)
        for arm in arms:
            ids = members[arm]
            before = base.reindex(ids).map(category).replace("", missing)
            after = post.reindex(ids).map(category).replace("", not_assessed)
            table = pd.crosstab(before, after).reindex(
                index=[*names, missing], columns=[*names, not_assessed], fill_value=0
            )
            for row_name in table.index:
                shift_rows.append(
                    {
                        "PARAMCD": parameter,
                        "test": label,
                        "arm": arm,
                        "baseline": row_name,
                        **{c: int(table.loc[row_name, c]) for c in table.columns},
                    }
                )
        for threshold, text in ((1.0, names[1]), (multiple, names[2])):
            flags = {
                arm: (post.reindex(members[arm]) > threshold)
                .where(post.reindex(members[arm]).notna())
                .astype(float)
                for arm in arms
            }
            summary_rows.append(
                _count_rows(
                    f"{label}: post-baseline {text[0].lower()}{text[1:]}",
                    flags,
                    arms,
                    confidence_level,
                )
            )
    cases = hys_law[
        hys_law["SUBJID"].astype(str).isin(arm_of.index)
        & (hys_law["PERIOD"] == "post")
        & hys_law["HYSLAW"].fillna(False).astype(bool)
    ]
    cases = (
        cases.assign(ARM=cases["SUBJID"].astype(str).map(arm_of))[["SUBJID", "ARM", "VISIT", "DAY"]]
        .sort_values(["ARM", "SUBJID", "DAY"])
        .reset_index(drop=True)
    )
    assessed = hys_law[
        hys_law["SUBJID"].astype(str).isin(arm_of.index) & (hys_law["PERIOD"] == "post")
    ]
    any_case = (
        assessed.groupby(assessed["SUBJID"].astype(str))["HYSLAW"]
        .apply(lambda v: bool(v.fillna(False).any()))
        .astype(float)
    )
    summary_rows.append(
        _count_rows(
            "Potential Hy's law case (post-baseline)",
            {arm: any_case.reindex(members[arm]) for arm in arms},
            arms,
            confidence_level,
        )
    )
    return _outcome(
        analysis,
        {
            "summary": pd.DataFrame(summary_rows),
            **{
                f"shift_{str(parameter).lower()}": part.reset_index(drop=True)
                for parameter, part in pd.DataFrame(shift_rows).groupby("PARAMCD", sort=False)
            },
            "hys_law_cases": cases,
        },
        headline=None,
        details={
            "categories": names,
            "baseline": "the baseline-visit sample, else the screening sample",
            "hys_law": labels["hys_law"],
            "hys_law_cases": {arm: int((cases["ARM"] == arm).sum()) for arm in arms},
        },
    )


# ----------------------------------------------------------------------------- withdrawal scale


def withdrawal_analysis(
    analysis: SafetyAssessmentAnalysis,
    withdrawal: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    arms: Sequence[str],
    labels: Mapping[str, Any],
    confidence_level: float,
) -> AnalysisOutcome:
    """Maximum post-baseline total of the withdrawal scale per participant, by arm.

    Notes
    -----
    The protocol's withdrawal events (taper and follow-up) up to the data cut-off. ``maximum``:
    n, mean, SD, median, range of each participant's maximum; ``bands``: participants by the
    scale's band of their maximum, and those at or above the protocol's AESI threshold, with
    the risk difference (Newcombe) and Fisher's exact test.
    """
    if not labels:
        raise NotApplicableError("the protocol declares no withdrawal scale (withdrawal)")
    arm_of = subjects.set_index(subjects["SUBJID"].astype(str))["ARM"]
    data = withdrawal[withdrawal["SUBJID"].astype(str).isin(arm_of.index)]
    maximum = data.groupby(data["SUBJID"].astype(str))["AVAL"].max()
    members = _by_arm(subjects, arms)
    described = [{"arm": arm, **_describe(maximum.reindex(members[arm]))} for arm in arms]
    rows: list[dict[str, Any]] = []
    for name, low, high in labels.get("bands", []):
        flags = {
            arm: ((maximum.reindex(members[arm]) >= low) & (maximum.reindex(members[arm]) <= high))
            .where(maximum.reindex(members[arm]).notna())
            .astype(float)
            for arm in arms
        }
        rows.append(
            _count_rows(f"Maximum {name} ({low:g}-{high:g})", flags, arms, confidence_level)
        )
    threshold = float(labels["threshold"])
    flags = {
        arm: (maximum.reindex(members[arm]) >= threshold)
        .where(maximum.reindex(members[arm]).notna())
        .astype(float)
        for arm in arms
    }
    rows.append(
        _count_rows(
            f"Maximum at or above {threshold:g} (AESI threshold)", flags, arms, confidence_level
        )
    )
    return _outcome(
        analysis,
        {"maximum": pd.DataFrame(described), "bands": pd.DataFrame(rows)},
        headline=None,
        details={"scale": labels["label"], "aesi_threshold": threshold},
    )


# ----------------------------------------------------------------------------- medications


def conmed_starts_analysis(
    analysis: SafetyAssessmentAnalysis,
    conmeds: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    arms: Sequence[str],
    classes: Mapping[str, str],
    confidence_level: float,
) -> AnalysisOutcome:
    """Participants who started a concomitant medication on or after the day of randomisation,
    by class and arm (denominator: the population in the arm)."""
    arm_of = subjects.set_index(subjects["SUBJID"].astype(str))["ARM"]
    data = conmeds[conmeds["SUBJID"].astype(str).isin(arm_of.index)]
    started = data[
        data["START"].notna() & data["RANDDT"].notna() & (data["START"] >= data["RANDDT"])
    ]
    members = _by_arm(subjects, arms)
    order = [*classes.values(), *sorted(set(started["CLASS"]) - set(classes.values()))]
    rows: list[dict[str, Any]] = []
    for label, part in (
        ("Any class", started),
        *((c, started[started["CLASS"] == c]) for c in order),
    ):
        who = set(part["SUBJID"].astype(str))
        flags = {
            arm: pd.Series([float(s in who) for s in members[arm]], index=members[arm], dtype=float)
            for arm in arms
        }
        row = _count_rows(label, flags, arms, confidence_level)
        for arm in arms:
            row[f"starts_{arm}"] = int(part["SUBJID"].astype(str).isin(members[arm]).sum())
        rows.append(row)
    return _outcome(
        analysis,
        {"starts_by_class": pd.DataFrame(rows)},
        headline=None,
        details={
            "definition": "a medication whose start date is on or after the day of randomisation "
            "and on or before the data cut-off",
        },
    )


# ----------------------------------------------------------------------------- disposition


_DISPOSITION_ROWS = (
    ("death", "Deaths"),
    ("discontinued_due_to_ae", "Discontinued the study due to an adverse event"),
    ("discontinued_study", "Discontinued the study (any reason)"),
    ("discontinued_treatment", "Discontinued treatment (left before the end of treatment)"),
)


def deaths_discontinuations_analysis(
    analysis: SafetyAssessmentAnalysis,
    disposition: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    arms: Sequence[str],
    confidence_level: float,
) -> AnalysisOutcome:
    """Deaths and discontinuations by arm, counted from the study's facts (not derived here)."""
    facts = disposition.set_index(disposition["SUBJID"].astype(str))
    members = _by_arm(subjects, arms)
    rows = []
    for column, label in _DISPOSITION_ROWS:
        flags = {
            arm: facts[column].reindex(members[arm]).fillna(False).astype(float) for arm in arms
        }
        rows.append(_count_rows(label, flags, arms, confidence_level))
    return _outcome(
        analysis,
        {"disposition": pd.DataFrame(rows)},
        headline=None,
        details={
            "source": "the study's facts (studyman.facts): death, discontinued_due_to_ae, "
            "discontinued_study, discontinued_treatment"
        },
    )


# ----------------------------------------------------------------------------- dispatch


def run_safety_assessment(
    analysis: SafetyAssessmentAnalysis,
    data: SafetyData,
    subjects: pd.DataFrame,
    *,
    arms: Sequence[str],
    confidence_level: float,
) -> AnalysisOutcome:
    """Run the safety assessment *analysis* on *data* for the population *subjects* (``SUBJID,
    ARM``); *arms* in report order, the reference last."""
    if subjects.empty:
        raise AnalysisError(f"population {analysis.population!r} has nobody with an arm")
    frames, labels = data.frames, data.labels
    if analysis.kind == "cssrs":
        return cssrs_analysis(
            analysis,
            frames["cssrs"],
            subjects,
            arms=arms,
            behaviour_labels=labels.get("behaviour", ()),
            confidence_level=confidence_level,
        )
    if analysis.kind == "vital_signs":
        return vital_signs_analysis(
            analysis,
            frames["vital_signs"],
            subjects,
            arms=arms,
            labels=labels.get("vital", {}),
            confidence_level=confidence_level,
        )
    if analysis.kind == "liver_tests":
        return liver_analysis(
            analysis,
            frames["liver"],
            frames["hys_law"],
            subjects,
            arms=arms,
            labels=labels,
            multiple=float(labels.get("liver_alert_multiple", 3.0)),
            confidence_level=confidence_level,
        )
    if analysis.kind == "withdrawal_scale":
        return withdrawal_analysis(
            analysis,
            frames["withdrawal"],
            subjects,
            arms=arms,
            labels=labels.get("withdrawal", {}),
            confidence_level=confidence_level,
        )
    if analysis.kind == "conmed_starts":
        return conmed_starts_analysis(
            analysis,
            frames["conmeds"],
            subjects,
            arms=arms,
            classes=labels.get("conmed_class", {}),
            confidence_level=confidence_level,
        )
    return deaths_discontinuations_analysis(
        analysis, frames["disposition"], subjects, arms=arms, confidence_level=confidence_level
    )
