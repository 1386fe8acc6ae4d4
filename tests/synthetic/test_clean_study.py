"""A clean generated trial obeys the protocol's edit checks (so validation must raise no query).

These are written directly against the records, independent of studyman.validation, from the
catalogue in the protocol: windows, dates, scoring, C-SSRS, adverse events, disposition.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from studyman.protocol import Protocol, load_protocol
from studyman.synthetic import GeneratedTrial, generate_trial

STUDY = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(STUDY / "protocol.yaml")


@pytest.fixture(scope="module", params=["mar", "mnar"])
def trial(request: pytest.FixtureRequest, protocol: Protocol) -> GeneratedTrial:
    return generate_trial(protocol, n_participants=300, seed=5, dropout=request.param)


def _base(trial: GeneratedTrial) -> pd.DataFrame:
    r = trial.records
    return r[r["redcap_repeat_instrument"] == ""]


def _log(trial: GeneratedTrial, form: str) -> pd.DataFrame:
    r = trial.records
    return r[r["redcap_repeat_instrument"] == form]


def _by_record(trial: GeneratedTrial, event: str, field: str) -> dict[str, str]:
    rows = _base(trial)
    rows = rows[(rows["redcap_event_name"] == event) & (rows[field] != "")]
    return dict(zip(rows["record_id"], rows[field], strict=True))


def _d(text: str) -> date:
    return date.fromisoformat(text)


def _dt(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M")


def test_visits_fall_inside_their_windows_and_in_order(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    rand = _by_record(trial, "baseline_arm_1", "rand_date")
    assert len(rand) == 300
    rows = _base(trial)
    checked = 0
    for visit in protocol.scheduled_visits:
        if visit.kind == "screening":
            dates = _by_record(trial, visit.event, "scr_date")
            dates = {k: v for k, v in dates.items() if k in rand}
        else:
            dates = _by_record(trial, visit.event, "visit_date")
        assert visit.window is not None
        for record, day in dates.items():
            study_day = (_d(day) - _d(rand[record])).days
            assert visit.window.start <= study_day <= visit.window.end, (record, visit.event)
            checked += 1
    assert checked > 1500
    visits = rows[rows["visit_date"] != ""]
    for _, group in visits.groupby("record_id"):
        days = list(group["visit_date"])
        assert days == sorted(days)
        assert len(set(days)) == len(days)


def test_missed_visits_are_recorded_as_not_done_with_a_reason(trial: GeneratedTrial) -> None:
    rows = _base(trial)
    missed = rows[rows["visit_done"] == "0"]
    assert len(missed) > 0
    assert (missed["visit_date"] == "").all()
    assert (missed["visit_missed_reason"] != "").all()
    assert (missed["hamd_total"] == "").all()


def test_no_value_is_dated_after_the_data_cut(trial: GeneratedTrial, protocol: Protocol) -> None:
    assert protocol.redcap is not None
    cut = trial.data_cut.isoformat()
    for field in protocol.redcap.dictionary.fields:
        if field.is_date or field.is_datetime:
            values = trial.records[field.field_name]
            assert (values.str[:10][values != ""] <= cut).all(), field.field_name


def test_nothing_is_dated_after_a_participant_leaves(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    assert protocol.redcap is not None
    ds = _by_record(trial, "end_of_study_arm_1", "ds_date")
    assert len(ds) > 100
    dated = [f.field_name for f in protocol.redcap.dictionary.fields if f.is_date or f.is_datetime]
    dated = [f for f in dated if f not in ("death_date",)]
    records = trial.records[trial.records["record_id"].isin(ds)]
    for field in dated:
        values = records[[field, "record_id"]][records[field] != ""]
        later = values[values[field].str[:10] > values["record_id"].map(ds)]
        assert later.empty, (field, later.head())


def test_enrolment_dates_are_in_order(trial: GeneratedTrial) -> None:
    consent = _by_record(trial, "screening_arm_1", "consent_date")
    screening = _by_record(trial, "screening_arm_1", "scr_date")
    eligibility = _by_record(trial, "screening_arm_1", "elig_date")
    rand = _by_record(trial, "baseline_arm_1", "rand_date")
    for record, day in rand.items():
        assert consent[record] <= screening[record] <= eligibility[record] < day


def test_randomised_participants_meet_every_eligibility_criterion(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    rows = _base(trial)
    screening = rows[rows["redcap_event_name"] == "screening_arm_1"].set_index("record_id")
    baseline = rows[rows["redcap_event_name"] == "baseline_arm_1"].set_index("record_id")
    randomised = screening.loc[baseline.index]
    for criterion in protocol.eligibility.criteria:
        expected = "1" if criterion.kind == "inclusion" else "0"
        assert (randomised[criterion.field] == expected).all(), criterion.field
    assert (randomised["eligible"] == "1").all()
    age = randomised["age"].astype(int)
    assert age.between(18, 65).all()
    assert (randomised["hamd_total"].astype(int) >= 18).all()
    assert (baseline["hamd_total"].astype(int) >= 18).all()
    assert (randomised["lab_alt"].astype(float) <= 80).all()
    assert (randomised["lab_ast"].astype(float) <= 80).all()
    assert (randomised["lab_bili"].astype(float) <= 1.8).all()
    gated = randomised[randomised["cssrs_l_4"] != ""]
    assert (gated["cssrs_l_4"] == "0").all()
    assert (gated["cssrs_l_5"] == "0").all()
    # The recorded stratum is the one the baseline HAM-D-17 gives.
    derived = (baseline["hamd_total"].astype(int) >= 24).map({True: "2", False: "1"})
    assert (baseline["strat_severity"] == derived).all()


def test_screen_failures_have_a_reason_consistent_with_their_data(trial: GeneratedTrial) -> None:
    rows = _base(trial)
    screening = rows[rows["redcap_event_name"] == "screening_arm_1"]
    failed = screening[screening["eligible"] == "0"]
    share = len(failed) / len(screening)
    assert 0.12 < share < 0.28
    assert (failed["screen_fail_reason"] != "").all()
    low = failed[failed["screen_fail_reason"] == "1"]
    assert (low["hamd_total"].astype(int) < 18).all()
    assert (low["inc_hamd"] == "0").all()
    randomised = set(_by_record(trial, "baseline_arm_1", "rand_date"))
    assert not set(failed["record_id"]) & randomised


def test_hamd_16a_xor_16b_and_phq9_item9_always_with_a_cssrs(trial: GeneratedTrial) -> None:
    rows = _base(trial)
    hamd = rows[rows["hamd_total"] != ""]
    assert ((hamd["hamd_16a"] == "") != (hamd["hamd_16b"] == "")).all()
    flagged = rows[(rows["phq9_9"] != "") & (rows["phq9_9"] != "0")]
    assert len(flagged) > 0
    assert (flagged["cssrs_since_last_complete"] == "2").all()
    assert (flagged["cssrs_1"] != "").all()


def test_cssrs_skip_logic_and_safety_actions(trial: GeneratedTrial, protocol: Protocol) -> None:
    rows = _base(trial)
    cssrs = rows[rows["cssrs_since_last_complete"] == "2"]
    gate = (cssrs["cssrs_1"] == "1") | (cssrs["cssrs_2"] == "1")
    for field in ("cssrs_3", "cssrs_4", "cssrs_5"):
        assert (cssrs.loc[~gate, field] == "").all()
        assert (cssrs.loc[gate, field] != "").all()
    behaviour = cssrs[list(protocol.cssrs.behaviour_fields)].eq("1").any(axis=1)
    needs = (cssrs["cssrs_4"] == "1") | (cssrs["cssrs_5"] == "1") | behaviour
    assert needs.sum() > 0
    assert (cssrs.loc[needs, "cssrs_safety_action"] == "1").all()
    acted = cssrs["cssrs_safety_action"] == "1"
    assert (cssrs.loc[acted, "cssrs_safety_action_desc"] != "").all()
    assert (cssrs.loc[~acted, "cssrs_safety_action_desc"] == "").all()


def test_adverse_events_are_internally_consistent(trial: GeneratedTrial) -> None:
    ae = _log(trial, "adverse_events")
    assert len(ae) > 100
    ended = ae[ae["ae_end"] != ""]
    assert (ended["ae_start"] <= ended["ae_end"]).all()
    assert set(ae.loc[ae["ae_end"] != "", "ae_outcome"]) <= {"1", "4", "5"}
    assert set(ae.loc[ae["ae_end"] == "", "ae_outcome"]) <= {"2", "3"}
    assert (ae["ae_severity"] != "").all()
    assert (ae["ae_related"] != "").all()
    serious = ae[ae["ae_serious"] == "1"]
    assert len(serious) >= 3
    criteria = [c for c in ae.columns if c.startswith("ae_ser_crit___")]
    assert serious[criteria].eq("1").any(axis=1).all()
    assert not ae.loc[ae["ae_serious"] == "0", criteria].eq("1").any().any()
    for aware, report, start in zip(
        serious["ae_aware_dt"], serious["ae_report_dt"], serious["ae_start"], strict=True
    ):
        assert _dt(aware) <= _dt(report) <= _dt(aware) + timedelta(hours=24)
        assert aware[:10] >= start
    assert not ae.duplicated(["record_id", "ae_pt", "ae_start"]).any()
    consent = _by_record(trial, "screening_arm_1", "consent_date")
    rand = _by_record(trial, "baseline_arm_1", "rand_date")
    assert (ae["ae_start"] >= ae["record_id"].map(consent)).all()
    assert (ae["ae_start"] >= ae["record_id"].map(rand)).all()


def _expedited_lapses(ae: pd.DataFrame, cut: date) -> list[tuple[str, str]]:
    """(record, field) of each SUSAR/IRB report later than its clock or missing past due."""
    cut_end = datetime.combine(cut, datetime.min.time()) + timedelta(days=1)
    lapses = []
    for _, row in ae[ae["ae_unanticipated"] == "1"].iterrows():
        aware = _dt(row["ae_aware_dt"])
        grave = row["ae_ser_crit___1"] == "1" or row["ae_ser_crit___2"] == "1"
        for field, hours in (
            ("ae_reg_report_dt", 168 if grave else 360),
            ("ae_irb_report_dt", 168),
        ):
            due = aware + timedelta(hours=hours)
            sent = row[field]
            if (sent and _dt(sent) > due) or (not sent and due < cut_end):
                lapses.append((row["record_id"], field))
    return lapses


def test_expedited_reports_follow_their_clocks_but_for_the_planned_lapses(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    ae = _log(trial, "adverse_events")
    serious = ae["ae_serious"] == "1"
    assert set(ae.loc[serious, "ae_expected"]) == {"0", "1"}
    assert set(ae.loc[~serious, "ae_expected"]) == {""}
    assert set(ae["ae_unanticipated"]) == {"0", "1"}
    susar = serious & ae["ae_related"].isin(["3", "4", "5"]) & (ae["ae_expected"] == "0")
    # a few SUSARs (at least the two Hy's-law-range liver injuries), each judged an
    # unanticipated problem, and nothing else
    assert susar.sum() >= 2
    assert ((ae["ae_unanticipated"] == "1") == susar).all()
    assert (ae.loc[~susar, ["ae_reg_report_dt", "ae_irb_report_dt"]] == "").all().all()
    # the generator has no fatal suicidality event, so no report to the DSMB
    assert not ((ae["ae_outcome"] == "5") & (ae["ae_aesi"] == "1")).any()
    assert (ae["ae_dsmb_report_dt"] == "").all()
    assert protocol.reporting.data_cut is not None
    assert len(_expedited_lapses(ae, protocol.reporting.data_cut)) == 2
    on_time = generate_trial(protocol, n_participants=300, seed=5, reporting_lapses=0)
    assert _expedited_lapses(_log(on_time, "adverse_events"), protocol.reporting.data_cut) == []


def test_one_death_with_its_fatal_serious_adverse_event(trial: GeneratedTrial) -> None:
    ds = _base(trial)
    deaths = ds[ds["ds_status"] == "5"]
    assert len(deaths) == 1
    record = deaths["record_id"].iloc[0]
    ae = _log(trial, "adverse_events")
    fatal = ae[ae["ae_outcome"] == "5"]
    assert list(fatal["record_id"]) == [record]
    assert fatal["ae_ser_crit___1"].iloc[0] == "1"
    assert fatal["ae_end"].iloc[0] == deaths["death_date"].iloc[0] == deaths["ds_date"].iloc[0]
    assert deaths["death_cause"].iloc[0] != ""


def test_disposition_agrees_with_the_visits(trial: GeneratedTrial, protocol: Protocol) -> None:
    rows = _base(trial)
    ds = rows[rows["redcap_event_name"] == "end_of_study_arm_1"]
    statuses = set(ds["ds_status"])
    assert {"1", "2", "3"} <= statuses
    completed = set(ds.loc[ds["ds_status"] == "1", "record_id"])
    final = set(_by_record(trial, "week_16_arm_1", "visit_date"))
    assert completed <= final
    assert (ds.loc[ds["ds_status"] != "1", "ds_reason"] != "").all()
    # No overdue visit: every window closed by the data cut has a visit row, unless the
    # participant has left.
    rand = _by_record(trial, "baseline_arm_1", "rand_date")
    left = set(ds["record_id"])
    present = set(zip(rows["record_id"], rows["redcap_event_name"], strict=True))
    for visit in protocol.scheduled_visits:
        if visit.kind == "screening":
            continue
        assert visit.window is not None
        for record, day in rand.items():
            closes = _d(day) + timedelta(days=visit.window.end)
            if record not in left and closes < trial.data_cut:
                assert (record, visit.event) in present, (record, visit.event)


def test_safety_labs_and_withdrawal_scores_stay_below_review_thresholds_except_hys_law_cases(
    trial: GeneratedTrial,
) -> None:
    rows = _base(trial)
    cows = rows[rows["cows_total"] != ""]
    assert len(cows) > 100
    assert (cows["cows_total"].astype(int) < 13).all()
    assert cows["cows_total"].astype(int).max() >= 5
    labs = rows[rows["lab_alt"] != ""]
    high = labs[(labs["lab_alt"].astype(float) > 120) | (labs["lab_ast"].astype(float) > 120)]
    assert len(high) == 2
    assert (high["lab_bili"].astype(float) > 2.4).all()
    assert (high["lab_alp"].astype(float) <= 240).all()
    ae = _log(trial, "adverse_events")
    liver = ae[(ae["ae_aesi"] == "3") & (ae["ae_serious"] == "1")]
    assert set(high["record_id"]) <= set(liver["record_id"])
    arm = dict(zip(trial.randomization["record_id"], trial.randomization["rand_arm"], strict=True))
    assert {arm[r] for r in high["record_id"]} == {"1"}


def test_withdrawal_scores_are_higher_in_the_adjunct_arm(trial: GeneratedTrial) -> None:
    rows = _base(trial)
    arm = dict(zip(trial.randomization["record_id"], trial.randomization["rand_arm"], strict=True))
    cows = rows[rows["cows_total"] != ""].copy()
    cows["arm"] = cows["record_id"].map(arm)
    means = cows.groupby("arm")["cows_total"].apply(lambda s: s.astype(int).mean())
    assert means["1"] > means["2"] + 1.0


def test_treatment_effect_shows_in_week_12_hamd_change(protocol: Protocol) -> None:
    trial = generate_trial(protocol, n_participants=1000, seed=9, treatment_effect=-3.0)
    rows = _base(trial)
    base = _by_record(trial, "baseline_arm_1", "hamd_total")
    w12 = _by_record(trial, "week_12_arm_1", "hamd_total")
    arm = dict(zip(trial.randomization["record_id"], trial.randomization["rand_arm"], strict=True))
    change = pd.DataFrame(
        [(arm[r], int(w12[r]) - int(base[r])) for r in w12], columns=["arm", "change"]
    )
    means = change.groupby("arm")["change"].mean()
    difference = means["1"] - means["2"]
    # 1,000 participants: the difference's SE is about 0.4 points.
    assert -4.5 < difference < -1.5
    assert -10.5 < means["2"] < -5.5
    assert len(rows) > 0


def test_concomitant_medications_respect_the_protocol_rules(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    cm = _log(trial, "conmeds")
    assert len(cm) > 100
    rules = {str(c.code): c.rule for c in protocol.concomitant_medications.classes}
    assert not cm["cm_class"].map(rules).eq("prohibited").any()
    stopped = cm[cm["cm_stop"] != ""]
    assert (stopped["cm_start"] <= stopped["cm_stop"]).all()
    assert ((cm["cm_ongoing"] == "1") == (cm["cm_stop"] == "")).all()
    rand = _by_record(trial, "baseline_arm_1", "rand_date")
    stable = cm[cm["cm_class"].map(rules) == "stable_dose"]
    started = stable["record_id"].map(rand)
    ongoing_at_rand = (stable["cm_stop"] == "") | (stable["cm_stop"] >= started)
    assert (stable["cm_start"] < started).all()  # none started after randomisation
    weeks = protocol.concomitant_medications.stable_dose.weeks_before_randomization
    for start, rand_day in zip(
        stable.loc[ongoing_at_rand, "cm_start"], started[ongoing_at_rand], strict=True
    ):
        assert (_d(rand_day) - _d(start)).days >= 7 * weeks


def test_dosing_only_in_the_adjunct_arm_and_cbt_sessions_numbered(trial: GeneratedTrial) -> None:
    arm = dict(zip(trial.randomization["record_id"], trial.randomization["rand_arm"], strict=True))
    dosing = _log(trial, "dosing")
    assert len(dosing) > 100
    assert set(dosing["record_id"].map(arm)) == {"1"}
    assert set(dosing["dose_phase"]) == {"1", "2", "3"}
    cbt = _log(trial, "cbt_sessions")
    assert set(cbt["record_id"]) <= set(arm)
    numbers = cbt.groupby("record_id")["cbt_session_num"].apply(lambda s: list(s.astype(int)))
    for sessions in numbers:
        assert sessions == list(range(1, len(sessions) + 1))
    attended = cbt.groupby("record_id")["cbt_attended"].apply(lambda s: (s == "1").mean())
    assert (attended >= 0.8).all()


def test_disposition_and_adverse_event_actions_agree(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    # the adjunct is withdrawn for an AE exactly when an adjunct-arm participant leaves for one
    # (or completes without it, as the Hy's-law cases do); nobody leaves for another reason
    # after an AE withdrew it
    status = _by_record(trial, "end_of_study_arm_1", "ds_status")
    arms = dict(zip(trial.randomization["record_id"], trial.randomization["rand_arm"], strict=True))
    adjunct = {str(a.code) for a in protocol.arms.items if a.receives_adjunct}
    ae = _log(trial, "adverse_events")
    withdrawn = set(ae.loc[ae["ae_action"] == "4", "record_id"])
    for_ae = {r for r, s in status.items() if s == "4" and arms.get(r) in adjunct}
    assert for_ae, "the trial has adjunct-arm withdrawals for an adverse event"
    assert for_ae <= withdrawn
    assert not {r for r in withdrawn if status.get(r) in {"2", "3", "6", "7"}}


def test_deaths_have_a_fatal_event_and_a_date(trial: GeneratedTrial) -> None:
    status = _by_record(trial, "end_of_study_arm_1", "ds_status")
    death_date = _by_record(trial, "end_of_study_arm_1", "death_date")
    ae = _log(trial, "adverse_events")
    fatal = set(ae.loc[ae["ae_outcome"] == "5", "record_id"])
    dead = {r for r, s in status.items() if s == "5"} | set(death_date)
    assert dead, "the generator makes one death"
    assert dead == fatal
    assert set(death_date) == dead


def test_study_treatment_starts_on_or_after_randomisation(trial: GeneratedTrial) -> None:
    rand = _by_record(trial, "baseline_arm_1", "rand_date")
    for form, date_field, given in (
        ("cbt_sessions", "cbt_date", "cbt_attended"),
        ("dosing", "dose_date", "dose_taken"),
    ):
        rows = _log(trial, form)
        rows = rows[rows[given] == "1"]
        assert len(rows) > 100
        early = [r for r, d in zip(rows["record_id"], rows[date_field], strict=True) if d < rand[r]]
        assert early == []


def test_some_deviations_are_major_and_every_declared_major_one_is_recorded_major(
    trial: GeneratedTrial, protocol: Protocol
) -> None:
    major = {str(c.code) for c in protocol.deviations.categories if c.major}
    deviations = _log(trial, "deviations")
    declared = deviations[deviations["dv_category"].isin(major)]
    # about 4 % of randomised participants: the per-protocol population is smaller than mITT
    assert 5 <= declared["record_id"].nunique() <= 25
    assert set(declared["dv_major"]) == {"1"}
    assert set(deviations.loc[~deviations["dv_category"].isin(major), "dv_major"]) == {"0"}
