"""Three arms: each experimental arm is compared with the declared reference, pairwise.

The study is the reference study with a third arm (CBT + placebo) declared in a copy of its
protocol; a third of the randomised participants are allocated to it in the randomisation list.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from studyman.analysis.analyze import (
    AnalyzeResult,
    analyze,
    derive_for_plan,
    read_randomization,
)
from studyman.analysis.executor import SerialExecutor
from studyman.analysis.lock import lock_sap
from studyman.analysis.run import run_plan
from studyman.analysis.sap import load_sap
from studyman.errors import AnalysisError
from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Arm, Protocol

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"
ADJUNCT, PLACEBO, ALONE = "CBT + adjunct", "CBT + placebo", "CBT alone"
KEPT = ("primary_mmrm", "response_logistic", "mi_j2r", "ae_incidence", "ae_eair")


def three_arm_protocol(protocol: Protocol) -> Protocol:
    """*protocol* with a third arm, CBT + placebo (code 3), CBT alone still the reference."""
    placebo = Arm(
        code=3,
        name=PLACEBO,
        short_name="CBT+PBO",
        ratio=1,
        receives_adjunct=False,
        closed_report_code="C",
    )
    arms = protocol.arms.model_copy(update={"items": (*protocol.arms.items, placebo)})
    return protocol.model_copy(update={"arms": arms})


def three_arm_plan(path: Path, analyses: tuple[str, ...] = KEPT) -> Path:
    """The reference plan with two experimental arms, some of its analyses, few imputations."""
    plan: dict[str, Any] = yaml.safe_load(SAP.read_text(encoding="utf-8"))
    plan["treatment"]["experimental"] = [ADJUNCT, PLACEBO]
    plan["imputations"] = 4
    plan["analyses"] = [a for a in plan["analyses"] if a["id"] in analyses]
    for analysis in plan["analyses"]:
        if "imputations" in analysis:
            analysis["imputations"] = 4
    plan["estimands"] = [e for e in plan["estimands"] if e["main_analysis"] in analyses]
    for estimand in plan["estimands"]:
        estimand["sensitivity_analyses"] = [
            a for a in estimand.get("sensitivity_analyses", []) if a in analyses
        ]
    plan["multiplicity"] = {
        "alpha": 0.025,
        "sidedness": "one_sided",
        "procedure": "holm",
        "hypotheses": [
            {"id": "H1a", "analysis": "primary_mmrm", "benefit": "lower", "comparison": ADJUNCT},
            {"id": "H1b", "analysis": "primary_mmrm", "benefit": "lower", "comparison": PLACEBO},
        ],
    }
    path.write_text(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@dataclasses.dataclass(frozen=True)
class Study:
    protocol: Protocol
    snapshot: Path
    randomization: Path
    sap: Path
    result: AnalyzeResult
    out: Path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    base = tmp_path_factory.mktemp("three-arms")
    reference = load_protocol(PROTOCOL)
    trial = generate_trial(reference, n_participants=60, seed=11)
    trial.records.to_csv(base / "records.csv", index=False)
    allocation = trial.randomization.copy()
    allocation.loc[allocation.index % 3 == 2, "rand_arm"] = "3"
    allocation.to_csv(base / "randomization.csv", index=False)
    snapshot = import_snapshot(
        reference, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
    ).path
    sap = three_arm_plan(base / "sap.yaml")
    lock_sap(sap)
    protocol = three_arm_protocol(reference)
    out = base / "out"
    result = analyze(
        sap,
        snapshot,
        out,
        randomization=base / "randomization.csv",
        protocol=protocol,
        executor=SerialExecutor(),
    )
    return Study(protocol, snapshot, base / "randomization.csv", sap, result, out)


def _outcome(study: Study, analysis: str) -> Any:
    return next(o for o in study.result.run.outcomes if o.id == analysis)


def test_every_analysis_compares_each_experimental_arm_with_the_reference(study: Study) -> None:
    expected = [f"{ADJUNCT} vs {ALONE}", f"{PLACEBO} vs {ALONE}"]
    for analysis in KEPT:
        outcome = _outcome(study, analysis)
        assert [part.comparison for part in outcome.parts] == expected, analysis
        assert [part.arms for part in outcome.parts] == [(ADJUNCT, ALONE), (PLACEBO, ALONE)]
        assert all(part.status == "ok" for part in outcome.parts), (analysis, outcome.message)
        assert all(part.headline is not None for part in outcome.parts), analysis
        for name, table in outcome.tables.items():
            assert set(table["comparison"]) == set(expected), (analysis, name)


def test_the_tables_on_disk_carry_the_comparison(study: Study) -> None:
    differences = pd.read_csv(
        study.out / "results" / "primary_mmrm__lsmean_differences.csv", comment="#"
    )
    assert differences["comparison"].value_counts().to_dict() == {
        f"{ADJUNCT} vs {ALONE}": len(differences) // 2,
        f"{PLACEBO} vs {ALONE}": len(differences) // 2,
    }
    summary = pd.read_csv(study.out / "results" / "summary.csv", comment="#")
    primary = summary[summary["analysis"] == "primary_mmrm"]
    assert primary["comparison"].tolist() == [f"{ADJUNCT} vs {ALONE}", f"{PLACEBO} vs {ALONE}"]
    assert primary["estimate"].notna().all()
    assert primary["estimate"].nunique() == 2
    document = json.loads((study.out / "results" / "primary_mmrm.json").read_text())
    assert [c["comparison"] for c in document["comparisons"]] == primary["comparison"].tolist()
    incidence = pd.read_csv(study.out / "results" / "ae_incidence__incidence.csv", comment="#")
    for arm in (ADJUNCT, PLACEBO, ALONE):
        assert f"N_{arm}" in incidence.columns
    report = (study.out / "report.html").read_text(encoding="utf-8")
    assert f"{PLACEBO} vs {ALONE}" in report
    assert f"{ADJUNCT} vs {ALONE}" in report


def test_a_comparison_is_exactly_the_two_arm_analysis_of_its_arms(study: Study) -> None:
    """Pairwise: dropping the third arm's participants and running the two-arm plan gives the
    same numbers as that comparison of the three-arm run."""
    from studyman.analysis.analyze import _snapshot_tables

    tables, metadata, _ = _snapshot_tables(study.snapshot, None)
    labels = {str(arm.code): arm.name for arm in study.protocol.arms.items}
    allocation = read_randomization(study.randomization, labels, study.protocol)
    loaded = load_sap(study.sap)
    two_arm = loaded.plan.model_copy(
        update={
            "treatment": loaded.plan.treatment.model_copy(update={"experimental": PLACEBO}),
            "multiplicity": None,
            "analyses": tuple(a for a in loaded.plan.analyses if a.id != "mi_j2r"),
        }
    )
    adam = derive_for_plan(loaded, tables, metadata, allocation, protocol=study.protocol)
    run = run_plan(two_arm, adam, blinded=False, executor=SerialExecutor())
    for outcome in run.outcomes:
        (alone,) = outcome.parts
        part = _outcome(study, outcome.id).part(PLACEBO)
        assert alone.comparison == part.comparison == f"{PLACEBO} vs {ALONE}"
        assert alone.headline is not None
        assert part.headline is not None
        assert alone.headline.estimate == pytest.approx(part.headline.estimate, rel=1e-12)
        assert alone.headline.ci_lower == pytest.approx(part.headline.ci_lower, rel=1e-12)
        if part.headline.p_value is None:  # a risk difference has an interval only
            assert alone.headline.p_value is None
        else:
            assert alone.headline.p_value == pytest.approx(part.headline.p_value, rel=1e-12)


def test_each_hypothesis_tests_the_comparison_it_names(study: Study) -> None:
    table = _outcome(study, "multiplicity").tables["hypotheses"].set_index("hypothesis")
    primary = _outcome(study, "primary_mmrm")
    for hypothesis, arm in (("H1a", ADJUNCT), ("H1b", PLACEBO)):
        headline = primary.part(arm).headline
        assert table.loc[hypothesis, "comparison"] == f"{arm} vs {ALONE}"
        assert table.loc[hypothesis, "estimate"] == headline.estimate
        assert table.loc[hypothesis, "p_value_two_sided"] == headline.p_value


def test_a_plan_whose_reference_is_not_the_protocols_is_refused(
    study: Study, tmp_path: Path
) -> None:
    plan: dict[str, Any] = yaml.safe_load(study.sap.read_text(encoding="utf-8"))
    plan["treatment"] = {"experimental": [ADJUNCT, ALONE], "reference": PLACEBO}
    for hypothesis in plan["multiplicity"]["hypotheses"]:
        hypothesis["comparison"] = ADJUNCT
    sap = tmp_path / "sap.yaml"
    sap.write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    lock_sap(sap)
    with pytest.raises(AnalysisError, match=r"reference arm is 'CBT alone' \(arms.reference\)"):
        analyze(
            sap,
            study.snapshot,
            tmp_path / "out",
            randomization=study.randomization,
            protocol=study.protocol,
            executor=SerialExecutor(),
        )
