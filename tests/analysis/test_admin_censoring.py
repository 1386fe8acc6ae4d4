"""Administrative censoring and treatment discontinuation from the data, through the analysis.

A participant still on study whose analysis visit was not yet due at the data cut-off is not a
non-responder and is not imputed as if they had an intercurrent event; the reference-based
imputations take the event from the participant's treatment discontinuation, not from the
pattern of missing values.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.analysis.adam import AdamDatasets, choice_labels
from studyman.analysis.analyze import (
    _snapshot_tables,
    derive_for_plan,
    plan_facts,
    read_randomization,
)
from studyman.analysis.imputation import DROPOUT, ImputationData, _imputation_means
from studyman.analysis.intercurrent import treatment_discontinuation
from studyman.analysis.models import AnalysisOutcome
from studyman.analysis.run import _intercurrent_events, run_plan
from studyman.analysis.sap import AnalysisPlan, LoadedPlan, load_sap
from studyman.facts import StudyFacts, cut_tables
from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Protocol

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"
EARLY = date(2026, 9, 30)  # the protocol's data cut-off: some participants are ongoing
LATE = date(2026, 12, 31)  # every participant's week 12 has come and gone


@dataclasses.dataclass(frozen=True)
class Study:
    protocol: Protocol
    loaded: LoadedPlan
    tables: dict[str, pd.DataFrame]
    metadata: list[dict[str, str]]
    randomization: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class Cut:
    protocol: Protocol
    facts: StudyFacts
    adam: AdamDatasets


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    base = tmp_path_factory.mktemp("admin-censoring")
    protocol = load_protocol(PROTOCOL)
    # data up to the late cut; each analysis sees the snapshot as it stood at its own cut
    trial = generate_trial(protocol, n_participants=60, seed=14, data_cut=LATE)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    snapshot = import_snapshot(
        protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
    ).path
    tables, metadata, _ = _snapshot_tables(snapshot, None)
    randomization = read_randomization(
        base / "randomization.csv", choice_labels(metadata)["rand_arm"]
    )
    return Study(protocol, load_sap(SAP), tables, metadata, randomization)


def _at(study: Study, cutoff: date) -> Cut:
    reporting = study.protocol.reporting.model_copy(update={"data_cut": cutoff})
    protocol = study.protocol.model_copy(update={"reporting": reporting})
    tables = cut_tables(protocol, study.tables, cutoff)
    facts = plan_facts(study.loaded, protocol, tables, study.randomization)
    adam = derive_for_plan(
        study.loaded, tables, study.metadata, study.randomization, facts, protocol
    )
    return Cut(protocol, facts, adam)


@pytest.fixture(scope="module")
def early(study: Study) -> Cut:
    return _at(study, EARLY)


@pytest.fixture(scope="module")
def late(study: Study) -> Cut:
    return _at(study, LATE)


def _plan(study: Study, *ids: str) -> AnalysisPlan:
    analyses = tuple(a for a in study.loaded.plan.analyses if a.id in ids)
    return study.loaded.plan.model_copy(
        update={"analyses": analyses, "imputations": 5, "multiplicity": None}
    )


def _run(study: Study, adam: AdamDatasets, *ids: str) -> dict[str, AnalysisOutcome]:
    run = run_plan(_plan(study, *ids), adam, blinded=False)
    return {o.id: o for o in run.outcomes}


def _week12_pending(cut: Cut) -> set[str]:
    """Independently from the facts: randomised participants whose week 12 is not yet due."""
    visits = cut.facts.visits
    week12 = next(v.event for v in cut.protocol.visits if v.target_day == 84)
    pending = visits[(visits["event"] == week12) & visits["not_yet_due"].astype(bool)]
    return set(pending["subject"].astype(str))


def _with_value(adam: AdamDatasets, week: int) -> set[str]:
    adqs = adam.adqs
    rows = adqs[(adqs["PARAMCD"] == "HAMD17") & (adqs["AVISITN"] == week)]
    return set(rows.loc[rows["AVAL"].notna(), "SUBJID"].astype(str))


def _mitt_with_baseline(adam: AdamDatasets) -> set[str]:
    adsl = adam.adsl
    mitt = set(adsl.loc[adsl["MITTFL"] == "Y", "SUBJID"].astype(str))
    adqs = adam.adqs
    base = adqs[(adqs["PARAMCD"] == "HAMD17") & (adqs["ABLFL"] == "Y") & adqs["AVAL"].notna()]
    return mitt & set(base["SUBJID"].astype(str))


# --- ADaM ----------------------------------------------------------------------------------


def test_adsl_treatment_discontinuation_is_the_facts(early: Cut) -> None:
    adsl = early.adam.adsl.set_index("SUBJID")
    ice = treatment_discontinuation(early.facts)
    stopped = ice.index[ice["TRTDISFL"] == "Y"]
    assert len(stopped) > 0
    assert set(adsl.index[adsl["EOTSTT"] == "DISCONTINUED"]) == set(stopped)
    for subject in stopped:
        assert pd.Timestamp(adsl.loc[subject, "DCTDT"]) == pd.Timestamp(
            ice.loc[subject, "TRTDISDT"]
        )
        assert adsl.loc[subject, "DCTREAS"] == ice.loc[subject, "DCTREAS"]
    # participants not randomised have no treatment status; the others have one
    not_randomised = adsl["RANDFL"] != "Y"
    assert not_randomised.any()
    assert adsl.loc[not_randomised, "EOTSTT"].isna().all()
    assert adsl.loc[~not_randomised, "EOTSTT"].notna().all()
    # ongoing: the treatment period had not ended by the cut-off and nobody left
    ongoing = adsl[adsl["EOTSTT"] == "ONGOING"]
    assert len(ongoing) > 0, "the early cut should have participants on treatment"
    weeks = early.protocol.treatment.weeks
    ends = pd.to_datetime(ongoing["RANDDT"]) + pd.Timedelta(days=7 * weeks)
    assert (ends >= pd.Timestamp(EARLY)).all()
    assert ongoing["EOSDT"].isna().all()
    assert ongoing["DCTDT"].isna().all()


def test_adam_censored_visits_are_the_visits_not_yet_due(early: Cut, late: Cut) -> None:
    censored = early.adam.censored
    assert set(censored[censored["AVISITN"] == 12]["SUBJID"]) == _week12_pending(early)
    assert len(_week12_pending(early)) > 0
    # the numbering is ADQS's: every censored visit number is an analysis visit number
    assert set(censored["AVISITN"]) <= set(early.adam.target_days)
    assert early.adam.target_days[12] == 84
    assert early.adam.target_days[6] == 42
    # nobody who completed or left the study is censored
    adsl = early.adam.adsl.set_index("SUBJID")
    assert (adsl.loc[sorted(set(censored["SUBJID"])), "EOSDT"].isna()).all()
    assert late.adam.censored.empty


# --- composite strategy --------------------------------------------------------------------


def test_an_ongoing_participant_never_counts_as_a_non_responder(study: Study, early: Cut) -> None:
    outcomes = _run(study, early.adam, "response_logistic", "remission_logistic")
    pending = _week12_pending(early) & _mitt_with_baseline(early.adam)
    assert pending, "the early cut should leave participants not yet due for week 12"
    assert not (pending & _with_value(early.adam, 12))
    for outcome in outcomes.values():
        assert outcome.status == "ok", outcome.message
        counts = outcome.tables["responders"]
        # analysed = mITT with a baseline minus those not yet due; the censored are counted
        assert int(counts["n"].sum()) == len(_mitt_with_baseline(early.adam)) - len(pending)
        assert int(counts["administratively_censored"].sum()) == len(pending)
        assert outcome.details["administratively_censored"] == len(pending)
        assert f"{len(pending)} participant(s) still on study and not yet due" in outcome.message


def test_a_due_visit_without_a_value_is_still_a_non_responder(study: Study, late: Cut) -> None:
    # at the late cut every week 12 was due; take one participant's value away
    adqs = late.adam.adqs
    someone = sorted(_with_value(late.adam, 12) & _mitt_with_baseline(late.adam))[0]
    gone = (adqs["SUBJID"] == someone) & (adqs["AVISITN"] == 12)
    adam = dataclasses.replace(late.adam, adqs=adqs[~gone].reset_index(drop=True))
    outcome = _run(study, adam, "response_logistic")["response_logistic"]
    counts = outcome.tables["responders"]
    assert int(counts["n"].sum()) == len(_mitt_with_baseline(adam))
    assert int(counts["administratively_censored"].sum()) == 0
    before = _run(study, late.adam, "response_logistic")["response_logistic"]
    # the same participants, one responder fewer at most (now a non-responder)
    assert int(counts["n"].sum()) == int(before.tables["responders"]["n"].sum())
    assert int(counts["responders"].sum()) <= int(before.tables["responders"]["responders"].sum())


def test_moving_the_cut_off_later_turns_a_censored_visit_into_a_due_one(
    study: Study, early: Cut, late: Cut
) -> None:
    pending = _week12_pending(early)
    assert pending
    visits = late.facts.visits
    week12 = next(v.event for v in late.protocol.visits if v.target_day == 84)
    now = visits[(visits["event"] == week12) & visits["subject"].astype(str).isin(pending)]
    assert len(now) == len(pending)
    assert now["due"].astype(bool).all()
    assert not now["not_yet_due"].astype(bool).any()
    assert not (set(late.adam.censored["SUBJID"]) & pending)
    # the same participants without their week-12 value are now non-responders, not left out
    adqs = late.adam.adqs
    gone = adqs["SUBJID"].isin(pending) & (adqs["AVISITN"] == 12)
    adam = dataclasses.replace(late.adam, adqs=adqs[~gone].reset_index(drop=True))
    counts = _run(study, adam, "response_logistic")["response_logistic"].tables["responders"]
    assert int(counts["administratively_censored"].sum()) == 0
    assert int(counts["n"].sum()) == len(_mitt_with_baseline(adam))


# --- reference-based imputation ------------------------------------------------------------


def _toy(outcome: list[list[float]], experimental: list[bool]) -> ImputationData:
    n = len(outcome)
    return ImputationData(
        subjects=tuple(f"P{i}" for i in range(n)),
        visits=(1, 2, 4, 6, 8, 12),
        outcome=np.array(outcome, dtype=float),
        design=np.column_stack([np.ones(n), np.array(experimental, dtype=float)]),
        arm_column=1,
        design_names=("intercept", "arm"),
    )


NAN = float("nan")
# coefficients: reference mean 0 at every visit, experimental −10 (clearly different)
COEFFICIENTS = np.vstack([np.zeros(6), np.full(6, -10.0)])


def test_stopping_treatment_at_week_4_gives_reference_based_imputation_from_week_6(
    early: Cut,
) -> None:
    adam = early.adam
    adsl = adam.adsl
    # an experimental participant who stopped treatment on day 30 (after week 4, day 28) and
    # was still assessed at weeks 6 and 8 (retrieved dropout), with no week 12
    who = adsl[(adsl["TRT01P"] == "CBT + adjunct") & (adsl["EOTSTT"] != "DISCONTINUED")].iloc[0]
    stopped = adsl.assign(
        EOTSTT=np.where(adsl["SUBJID"] == who["SUBJID"], "DISCONTINUED", adsl["EOTSTT"]),
        DCTDT=pd.to_datetime(adsl["DCTDT"]).mask(
            adsl["SUBJID"] == who["SUBJID"], pd.Timestamp(who["RANDDT"]) + pd.Timedelta(days=30)
        ),
    )
    subjects = pd.DataFrame({"SUBJID": [str(who["SUBJID"])]})
    visits = [1, 2, 4, 6, 8, 12]
    marked = _intercurrent_events(subjects, dataclasses.replace(adam, adsl=stopped), visits)
    assert bool(marked["ICEFL"].iloc[0])
    assert marked["ICEVISIT"].iloc[0] == 6.0

    data = _toy([[1, 2, 3, 4, 5, NAN]], [True]).with_events({"P0": 6})
    assert data.dropout_index.tolist() == [5]  # the old rule: from week 12 only
    assert data.reference_from.tolist() == [3]  # the data's event: from week 6
    means = _imputation_means(data, COEFFICIENTS, "jump_to_reference")
    assert means[0].tolist() == [-10.0, -10.0, -10.0, 0.0, 0.0, 0.0]
    old = _toy([[1, 2, 3, 4, 5, NAN]], [True])
    assert _imputation_means(old, COEFFICIENTS, "jump_to_reference")[0].tolist() == [
        -10.0, -10.0, -10.0, -10.0, -10.0, 0.0,
    ]  # fmt: skip


def test_missing_values_without_an_intercurrent_event_are_imputed_under_mar() -> None:
    # P0: experimental, ongoing (week 12 not yet due), no event; P1: experimental, event
    # from week 6; P2: reference arm with an event
    data = _toy(
        [[1, 2, 3, 4, 5, NAN], [1, 2, 3, NAN, NAN, NAN], [1, 2, NAN, NAN, NAN, NAN]],
        [True, True, False],
    ).with_events({"P1": 6, "P2": 4})
    for method in ("jump_to_reference", "copy_reference"):
        means = _imputation_means(data, COEFFICIENTS, method)
        assert means[0].tolist() == [-10.0] * 6, method  # own arm: MAR
        assert means[2].tolist() == [0.0] * 6, method  # the reference arm is MAR
    assert _imputation_means(data, COEFFICIENTS, "copy_reference")[1].tolist() == [0.0] * 6
    assert _imputation_means(data, COEFFICIENTS, "jump_to_reference")[1].tolist() == [
        -10.0, -10.0, -10.0, 0.0, 0.0, 0.0,
    ]  # fmt: skip
    # without the data's events (the fallback), copy reference takes every experimental one
    fallback = dataclasses.replace(data, event_index=None)
    assert _imputation_means(fallback, COEFFICIENTS, "copy_reference")[0].tolist() == [0.0] * 6


def test_an_event_without_a_date_falls_back_to_the_dropout_rule_for_that_participant() -> None:
    data = _toy([[1, 2, NAN, 4, NAN, NAN], [1, NAN, NAN, NAN, NAN, NAN]], [True, True])
    marked = data.with_events({"P0": None})
    assert marked.event_index is not None
    assert marked.event_index.tolist() == [DROPOUT, 6]
    assert marked.reference_from.tolist() == [4, 6]  # P0: after week 6, its last value
    with pytest.raises(Exception, match="visit 5 is not among"):
        data.with_events({"P0": 5})


def test_the_imputation_analyses_take_the_event_from_the_data(study: Study, early: Cut) -> None:
    outcomes = _run(study, early.adam, "mi_j2r")
    outcome = outcomes["mi_j2r"]
    assert outcome.status == "ok", outcome.message
    assert outcome.details["intercurrent_event"] == "treatment discontinuation from the data"
    # only experimental participants with a discontinuation before week 12's target day
    adsl = early.adam.adsl
    experimental = adsl[(adsl["TRT01P"] == "CBT + adjunct") & (adsl["MITTFL"] == "Y")]
    stopped = experimental[experimental["EOTSTT"] == "DISCONTINUED"]
    before_week12 = pd.to_datetime(stopped["DCTDT"]) < pd.to_datetime(
        stopped["RANDDT"]
    ) + pd.Timedelta(days=84)
    assert outcome.details["reference_based_participants"] == int(before_week12.sum())
    # data sets without the protocol's visit days keep the old rule, and say so
    bare = dataclasses.replace(early.adam, target_days={})
    old = _run(study, bare, "mi_j2r")["mi_j2r"]
    assert old.details["intercurrent_event"] == "dropout (visit after the last observed value)"
