"""The analysis reads the study's facts: ADaM flags and dates, TEAE, facts.json, definitions."""

from __future__ import annotations

import dataclasses
import html
import json
import stat
from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis.adam import visit_numbers
from studyman.analysis.analyze import _snapshot_tables, derive_for_plan, plan_facts
from studyman.analysis.executor import SerialExecutor
from studyman.analysis.outputs import write_outputs
from studyman.analysis.run import run_plan
from studyman.analysis.sap import LoadedPlan, load_sap
from studyman.facts import HEADLINE_KEYS, rule_texts
from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Protocol

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"


@dataclasses.dataclass(frozen=True)
class Study:
    protocol: Protocol
    loaded: LoadedPlan
    snapshot: Path
    randomization: pd.DataFrame


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    from studyman.analysis.adam import choice_labels
    from studyman.analysis.analyze import read_randomization
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    base = tmp_path_factory.mktemp("facts-study")
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=150, seed=12)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    snapshot = import_snapshot(
        protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
    ).path
    _, metadata, _ = _snapshot_tables(snapshot, None)
    randomization = read_randomization(
        base / "randomization.csv", choice_labels(metadata)["rand_arm"]
    )
    return Study(protocol, load_sap(SAP), snapshot, randomization)


def _unblinded(study: Study) -> tuple[dict[str, pd.DataFrame], list[dict[str, str]]]:
    tables, metadata, _ = _snapshot_tables(study.snapshot, None)
    return tables, metadata


def test_adsl_flags_dates_and_disposition_are_the_facts(study: Study) -> None:
    tables, metadata = _unblinded(study)
    facts = plan_facts(study.loaded, study.protocol, tables, study.randomization)
    adam = derive_for_plan(study.loaded, tables, metadata, study.randomization, facts)
    adsl = adam.adsl.set_index("SUBJID")
    subjects = facts.subjects.reindex(adsl.index)
    for name, population in study.loaded.plan.populations.items():
        expected = subjects[f"population_{name}"].map({True: "Y", False: "N"})
        assert (adsl[population.flag] == expected).all(), name
    assert (adsl["MITTFL"] == "Y").sum() == facts.headline()["mitt_population"]
    # the generator records major deviations: the per-protocol population is smaller
    assert (adsl["PPROTFL"] == "Y").sum() < (adsl["MITTFL"] == "Y").sum()
    assert adsl["TRTSDT"].equals(pd.to_datetime(subjects["first_treatment"]).rename("TRTSDT"))
    assert adsl["TRTEDT"].equals(pd.to_datetime(subjects["last_treatment"]).rename("TRTEDT"))
    assert ((adsl["RANDFL"] == "Y") == subjects["randomised"]).all()
    discontinued = adsl["EOSSTT"] == "DISCONTINUED"
    assert (
        discontinued.sum()
        == subjects["disposition_label"].notna().sum() - subjects["completed"].sum()
    )
    ae_reason = adsl["DCSREAS"] == "Adverse event"
    assert ae_reason.fillna(False).sum() == facts.headline()["discontinued_due_to_ae"]
    assert adsl["DTHDT"].notna().sum() == facts.headline()["deaths"] >= 1
    # TEAE: the facts' rule, event by event
    assert (adam.adae["TRTEMFL"] == "Y").sum() == facts.headline()["teae_events"]


def test_per_protocol_drops_a_declared_major_deviation_the_site_recorded_minor(
    study: Study,
) -> None:
    tables, metadata = _unblinded(study)
    deviations = tables["deviations"].copy()
    deviations["dv_major"] = 0  # the site marked nothing major
    tables = {**tables, "deviations": deviations}
    adam = derive_for_plan(study.loaded, tables, metadata, study.randomization)
    major = {str(c.code) for c in study.protocol.deviations.categories if c.major}
    declared = set(deviations.loc[deviations["dv_category"].astype(str).isin(major), "record_id"])
    assert declared
    adsl = adam.adsl.set_index("SUBJID")
    assert set(adsl.loc[adsl["PPROTFL"] == "Y"].index).isdisjoint(declared)


def test_treatment_emergence_follows_the_one_rule_the_plan_declares(study: Study) -> None:
    tables, metadata = _unblinded(study)
    facts = plan_facts(study.loaded, study.protocol, tables, study.randomization)
    subjects = facts.subjects
    late = subjects[
        subjects["population_safety"]
        & (subjects["first_treatment"] > subjects["randomisation_date"])
    ]
    assert len(late) > 0
    record = str(late.index[0])
    events = tables["adverse_events"].copy()
    row = events.index[events["record_id"].astype(str) == record]
    if len(row) == 0:  # give the participant an event
        row = events.index[:1]
        events.loc[row, "record_id"] = record
    events.loc[row[:1], "ae_start"] = late.loc[
        record, "randomisation_date"
    ]  # before first treatment
    tables = {**tables, "adverse_events": events}
    instance = str(int(events.loc[row[0], "redcap_repeat_instance"]))

    def flag(loaded: LoadedPlan) -> str:
        adae = derive_for_plan(loaded, tables, metadata, study.randomization).adae
        rows = adae[
            (adae["SUBJID"] == record) & (adae["AESEQ"].astype(int).astype(str) == instance)
        ]
        return str(rows["TRTEMFL"].iloc[0])

    assert study.loaded.plan.safety.treatment_emergent_from == "randomisation"
    assert flag(study.loaded) == "Y"
    safety = study.loaded.plan.safety.model_copy(
        update={"treatment_emergent_from": "first_treatment"}
    )
    plan = study.loaded.plan.model_copy(update={"safety": safety})
    assert flag(study.loaded.model_copy(update={"plan": plan})) == ""


