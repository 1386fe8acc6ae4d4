"""Every number agrees (issue 12): one value per fact across validation, analysis and both DSMB
sessions, for several generated studies, clean and with planted errors.

Each study is generated, imported twice (an admin's export with every form, and the same export
through the blinding gate, as a coordinator's), validated blinded and unblinded, analysed blinded
and unblinded, and reported in both DSMB sessions. Every output writes ``facts.json``; a key must
have one value in every file of the same view, and the keys that do not depend on data hidden
from blinded readers must have one value in both views.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from studyman.analysis.analyze import analyze
from studyman.analysis.executor import SerialExecutor
from studyman.protocol import Protocol, load_protocol
from studyman.protocol.reference import default_protocol_path
from studyman.reporting.report import (
    arm_codes,
    default_arm_key_path,
    read_arm_key,
    render_dsmb_report,
)
from studyman.sources.blinding import blind_flat_records
from studyman.sources.offline import import_snapshot
from studyman.synthetic import generate_trial, write_trial
from studyman.validation.run import validate_study

AS_OF = "2026-10-15T12:00:00Z"

#: Facts that depend on data hidden from blinded readers: doses taken (exposure, hence the safety
#: population and what is counted within it) and the queries of checks that need the arm.
VIEW_DEPENDENT = {
    "treated",
    "safety_population",
    "teae_participants",
    "teae_events",
    "serious_ae_participants",
    "site_queries_open",
    "review_signals_open",
    "median_days_open",
}

STUDIES = [
    pytest.param((31, False), id="clean"),
    pytest.param((32, True), id="planted-errors"),
]


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


def _run_study(protocol: Protocol, out: Path, seed: int, plant: bool) -> dict[str, dict[str, Any]]:
    """Every output's facts.json document, by output folder name."""
    trial = generate_trial(protocol, n_participants=90, seed=seed, plant_errors=plant)
    files = write_trial(trial, out / "generated")
    assert protocol.redcap is not None
    dictionary = out / "dictionary.csv"
    dictionary.write_text(protocol.redcap.dictionary.to_csv_text(), encoding="utf-8")
    unblinded = import_snapshot(protocol, files["records"], dictionary, out / "u").path
    blinded_csv = out / "blinded-records.csv"
    blind_flat_records(trial.records, protocol, protocol.redcap.dictionary).to_csv(
        blinded_csv, index=False
    )
    blinded = import_snapshot(protocol, blinded_csv, dictionary, out / "b").path
    randomization = files["randomization"]
    sap = default_protocol_path().parent.parent / "analysis" / "sap.yaml"
    as_of = datetime.fromisoformat(AS_OF.replace("Z", "+00:00")).astimezone(UTC)

    validate_study(protocol, blinded, out / "validation-blinded", at=AS_OF)
    validate_study(
        protocol,
        unblinded,
        out / "validation-unblinded",
        randomization=randomization,
        at=AS_OF,
    )
    analyze(sap, unblinded, out / "analysis-blinded", protocol=protocol, executor=SerialExecutor())
    # reading the allocation is recorded in the lock: a copy, never the shipped one
    lock = out / "sap.lock.json"
    lock.write_bytes(sap.with_name("sap.lock.json").read_bytes())
    analyze(
        sap,
        unblinded,
        out / "analysis-unblinded",
        randomization=randomization,
        protocol=protocol,
        executor=SerialExecutor(),
        lock=lock,
    )
    render_dsmb_report(
        protocol,
        blinded,
        out / "dsmb-open",
        session="open",
        query_log=out / "validation-blinded" / "queries.sqlite",
        sap=sap,
        as_of=as_of,
        pdf=False,
    )
    render_dsmb_report(
        protocol,
        unblinded,
        out / "dsmb-closed",
        session="closed",
        randomization=randomization,
        query_log=out / "validation-unblinded" / "queries.sqlite",
        sap=sap,
        as_of=as_of,
        pdf=False,
    )
    documents = {}
    for folder in sorted(out.iterdir()):
        path = folder / "facts.json"
        if folder.is_dir() and path.is_file():
            documents[folder.name] = json.loads(path.read_text(encoding="utf-8"))
    # the closed report codes the arms with the secret key beside the list: decode its per-arm
    # facts with that key, as only the unblinded statistician can, to compare them
    key = read_arm_key(default_arm_key_path(randomization), create=False).key
    name_of = {code: name for name, code in arm_codes(protocol, key).items()}
    closed = documents["dsmb-closed"]["facts"]
    assert all(set(v) <= set(name_of) for k, v in closed.items() if k.endswith("_by_arm"))
    documents["dsmb-closed"]["facts"] = {
        k: ({name_of[arm]: n for arm, n in v.items()} if k.endswith("_by_arm") else v)
        for k, v in closed.items()
    }
    return documents


