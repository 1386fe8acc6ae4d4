"""Section computations on snapshot tables: populations, denominators, AE counting, Hy's law."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from studyman.reporting.dsmb import TOTAL, DsmbInputs, Section, build_sections, cut_tables
from studyman.reporting.report import arm_codes, read_randomization_list
from studyman.reporting.sections.adverse_events import adverse_events_section
from studyman.reporting.sections.baseline import baseline_section
from studyman.reporting.sections.data_quality import data_quality_section
from studyman.reporting.sections.efficacy import efficacy_section
from studyman.reporting.sections.liver import liver_section
from studyman.reporting.sections.screen_failures import screen_failure_section
from studyman.reporting.sections.timeliness import reporting_timeliness_section
from studyman.reporting.sections.withdrawal import withdrawal_section
from studyman.sources.snapshot import read_snapshot

from .conftest import Study

CUT = date(2026, 9, 30)


def _tables(study: Study, *, blinded: bool = True) -> dict[str, pd.DataFrame]:
    tables = dict(read_snapshot(study.snapshot).tables)
    if blinded:
        for form in study.protocol.blinding.unblinded_forms:
            tables.pop(form, None)
    return cut_tables(study.protocol, tables, CUT)


def _closed_inputs(study: Study) -> DsmbInputs:
    arms = read_randomization_list(study.randomization, study.protocol)
    labels = arm_codes(study.protocol, bytes(32))
    return DsmbInputs(
        study.protocol,
        _tables(study, blinded=False),
        CUT,
        arms=arms.map(labels),
        arm_order=tuple(sorted(labels.values())),
    )


@pytest.fixture(scope="module")
def open_sections(study: Study) -> dict[str, Section]:
    inputs = DsmbInputs(study.protocol, _tables(study), CUT)
    return {section.id: section for section in build_sections(inputs)}


@pytest.fixture(scope="module")
def closed_sections(study: Study) -> dict[str, Section]:
    return {section.id: section for section in build_sections(_closed_inputs(study))}


def _expected_safety(study: Study, *, doses: bool = False) -> set[str]:
    """Randomised and treated: a CBT session attended, or (closed view only, where the dosing
    log is readable) a dose taken."""
    tables = read_snapshot(study.snapshot).tables
    enrolment = tables["enrollment"]
    randomised = set(enrolment.loc[enrolment["randomized"] == 1, "record_id"].astype(str))
    sessions = tables["cbt_sessions"]
    treated = set(sessions.loc[sessions["cbt_attended"] == 1, "record_id"].astype(str))
    if doses:
        dosing = tables["dosing"]
        treated |= set(dosing.loc[dosing["dose_taken"] == 1, "record_id"].astype(str))
    return randomised & treated


def test_open_sections_have_one_pooled_column_and_no_arm(
    study: Study, open_sections: dict[str, Section]
) -> None:
    names = [arm.name for arm in study.protocol.arms.items]
    for section in open_sections.values():
        for table in section.tables:
            assert len(table.denominators) <= 1, table.title
            text = table.frame.to_csv()
            assert not any(name in text for name in names), table.title
            assert "Arm A" not in text, table.title
            assert "Arm B" not in text, table.title


def test_safety_population_n_is_the_same_in_every_table(
    study: Study, open_sections: dict[str, Section], closed_sections: dict[str, Section]
) -> None:
    for sections, doses in ((open_sections, False), (closed_sections, True)):
        expected = len(_expected_safety(study, doses=doses))
        seen = []
        for section in sections.values():
            for table in section.tables:
                if table.population == "Safety population":
                    seen.append(dict(table.denominators)[TOTAL])
        assert len(seen) >= 10
        assert set(seen) == {expected}


def test_closed_arm_groups_partition_the_total(closed_sections: dict[str, Section]) -> None:
    for section in closed_sections.values():
        for table in section.tables:
            if len(table.denominators) > 1:
                counts = dict(table.denominators)
                assert counts["Arm A"] + counts["Arm B"] == counts[TOTAL], table.title


def test_any_adverse_event_counts_each_participant_once(
    study: Study, open_sections: dict[str, Section]
) -> None:
    tables = read_snapshot(study.snapshot).tables
    safety = _expected_safety(study)
    rand = tables["enrollment"].set_index("record_id")["rand_date"]
    ae = tables["adverse_events"]
    ae = ae[ae["record_id"].isin(safety)]
    ae = ae[ae["ae_start"] >= ae["record_id"].map(rand)]
    sections = open_sections
    overview = sections["adverse-events"].tables[0].frame
    any_row = overview[overview["Participants with"] == "Any adverse event"].iloc[0, 1]
    assert any_row.startswith(f"{ae['record_id'].nunique()} (")
    events_row = overview[overview["Participants with"] == "Number of events"].iloc[0, 1]
    assert events_row == str(len(ae))
    by_soc = sections["adverse-events"].tables[1].frame
    nausea = by_soc[by_soc.iloc[:, 0].str.strip() == "Nausea"].iloc[0]
    raw = ae[ae["ae_pt"] == "1"]  # coding list: 1 = Nausea
    assert nausea.iloc[1].startswith(f"{raw['record_id'].nunique()} (")
    assert nausea.iloc[2] == str(len(raw))


def test_hys_law_listing_matches_a_direct_screen_of_the_samples(
    study: Study, open_sections: dict[str, Section], closed_sections: dict[str, Section]
) -> None:
    tables = read_snapshot(study.snapshot).tables
    liver = tables["liver_tests"]
    liver = liver[liver["record_id"].isin(_expected_safety(study))]
    liver = liver[liver["redcap_event_name"] != "screening_arm_1"]
    hit = liver[
        ((liver["lab_alt"] > 120) | (liver["lab_ast"] > 120))
        & (liver["lab_bili"] > 2.4)
        & ~(liver["lab_alp"] > 240)
    ]
    listing = closed_sections["aesi-liver"].tables[1].frame
    assert sorted(listing["Participant"]) == sorted(hit["record_id"].astype(str))
    assert len(listing) >= 1  # the generator plants Hy's-law-range cases
    # the open session names no participant: pooled counts and the eDISH plot only
    opened = open_sections["aesi-liver"]
    assert all("Participant" not in table.frame.columns for table in opened.tables)
    assert any("in the closed report only" in text for text in opened.paragraphs)
    assert opened.figures[0].kind == "edish"


def test_open_session_withholds_every_participant_listing(
    open_sections: dict[str, Section], closed_sections: dict[str, Section]
) -> None:
    closed_listings = {
        table.title
        for section in closed_sections.values()
        for table in section.tables
        if "Participant" in table.frame.columns
    }
    assert len(closed_listings) >= 4  # SAEs, deaths, AE discontinuations, Hy's law, ...
    for section in open_sections.values():
        for table in section.tables:
            assert "Participant" not in table.frame.columns, table.title
            assert table.title not in closed_listings


def test_section_without_its_forms_says_what_is_missing(study: Study) -> None:
    tables = _tables(study)
    del tables["adverse_events"]
    del tables["cows"]
    inputs = DsmbInputs(study.protocol, tables, CUT)
    sections = {
        builder(inputs).id: builder(inputs)
        for builder in (adverse_events_section, withdrawal_section, liver_section, baseline_section)
    }
    assert sections["adverse-events"].missing == ("adverse_events",)
    assert "adverse_events" in sections["adverse-events"].paragraphs[0]
    assert not sections["adverse-events"].tables
    assert sections["aesi-withdrawal"].missing == ("cows",)
    # The rest is still produced.
    assert sections["aesi-liver"].tables
    assert sections["baseline"].tables
    assert not sections["aesi-liver"].missing


def test_cut_off_drops_later_randomisations_and_events(study: Study) -> None:
    early = date(2025, 12, 31)
    tables = cut_tables(study.protocol, dict(read_snapshot(study.snapshot).tables), early)
    assert (tables["adverse_events"]["ae_start"] <= pd.Timestamp(early)).all()
    inputs = DsmbInputs(study.protocol, tables, early)
    late = DsmbInputs(study.protocol, _tables(study), CUT)
    assert 0 < int(inputs.subjects()["randomised"].sum()) < int(late.subjects()["randomised"].sum())


def test_efficacy_is_shown_only_when_prespecified_and_closed(
    study: Study, closed_sections: dict[str, Section]
) -> None:
    assert not closed_sections["efficacy"].tables
    closed = _closed_inputs(study)
    prespecified = DsmbInputs(
        study.protocol,
        closed.tables,
        CUT,
        arms=closed.arms,
        arm_order=closed.arm_order,
        interim_efficacy=True,
    )
    shown = efficacy_section(prespecified)
    assert shown.tables
    assert "Arm A (N=" in shown.tables[0].frame.columns[1]
    open_inputs = DsmbInputs(study.protocol, _tables(study), CUT, interim_efficacy=True)
    assert not efficacy_section(open_inputs).tables


@pytest.mark.parametrize("key", [bytes(32), b"\xff" * 32])
def test_arm_codes_are_a_deterministic_permutation(study: Study, key: bytes) -> None:
    codes = arm_codes(study.protocol, key)
    assert codes == arm_codes(study.protocol, key)
    assert sorted(codes.values()) == ["Arm A", "Arm B"]
    assert set(codes) == {arm.name for arm in study.protocol.arms.items}


def test_arm_codes_vary_with_the_key(study: Study) -> None:
    seen = {tuple(sorted(arm_codes(study.protocol, bytes([i]) * 32).items())) for i in range(16)}
    assert len(seen) == 2


def test_reporting_exports_are_sorted_and_importable() -> None:
    import studyman.reporting as reporting

    assert reporting.__all__ == sorted(reporting.__all__)
    for name in reporting.__all__:
        assert hasattr(reporting, name), name


def test_every_section_builder_has_its_heading(open_sections: dict[str, Section]) -> None:
    from studyman.reporting.dsmb import _HEADINGS, SECTION_BUILDERS

    assert [_HEADINGS[b.__name__][0] for b in SECTION_BUILDERS] == list(open_sections)


def test_section_missing_a_field_says_so_and_the_rest_is_produced(study: Study) -> None:
    tables = _tables(study)
    tables["adverse_events"] = tables["adverse_events"].drop(columns=["ae_severity"])
    sections = {s.id: s for s in build_sections(DsmbInputs(study.protocol, tables, CUT))}
    broken = [s for s in sections.values() if "ae_severity" in " ".join(s.paragraphs)]
    assert "adverse-events" in [s.id for s in broken]
    assert all(s.missing == ("ae_severity",) for s in broken)
    assert sections["aesi-liver"].tables
    assert sections["baseline"].tables


def test_late_sae_report_is_counted_and_listed(study: Study) -> None:
    tables = _tables(study)
    ae = tables["adverse_events"].copy()
    serious = ae.index[(ae["ae_serious"] == 1).to_numpy()]
    late = serious[0]
    ae.loc[late, "ae_report_dt"] = ae.loc[late, "ae_aware_dt"] + pd.Timedelta(hours=30)
    tables["adverse_events"] = ae
    section = reporting_timeliness_section(DsmbInputs(study.protocol, tables, CUT))
    clocks = section.tables[0].frame.set_index("Clock")
    sponsor = clocks.loc["SAE to the sponsor"]
    assert int(sponsor["Late"]) == 1
    assert int(sponsor["On time"]) + 1 == int(sponsor["Cases"])
    listing = section.tables[1].frame
    listing = listing[listing["Clock"] == "SAE to the sponsor"]
    assert listing["Participant"].tolist() == [str(ae.loc[late, "record_id"])]
    assert listing["Hours"].tolist() == ["30.0"]
    assert listing["Status"].tolist() == ["late"]


def test_every_reporting_clock_is_assessed(study: Study) -> None:
    tables = _tables(study)
    before = reporting_timeliness_section(DsmbInputs(study.protocol, tables, CUT))
    clocks = before.tables[0].frame.set_index("Clock")
    assert "not assessable" not in set(clocks["Cases"])
    counts = ["On time", "Late", "Missing (past due)", "Not yet due"]
    for _, row in clocks.iterrows():
        assert sum(int(row[c]) for c in counts) == int(row["Cases"])
    # the generated trial's SUSARs (its Hy's-law-range liver injuries) reach the regulator and
    # the IRB; it has no suicide death
    assert int(clocks.loc["Other SUSAR to the regulator", "Cases"]) >= 1
    assert int(clocks.loc["Unanticipated problem to the IRB", "Cases"]) >= 1
    assert clocks.loc["Suicide death to the DSMB", "Cases"] == "0"

    # three serious events become suicide deaths: reported after 30 h, never reported (due
    # long ago), and known on the cut-off day (not yet due)
    ae = tables["adverse_events"].copy()
    rows = ae.index[((ae["ae_serious"] == 1) & (ae["ae_unanticipated"] == 0)).to_numpy()][:3]
    ae.loc[rows, "ae_outcome"] = "5"
    ae.loc[rows, "ae_aesi"] = "1"
    aware = [pd.Timestamp("2026-03-01 08:00"), pd.Timestamp("2026-03-02 08:00")]
    aware.append(pd.Timestamp("2026-09-30 12:00"))
    ae.loc[rows, "ae_aware_dt"] = aware
    ae.loc[rows, "ae_dsmb_report_dt"] = [aware[0] + pd.Timedelta(hours=30), pd.NaT, pd.NaT]
    tables["adverse_events"] = ae
    after = reporting_timeliness_section(DsmbInputs(study.protocol, tables, CUT))
    dsmb = after.tables[0].frame.set_index("Clock").loc["Suicide death to the DSMB"]
    assert [dsmb[c] for c in ["Cases", *counts]] == ["3", "1", "0", "1", "1"]
    assert dsmb["Median hours"] == "30.0"
    listing = after.tables[1].frame
    listing = listing[listing["Clock"] == "Suicide death to the DSMB"]
    assert listing["Status"].tolist() == ["missing"]
    assert listing["Aware"].tolist() == ["2026-03-02 08:00"]


def test_reporting_clocks_read_no_arm(study: Study) -> None:
    open_table = reporting_timeliness_section(DsmbInputs(study.protocol, _tables(study), CUT))
    closed_table = reporting_timeliness_section(_closed_inputs(study))
    pd.testing.assert_frame_equal(open_table.tables[0].frame, closed_table.tables[0].frame)
    text = open_table.tables[0].frame.to_string()
    assert "Arm" not in text
    assert "adjunct" not in text.lower()


def test_snapshot_import_findings_are_counted_by_form(study: Study) -> None:
    findings = pd.DataFrame(
        {
            "instrument": ["vital_signs", "vital_signs", "phq9"],
            "check_id": ["SRC-CAST", "SRC-CAST", "SRC-CAST"],
        }
    )
    inputs = DsmbInputs(study.protocol, _tables(study), CUT, snapshot_findings=findings)
    section = data_quality_section(inputs)
    table = next(t for t in section.tables if t.title == "Snapshot import findings by form")
    assert table.frame.values.tolist() == [
        ["phq9", "SRC-CAST", "1"],
        ["vital_signs", "SRC-CAST", "2"],
    ]
    # forms come in the protocol's order, not by name (a renamed study sorts its own way)
    forms = [form.name for form in study.protocol.instruments]
    late, early = "adverse_events", "vital_signs"
    assert forms.index(early) < forms.index(late)
    assert late < early  # alphabetically the other way round
    both = pd.DataFrame({"instrument": [late, early], "check_id": ["SRC-CAST", "SRC-CAST"]})
    section = data_quality_section(
        DsmbInputs(study.protocol, _tables(study), CUT, snapshot_findings=both)
    )
    table = next(t for t in section.tables if t.title == "Snapshot import findings by form")
    assert table.frame["Form"].tolist() == [early, late]
    clean = data_quality_section(
        DsmbInputs(study.protocol, _tables(study), CUT, snapshot_findings=findings.iloc[:0])
    )
    assert "raised no finding" in " ".join(clean.paragraphs)


def test_eligible_participants_awaiting_randomisation_are_not_screen_failures(
    study: Study,
) -> None:
    snapshot = read_snapshot(study.snapshot).tables
    enrolment = snapshot["enrollment"]
    eligibility = snapshot["eligibility"].set_index("record_id")["elig_date"]
    # A cut-off between one participant's eligibility and randomisation dates.
    gap = enrolment.assign(elig=enrolment["record_id"].map(eligibility))
    gap = gap[(gap["rand_date"] - gap["elig"]).dt.days >= 2].iloc[5]
    cutoff = (gap["rand_date"] - pd.Timedelta(days=1)).date()
    tables = cut_tables(study.protocol, dict(snapshot), cutoff)
    frame = screen_failure_section(DsmbInputs(study.protocol, tables, cutoff)).tables[0].frame
    pending = frame[frame["Reason"] == "Eligible, not randomised by the cut-off"]
    assert len(pending) == 1
    assert int(pending.iloc[0][str(gap["record_id"])[:3]]) >= 1
