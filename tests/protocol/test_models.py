"""Protocol rules that other areas compute with: totals, Hy's law, derived eligibility, strata."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.protocol import Protocol, load_protocol
from studyman.protocol.models import redcap_round


@pytest.fixture
def protocol(reference_study: Path) -> Protocol:
    return load_protocol(reference_study, with_redcap=False)


def test_hamd_total_counts_16a_or_16b_and_allows_no_missing_item(protocol: Protocol) -> None:
    scoring = protocol.scoring_of("hamd17")
    items = {field: 1.0 for field in scoring.item_fields if field not in ("hamd_16a", "hamd_16b")}
    assert scoring.n_items == 17
    assert scoring.total({**items, "hamd_16a": 2.0}) == 18.0
    assert scoring.total({**items, "hamd_16b": 0.0}) == 16.0
    # both or neither of 16A/16B cannot be scored as specified
    assert scoring.total({**items, "hamd_16a": 1.0, "hamd_16b": 1.0}) is None
    assert scoring.total(items) is None
    assert scoring.total({**items, "hamd_16a": 1.0, "hamd_1": None}) is None


def test_phq9_total_prorates_one_missing_item_and_not_two(protocol: Protocol) -> None:
    scoring = protocol.scoring_of("phq9")
    values: dict[str, float | None] = {f"phq9_{i}": 1.0 for i in range(1, 10)}
    values["phq9_9"] = 2.0
    assert scoring.total(values) == 10.0
    values["phq9_1"] = None  # 8 answered, sum 9: 9 / 8 * 9 = 10.125
    assert scoring.total(values) == 10.0
    values["phq9_2"] = None
    assert scoring.total(values) is None


def test_redcap_round_takes_halves_away_from_zero() -> None:
    assert redcap_round(10.5) == 11.0
    assert redcap_round(11.5) == 12.0
    assert redcap_round(-2.5) == -3.0


def test_bands_of_scales(protocol: Protocol) -> None:
    cows = protocol.scoring_of("cows")
    bands = [cows.band(total) for total in (4, 5, 13, 25, 37)]
    assert [band.name if band else None for band in bands] == [
        "none",
        "mild",
        "moderate",
        "moderately severe",
        "severe",
    ]
    assert protocol.scoring_of("gad7").band(15) is not None


def test_hys_law_rule(protocol: Protocol) -> None:
    liver = protocol.liver
    case = {"lab_alt": 130.0, "lab_ast": 50.0, "lab_alp": 200.0, "lab_bili": 2.5}
    assert liver.is_potential_hys_law(case) is True
    assert liver.is_potential_hys_law({**case, "lab_alt": 120.0}) is False  # exactly 3 x ULN
    assert liver.is_potential_hys_law({**case, "lab_bili": 2.4}) is False  # exactly 2 x ULN
    assert liver.is_potential_hys_law({**case, "lab_alp": 241.0}) is False  # cholestatic
    assert liver.is_potential_hys_law({**case, "lab_alp": None}) is None


def test_derived_eligibility_rule(protocol: Protocol) -> None:
    age = next(c for c in protocol.eligibility.criteria if c.id == "inc_age").derived
    assert age is not None
    assert age.evaluate({("screening_arm_1", "age"): 40.0}) is True
    assert age.evaluate({("screening_arm_1", "age"): 66.0}) is False
    assert age.evaluate({}) is None
    liver = next(c for c in protocol.eligibility.criteria if c.id == "exc_liver").derived
    assert liver is not None
    assert liver.evaluate({("screening_arm_1", "lab_alt"): 81.0}) is True


def test_severity_stratum_from_baseline_score(protocol: Protocol) -> None:
    severity = next(f for f in protocol.randomization.stratification if f.id == "severity")
    assert [severity.level_of(score) for score in (17.0,)] == [None]
    level_23 = severity.level_of(23.0)
    level_24 = severity.level_of(24.0)
    assert level_23 is not None
    assert level_23.name == "moderate"
    assert level_24 is not None
    assert level_24.name == "severe"


def test_reporting_clocks_table(protocol: Protocol) -> None:
    clocks = {clock.id: clock.limit_hours for clock in protocol.reporting_clocks}
    assert clocks == {
        "sae_sponsor": 24,
        "susar_fatal_life_threatening": 7 * 24,
        "susar_other": 15 * 24,
        "suicide_death_dsmb": 48,
        "unanticipated_problem_irb": 7 * 24,
    }


def test_every_reporting_clock_names_its_report_field(protocol: Protocol) -> None:
    fields = {clock.id: clock.report_field for clock in protocol.reporting_clocks}
    assert fields == {
        "sae_sponsor": "ae_report_dt",
        "susar_fatal_life_threatening": "ae_reg_report_dt",
        "susar_other": "ae_reg_report_dt",
        "suicide_death_dsmb": "ae_dsmb_report_dt",
        "unanticipated_problem_irb": "ae_irb_report_dt",
    }
    ae = protocol.adverse_events
    assert (ae.expected_field, ae.unanticipated_field) == ("ae_expected", "ae_unanticipated")
    assert ae.fatal_or_life_threatening_criteria == (1, 2)
