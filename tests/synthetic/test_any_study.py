"""The generator serves any declared study: the second study (three arms, MADRS, no COWS).

``protocols/cbt-madrs-3arm`` differs from the reference study in every REDCap name and in shape;
the generator must take all of it from the protocol: names, scales, schedule, arms and ratios,
and leave out what the study lacks.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from studyman.errors import ProtocolError
from studyman.protocol import Protocol, load_protocol
from studyman.synthetic import (
    GeneratedTrial,
    design_from_protocol,
    generate_trial,
    randomization_columns,
)
from studyman.validation import validate_study

ROOT = Path(__file__).resolve().parents[2]
SECOND = ROOT / "protocols" / "cbt-madrs-3arm"
REFERENCE = ROOT / "protocols" / "cbt-adjunct"


def _reference_names() -> set[str]:
    names: set[str] = set()
    with (REFERENCE / "redcap" / "data_dictionary.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            names.update((row["field_name"], row["form_name"]))
    with (REFERENCE / "redcap" / "events.csv").open(newline="") as fh:
        names.update(row["unique_event_name"] for row in csv.DictReader(fh))
    return names


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(SECOND / "protocol.yaml")


@pytest.fixture(scope="module")
def trial(protocol: Protocol) -> GeneratedTrial:
    return generate_trial(protocol, n_participants=60, seed=11)


def _base(trial: GeneratedTrial) -> pd.DataFrame:
    r = trial.records
    return r[r["redcap_repeat_instrument"] == ""]


def test_every_column_event_and_form_is_the_second_studys_own(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    design = design_from_protocol(protocol)
    assert tuple(trial.records.columns) == design.flat_columns()
    assert trial.records.columns[0] == "subject_id"
    leaked = (
        set(trial.records.columns)
        | set(trial.records["redcap_event_name"])
        | set(trial.records["redcap_repeat_instrument"])
    ) & _reference_names()
    assert not leaked
    assert set(trial.records["redcap_event_name"]) <= set(protocol.event_names)
    assert list(trial.randomization.columns) == randomization_columns(design)
    assert list(trial.randomization.columns) == [
        "subject_id",
        "alloc_no",
        "alloc_group",
        "alloc_stratum",
    ]
    assert trial.records["subject_id"].str.fullmatch(r"(NTH|STH|EST)-\d{4}").all()


def test_three_arms_are_allocated_one_to_one_to_one_in_every_stratum(
    protocol: Protocol,
) -> None:
    trial = generate_trial(protocol, n_participants=180, seed=3)
    rand = trial.randomization
    assert set(rand["alloc_group"]) == {"1", "2", "3"}
    # blocks of 3 or 6 hold each arm equally, so a stratum is off balance by at most one block
    for _, group in rand.groupby("alloc_stratum"):
        counts = group["alloc_group"].value_counts().reindex(["1", "2", "3"], fill_value=0)
        assert counts.max() - counts.min() <= 2, counts.to_dict()
    assert rand["alloc_stratum"].str.fullmatch(r"(NTH|STH|EST)/(moderate|severe)").all()


def test_madrs_items_score_zero_to_six_and_add_up_to_the_total(trial: GeneratedTrial) -> None:
    rows = _base(trial)
    rows = rows[rows["madrs_total"] != ""]
    assert len(rows) > 200
    items = rows[[f"madrs_{i}" for i in range(1, 11)]].astype(int)
    assert items.isin(range(7)).all().all()
    assert (items.sum(axis=1) == rows["madrs_total"].astype(int)).all()
    assert rows["madrs_total"].astype(int).between(0, 60).all()
    # inclusion: MADRS 20 or more at screening for everyone randomised
    randomised = set(trial.randomization["subject_id"])
    screening = rows[
        (rows["redcap_event_name"] == "screen_arm_1") & rows["subject_id"].isin(randomised)
    ]
    assert (screening["madrs_total"].astype(int) >= 20).all()
    # the recorded stratum agrees with the baseline total (moderate 20-29, severe 30+)
    base = rows[rows["redcap_event_name"] == "day_0_arm_1"].set_index("subject_id")
    enrol = _base(trial)
    enrol = enrol[enrol["strat_madrs"] != ""].set_index("subject_id")["strat_madrs"]
    expected = (base["madrs_total"].astype(int) >= 30).map({True: "2", False: "1"})
    assert (enrol.reindex(expected.index) == expected).all()


def test_visits_follow_the_second_schedule_and_nothing_is_due_elsewhere(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    rows = _base(trial)
    rand = rows[rows["alloc_dt"] != ""].set_index("subject_id")["alloc_dt"]
    for visit in protocol.scheduled_visits:
        if visit.kind == "screening":
            continue
        at = rows[(rows["redcap_event_name"] == visit.event) & (rows["vis_dt"] != "")]
        assert len(at) > 0, visit.event
        assert visit.window is not None
        days = (pd.to_datetime(at["vis_dt"]) - pd.to_datetime(at["subject_id"].map(rand))).dt.days
        assert days.between(visit.window.start, visit.window.end).all(), visit.event
    # a form is saved only where the protocol schedules it
    status = [c for c in trial.records.columns if c.endswith("_complete")]
    for _, row in rows.iterrows():
        due = set(protocol.visit(row["redcap_event_name"]).instruments)
        saved = {c.removesuffix("_complete") for c in status if row[c] in ("1", "2")}
        assert saved <= due, (row["redcap_event_name"], saved - due)


def test_only_the_adjunct_arm_is_dosed_and_every_arm_has_cbt(trial: GeneratedTrial) -> None:
    arm = trial.randomization.set_index("subject_id")["alloc_group"]
    logs = trial.records
    dosed = set(logs.loc[logs["redcap_repeat_instrument"] == "drug_log", "subject_id"])
    assert dosed
    assert {arm[s] for s in dosed} == {"1"}
    treated = set(logs.loc[logs["redcap_repeat_instrument"] == "therapy_log", "subject_id"])
    assert {arm[s] for s in treated} == {"1", "2", "3"}
    sessions = logs.loc[logs["redcap_repeat_instrument"] == "therapy_log", "ther_session_num"]
    assert sessions.astype(int).between(1, 8).all()


def test_a_clean_second_study_raises_only_its_intended_review_signals(
    trial: GeneratedTrial, protocol: Protocol, tmp_path: Path
) -> None:
    records = tmp_path / "records.csv"
    trial.records.to_csv(records, index=False)
    result = validate_study(protocol, records, tmp_path / "validation")
    queries = pd.read_csv(tmp_path / "validation" / "queries.csv", comment="#", dtype=str)
    assert result is not None
    # Hy's-law-range cases (LIV-*) and reporting lapses (AE-CLOCK-*) are planted on purpose and
    # review signals (outliers, large changes) are for review; no other query on clean data.
    intended = queries["check_id"].str.match(r"^(LIV-|AE-CLOCK-)")
    unexpected = queries[~intended & (queries["kind"] != "review_signal")]
    assert unexpected.empty, unexpected[["check_id", "record_id", "field", "message"]]
    assert (queries["check_id"] == "LIV-HYS").sum() == 2


def test_planted_errors_of_the_second_study_are_found_by_validation(
    protocol: Protocol, tmp_path: Path
) -> None:
    planted = generate_trial(protocol, n_participants=60, seed=11, plant_errors=True)
    truth = planted.planted_errors
    assert len(truth) >= 60
    # every planted cell names a field of this study, never a reference name
    assert not (set(truth["field"]) - {""}) & _reference_names()
    records = tmp_path / "records.csv"
    planted.records.to_csv(records, index=False)
    validate_study(protocol, records, tmp_path / "validation")
    queries = pd.read_csv(tmp_path / "validation" / "queries.csv", comment="#", dtype=str)
    flagged = set(queries["record_id"])
    # blinded run: errors only an unblinded reader can see (dosing in another arm) are left out
    blinded = truth[truth["error_type"] != "adjunct_in_control_arm"]
    found = blinded["record_id"].isin(flagged)
    assert found.mean() >= 0.95, blinded.loc[~found, ["error_type", "record_id", "field"]]


def test_a_primary_scale_without_scoring_is_one_clear_error(protocol: Protocol) -> None:
    broken = protocol.model_copy(
        update={
            "scoring": tuple(s for s in protocol.scoring if s.instrument != "madrs"),
        }
    )
    with pytest.raises(ProtocolError, match="madrs"):
        generate_trial(broken, n_participants=10)


def test_allocation_follows_unequal_ratios(protocol: Protocol) -> None:
    # 2:1:1, blocks of 4 and 8: every complete block holds twice as many of the first arm
    arms = protocol.arms.model_copy(
        update={
            "items": tuple(
                arm.model_copy(update={"ratio": 2 if arm.code == 1 else 1})
                for arm in protocol.arms.items
            )
        }
    )
    randomization = protocol.randomization.model_copy(update={"block_sizes": (4, 8)})
    unequal = protocol.model_copy(update={"arms": arms, "randomization": randomization})
    rand = generate_trial(unequal, n_participants=240, seed=5).randomization
    counts = rand["alloc_group"].value_counts()
    assert counts["1"] > 1.6 * counts["2"]
    assert counts["1"] > 1.6 * counts["3"]
    for _, group in rand.groupby("alloc_stratum"):
        c = group["alloc_group"].value_counts().reindex(["1", "2", "3"], fill_value=0)
        # off the 2:1:1 proportions by less than one block of 8 in each stratum
        assert abs(int(c["1"]) - int(c["2"]) - int(c["3"])) <= 8, c.to_dict()


def test_a_study_without_a_dosing_log_writes_no_dose(protocol: Protocol) -> None:
    treatment = protocol.treatment.model_copy(update={"doses": None})
    undosed = protocol.model_copy(update={"treatment": treatment})
    trial = generate_trial(undosed, n_participants=30, seed=2, plant_errors=True)
    records = trial.records
    assert not (records["redcap_repeat_instrument"] == "drug_log").any()
    assert (records["drug_log_complete"] == "").all()
    assert "adjunct_in_control_arm" not in set(trial.planted_errors["error_type"])
    # the rest of the study is still there
    assert (records["redcap_repeat_instrument"] == "therapy_log").any()


def test_a_term_of_the_studys_own_coding_list_is_drawn(protocol: Protocol) -> None:
    from studyman.protocol.models import CodedTerm

    ae = protocol.adverse_events
    extra = CodedTerm(code=99, pt="Tinnitus", soc=2)
    coded = protocol.model_copy(
        update={"adverse_events": ae.model_copy(update={"coding_list": (*ae.coding_list, extra)})}
    )
    records = generate_trial(coded, n_participants=240, seed=4).records
    logged = records[records["redcap_repeat_instrument"] == "ae_log"]
    tinnitus = logged[logged["adv_pt"] == "99"]
    assert len(tinnitus) > 0
    assert set(tinnitus["adv_soc"]) == {"2"}
    assert set(tinnitus["adv_aesi"]) == {"0"}


def _renamed_copy(source: Path, target: Path) -> dict[str, str]:
    """Copy the reference study with every dictionary field renamed; return old -> new."""
    shutil.copytree(source, target)
    dictionary = target / "redcap" / "data_dictionary.csv"
    with dictionary.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    names = {row["field_name"]: f"z{i}_{row['field_name']}" for i, row in enumerate(rows)}
    token = re.compile(r"[a-z][a-z0-9_]*")

    def rename(text: str) -> str:
        return token.sub(lambda m: names.get(m.group(0), m.group(0)), text)

    for row in rows:
        row["field_name"] = names[row["field_name"]]
        row["branching_logic"] = rename(row["branching_logic"])
        if row["field_type"] == "calc":
            row["select_choices_or_calculations"] = rename(row["select_choices_or_calculations"])
    with dictionary.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for name in ("protocol.yaml", "redcap/repeating_instruments.csv"):
        path = target / name
        path.write_text(rename(path.read_text(encoding="utf-8")), encoding="utf-8")
    return names


def test_renaming_every_field_gives_the_same_trial_under_the_new_names(tmp_path: Path) -> None:
    # The generator finds undeclared fields (initials, vital signs, a free-text reason, ...) by
    # form, type and label: renaming every field of the reference study must not change a value.
    names = _renamed_copy(REFERENCE, tmp_path / "renamed")
    original = generate_trial(
        load_protocol(REFERENCE), n_participants=40, seed=9, plant_errors=True, errors_per_type=1
    )
    renamed = generate_trial(
        load_protocol(tmp_path / "renamed"),
        n_participants=40,
        seed=9,
        plant_errors=True,
        errors_per_type=1,
    )

    def column(name: str) -> str:
        stem, sep, code = name.partition("___")
        return names.get(stem, stem) + sep + code

    expected = original.records.rename(columns=column)
    pd.testing.assert_frame_equal(renamed.records, expected)
    pd.testing.assert_frame_equal(
        renamed.randomization, original.randomization.rename(columns=column)
    )
    truth = original.planted_errors.copy()
    truth["field"] = truth["field"].map(column)
    keys = ["error_type", "record_id", "event", "instrument", "instance", "field"]
    pd.testing.assert_frame_equal(renamed.planted_errors[keys], truth[keys])
    assert truth["error_type"].nunique() >= 25
