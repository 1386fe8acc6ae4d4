"""Group-sequential boundaries and conditional power against R's rpact 3.3.4.

Reference values: ``tests/data/reference/group_sequential.json``, made by
``tests/data/reference/group_sequential.R`` (getDesignGroupSequential, getDesignCharacteristics,
getConditionalPower, getGroupSequentialProbabilities).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from studyman.stats.group_sequential import (
    GroupSequentialDesign,
    alpha_spending,
    conditional_power,
    design_drift,
    group_sequential_design,
    interim_conditional_power,
)

REFERENCE = json.loads(
    (Path(__file__).parents[1] / "data" / "reference" / "group_sequential.json").read_text(
        encoding="utf-8"
    )
)
DESIGNS: list[dict[str, Any]] = REFERENCE["designs"]
CONDITIONAL: list[dict[str, Any]] = REFERENCE["conditional_power"]


def _design(case: dict[str, Any]) -> GroupSequentialDesign:
    return group_sequential_design(
        case["information_rates"],
        alpha=case["alpha"],
        sidedness=case["sidedness"],
        spending=case["spending"],
    )


@pytest.mark.parametrize("case", DESIGNS, ids=[c["name"] for c in DESIGNS])
def test_boundaries_match_rpact(case: dict[str, Any]) -> None:
    design = _design(case)
    # rpact getDesignGroupSequential(typeOfDesign = "asOF" | "asP"): criticalValues, stageLevels
    np.testing.assert_allclose(design.critical_values, case["critical_values"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(design.stage_levels, case["stage_levels"], rtol=0, atol=1e-6)
    # rpact stops at its tolerance (1e-8 in alpha: the last alphaSpent may read 0.04999999)
    np.testing.assert_allclose(design.alpha_spent, case["alpha_spent"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "case", [c for c in DESIGNS if "power" in c], ids=[c["name"] for c in DESIGNS if "power" in c]
)
def test_design_drift_matches_rpact_shift(case: dict[str, Any]) -> None:
    # rpact: sqrt(getDesignCharacteristics(design)$shift)
    assert design_drift(_design(case), case["power"]) == pytest.approx(
        case["design_drift"], abs=1e-6
    )


@pytest.mark.parametrize("case", CONDITIONAL, ids=[c["name"] for c in CONDITIONAL])
def test_conditional_power_matches_rpact(case: dict[str, Any]) -> None:
    design = _design(case)
    # rpact getConditionalPower (means, normal approximation) or getGroupSequentialProbabilities
    # on the shifted boundaries of the remaining looks (see the R script)
    value = conditional_power(design, look=case["look"], z=case["z"], drift=case["drift"])
    assert value == pytest.approx(case["conditional_power"], abs=1e-6), case["source"]


def test_single_remaining_look_is_the_closed_form() -> None:
    design = group_sequential_design([0.4, 1.0], spending="pocock")
    z, t, theta = 1.3, 0.4, 2.5
    expected = stats.norm.sf(
        (design.critical_values[1] - z * math.sqrt(t) - theta * (1 - t)) / math.sqrt(1 - t)
    )
    assert conditional_power(design, look=0, z=z, drift=theta) == pytest.approx(expected, abs=1e-12)


def test_one_look_design_is_the_fixed_sample_test() -> None:
    design = group_sequential_design([1.0], alpha=0.025)
    assert design.critical_values[0] == pytest.approx(stats.norm.isf(0.025), abs=1e-10)
    two = group_sequential_design([1.0], alpha=0.05, sidedness="two_sided")
    assert two.critical_values[0] == pytest.approx(stats.norm.isf(0.025), abs=1e-10)


def test_spending_functions_spend_all_alpha_at_full_information_and_nothing_at_zero() -> None:
    for spending in ("obrien_fleming", "pocock"):
        spent = alpha_spending([0.0, 0.5, 1.0], 0.025, spending)  # type: ignore[arg-type]
        assert spent[0] == 0.0
        assert spent[2] == pytest.approx(0.025, abs=1e-15)
        assert 0.0 < spent[1] < 0.025
    # O'Brien-Fleming spends far less early than Pocock (the point of choosing it)
    assert alpha_spending([0.3], 0.025, "obrien_fleming")[0] < (
        alpha_spending([0.3], 0.025, "pocock")[0] / 10
    )


def test_type_i_error_of_the_boundaries_is_alpha_by_simulation() -> None:
    # Attack the promise: the boundaries must hold the familywise error, checked by brute force.
    design = group_sequential_design([0.3, 0.6, 1.0], alpha=0.025, spending="pocock")
    rng = np.random.default_rng(16)
    steps = np.diff([0.0, 0.3, 0.6, 1.0])
    scores = np.cumsum(rng.standard_normal((400_000, 3)) * np.sqrt(steps), axis=1)
    z = scores / np.sqrt([0.3, 0.6, 1.0])
    rejected = (z >= np.asarray(design.critical_values)).any(axis=1).mean()
    # binomial SE at 400,000 draws: sqrt(0.025 * 0.975 / 4e5) = 2.5e-4; 4 SE
    assert abs(rejected - 0.025) < 1e-3


def test_conditional_power_under_trend_and_design_effect() -> None:
    planned = group_sequential_design([0.5, 1.0])
    observed = group_sequential_design([0.43, 1.0])
    result = interim_conditional_power(observed, look=0, z=1.1, planned=planned, power=0.9)
    assert result.trend_drift == pytest.approx(1.1 / math.sqrt(0.43))
    assert result.design_drift == pytest.approx(design_drift(planned, 0.9))
    # the trial was sized for a larger effect than the trend shows, so hoping for it helps
    assert result.design_effect > result.current_trend
    assert conditional_power(observed, look=1, z=2.5, drift=3.0) == 0.0


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ([0.5, 0.9], "last look must be at t = 1"),
        ([0.6, 0.5, 1.0], r"information rates\[1\] = 0.5"),
        ([0.0, 1.0], "expected 0 < t"),
        ([0.5, 0.502, 1.0], "at least 0.005 more"),
        ([float("nan"), 1.0], r"information rates\[0\] = nan"),
        ([], "at least one look"),
    ],
)
def test_bad_information_rates_are_refused_with_the_index(rates: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_sequential_design(rates)


def test_bad_alpha_look_and_power_are_refused() -> None:
    with pytest.raises(ValueError, match=r"alpha = 0\.7"):
        group_sequential_design([1.0], alpha=0.7)
    design = group_sequential_design([0.5, 1.0])
    with pytest.raises(ValueError, match="look = 2"):
        conditional_power(design, look=2, z=1.0, drift=1.0)
    with pytest.raises(ValueError, match="expected finite"):
        conditional_power(design, look=0, z=float("inf"), drift=1.0)
    with pytest.raises(ValueError, match=r"power = 1\.0"):
        design_drift(design, 1.0)
