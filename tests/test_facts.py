"""The facts layer (studyman.facts): one derivation of each study fact, attacked."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from studyman.facts import (
    DEFAULT_RULES,
    HEADLINE_KEYS,
    StudyFacts,
    derive_facts,
    rule_texts,
    write_facts_json,
)
from studyman.protocol import Protocol, load_protocol
from studyman.protocol.reference import default_protocol_path
from studyman.sources.blinding import blind_tables
from studyman.sources.offline import import_snapshot
from studyman.sources.snapshot import read_snapshot
from studyman.synthetic import generate_trial, write_trial

CUT = date(2026, 9, 30)


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


@pytest.fixture(scope="module")
def study(
    protocol: Protocol, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, pd.DataFrame], pd.Series]:
    """Typed tables of a generated trial (all forms) and its arms."""
    out = tmp_path_factory.mktemp("facts")
    trial = generate_trial(protocol, n_participants=160, seed=5)
    files = write_trial(trial, out / "generated")
    dictionary = out / "dictionary.csv"
    assert protocol.redcap is not None
    dictionary.write_text(protocol.redcap.dictionary.to_csv_text(), encoding="utf-8")
    result = import_snapshot(protocol, files["records"], dictionary, out / "snapshots")
    arms = trial.randomization.set_index("record_id")["rand_arm"].astype(str)
    return dict(read_snapshot(result.path).tables), arms


def _facts(protocol: Protocol, tables: dict[str, pd.DataFrame], **options: object) -> StudyFacts:
    return derive_facts(protocol, tables, cutoff=CUT, **options)  # type: ignore[arg-type]


def test_counts_by_arm_sum_to_the_pooled_count(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, arms = study
    headline = _facts(protocol, tables, arms=arms).headline()
    by_arm = {k: v for k, v in headline.items() if k.endswith("_by_arm")}
    assert len(by_arm) >= 10
    for key, values in by_arm.items():
        assert sum(values.values()) == headline[key.removesuffix("_by_arm")], key


def test_the_blinded_view_agrees_on_every_fact_it_can_see(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, arms = study
    unblinded = _facts(protocol, tables, arms=arms).headline()
    blinded = _facts(protocol, blind_tables(tables, protocol)).headline()
    assert not any(key.endswith("_by_arm") for key in blinded)
    # doses are hidden from blinded readers: exposure can only differ where doses were taken
    # without any CBT session
    view_dependent = {"treated", "safety_population", "teae_participants", "teae_events"}
    view_dependent |= {"serious_ae_participants"}
    for key in blinded:
        if key not in view_dependent:
            assert blinded[key] == unblinded[key], key
    assert blinded["safety_population"] <= unblinded["safety_population"]


def test_populations_follow_the_plan_and_the_declared_major_categories(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    facts = _facts(protocol, tables)
    subjects = facts.subjects
    assert set(facts.members("pp")) <= set(facts.members("mitt"))
    assert set(facts.members("mitt")) <= set(facts.members("itt"))
    # make one mITT participant's deviation of a category the protocol declares major
    major = next(c for c in protocol.deviations.categories if c.major)
    victim = str(facts.members("mitt")[0])
    deviations = tables[protocol.deviations.form].copy()
    row = deviations.iloc[[0]].copy()
    row[protocol.study.record_id_field] = victim
    row[protocol.deviations.category_field] = str(major.code)
    row[protocol.deviations.major_field] = 0  # the site said minor; the category is major
    edited = {**tables, protocol.deviations.form: pd.concat([deviations, row])}
    again = _facts(protocol, edited)
    assert victim not in set(again.members("pp"))
    assert victim in set(again.members("mitt"))
    assert again.headline()["major_deviations"] == facts.headline()["major_deviations"] + 1
    assert subjects.loc[victim, "population_mitt"]


def test_discontinuation_due_to_ae_is_the_disposition_reason_only(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    subjects = _facts(protocol, tables).subjects
    reason = next(str(c.code) for c in protocol.disposition.codes if c.adverse_event)
    expected = subjects["randomised"] & (subjects["disposition_code"] == reason).fillna(False)
    assert subjects["discontinued_due_to_ae"].equals(expected.astype(bool))
    assert subjects["discontinued_due_to_ae"].sum() <= subjects["discontinued_study"].sum()


def test_treatment_emergence_follows_the_declared_rule(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    facts = _facts(protocol, tables)
    events = facts.adverse_events.merge(
        facts.subjects[["randomisation_date", "population_safety"]],
        left_on="subject",
        right_index=True,
    )
    expected = (events["start"] >= events["randomisation_date"]) & events["population_safety"]
    assert list(events["teae"]) == list(expected.fillna(False))
    assert "randomisation" in dict(rule_texts(DEFAULT_RULES))["Treatment-emergent adverse event"]


def test_query_age_counts_to_the_as_of_time_and_is_never_negative(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    queries = pd.DataFrame(
        {
            "query_id": ["Q-1", "Q-2", "Q-3", "Q-4"],
            "kind": ["site", "site", "review", "site"],
            "status": ["open", "answered", "open", "closed"],
            # raised after the data cut-off, as queries are; one after the as-of time
            "first_opened_at": [
                "2026-10-01T09:00:00Z",
                "2026-10-20T09:00:00Z",
                "2026-10-01T09:00:00Z",
                "2026-10-01T09:00:00Z",
            ],
        }
    )
    as_of = datetime(2026, 10, 11, 9, 0, tzinfo=UTC)
    facts = _facts(protocol, tables, queries=queries, as_of=as_of)
    assert list(facts.queries["days_open"]) == [10.0, 0.0, 10.0, 10.0]
    headline = facts.headline()
    assert headline["site_queries_open"] == 2
    assert headline["review_signals_open"] == 1
    assert headline["median_days_open"] == 5.0


def test_facts_json_carries_every_headline_key_and_its_provenance(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series], tmp_path: Path
) -> None:
    tables, _ = study
    facts = _facts(protocol, tables, snapshot_id="abc123")
    path = write_facts_json(tmp_path / "facts.json", facts, output="test")
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["snapshot_id"] == "abc123"
    assert document["cutoff"] == CUT.isoformat()
    assert document["view"] == "blinded"
    missing = [
        key
        for key in HEADLINE_KEYS
        if key not in document["facts"]
        and key not in {"site_queries_open", "review_signals_open", "median_days_open"}
    ]
    assert missing == []
    assert "Per protocol population" in document["rules"]["definitions"]


def test_due_visits_are_done_missed_or_overdue_and_nothing_else(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    facts = _facts(protocol, tables)
    headline = facts.headline()
    assert headline["visits_due"] > 0
    assert headline["visits_due"] == (
        headline["visits_done"] + headline["visits_missed"] + headline["visits_overdue"]
    )
    visits = facts.visits
    # a visit is never both due and not yet due, nor overdue without being due
    assert not (visits["due"] & visits["not_yet_due"]).any()
    assert not (visits["overdue"] & ~visits["due"]).any()
    # only randomised participants have scheduled visits
    randomised = set(facts.members("randomised").astype(str))
    assert set(visits["subject"]) <= randomised


def test_a_visit_whose_window_is_still_open_at_the_cut_is_not_yet_due_never_overdue(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    facts = _facts(protocol, tables)
    visits = facts.visits
    open_windows = visits[visits["window_end"] >= pd.Timestamp(CUT)]
    assert len(open_windows) > 0, "the fixture should have participants still on study"
    assert not open_windows["due"].any()
    assert not open_windows["overdue"].any()
    pending = open_windows[~open_windows["done"] & ~open_windows["missed"]]
    left = facts.subjects["discontinued_study"] & (
        facts.subjects["disposition_date"] < pd.Timestamp(CUT)
    )
    ongoing = pending[~pending["subject"].map(left).fillna(False).astype(bool)]
    assert ongoing["not_yet_due"].all()


def test_a_later_cut_never_makes_fewer_visits_due(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    earlier = derive_facts(protocol, tables, cutoff=date(2026, 3, 31)).headline()
    later = _facts(protocol, tables).headline()
    assert earlier["visits_due"] < later["visits_due"]


def test_visit_counts_are_the_same_in_the_blinded_and_unblinded_views(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, arms = study
    unblinded = _facts(protocol, tables, arms=arms).headline()
    blinded = _facts(protocol, blind_tables(tables, protocol)).headline()
    for key in ("visits_due", "visits_done", "visits_missed", "visits_overdue"):
        assert blinded[key] == unblinded[key], key


def test_a_recorded_missed_visit_is_missed_not_overdue(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    tables, _ = study
    spec = protocol.visit_form
    frame = tables[spec.form].copy()
    facts = _facts(protocol, tables)
    due_done = facts.visits[facts.visits["due"] & facts.visits["done"]].iloc[0]
    row = (frame[protocol.study.record_id_field].astype(str) == due_done["subject"]) & (
        frame["redcap_event_name"].astype(str) == due_done["event"]
    )
    assert row.sum() == 1
    frame.loc[row, spec.done_field] = 0
    changed = _facts(protocol, {**tables, spec.form: frame}).headline()
    before = facts.headline()
    assert changed["visits_missed"] == before["visits_missed"] + 1
    assert changed["visits_done"] == before["visits_done"] - 1
    assert changed["visits_overdue"] == before["visits_overdue"]


def test_per_protocol_leaves_out_a_participant_below_the_plans_cbt_adherence(
    protocol: Protocol, study: tuple[dict[str, pd.DataFrame], pd.Series]
) -> None:
    from studyman.analysis.sap import load_sap
    from studyman.facts import rules_from_plan
    from studyman.protocol.reference import default_plan_path

    tables, arms = study
    rules = rules_from_plan(load_sap(default_plan_path()).plan)
    facts = _facts(protocol, tables, rules=rules)
    subjects = facts.subjects
    # a participant of the mITT without a major deviation who attended every session so far
    candidates = subjects[
        subjects["population_mitt"] & ~subjects["major_deviation"] & subjects["population_pp"]
    ]
    chosen = str(candidates.index[0])
    sessions = protocol.treatment.sessions
    frame = tables[sessions.form].copy()
    mine = frame[protocol.study.record_id_field].astype(str) == chosen
    assert mine.sum() >= 2
    frame.loc[mine, sessions.given_field] = 0  # every session missed
    missed = _facts(protocol, {**tables, sessions.form: frame}, rules=rules).subjects
    assert not bool(missed.loc[chosen, "population_pp"])
    assert bool(missed.loc[chosen, "population_mitt"])  # still analysed as randomised
    # the adherence criterion does not use the dosing log: both views give one per protocol set
    blinded = _facts(protocol, blind_tables(tables, protocol), rules=rules).headline()
    unblinded = _facts(protocol, tables, arms=arms, rules=rules).headline()
    assert blinded["pp_population"] == unblinded["pp_population"] < unblinded["mitt_population"]


def test_the_adherence_rule_is_stated_with_its_threshold() -> None:
    from studyman.analysis.sap import load_sap
    from studyman.facts import rules_from_plan
    from studyman.protocol.reference import default_plan_path

    texts = dict(rule_texts(rules_from_plan(load_sap(default_plan_path()).plan)))
    assert "attended at least 75% of the CBT sessions planned" in texts["Per protocol population"]


def test_the_default_rules_are_the_reference_plans() -> None:
    """Outputs read without a plan (validation) count the populations as the plan does."""
    from studyman.analysis.sap import load_sap
    from studyman.facts import rules_from_plan
    from studyman.protocol.reference import default_plan_path

    plan = rules_from_plan(load_sap(default_plan_path()).plan)
    assert DEFAULT_RULES.treatment_emergent_from == plan.treatment_emergent_from
    assert [(p.name, p.flag, p.criteria) for p in DEFAULT_RULES.populations] == [
        (p.name, p.flag, p.criteria) for p in plan.populations
    ]
