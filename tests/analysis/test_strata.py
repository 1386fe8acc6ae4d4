"""Strata as randomised: every stratified model has the protocol's stratification factors,
with the plan's pooling of small sites."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis.sap import SitePooling, load_sap
from studyman.analysis.strata import (
    pool_sites,
    site_levels,
    stratification_covariates,
    unstratified_analyses,
)
from studyman.protocol.loader import load_protocol

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"


def _sites(**counts: int) -> pd.Series:
    return pd.Series([site for site, n in counts.items() for _ in range(n)])


def test_without_a_rule_or_small_sites_every_site_is_its_own_level() -> None:
    sites = _sites(A=30, B=25, C=21)
    assert site_levels(sites, None) == {"A": "A", "B": "B", "C": "C"}
    assert site_levels(sites, SitePooling(min_participants=20)) == {"A": "A", "B": "B", "C": "C"}


def test_sites_below_the_size_are_pooled_into_the_named_level() -> None:
    levels = site_levels(_sites(A=30, B=25, C=12, D=9), SitePooling(min_participants=20))
    assert levels == {"A": "A", "B": "B", "C": "POOLED", "D": "POOLED"}
    named = site_levels(_sites(A=30, C=12, D=9), SitePooling(min_participants=20, pool_into="X"))
    assert named["C"] == named["D"] == "X"


def test_a_pooled_level_still_too_small_joins_the_smallest_large_site() -> None:
    levels = site_levels(_sites(A=30, B=25, C=5, D=4), SitePooling(min_participants=20))
    assert levels == {"A": "A", "B": "B+POOLED", "C": "B+POOLED", "D": "B+POOLED"}
    # every site small: one level (a single-level covariate, which the run reports loudly)
    every = site_levels(_sites(A=5, B=4), SitePooling(min_participants=20))
    assert set(every.values()) == {"POOLED"}


def test_pool_sites_maps_participants_and_keeps_missing_sites_missing() -> None:
    mapped = pool_sites(pd.Series(["A", "C", None, "Z"]), {"A": "A", "C": "POOLED"})
    assert mapped.tolist()[:2] == ["A", "POOLED"]
    assert mapped.isna().tolist() == [False, False, True, False]
    assert mapped.iloc[3] == "Z"


def test_the_shipped_plan_adjusts_every_stratified_model_for_every_stratification_factor() -> None:
    protocol = load_protocol(PROTOCOL)
    loaded = load_sap(SAP)
    assert stratification_covariates(protocol) == ("SITEID", "STRATSEV")
    assert unstratified_analyses(loaded.plan, protocol) == {}
    assert loaded.plan.site_pooling is not None
    assert loaded.plan.imputation_model is not None
    assert set(loaded.plan.imputation_model.variables) >= {"SITEID", "STRATSEV"}
    # a plan that leaves site out of a responder model is named
    analyses = tuple(
        a.model_copy(update={"strata": ("STRATSEV",)}) if a.id == "response_logistic" else a
        for a in loaded.plan.analyses
    )
    careless = loaded.plan.model_copy(update={"analyses": analyses})
    assert unstratified_analyses(careless, protocol) == {"response_logistic": ["SITEID"]}


def test_site_pooling_in_a_plan_is_checked_on_load(tmp_path: Path) -> None:
    from studyman.errors import ProtocolError

    text = SAP.read_text(encoding="utf-8").replace(
        "  min_participants: 10\n", "  min_participants: 0\n", 1
    )
    assert text != SAP.read_text(encoding="utf-8")
    bad = tmp_path / "sap.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"site_pooling\.min_participants"):
        load_sap(bad)


@pytest.fixture(scope="module")
def stratified_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from studyman.analysis.adam import choice_labels
    from studyman.analysis.analyze import (
        _snapshot_tables,
        derive_for_plan,
        plan_facts,
        read_randomization,
    )
    from studyman.analysis.run import run_plan
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    base = tmp_path_factory.mktemp("strata-study")
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=80, seed=5)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    dictionary = PROTOCOL.parent / "redcap" / "data_dictionary.csv"
    snapshot = import_snapshot(
        protocol, base / "records.csv", dictionary, base / "snapshots", name="s1"
    ).path
    tables, metadata, _ = _snapshot_tables(snapshot, None)
    randomization = read_randomization(
        base / "randomization.csv", choice_labels(metadata)[protocol.arms.field]
    )
    loaded = load_sap(SAP)
    facts = plan_facts(loaded, protocol, tables, randomization)
    adam = derive_for_plan(loaded, tables, metadata, randomization, facts)
    chosen = ("primary_mmrm", "response_logistic", "hamd_slope", "mi_mar")
    plan = loaded.plan.model_copy(
        update={
            "analyses": tuple(a for a in loaded.plan.analyses if a.id in chosen),
            "multiplicity": None,
            "imputations": 3,
            # a stricter rule than the shipped plan's, so that 80 participants have sites to pool
            "site_pooling": SitePooling(min_participants=20),
        }
    )
    run = run_plan(plan, adam, blinded=False)
    # the same imputation analysis without site, to show that site enters the imputation model
    without_site = plan.model_copy(
        update={
            "analyses": tuple(
                a.model_copy(update={"strata": ("STRATSEV",)})
                for a in plan.analyses
                if a.id == "mi_mar"
            )
        }
    )
    unstratified = run_plan(without_site, adam, blinded=False)
    return {
        "run": run,
        "adam": adam,
        "plan": plan,
        "without_site": unstratified,
        "snapshot": snapshot,
    }


def test_site_is_in_every_stratified_model_with_the_pooled_levels(
    stratified_run: dict[str, object],
) -> None:
    run, adam, plan = stratified_run["run"], stratified_run["adam"], stratified_run["plan"]
    adsl = adam.adsl  # type: ignore[attr-defined]
    randomised = adsl[adsl["RANDFL"] == "Y"]
    counts = randomised["SITEID"].value_counts()
    pooling = plan.site_pooling  # type: ignore[attr-defined]
    # 80 participants over four sites: the rule has something to pool, and leaves two levels
    assert (counts < pooling.min_participants).any()
    levels = set(site_levels(randomised["SITEID"], pooling).values())
    assert 2 <= len(levels) < len(counts)
    for outcome in run.outcomes:  # type: ignore[attr-defined]
        assert outcome.status == "ok", (outcome.id, outcome.message)
        if outcome.kind == "multiple_imputation":
            other = stratified_run["without_site"].outcomes[0]  # type: ignore[attr-defined]
            assert other.id == outcome.id
            assert outcome.headline.estimate != pytest.approx(other.headline.estimate, abs=1e-6)
            continue
        text = str(outcome.details) + "".join(table.to_csv() for table in outcome.tables.values())
        assert "SITEID" in text, outcome.id
        # the fitted site levels are the pooled ones, never a small site on its own
        for site in counts.index[counts < pooling.min_participants]:
            assert f"SITEID[T.{site}]" not in text, (outcome.id, site)


def test_analyze_warns_when_a_model_leaves_out_a_stratification_factor(
    tmp_path: Path, stratified_run: dict[str, object]
) -> None:
    from studyman.analysis.analyze import analyze
    from studyman.analysis.executor import SerialExecutor
    from studyman.analysis.lock import lock_sap

    snapshot = stratified_run["snapshot"]
    assert isinstance(snapshot, Path)
    text = SAP.read_text(encoding="utf-8")
    careless = text.replace(
        "    rule: {kind: percent_reduction, threshold: 50}\n"
        "    baseline: BASE\n"
        "    strata: [STRATSEV, SITEID]\n",
        "    rule: {kind: percent_reduction, threshold: 50}\n"
        "    baseline: BASE\n"
        "    strata: [STRATSEV]\n",
        1,
    )
    assert careless != text
    for name, plan_text, expected in (("as-shipped", text, 0), ("careless", careless, 1)):
        sap = tmp_path / name / "sap.yaml"
        sap.parent.mkdir()
        sap.write_text(plan_text, encoding="utf-8")
        lock_sap(sap)
        # blinded (no list): every comparison is refused, the plan's own fault is still named
        result = analyze(sap, snapshot, tmp_path / name / "out", executor=SerialExecutor())
        warned = [w for w in result.run.warnings if "stratified by" in w]
        assert len(warned) == expected, result.run.warnings
        if expected:
            assert warned[0].startswith("response_logistic: ")
            assert "SITEID" in warned[0]
            report = (tmp_path / name / "out" / "report.html").read_text(encoding="utf-8")
            assert warned[0] in report
