"""``analyze`` end to end on a small generated study: files, provenance, reruns, blinding."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from studyman.analysis.analyze import AnalyzeResult, analyze, derive_for_plan
from studyman.analysis.executor import ProcessExecutor, SerialExecutor
from studyman.analysis.lock import lock_sap
from studyman.analysis.run import run_plan
from studyman.analysis.sap import load_sap
from studyman.cli import app
from studyman.errors import ProtocolError

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"


@dataclasses.dataclass(frozen=True)
class Study:
    snapshot: Path
    randomization: Path
    sap: Path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    from studyman.protocol.loader import load_protocol
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    base = tmp_path_factory.mktemp("study")
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=60, seed=11)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    result = import_snapshot(
        protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
    )
    # The reference plan with fewer imputations, so that the test stays fast.
    text = SAP.read_text(encoding="utf-8")
    text = text.replace("imputations: 100", "imputations: 8").replace(
        "imputations: 20", "imputations: 4"
    )
    sap = base / "sap.yaml"
    sap.write_text(text, encoding="utf-8")
    lock_sap(sap)
    return Study(snapshot=result.path, randomization=base / "randomization.csv", sap=sap)


@dataclasses.dataclass(frozen=True)
class Analyzed:
    result: AnalyzeResult
    out: Path


@pytest.fixture(scope="module")
def analyzed(study: Study, tmp_path_factory: pytest.TempPathFactory) -> Analyzed:
    out = tmp_path_factory.mktemp("analyzed")
    result = analyze(
        study.sap,
        study.snapshot,
        out,
        randomization=study.randomization,
        executor=SerialExecutor(),
    )
    return Analyzed(result=result, out=out)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_analyze_writes_every_output_and_reruns_byte_identical(
    study: Study, analyzed: Analyzed, tmp_path: Path
) -> None:
    statuses = {o.id: o.status for o in analyzed.result.run.outcomes}
    assert set(statuses.values()) == {"ok"}
    # In this small study nobody in CBT alone reaches remission: the plan's sparse-data rule
    # (fewer than 10 events in an arm) fits Firth's model, and says so.
    summary = pd.read_csv(analyzed.out / "results" / "summary.csv", comment="#")
    remission = summary.set_index("analysis").loc["remission_logistic"]
    assert "Firth penalised likelihood with profile-likelihood CI" in remission["message"]
    assert "(Firth)" in remission["measure"]
    for relative in (
        "report.html",
        "manifest.json",
        "provenance.json",
        "results/summary.csv",
        "results/primary_mmrm.json",
        "results/primary_mmrm__lsmean_differences.csv",
        "results/tipping_point__grid.csv",
        "results/multiplicity.json",
        "results/multiplicity__hypotheses.csv",
        "results/multiplicity__graph.csv",
        "adam/adsl.parquet",
        "adam/adqs.csv",
        "adam/adae.csv",
        "figures/mean_change.svg",
        "figures/forest.svg",
        "figures/ae_dotplot.svg",
    ):
        assert (analyzed.out / relative).is_file(), relative
        # participant-level (and here unblinded) data: owner-only, as the closed DSMB report
        assert stat.S_IMODE((analyzed.out / relative).stat().st_mode) == 0o600, relative
    # The rerun goes through two local processes: same files whichever executor runs it.
    executor = ProcessExecutor(workers=2)
    try:
        again = analyze(
            study.sap, study.snapshot, tmp_path, randomization=study.randomization,
            executor=executor,
        )  # fmt: skip
    finally:
        executor.close()
    assert again.files == analyzed.result.files
    assert _files(tmp_path) == _files(analyzed.out)


def test_multiplicity_decisions_and_the_graph_are_in_results_and_report(
    analyzed: Analyzed,
) -> None:
    hypotheses = pd.read_csv(
        analyzed.out / "results" / "multiplicity__hypotheses.csv", comment="#"
    ).set_index("hypothesis")
    assert list(hypotheses.index) == ["H1", "H2", "H3", "H4", "H5"]
    assert set(hypotheses["decision"]) <= {"rejected", "not rejected"}
    assert (hypotheses["adjusted_p_value"] >= hypotheses["p_value"]).all()
    assert ((hypotheses["adjusted_p_value"] <= 0.025) == hypotheses["rejected"]).all()
    primary = next(o for o in analyzed.result.run.outcomes if o.id == "primary_mmrm")
    assert primary.headline is not None
    assert primary.headline.p_value is not None
    one_sided = (
        primary.headline.p_value / 2
        if primary.headline.estimate < 0
        else 1 - (primary.headline.p_value / 2)
    )
    assert hypotheses.loc["H1", "p_value"] == pytest.approx(one_sided)
    tipping = next(o for o in analyzed.result.run.outcomes if o.id == "tipping_point")
    assert (tipping.details["alpha"], tipping.details["sidedness"]) == (0.025, "one_sided")
    report = (analyzed.out / "report.html").read_text(encoding="utf-8")
    assert "multiplicity: Familywise error control over 5 hypotheses" in report
    assert "<h4>graph</h4>" in report
    # the plan's text (ICH E9(R1) estimands, missing data, imputation model, which KR)
    assert "<h2>Estimands, intercurrent events and missing data (plan text)</h2>" in report
    assert "<h3>Imputation model</h3>" in report
    assert "Kenward-Roger-Linear" in report


def test_every_output_carries_the_provenance(study: Study, analyzed: Analyzed) -> None:
    out = analyzed.out
    plan_sha = load_sap(study.sap).sha256
    snapshot_sha = analyzed.result.provenance["snapshot"]["sha256"]
    summary = (out / "results" / "summary.csv").read_text()
    assert f"# snapshot sha256 {snapshot_sha}" in summary
    assert f"version 1.0 sha256 {plan_sha}" in summary
    assert "# seed 20261125" in summary
    document = json.loads((out / "results" / "primary_mmrm.json").read_text())
    assert document["provenance"]["plan"]["sha256"] == plan_sha
    assert document["provenance"]["plan"]["amendments"] == []
    assert plan_sha in (out / "figures" / "forest.svg").read_text()
    assert plan_sha in (out / "report.html").read_text()
    table = pd.read_csv(out / "results" / "primary_mmrm__lsmean_differences.csv", comment="#")
    assert list(table["visit"]) == [1, 2, 4, 6, 8, 12]


def test_adam_changes_are_aval_minus_base_and_populations_nest(analyzed: Analyzed) -> None:
    adsl = pd.read_parquet(analyzed.out / "adam" / "adsl.parquet")
    adqs = pd.read_parquet(analyzed.out / "adam" / "adqs.parquet")
    assert adsl["USUBJID"].is_unique
    post = adqs[adqs["AVISITN"] > 0].dropna(subset=["AVAL", "BASE"])
    assert ((post["AVAL"] - post["BASE"]) == post["CHG"]).all()
    assert (adqs.loc[adqs["ABLFL"] == "Y", "AVISITN"] == 0).all()
    itt, mitt, pp = (
        set(adsl.loc[adsl[f] == "Y", "SUBJID"]) for f in ("ITTFL", "MITTFL", "PPROTFL")
    )
    assert pp <= mitt <= itt
    assert len(itt) == 60
    assert set(adsl.loc[adsl["ITTFL"] == "Y", "TRT01P"]) == {"CBT + adjunct", "CBT alone"}


def test_blinded_run_refuses_arm_comparisons_and_gives_a_pooled_review(
    study: Study, tmp_path: Path
) -> None:
    result = analyze(study.sap, study.snapshot, tmp_path, executor=SerialExecutor())
    assert {o.status for o in result.run.outcomes} == {"refused"}
    assert all(not o.tables and o.headline is None for o in result.run.outcomes)
    assert (tmp_path / "review" / "outcomes_by_visit.csv").is_file()
    assert not (tmp_path / "figures" / "forest.svg").exists()
    adsl = pd.read_csv(tmp_path / "adam" / "adsl.csv", comment="#")
    assert "TRT01P" not in adsl.columns
    assert "TRT01A" not in adsl.columns
    review = pd.read_csv(tmp_path / "review" / "outcomes_by_visit.csv", comment="#")
    assert not any("ARM" in c or "TRT" in c for c in review.columns)
    assert "BLINDED DATA REVIEW" in (tmp_path / "report.html").read_text()


def test_failing_analysis_is_reported_alone_while_others_run(study: Study) -> None:
    from studyman.analysis.adam import choice_labels, normalise_randomization
    from studyman.sources.snapshot import read_snapshot

    loaded = load_sap(study.sap)
    snapshot = read_snapshot(study.snapshot)
    tables = {k: v for k, v in snapshot.tables.items() if k != "gad7"}
    metadata = json.loads((study.snapshot / "redcap" / "metadata.json").read_text())
    randomization = normalise_randomization(
        pd.read_csv(study.randomization, dtype=str), choice_labels(metadata)["rand_arm"]
    )
    adam = derive_for_plan(loaded, tables, metadata, randomization)
    # The three MMRMs of the plan are enough to show one failing while the others run.
    mmrms = tuple(a for a in loaded.plan.analyses if a.id.endswith("_mmrm"))[:3]
    plan = loaded.plan.model_copy(update={"analyses": mmrms})
    run = run_plan(plan, adam, blinded=False, executor=SerialExecutor())
    statuses = {o.id: o for o in run.outcomes}
    assert statuses["gad7_mmrm"].status == "failed"
    assert "GAD7" in statuses["gad7_mmrm"].message
    assert statuses["primary_mmrm"].status == "ok"
    assert statuses["phq9_mmrm"].status == "ok"
    assert [o.id for o in run.failed] == ["gad7_mmrm"]


def test_analyze_refuses_a_plan_changed_since_lock(study: Study, tmp_path: Path) -> None:
    sap = tmp_path / "sap.yaml"
    sap.write_text(study.sap.read_text().replace("seed: 20261125", "seed: 1"), encoding="utf-8")
    (tmp_path / "sap.lock.json").write_bytes((study.sap.parent / "sap.lock.json").read_bytes())
    with pytest.raises(ProtocolError, match="changed since version"):
        analyze(sap, study.snapshot, tmp_path / "out", randomization=study.randomization)
    assert not (tmp_path / "out").exists()


def test_cli_sap_lock_and_analyze(study: Study, tmp_path: Path) -> None:
    sap = tmp_path / "sap.yaml"
    sap.write_bytes(study.sap.read_bytes())
    runner = CliRunner()
    locked = runner.invoke(app, ["sap", "lock", "--sap", str(sap)])
    assert locked.exit_code == 0, locked.output
    assert (tmp_path / "sap.lock.json").is_file()
    result = runner.invoke(
        app,
        [
            "analyze",
            "--sap",
            str(sap),
            "--snapshot",
            str(study.snapshot),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "refused  primary_mmrm" in result.output
    assert (tmp_path / "out" / "report.html").is_file()


def test_rerun_into_the_same_directory_leaves_no_file_of_the_earlier_run(
    study: Study, tmp_path: Path
) -> None:
    analyze(study.sap, study.snapshot, tmp_path, executor=SerialExecutor())
    assert (tmp_path / "review" / "disposition.csv").is_file()
    (tmp_path / "notes.txt").write_text("kept")
    sap = load_sap(study.sap)
    mmrm_only = sap.plan.model_copy(
        update={"analyses": tuple(a for a in sap.plan.analyses if a.id == "primary_mmrm")}
    )
    from studyman.analysis.analyze import _snapshot_tables
    from studyman.analysis.outputs import write_outputs

    tables, metadata, _ = _snapshot_tables(study.snapshot, None)
    adam = derive_for_plan(sap, tables, metadata, None)
    run = run_plan(mmrm_only, adam, blinded=False, executor=SerialExecutor())
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    files = write_outputs(tmp_path, plan=mmrm_only, run=run, adam=adam, provenance=provenance)
    assert not (tmp_path / "review" / "disposition.csv").exists()
    assert (tmp_path / "notes.txt").read_text() == "kept"
    assert set(files) | {"manifest.json"} == {
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
    } - {"notes.txt"}


def test_amendment_history_is_stamped_on_every_output(study: Study, tmp_path: Path) -> None:
    sap = tmp_path / "sap.yaml"
    sap.write_bytes(study.sap.read_bytes())
    lock_sap(sap)
    text = sap.read_text(encoding="utf-8")
    text = text.replace('version: "1.0"', 'version: "1.1"', 1).replace(
        "amendments: []",
        'amendments:\n  - {version: "1.1", date: 2026-12-01, reason: "remission threshold 8"}',
        1,
    )
    sap.write_text(text.replace("threshold: 7}", "threshold: 8}"), encoding="utf-8")
    analyze(sap, study.snapshot, tmp_path / "out", executor=SerialExecutor())
    out = tmp_path / "out"
    stamp = "remission threshold 8"
    assert stamp in (out / "results" / "summary.csv").read_text().split("analysis,")[0]
    assert stamp in (out / "adam" / "adsl.csv").read_text().split("STUDYID")[0]
    assert stamp in (out / "figures" / "mean_change.svg").read_text()
    assert stamp in (out / "report.html").read_text()
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["plan"]["version"] == "1.1"
    assert provenance["plan"]["locked_version"] == "1.0"


def test_snapshot_without_adverse_events_fails_only_the_rate_models(study: Study) -> None:
    from studyman.analysis.adam import choice_labels, normalise_randomization
    from studyman.sources.snapshot import read_snapshot

    loaded = load_sap(study.sap)
    snapshot = read_snapshot(study.snapshot)
    tables = {k: v for k, v in snapshot.tables.items() if k != "adverse_events"}
    metadata = json.loads((study.snapshot / "redcap" / "metadata.json").read_text())
    randomization = normalise_randomization(
        pd.read_csv(study.randomization, dtype=str), choice_labels(metadata)["rand_arm"]
    )
    adam = derive_for_plan(loaded, tables, metadata, randomization)
    safety = tuple(a for a in loaded.plan.analyses if a.kind.startswith("ae_"))
    plan = loaded.plan.model_copy(update={"analyses": safety})
    run = run_plan(plan, adam, blinded=False, executor=SerialExecutor())
    failed = {o.id: o.message for o in run.outcomes if o.status == "failed"}
    assert set(failed) == {"ae_eair", "ae_nb2", "ae_glmm"}
    assert "no events" in failed["ae_nb2"]
    incidence = next(o for o in run.outcomes if o.id == "ae_incidence")
    assert incidence.tables["incidence"].iloc[0]["risk_difference"] == 0.0


def test_a_plan_amended_after_unblinding_runs_only_with_the_flag_and_says_so(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from studyman.cli import main

    sap = tmp_path / "sap.yaml"
    sap.write_bytes(study.sap.read_bytes())
    lock_sap(sap)
    # the statistician reads the allocation under version 1.0 ...
    analyze(
        sap, study.snapshot, tmp_path / "v10", randomization=study.randomization,
        executor=SerialExecutor(),
    )  # fmt: skip
    unblinding = json.loads((tmp_path / "sap.lock.json").read_text())["unblinding"]
    assert unblinding["plan_version"] == "1.0"
    first = json.loads((tmp_path / "v10" / "provenance.json").read_text())["plan"]
    assert first["unblinding"] == unblinding
    assert first["post_unblinding_amendment"] is None
    # ... then amends the primary model and even re-locks it (the attack of issue 14)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    text = sap.read_text(encoding="utf-8").replace('version: "1.0"', 'version: "1.1"', 1)
    text = text.replace(
        "amendments: []",
        f'amendments:\n  - {{version: "1.1", date: {today}, reason: "drop site from the MMRM"}}',
        1,
    ).replace("    strata: [STRATSEV, SITEID]\n", "    strata: [STRATSEV]\n", 1)
    sap.write_text(text, encoding="utf-8")
    lock_sap(sap)
    with pytest.raises(ProtocolError, match="amended after unblinding"):
        analyze(sap, study.snapshot, tmp_path / "v11", randomization=study.randomization)
    assert not (tmp_path / "v11").exists()
    command = [
        "analyze", "--sap", str(sap), "--snapshot", str(study.snapshot),
        "--randomization", str(study.randomization), "--workers", "1",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        main([*command, "--out", str(tmp_path / "cli-refused")])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "--post-unblinding-amendment" in error
    assert error.count("\n") == 1
    assert not (tmp_path / "cli-refused").exists()
    reason = "regulator asked for the model without site"
    code = main([*command, "--out", str(tmp_path / "v11"), "--post-unblinding-amendment", reason])
    assert code in (None, 0)
    assert "WARNING: plan amended after unblinding (version 1.1" in capsys.readouterr().err
    provenance = json.loads((tmp_path / "v11" / "provenance.json").read_text())["plan"]
    assert provenance["post_unblinding_amendment"]["reason"] == reason
    assert provenance["unblinding"] == unblinding  # the moment of unblinding never moves
    report = (tmp_path / "v11" / "report.html").read_text(encoding="utf-8")
    banner = report.index("PLAN AMENDED AFTER UNBLINDING")
    assert banner < report.index("<h2>Provenance</h2>")
    assert reason in report[banner:]
    assert (
        reason in (tmp_path / "v11" / "results" / "summary.csv").read_text().split("analysis,")[0]
    )


def _adam_and_plan(study: Study) -> tuple[Any, Any]:
    from studyman.analysis.adam import choice_labels, normalise_randomization
    from studyman.sources.snapshot import read_snapshot

    loaded = load_sap(study.sap)
    snapshot = read_snapshot(study.snapshot)
    metadata = json.loads((study.snapshot / "redcap" / "metadata.json").read_text())
    randomization = normalise_randomization(
        pd.read_csv(study.randomization, dtype=str), choice_labels(metadata)["rand_arm"]
    )
    adam = derive_for_plan(loaded, dict(snapshot.tables), metadata, randomization)
    keep = {"primary_mmrm", "phq9_mmrm", "response_logistic", "pp_mmrm"}
    plan = loaded.plan.model_copy(
        update={"analyses": tuple(a for a in loaded.plan.analyses if a.id in keep)}
    )
    return adam, plan


def test_a_single_level_covariate_warns_and_fails_the_essential_primary(study: Study) -> None:
    adam, plan = _adam_and_plan(study)
    adam = dataclasses.replace(adam, adsl=adam.adsl.assign(STRATSEV="severe"))
    run = run_plan(plan, adam, blinded=False, executor=SerialExecutor())
    outcomes = {o.id: o for o in run.outcomes}
    # the plan marks the primary essential: it fails rather than quietly drop a stratum
    assert outcomes["primary_mmrm"].status == "failed"
    assert "essential analysis cannot be run as the plan wrote it" in (
        outcomes["primary_mmrm"].message
    )
    assert outcomes["primary_mmrm"].headline is None
    # the others run without it, and say so as warnings of the run
    assert outcomes["phq9_mmrm"].status == "ok"
    assert outcomes["response_logistic"].status == "ok"
    assert any(w.startswith("phq9_mmrm: covariate(s) STRATSEV") for w in run.warnings)
    assert any(w.startswith("response_logistic: covariate(s) STRATSEV") for w in run.warnings)
    assert any(w.startswith("primary_mmrm: covariate(s) STRATSEV") for w in run.warnings)


def test_an_empty_population_is_a_warning_naming_it(study: Study) -> None:
    adam, plan = _adam_and_plan(study)
    adam = dataclasses.replace(adam, adsl=adam.adsl.assign(PPROTFL="N"))
    run = run_plan(plan, adam, blinded=False, executor=SerialExecutor())
    pp = next(o for o in run.outcomes if o.id == "pp_mmrm")
    assert pp.status == "failed"
    assert "pp_mmrm: not run: population 'pp'" in "\n".join(run.warnings)
    assert next(o for o in run.outcomes if o.id == "primary_mmrm").status == "ok"


def test_a_planned_visit_without_data_warns_on_the_command_line_and_atop_the_report(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from studyman.cli import main

    sap = tmp_path / "sap.yaml"
    text = study.sap.read_text(encoding="utf-8")
    # week 10 is no visit of the schedule: nobody has data there
    text = text.replace("  hamd17: [1, 2, 4, 6, 8, 12]", "  hamd17: [1, 2, 4, 6, 8, 10, 12]", 1)
    sap.write_text(text, encoding="utf-8")
    lock_sap(sap)
    code = main(
        [
            "analyze", "--sap", str(sap), "--snapshot", str(study.snapshot),
            "--randomization", str(study.randomization), "--workers", "1",
            "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 1  # the essential primary analysis could not run as written
    error = capsys.readouterr().err
    assert "WARNING: primary_mmrm: planned HAMD17 analysis visit(s) week 10 have no data" in error
    assert "WARNING: mi_mar: planned HAMD17 analysis visit(s) week 10" in error
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    banner = report.index("THE PLAN COULD NOT BE RUN EXACTLY AS WRITTEN")
    assert banner < report.index("<h2>Provenance</h2>")
    assert "hamd_slope: planned HAMD17 analysis visit(s) week 10" in report[banner:]
    summary = pd.read_csv(tmp_path / "out" / "results" / "summary.csv", comment="#")
    statuses = summary.set_index("analysis")["status"]
    assert statuses["primary_mmrm"] == "failed"
    assert statuses["phq9_mmrm"] == "ok"