@pytest.fixture(scope="module", params=STUDIES)
def outputs(
    request: pytest.FixtureRequest, protocol: Protocol, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    seed, plant = request.param
    return _run_study(protocol, tmp_path_factory.mktemp(f"study-{seed}"), seed, plant)


def test_every_output_writes_its_facts(outputs: dict[str, dict[str, Any]]) -> None:
    assert set(outputs) == {
        "validation-blinded",
        "validation-unblinded",
        "analysis-blinded",
        "analysis-unblinded",
        "dsmb-open",
        "dsmb-closed",
    }
    views = {name: document["view"] for name, document in outputs.items()}
    assert views == {
        "validation-blinded": "blinded",
        "validation-unblinded": "unblinded",
        "analysis-blinded": "blinded",
        "analysis-unblinded": "unblinded",
        "dsmb-open": "blinded",
        "dsmb-closed": "unblinded",
    }


def test_a_key_has_one_value_in_every_file_of_a_view(outputs: dict[str, dict[str, Any]]) -> None:
    disagreements = []
    for view in ("blinded", "unblinded"):
        documents = {n: d for n, d in outputs.items() if d["view"] == view}
        keys = {key for d in documents.values() for key in d["facts"]}
        for key in sorted(keys):
            values = {n: d["facts"][key] for n, d in documents.items() if key in d["facts"]}
            if (
                len(values) > 1
                and len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1
            ):
                disagreements.append(f"{view} {key}: {values}")
    assert disagreements == [], "\n".join(disagreements)


def test_facts_not_hidden_from_blinded_readers_agree_across_views(
    outputs: dict[str, dict[str, Any]],
) -> None:
    blinded = outputs["dsmb-open"]["facts"]
    unblinded = outputs["dsmb-closed"]["facts"]
    shared = (set(blinded) & set(unblinded)) - VIEW_DEPENDENT
    assert {
        "screened",
        "randomised",
        "itt_population",
        "mitt_population",
        "pp_population",
    } <= shared
    assert {"deaths", "discontinued_study", "discontinued_due_to_ae", "deviations"} <= shared
    assert {k: blinded[k] for k in shared} == {k: unblinded[k] for k in shared}


def test_counts_by_arm_sum_to_the_pooled_count_and_never_reach_a_blinded_file(
    outputs: dict[str, dict[str, Any]],
) -> None:
    for name, document in outputs.items():
        facts = document["facts"]
        by_arm = {k: v for k, v in facts.items() if k.endswith("_by_arm")}
        if document["view"] == "blinded":
            assert by_arm == {}, name
            continue
        assert by_arm, name
        for key, values in by_arm.items():
            assert sum(values.values()) == facts[key.removesuffix("_by_arm")], (name, key)


def test_the_rules_are_stated_in_the_same_words_everywhere(
    outputs: dict[str, dict[str, Any]],
) -> None:
    definitions = {
        name: json.dumps(document["rules"]["definitions"], sort_keys=True)
        for name, document in outputs.items()
    }
    assert len(set(definitions.values())) == 1, definitions


def test_per_protocol_is_smaller_than_modified_itt_when_major_deviations_exist(
    outputs: dict[str, dict[str, Any]],
) -> None:
    facts = outputs["analysis-unblinded"]["facts"]
    if facts["participants_with_major_deviation"]:
        assert facts["pp_population"] < facts["mitt_population"]
    assert facts["pp_population"] <= facts["mitt_population"] <= facts["itt_population"]
