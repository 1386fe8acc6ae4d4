"""Safety assessments of the plan: C-SSRS (checked against R), and their run from a snapshot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis.safety import CSSRS_CATEGORY_NAMES, compare_proportions, cssrs_analysis
from studyman.analysis.sap import SafetyAssessmentAnalysis

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
BEHAVIOUR_LABELS = (
    "Actual suicide attempt",
    "Interrupted attempt",
    "Aborted or self-interrupted attempt",
    "Preparatory acts or behaviour",
)


def _plan_entry(kind: str = "cssrs", **extra: object) -> SafetyAssessmentAnalysis:
    return SafetyAssessmentAnalysis.model_validate(
        {"id": kind, "kind": kind, "role": "safety", "label": kind, "population": "safety", **extra}
    )


def _reference_cssrs() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]:
    data = pd.read_csv(REFERENCE / "cssrs_fda.csv", dtype={"SUBJID": str})
    subjects = pd.read_csv(REFERENCE / "cssrs_fda_subjects.csv", dtype=str)
    expected = json.loads((REFERENCE / "cssrs_fda.json").read_text(encoding="utf-8"))
    return data, subjects, expected


def test_cssrs_counts_newcombe_and_fisher_match_r() -> None:
    data, subjects, expected = _reference_cssrs()
    outcome = cssrs_analysis(
        _plan_entry(), data, subjects, arms=("A", "B"), behaviour_labels=BEHAVIOUR_LABELS
    )
    table = outcome.tables["occurrence"].set_index(["category", "period"])
    rows = expected["occurrence"]
    assert isinstance(rows, list)
    assert len(table) == len(rows)
    for row in rows:
        got = table.loc[(row["category"], row["period"])]
        for column in ("n_A", "N_A", "n_B", "N_B"):
            assert int(got[column]) == row[column], (row["category"], row["period"], column)
        for column in ("risk_difference", "rd_ci_lower", "rd_ci_upper", "p_fisher"):
            assert got[column] == pytest.approx(row[column], rel=1e-9, abs=1e-12), (
                row["category"],
                row["period"],
                column,
            )


def test_cssrs_shift_table_matches_r() -> None:
    data, subjects, expected = _reference_cssrs()
    outcome = cssrs_analysis(
        _plan_entry(), data, subjects, arms=("A", "B"), behaviour_labels=BEHAVIOUR_LABELS
    )
    shift = outcome.tables["shift"]
    names = [*CSSRS_CATEGORY_NAMES, "Not assessed"]
    reference = expected["shift"]
    assert isinstance(reference, dict)
    for arm in ("A", "B"):
        got = shift[shift["arm"] == arm].set_index("baseline").loc[names, names]
        assert got.to_numpy().tolist() == reference[arm], arm
        # every participant of the arm is in exactly one cell, the one without data included
        assert int(got.to_numpy().sum()) == int((subjects["ARM"] == arm).sum())


def test_cssrs_headline_is_any_ideation_or_behaviour_after_baseline() -> None:
    data, subjects, expected = _reference_cssrs()
    outcome = cssrs_analysis(_plan_entry(), data, subjects, arms=("A", "B"))
    row = next(
        r
        for r in expected["occurrence"]  # type: ignore[union-attr]
        if r["category"] == "Suicidal ideation or behaviour" and r["period"] == "post-baseline"
    )
    assert outcome.headline is not None
    assert outcome.headline.estimate == pytest.approx(row["risk_difference"], rel=1e-12)
    assert outcome.headline.p_value == pytest.approx(row["p_fisher"], rel=1e-9)
    assert outcome.details["evaluable"] == {"A": row["N_A"], "B": row["N_B"]}


def test_newcombe_interval_reproduces_newcombe_1998_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II, example (a): 56/70 vs 48/80,
    # method 10: 0.0524 to 0.3339.
    result = compare_proportions(56, 70, 48, 80)
    assert result["risk_difference"] == pytest.approx(0.2)
    assert result["rd_ci_lower"] == pytest.approx(0.0524, abs=5e-5)
    assert result["rd_ci_upper"] == pytest.approx(0.3339, abs=5e-5)
    empty = compare_proportions(0, 0, 3, 10)
    assert all(math.isnan(v) for v in empty.values())


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    columns = [f"IDEATION_{i}" for i in range(1, 6)] + [f"BEHAVIOUR_{i}" for i in range(1, 5)]
    frame = pd.DataFrame(rows)
    for column in [*columns, "NSSI"]:
        frame[column] = pd.to_numeric(frame.get(column), errors="coerce").astype(float)
    return frame


def test_cssrs_baseline_ideation_is_not_post_baseline_and_behaviour_outranks_ideation() -> None:
    no = {f"IDEATION_{i}": 0 for i in range(1, 6)} | {f"BEHAVIOUR_{i}": 0 for i in range(1, 5)}
    rows = [
        # S1: type 5 ideation at baseline only: not a post-baseline occurrence
        {"SUBJID": "S1", "DAY": 0, "PERIOD": "baseline", **no, "IDEATION_5": 1, "NSSI": 0},
        {"SUBJID": "S1", "DAY": 7, "PERIOD": "post", **no, "NSSI": 0},
        # S2: behaviour and type 1 ideation in one post-baseline assessment: category behaviour
        {"SUBJID": "S2", "DAY": 0, "PERIOD": "baseline", **no, "NSSI": 0},
        {"SUBJID": "S2", "DAY": 7, "PERIOD": "post", **no, "IDEATION_1": 1, "BEHAVIOUR_2": 1},
        # S3: a post-baseline form with nothing answered: not evaluable
        {"SUBJID": "S3", "DAY": 0, "PERIOD": "baseline", **no, "NSSI": 0},
        {"SUBJID": "S3", "DAY": 7, "PERIOD": "post"},
        # S4 (other arm): self-injury without intent only
        {"SUBJID": "S4", "DAY": 7, "PERIOD": "post", **no, "NSSI": 1},
        # S9: not in the population; its events must not be counted
        {"SUBJID": "S9", "DAY": 7, "PERIOD": "post", **no, "IDEATION_1": 1},
    ]
    subjects = pd.DataFrame({"SUBJID": ["S1", "S2", "S3", "S4"], "ARM": ["X", "X", "X", "R"]})
    outcome = cssrs_analysis(_plan_entry(), _frame(rows), subjects, arms=("X", "R"))
    table = outcome.tables["occurrence"].set_index(["category", "period"])
    post = "post-baseline"
    assert table.loc[("Suicidal ideation (types 1-5)", post), ["n_X", "N_X"]].tolist() == [1, 2]
    assert table.loc[(CSSRS_CATEGORY_NAMES[5], post), "n_X"] == 0
    assert table.loc[(CSSRS_CATEGORY_NAMES[5], "baseline"), "n_X"] == 1
    assert table.loc[("Suicidal behaviour", post), "n_X"] == 1
    assert table.loc[("Self-injurious behaviour without suicidal intent", post), "n_R"] == 1
    assert table.loc[("Suicidal ideation or behaviour", post), "n_R"] == 0
    shift = outcome.tables["shift"].set_index(["arm", "baseline"])
    assert shift.loc[("X", CSSRS_CATEGORY_NAMES[0]), "Suicidal behaviour"] == 1  # S2
    assert shift.loc[("X", CSSRS_CATEGORY_NAMES[5]), CSSRS_CATEGORY_NAMES[0]] == 1  # S1
    assert shift.loc[("X", CSSRS_CATEGORY_NAMES[0]), "Not assessed"] == 1  # S3
    worse = table.loc[
        ("Worsening (most severe post-baseline category above baseline)", "change from baseline")
    ]
    assert worse[["n_X", "N_X"]].tolist() == [1, 2]  # S2 worse, S1 better; S3 not evaluable


def test_cssrs_plan_entry_refuses_parameters_and_unknown_keys() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="vital_signs"):
        _plan_entry(parameters=["SBP"])
    with pytest.raises(ValidationError):
        _plan_entry(test="chi_square")


# ----------------------------------------------------------------------------- from a snapshot

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"


class _Study:
    def __init__(self, base: Path) -> None:
        from studyman.analysis.adam import choice_labels
        from studyman.analysis.analyze import _snapshot_tables, read_randomization
        from studyman.analysis.sap import load_sap
        from studyman.protocol.loader import load_protocol
        from studyman.sources.offline import import_snapshot
        from studyman.synthetic.generator import generate_trial

        self.protocol = load_protocol(PROTOCOL)
        trial = generate_trial(self.protocol, n_participants=60, seed=5)
        trial.records.to_csv(base / "records.csv", index=False)
        trial.randomization.to_csv(base / "randomization.csv", index=False)
        snapshot = import_snapshot(
            self.protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
        ).path
        self.tables, self.metadata, _ = _snapshot_tables(snapshot, None)
        self.randomization = read_randomization(
            base / "randomization.csv", choice_labels(self.metadata)["rand_arm"]
        )
        self.loaded = load_sap(SAP)
        self._untouched: dict[str, object] | None = None

    def run(self, tables: dict[str, pd.DataFrame] | None = None) -> dict[str, object]:
        """The plan's safety entries on *tables* (default: the study's, computed once)."""
        if tables is None:
            if self._untouched is None:
                self._untouched = self._run(self.tables)
            return self._untouched
        return self._run(tables)

    def _run(self, tables: dict[str, pd.DataFrame]) -> dict[str, object]:
        from studyman.analysis.analyze import derive_for_plan, plan_facts
        from studyman.analysis.run import run_plan
        from studyman.analysis.safety import safety_data

        facts = plan_facts(self.loaded, self.protocol, tables, self.randomization)
        adam = derive_for_plan(self.loaded, tables, self.metadata, self.randomization, facts)
        plan = self.loaded.plan
        safety_entries = tuple(a for a in plan.analyses if isinstance(a, SafetyAssessmentAnalysis))
        only_safety = plan.model_copy(update={"analyses": safety_entries, "multiplicity": None})
        run = run_plan(
            only_safety, adam, blinded=False, safety=safety_data(self.protocol, tables, facts)
        )
        return {"run": run, "facts": facts, "adam": adam}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> _Study:
    return _Study(tmp_path_factory.mktemp("safety-study"))


def _post_baseline_any(study: _Study, tables: dict[str, pd.DataFrame], arm: str) -> int:
    """Independent count: safety-population participants of *arm* with any ideation or
    behaviour item yes at a scheduled visit after baseline, dated on or before the cut-off."""
    protocol, key = study.protocol, study.protocol.study.record_id_field
    spec = protocol.cssrs
    later = {v.event for v in protocol.visits if v.target_day is not None and v.target_day > 0}
    frame = tables[spec.since_last_form]
    visit = tables[protocol.visit_form.form]
    dates = visit.set_index([key, "redcap_event_name"])[protocol.visit_form.date_field]
    when = pd.to_datetime(
        dates.reindex(pd.MultiIndex.from_frame(frame[[key, "redcap_event_name"]])).to_numpy()
    )
    cutoff = pd.Timestamp(protocol.reporting.data_cut)
    rows = frame[frame["redcap_event_name"].isin(later) & ~(when > cutoff)]
    items = [*spec.ideation_fields, *spec.behaviour_fields]
    yes = (rows[items].apply(pd.to_numeric, errors="coerce") == 1).any(axis=1)
    hit = set(rows.loc[yes, key].astype(str))
    facts = study.run()["facts"]
    members = set(facts.members("safety").astype(str))  # type: ignore[attr-defined]
    arms = facts.subjects["arm"]  # type: ignore[attr-defined]
    return sum(1 for s in hit & members if arms.get(s) == arm)


def test_cssrs_from_a_snapshot_counts_what_the_forms_say(study: _Study) -> None:
    result = study.run()
    run = result["run"]
    outcome = next(o for o in run.outcomes if o.id == "cssrs")  # type: ignore[attr-defined]
    assert outcome.status == "ok", outcome.message
    table = outcome.tables["occurrence"].set_index(["category", "period"])
    row = table.loc[("Suicidal ideation or behaviour", "post-baseline")]
    plan = study.loaded.plan
    for arm in (plan.treatment.experimental, plan.treatment.reference):
        assert row[f"n_{arm}"] == _post_baseline_any(study, study.tables, arm)
    # the headline and the table say the same
    assert outcome.headline is not None
    assert outcome.headline.estimate == pytest.approx(row["risk_difference"])


def test_cssrs_after_the_data_cut_is_not_counted(study: _Study) -> None:
    protocol, key = study.protocol, study.protocol.study.record_id_field
    spec, form = protocol.cssrs, protocol.visit_form
    frame = study.tables[spec.since_last_form]
    items = [*spec.ideation_fields, *spec.behaviour_fields]
    quiet = ~(frame[items].apply(pd.to_numeric, errors="coerce") == 1).any(axis=1)
    later = [v.event for v in protocol.visits if v.target_day is not None and v.target_day > 0]
    rows = frame[quiet & frame["redcap_event_name"].isin(later)]
    facts = study.run()["facts"]
    safety = set(facts.members("safety").astype(str))  # type: ignore[attr-defined]
    ideation = frame.loc[~quiet, key].astype(str)
    # a safety-population participant without any ideation or behaviour, assessed twice or more
    counts = rows[key].astype(str).value_counts()
    target = next(
        s for s in counts.index if counts[s] >= 2 and s in safety and s not in set(ideation)
    )
    last = rows[rows[key].astype(str) == target]["redcap_event_name"].iloc[-1]
    at = (frame[key].astype(str) == target) & (frame["redcap_event_name"] == last)
    ideated = frame.copy()
    ideated.loc[at, spec.ideation_fields[0]] = 1
    visits = study.tables[form.form].copy()
    moved = (visits[key].astype(str) == target) & (visits["redcap_event_name"] == last)
    assert moved.sum() == 1
    visits[form.date_field] = pd.to_datetime(visits[form.date_field]).astype("datetime64[ns]")
    visits.loc[moved, form.date_field] = pd.Timestamp(protocol.reporting.data_cut) + pd.Timedelta(
        days=1
    )

    def ideation_n(tables: dict[str, pd.DataFrame]) -> int:
        run = study.run(tables)["run"]
        outcome = next(o for o in run.outcomes if o.id == "cssrs")  # type: ignore[attr-defined]
        table = outcome.tables["occurrence"].set_index(["category", "period"])
        row = table.loc[("Suicidal ideation (types 1-5)", "post-baseline")]
        return int(sum(row[c] for c in row.index if c.startswith("n_")))

    before = ideation_n(study.tables)
    # the same ideation before the cut counts (the test can fail) ...
    assert ideation_n({**study.tables, spec.since_last_form: ideated}) == before + 1
    # ... and after the cut it does not
    cut = {**study.tables, spec.since_last_form: ideated, form.form: visits}
    assert ideation_n(cut) == before


def _outcome_of(result: dict[str, object], analysis_id: str):  # type: ignore[no-untyped-def]
    run = result["run"]
    outcome = next(o for o in run.outcomes if o.id == analysis_id)  # type: ignore[attr-defined]
    assert outcome.status == "ok", outcome.message
    return outcome


def test_every_safety_assessment_of_the_plan_runs_on_a_snapshot(study: _Study) -> None:
    result = study.run()
    kinds = {a.id for a in study.loaded.plan.analyses if isinstance(a, SafetyAssessmentAnalysis)}
    assert {
        "cssrs",
        "vital_signs",
        "liver_tests",
        "cows_maximum",
        "conmed_starts",
        "deaths_discontinuations",
    } <= kinds
    for analysis_id in kinds:
        outcome = _outcome_of(result, analysis_id)
        assert outcome.tables
        assert all(len(t) for name, t in outcome.tables.items() if name != "hys_law_cases")


def test_deaths_and_discontinuations_are_the_facts_numbers(study: _Study) -> None:
    result = study.run()
    headline = result["facts"].headline()  # type: ignore[attr-defined]
    table = _outcome_of(result, "deaths_discontinuations").tables["disposition"]
    rows = dict(zip(table["category"], table.to_dict("records"), strict=True))
    keys = {
        "Deaths": "deaths",
        "Discontinued the study due to an adverse event": "discontinued_due_to_ae",
        "Discontinued the study (any reason)": "discontinued_study",
        "Discontinued treatment (left before the end of treatment)": "discontinued_treatment",
    }
    assert set(rows) == set(keys)
    for label, key in keys.items():
        for arm, count in headline[f"{key}_by_arm"].items():
            assert rows[label][f"n_{arm}"] == count, (label, arm)
    plan = study.loaded.plan
    assert (
        sum(rows["Discontinued the study (any reason)"][f"n_{a}"] for a in plan.treatment.arms) > 0
    )


def test_vital_sign_change_is_value_minus_baseline(study: _Study) -> None:
    protocol, key = study.protocol, study.protocol.study.record_id_field
    spec = protocol.vital_signs
    assert spec is not None
    weight = next(p for p in spec.parameters if p.unit == "kg")
    last = max(
        (v for v in protocol.visits if v.target_day and spec.form in v.instruments),
        key=lambda v: v.target_day or 0,
    )
    baseline = next(v for v in protocol.visits if v.kind == "baseline")
    result = study.run()
    table = _outcome_of(result, "vital_signs").tables[f"change_{weight.id.lower()}"]
    facts = result["facts"]
    frame = study.tables[spec.form]
    values = frame.set_index([key, "redcap_event_name"])[weight.field].astype(float)
    arms = facts.subjects["arm"]  # type: ignore[attr-defined]
    safety = set(facts.members("safety"))  # type: ignore[attr-defined]
    cut = pd.Timestamp(protocol.reporting.data_cut)
    visit = study.tables[protocol.visit_form.form].set_index([key, "redcap_event_name"])
    for arm in study.loaded.plan.treatment.arms:
        changes = []
        for subject in sorted(s for s in safety if arms.get(s) == arm):
            if (subject, last.event) not in values.index or (
                subject,
                baseline.event,
            ) not in values.index:
                continue
            if pd.Timestamp(visit.loc[(subject, last.event), protocol.visit_form.date_field]) > cut:
                continue
            change = values[(subject, last.event)] - values[(subject, baseline.event)]
            if change == change:
                changes.append(change)
        row = table[
            (table["PARAMCD"] == weight.id)
            & (table["day"] == last.target_day)
            & (table["arm"] == arm)
        ].iloc[0]
        assert row["statistic"] == "change from baseline"
        assert row["n"] == len(changes) > 0
        assert row["mean"] == pytest.approx(sum(changes) / len(changes), rel=1e-12)


def test_vital_signs_entry_naming_an_undeclared_measurement_fails_by_name(study: _Study) -> None:
    from studyman.analysis.safety import run_safety_assessment, safety_data

    result = study.run()
    data = safety_data(study.protocol, study.tables, result["facts"])  # type: ignore[arg-type]
    subjects = pd.DataFrame({"SUBJID": ["x"], "ARM": ["A"]})
    entry = _plan_entry("vital_signs", parameters=["SBP", "GLUCOSE"])
    with pytest.raises(Exception, match="GLUCOSE"):
        run_safety_assessment(entry, data, subjects, arms=("A", "B"), confidence_level=0.95)


def _set(frame: pd.DataFrame, key: str, subject: str, event: str, **values: float) -> pd.DataFrame:
    changed = frame.copy()
    at = (changed[key].astype(str) == subject) & (changed["redcap_event_name"] == event)
    assert at.sum() == 1, (subject, event)
    for column, value in values.items():
        changed[column] = changed[column].astype(float)
        changed.loc[at, column] = value
    return changed


def test_liver_shift_and_hys_law_follow_the_protocol_rule(study: _Study) -> None:
    protocol, key = study.protocol, study.protocol.study.record_id_field
    liver = protocol.liver
    uln = {t.id: t.uln for t in liver.tests}
    field = {t.id: t.field for t in liver.tests}
    rule = liver.hys_law
    frame = study.tables[liver.form]
    later = {v.event for v in protocol.visits if v.target_day and v.target_day > 0}
    result = study.run()
    safety = set(result["facts"].members("safety"))  # type: ignore[attr-defined]
    candidates = frame[frame["redcap_event_name"].isin(later) & frame[key].isin(safety)]
    first, second = (
        candidates.drop_duplicates(key).iloc[:2][[key, "redcap_event_name"]].itertuples(index=False)
    )
    high = {
        field[rule.transaminases[0]]: (rule.transaminase_multiple + 2) * uln[rule.transaminases[0]],
        field[rule.bilirubin]: (rule.bilirubin_multiple + 1) * uln[rule.bilirubin],
        field[rule.alp]: uln[rule.alp],
    }
    changed = _set(frame, key, first[0], first[1], **high)
    # the same, but ALP above its maximum: cholestatic, not a Hy's law case
    cholestatic = {**high, field[rule.alp]: (rule.alp_max_multiple + 1) * uln[rule.alp]}
    changed = _set(changed, key, second[0], second[1], **cholestatic)
    outcome = _outcome_of(study.run({**study.tables, liver.form: changed}), "liver_tests")
    cases = outcome.tables["hys_law_cases"]
    assert first[0] in set(cases["SUBJID"])
    assert second[0] not in set(cases["SUBJID"])
    before = _outcome_of(result, "liver_tests").tables["hys_law_cases"]
    assert set(cases["SUBJID"]) - set(before["SUBJID"]) == {first[0]}
    shift = pd.concat(t for n, t in outcome.tables.items() if n.startswith("shift_"))
    worst = f"Above {liver.transaminase_alert_multiple:g} x ULN"
    column = shift[(shift["PARAMCD"] == rule.transaminases[0])][worst].sum()
    old_tables = _outcome_of(result, "liver_tests").tables
    old = pd.concat(t for n, t in old_tables.items() if n.startswith("shift_"))
    assert column >= old[(old["PARAMCD"] == rule.transaminases[0])][worst].sum()
    # every participant of the population is in one cell per test and arm
    per_test = shift.groupby(["PARAMCD", "arm"]).sum(numeric_only=True).sum(axis=1)
    assert per_test.nunique() <= len(study.loaded.plan.treatment.arms)


def test_withdrawal_maximum_is_the_highest_total_and_meets_the_threshold(study: _Study) -> None:
    protocol, key = study.protocol, study.protocol.study.record_id_field
    spec = protocol.withdrawal
    assert spec is not None
    frame = study.tables[spec.instrument]
    result = study.run()
    facts = result["facts"]
    safety = set(facts.members("safety"))  # type: ignore[attr-defined]
    rows = frame[frame[key].isin(safety) & frame["redcap_event_name"].isin(spec.events)]
    totals = rows.groupby(key)[spec.total_field].max()
    subject = str(totals[totals < spec.aesi_threshold].index[0])
    event = str(rows[rows[key] == subject]["redcap_event_name"].iloc[0])
    changed = _set(frame, key, subject, event, **{spec.total_field: spec.aesi_threshold + 10})
    arm = facts.subjects["arm"][subject]  # type: ignore[attr-defined]

    def at_threshold(outcome_result: dict[str, object]) -> int:
        bands = _outcome_of(outcome_result, "cows_maximum").tables["bands"]
        row = bands[bands["category"].str.contains("AESI threshold")].iloc[0]
        return int(row[f"n_{arm}"])

    def maximum(outcome_result: dict[str, object]) -> float:
        table = _outcome_of(outcome_result, "cows_maximum").tables["maximum"]
        return float(table.set_index("arm").loc[arm, "max"])

    after = study.run({**study.tables, spec.instrument: changed})
    assert at_threshold(after) == at_threshold(result) + 1
    assert maximum(after) == max(maximum(result), spec.aesi_threshold + 10)


def test_conmed_start_counts_from_the_day_of_randomisation(study: _Study) -> None:
    protocol, key = study.protocol, study.protocol.study.record_id_field
    spec = protocol.concomitant_medications
    result = study.run()
    facts = result["facts"]
    subjects = facts.subjects  # type: ignore[attr-defined]
    safety = list(facts.members("safety"))  # type: ignore[attr-defined]
    frame = study.tables[spec.form]
    starters = set(
        frame[
            pd.to_datetime(frame[spec.start_field])
            >= frame[key].map(pd.to_datetime(subjects["randomisation_date"]))
        ][key].astype(str)
    )
    fresh = [s for s in safety if s not in starters][:2]
    on_day, day_before = fresh
    template = frame.iloc[[0, 0]].copy()
    template[key] = [on_day, day_before]
    template["redcap_repeat_instance"] = [99, 99]
    template[spec.class_field] = str(spec.classes[0].code)
    rand = pd.to_datetime(subjects["randomisation_date"])
    template[spec.start_field] = [rand[on_day], rand[day_before] - pd.Timedelta(days=1)]
    added = pd.concat([frame, template], ignore_index=True)
    added[spec.start_field] = pd.to_datetime(added[spec.start_field])
    before = _outcome_of(result, "conmed_starts").tables["starts_by_class"]
    after_result = study.run({**study.tables, spec.form: added})
    after = _outcome_of(after_result, "conmed_starts").tables["starts_by_class"]
    name = spec.classes[0].name
    arms = subjects["arm"]
    for table in (before, after):
        assert set(table["category"]) >= {"Any class", name}
    b, a = before.set_index("category"), after.set_index("category")
    gained = {
        arm: int(a.loc[name, f"n_{arm}"] - b.loc[name, f"n_{arm}"])
        for arm in study.loaded.plan.treatment.arms
    }
    assert gained[arms[on_day]] >= 1
    assert sum(gained.values()) == 1  # the start the day before randomisation is not counted


def test_vital_sign_mmrm_at_a_single_visit_is_the_ancova(study: _Study) -> None:
    """With one post-baseline visit the MMRM is the ANCOVA of the change on arm and baseline:
    the same estimate, standard error and p-value as ordinary least squares (statsmodels)."""
    import statsmodels.formula.api as smf

    from studyman.analysis.safety import safety_data, vital_signs_analysis

    result = study.run()
    facts = result["facts"]
    data = safety_data(study.protocol, study.tables, facts)  # type: ignore[arg-type]
    vitals = data.frames["vital_signs"]
    spec = study.protocol.vital_signs
    assert spec is not None
    weight = next(p.id for p in spec.parameters if p.unit == "kg")
    first_day = int(vitals.loc[vitals["PERIOD"] == "post", "DAY"].min())
    one_visit = vitals[(vitals["PERIOD"] == "baseline") | (vitals["DAY"] == first_day)]
    arms_of = facts.subjects["arm"].dropna()  # type: ignore[attr-defined]
    subjects = pd.DataFrame({"SUBJID": arms_of.index.astype(str), "ARM": arms_of.astype(str)})
    plan = study.loaded.plan
    arms = (plan.treatment.arms[0], plan.treatment.reference)
    entry = _plan_entry("vital_signs", method="mmrm", parameters=[weight])
    outcome = vital_signs_analysis(
        entry, one_visit, subjects, arms=arms, labels=data.labels["vital"]
    )
    assert outcome.message == ""
    mmrm = outcome.tables[f"mmrm_{weight.lower()}"]
    assert len(mmrm) == 1
    change = (
        one_visit[one_visit["PARAMCD"] == weight]
        .pivot_table(index="SUBJID", columns="PERIOD", values="AVAL")
        .dropna()
    )
    frame = pd.DataFrame(
        {
            "CHG": change["post"] - change["baseline"],
            "BASE": change["baseline"],
            "ARM": subjects.set_index("SUBJID")["ARM"].reindex(change.index),
        }
    ).dropna()
    frame["EXP"] = (frame["ARM"] == arms[0]).astype(float)
    ols = smf.ols("CHG ~ EXP + BASE", data=frame).fit()
    row = mmrm.iloc[0]
    assert row["estimate"] == pytest.approx(ols.params["EXP"], rel=1e-6)
    assert row["std_error"] == pytest.approx(ols.bse["EXP"], rel=1e-5)
    assert row["p_value"] == pytest.approx(ols.pvalues["EXP"], rel=1e-4)


def test_mmrm_method_is_for_vital_signs_only() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="vital_signs"):
        _plan_entry("liver_tests", method="mmrm")


def test_vital_signs_without_any_value_fail_by_name_instead_of_an_empty_table() -> None:
    from studyman.analysis.safety import vital_signs_analysis
    from studyman.errors import AnalysisError

    columns = ["SUBJID", "DAY", "VISIT", "PERIOD", "PARAMCD", "AVAL"]
    subjects = pd.DataFrame({"SUBJID": ["a", "b"], "ARM": ["X", "R"]})
    with pytest.raises(AnalysisError, match=r"no value of SBP in population 'safety'"):
        vital_signs_analysis(
            _plan_entry("vital_signs"),
            pd.DataFrame(columns=columns),
            subjects,
            arms=("X", "R"),
            labels={"SBP": "Systolic blood pressure (mmHg)"},
        )
