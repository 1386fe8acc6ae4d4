"""ADaM reads every study name from the protocol: a renamed study gives the same data sets, and a
study without the optional forms (dosing log, withdrawal scale) runs and says what does not
apply."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from studyman.analysis.adam import AdamDatasets, choice_labels, derive_adam
from studyman.analysis.analyze import _snapshot_tables, plan_facts, read_randomization
from studyman.analysis.executor import SerialExecutor
from studyman.analysis.outputs import applicability, write_outputs
from studyman.analysis.populations import flag_populations
from studyman.analysis.run import run_plan
from studyman.analysis.safety import safety_data
from studyman.analysis.sap import LoadedPlan, load_sap
from studyman.facts import StudyFacts
from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Protocol

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"
EVENT = "redcap_event_name"


@dataclasses.dataclass(frozen=True)
class Study:
    protocol: Protocol
    loaded: LoadedPlan
    tables: dict[str, pd.DataFrame]
    metadata: list[dict[str, str]]
    randomization: pd.DataFrame
    facts: StudyFacts


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    base = tmp_path_factory.mktemp("names")
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=40, seed=5)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    snapshot = import_snapshot(
        protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
    ).path
    tables, metadata, _ = _snapshot_tables(snapshot, None)
    labels = {str(arm.code): arm.name for arm in protocol.arms.items}
    randomization = read_randomization(base / "randomization.csv", labels, protocol)
    loaded = load_sap(SAP)
    facts = plan_facts(loaded, protocol, tables, randomization)
    return Study(protocol, loaded, tables, metadata, randomization, facts)


def _derive(
    study: Study,
    protocol: Protocol,
    tables: dict[str, pd.DataFrame],
    metadata: list[dict[str, str]],
    facts: StudyFacts | None = None,
) -> AdamDatasets:
    return derive_adam(
        tables,
        protocol=protocol,
        study="X",
        choices=choice_labels(metadata),
        randomization=study.randomization,
        analysis_visits=dict(study.loaded.plan.visits),
        facts=facts or study.facts,
    )


def _renamed(study: Study) -> tuple[Protocol, dict[str, pd.DataFrame], list[dict[str, str]]]:
    """The study with its forms, fields and events renamed consistently (no name kept)."""
    p = study.protocol
    hamd = p.scoring_of("hamd17")
    severity = next(f for f in p.randomization.stratification if f.recorded_field)
    assert p.treatment.doses is not None
    forms = {
        "participant": "demographics",
        "hamd17": "depression_scale",
        "visit": "visit_log",
        "adverse_events": "ae_log",
        "enrollment": "allocation_form",
        "dosing": "pills",
    }
    ae = p.adverse_events
    fields = {
        p.study.record_id_field: "subject_id",
        p.enrolment.consent_date_field: "consented_on",
        p.enrolment.age_field: "age_years",
        p.enrolment.sex_field: "gender",
        hamd.total_field: "dep_total",
        p.visit_form.date_field: "seen_on",
        ae.term_field: "event_text",
        ae.pt_field: "event_pt",
        ae.soc_field: "event_soc",
        ae.start_field: "onset",
        ae.severity_field: "intensity",
        ae.aesi_field: "special_interest",
        str(severity.recorded_field): "strata_sev",
        p.treatment.doses.given_field: "pill_taken",
    }
    events = {v.event: f"visit_{i:02d}" for i, v in enumerate(p.visits)}
    tables = {}
    for name, frame in study.tables.items():
        table = frame.rename(columns=fields)
        if EVENT in table.columns:
            table[EVENT] = table[EVENT].map(lambda e: events.get(e, e))
        tables[forms.get(name, name)] = table
    metadata = [{**row, "field_name": fields.get(row["field_name"], row["field_name"])}
                for row in study.metadata]  # fmt: skip

    def rename(model: Any, **changes: str) -> Any:
        return model.model_copy(
            update={k: fields.get(v, forms.get(v, v)) for k, v in changes.items()}
        )

    renamed = p.model_copy(
        update={
            "redcap": None,  # the dictionary speaks of the old names: found by the tables
            "study": rename(p.study, record_id_field=p.study.record_id_field),
            "enrolment": rename(
                p.enrolment,
                consent_date_field=p.enrolment.consent_date_field,
                age_field=p.enrolment.age_field,
                sex_field=p.enrolment.sex_field,
            ),
            "visits": tuple(v.model_copy(update={"event": events[v.event]}) for v in p.visits),
            "scoring": tuple(
                rename(s, instrument=s.instrument, total_field=s.total_field) for s in p.scoring
            ),
            "visit_form": rename(
                p.visit_form, form=p.visit_form.form, date_field=p.visit_form.date_field
            ),
            "adverse_events": rename(
                ae,
                form=ae.form,
                term_field=ae.term_field,
                pt_field=ae.pt_field,
                soc_field=ae.soc_field,
                start_field=ae.start_field,
                severity_field=ae.severity_field,
                aesi_field=ae.aesi_field,
            ),
            "randomization": p.randomization.model_copy(
                update={
                    "stratification": tuple(
                        rename(f, recorded_field=f.recorded_field) if f.recorded_field else f
                        for f in p.randomization.stratification
                    )
                }
            ),
            "treatment": p.treatment.model_copy(
                update={
                    "doses": rename(
                        p.treatment.doses,
                        form=p.treatment.doses.form,
                        given_field=p.treatment.doses.given_field,
                    )
                }
            ),
        }
    )
    return renamed, tables, metadata


def test_a_consistently_renamed_study_gives_the_same_adam(study: Study) -> None:
    original = _derive(study, study.protocol, study.tables, study.metadata)
    renamed = _derive(study, *_renamed(study))
    assert len(original.adqs) > 0
    assert set(original.adqs["PARAMCD"]) == {"HAMD17", "PHQ9", "GAD7"}
    assert original.adsl["STRATSEV"].notna().any()
    assert original.adsl["SEX"].notna().any()
    assert original.adae["AESEV"].notna().any()
    ranks = original.adae.dropna(subset=["AESEV"]).groupby("AESEV")["AESEVN"].unique()
    assert {k: list(v) for k, v in ranks.items()} == {"MILD": [1], "MODERATE": [2], "SEVERE": [3]}
    assert original.adsl["TRT01A"].notna().any()
    for name in ("adsl", "adqs", "adae", "visits"):
        pd.testing.assert_frame_equal(getattr(renamed, name), getattr(original, name))


def test_renamed_events_give_the_same_adqs_without_the_week_pattern(study: Study) -> None:
    """The event names carry no week number any more: AVISITN comes from the schedule."""
    protocol, tables, metadata = _renamed(study)
    assert not any("week" in v.event for v in protocol.visits)
    adqs = _derive(study, protocol, tables, metadata).adqs
    original = _derive(study, study.protocol, study.tables, study.metadata).adqs
    pd.testing.assert_frame_equal(adqs, original)
    assert sorted(adqs["AVISITN"].unique().tolist()) == [-1, 0, 1, 2, 4, 6, 8, 12, 16]


def _without_optional_forms(study: Study) -> tuple[Protocol, dict[str, pd.DataFrame]]:
    p = study.protocol
    assert p.withdrawal is not None
    assert p.treatment.doses is not None
    dropped = {p.withdrawal.instrument, p.treatment.doses.form}
    protocol = p.model_copy(
        update={"withdrawal": None, "treatment": p.treatment.model_copy(update={"doses": None})}
    )
    return protocol, {k: v for k, v in study.tables.items() if k not in dropped}


def test_a_study_without_dosing_log_or_withdrawal_scale_runs_and_says_so(
    study: Study, tmp_path: Path
) -> None:
    protocol, tables = _without_optional_forms(study)
    facts = plan_facts(study.loaded, protocol, tables, study.randomization)
    adam = _derive(study, protocol, tables, study.metadata, facts)
    # without a dosing log the as-treated arm is the randomised arm of whoever was treated
    treated = adam.adsl["TRTSDT"].notna()
    assert treated.sum() > 0
    assert (adam.adsl.loc[treated, "TRT01A"] == adam.adsl.loc[treated, "TRT01P"]).all()
    assert (adam.adsl.loc[~treated, "TRT01A"]).isna().all()
    plan = study.loaded.plan
    adam = dataclasses.replace(adam, adsl=flag_populations(adam.adsl, facts, plan.populations))
    mmrm_only = plan.model_copy(
        update={
            "analyses": (plan.analysis("primary_mmrm"), plan.analysis("cows_maximum")),
            "estimands": (),
            "multiplicity": None,
            "imputation_model": None,
        }
    )
    safety = safety_data(protocol, tables, facts)
    run = run_plan(mmrm_only, adam, blinded=False, executor=SerialExecutor(), safety=safety)
    primary, withdrawal = run.outcomes
    assert primary.status == "ok", primary.message
    # the plan's withdrawal-scale analysis does not apply: said so, and the run has no failure
    assert withdrawal.status == "not_applicable"
    assert withdrawal.message == (
        "Does not apply: the protocol declares no withdrawal scale (withdrawal)"
    )
    assert run.failed == ()
    provenance = {
        "plan": {"file": "sap.yaml", "version": "1", "sha256": "0" * 64, "amendments": [],
                 "locked_version": "1", "locked_sha256": "0" * 64},
        "snapshot": {"sha256": "0" * 64},
        "studyman_version": "test",
        "seed": 1,
        "imputations": 2,
        "randomization_sha256": "1" * 64,
        "interim_dsmb_efficacy": False,
        "randomization_mismatches": {},
    }  # fmt: skip
    write_outputs(
        tmp_path, plan=mmrm_only, run=run, adam=adam, provenance=provenance, protocol=protocol
    )
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Does not apply: the protocol declares no withdrawal scale." in report
    assert "Does not apply: the protocol declares no dosing log" in report
    assert "cows_maximum</strong> (not_applicable): Does not apply" in report
    statements = dict(applicability(study.protocol))
    assert statements["Withdrawal scale"].startswith("Applies: cows")
    assert statements["Dosing log"].startswith("Applies: dosing")


def test_the_facts_find_a_renamed_scale_by_its_paramcd(study: Study) -> None:
    """The mITT needs a post-baseline HAMD17 value: found in the renamed form by its PARAMCD."""
    protocol, tables, _ = _renamed(study)
    facts = plan_facts(study.loaded, protocol, tables, study.randomization)
    mitt = study.facts.members("mitt")
    assert len(mitt) > 0
    assert list(facts.members("mitt")) == list(mitt)
    assert list(facts.members("pp")) == list(study.facts.members("pp"))


def test_a_snapshot_without_the_participant_form_names_the_field_it_looked_for(
    study: Study,
) -> None:
    from studyman.errors import AnalysisError

    form = next(n for n, t in study.tables.items() if "consent_date" in t.columns)
    tables = {k: v for k, v in study.tables.items() if k != form}
    protocol = study.protocol.model_copy(update={"redcap": None})
    with pytest.raises(AnalysisError) as caught:
        _derive(study, protocol, tables, study.metadata)
    assert str(caught.value).startswith(
        "snapshot has no table with the consent date field 'consent_date' "
        "(enrolment.consent_date_field)"
    )