@pytest.mark.parametrize("blinded", [False, True], ids=["unblinded", "blinded"])
def test_facts_json_and_the_report_definitions(study: Study, tmp_path: Path, blinded: bool) -> None:
    tables, metadata, _ = _snapshot_tables(study.snapshot, study.protocol if blinded else None)
    randomization = None if blinded else study.randomization
    facts = plan_facts(study.loaded, study.protocol, tables, randomization, snapshot="abc")
    adam = derive_for_plan(study.loaded, tables, metadata, randomization, facts)
    plan = study.loaded.plan.model_copy(update={"analyses": ()})
    run = run_plan(plan, adam, blinded=blinded, executor=SerialExecutor())
    provenance = {
        "snapshot": {"name": "s1", "id": "abc", "sha256": "0" * 64},
        "plan": {
            "file": "sap.yaml",
            "version": plan.version,
            "sha256": "1" * 64,
            "locked_version": plan.version,
            "locked_sha256": "1" * 64,
            "amendments": [],
        },
        "studyman_version": "test",
        "seed": plan.seed,
        "imputations": plan.imputations,
        "randomization_sha256": None,
        "blinded": blinded,
        "randomization_mismatches": {},
        "interim_dsmb_efficacy": False,
    }
    files = write_outputs(
        tmp_path, plan=plan, run=run, adam=adam, provenance=provenance, facts=facts
    )
    path = tmp_path / "facts.json"
    assert "facts.json" in files
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["output"] == "analysis"
    assert document["snapshot_id"] == "abc"
    assert document["cutoff"] == "2026-09-30"
    assert document["view"] == ("blinded" if blinded else "unblinded")
    headline = document["facts"]
    assert [key for key in HEADLINE_KEYS if key in headline] == [
        key for key in headline if not key.endswith("_by_arm")
    ]
    by_arm = [key for key in headline if key.endswith("_by_arm")]
    text = path.read_text(encoding="utf-8")
    arms = (plan.treatment.experimental, plan.treatment.reference)
    if blinded:
        assert by_arm == []
        assert not any(arm in text for arm in arms)
    else:
        assert by_arm
        for key in by_arm:
            assert list(headline[key]) == list(arms)
            assert sum(headline[key].values()) == headline[key.removesuffix("_by_arm")]
    # ADSL says what facts.json says
    adsl = adam.adsl
    assert (adsl["SAFFL"] == "Y").sum() == headline["safety_population"]
    assert (adsl["PPROTFL"] == "Y").sum() == headline["pp_population"]
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    for term, definition in rule_texts(facts.rules):
        assert f"<td>{html.escape(term)}</td><td>{html.escape(definition)}</td>" in report
    assert "the day of randomisation" in report  # the plan's declared TEAE rule


def test_adam_holds_no_row_dated_after_the_cut_off(study: Study) -> None:
    """One cut for every output: a visit or an adverse event after the cut-off is in no ADaM."""
    tables, metadata = _unblinded(study)
    protocol = study.protocol
    key = protocol.study.record_id_field
    cutoff = plan_facts(study.loaded, protocol, tables, study.randomization).cutoff
    after = pd.Timestamp(cutoff) + pd.Timedelta(days=5)
    before = derive_for_plan(study.loaded, tables, metadata, study.randomization, protocol=protocol)
    # a post-baseline HAM-D value: move its visit after the cut-off
    adqs = before.adqs[(before.adqs["AVISITN"] > 0) & before.adqs["AVAL"].notna()]
    moved = adqs.iloc[0]
    spec = protocol.visit_form
    visits = tables[spec.form].copy()
    number = visit_numbers(protocol)  # AVISITN as ADQS numbers visits
    row = (visits[key].astype(str) == str(moved["SUBJID"])) & (
        visits["redcap_event_name"].astype(str).map(number) == int(moved["AVISITN"])
    )
    assert row.sum() == 1
    visits.loc[row, spec.date_field] = after
    # an adverse event: start it after the cut-off
    ae = protocol.adverse_events
    events = tables[ae.form].copy()
    events.loc[events.index[0], ae.start_field] = after
    moved_ae = str(events.loc[events.index[0], key])
    late = {**tables, spec.form: visits, ae.form: events}
    cut = derive_for_plan(study.loaded, late, metadata, study.randomization, protocol=protocol)
    same_place = (cut.adqs["SUBJID"].astype(str) == str(moved["SUBJID"])) & (
        cut.adqs["AVISITN"] == moved["AVISITN"]
    )
    assert not same_place.any(), "a value of a visit after the cut-off is in ADQS"
    assert len(cut.adqs) < len(before.adqs)
    assert len(cut.adae) == len(before.adae) - 1
    assert (cut.adae["SUBJID"].astype(str) == moved_ae).sum() == (
        before.adae["SUBJID"].astype(str) == moved_ae
    ).sum() - 1
