"""The plan's arms: one or several experimental arms, each compared with the reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.analysis.sap import load_sap
from studyman.errors import ProtocolError

SAP = Path(__file__).resolve().parents[2] / "analysis" / "sap.yaml"
_TWO_ARMS = "  experimental: CBT + adjunct\n"
_THREE_ARMS = "  experimental: [CBT + adjunct, CBT + placebo]\n"


def _variant(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = SAP.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "sap.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_reference_plan_has_one_comparison() -> None:
    treatment = load_sap(SAP).plan.treatment
    assert treatment.experimental_arms == ("CBT + adjunct",)
    assert treatment.comparisons == (("CBT + adjunct", "CBT alone"),)
    assert treatment.arms == ("CBT + adjunct", "CBT alone")


def test_a_list_of_experimental_arms_gives_one_comparison_each(tmp_path: Path) -> None:
    text = SAP.read_text(encoding="utf-8")
    start = text.index("  hypotheses:\n")
    end = text.index("\n\n", start)
    hypotheses = text[start:end]
    tagged = hypotheses.replace("benefit:", "comparison: CBT + placebo, benefit:")
    path = _variant(tmp_path, (_TWO_ARMS, _THREE_ARMS), (hypotheses, tagged))
    plan = load_sap(path).plan
    assert plan.treatment.comparisons == (
        ("CBT + adjunct", "CBT alone"),
        ("CBT + placebo", "CBT alone"),
    )
    assert {h.comparison for h in plan.multiplicity.hypotheses} == {"CBT + placebo"}  # type: ignore[union-attr]


def test_several_experimental_arms_need_each_hypothesis_to_name_its_comparison(
    tmp_path: Path,
) -> None:
    path = _variant(tmp_path, (_TWO_ARMS, _THREE_ARMS))
    with pytest.raises(ProtocolError) as caught:
        load_sap(path)
    assert caught.value.key == "multiplicity.hypotheses[0].comparison"
    assert "CBT + placebo" in str(caught.value)


def test_a_hypothesis_naming_an_arm_the_plan_lacks_is_refused(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        ("{id: H1, analysis: primary_mmrm,", "{id: H1, analysis: primary_mmrm, comparison: X,"),
    )
    with pytest.raises(ProtocolError) as caught:
        load_sap(path)
    assert caught.value.key == "multiplicity.hypotheses[0].comparison"
    assert "'X'" in str(caught.value)


def test_the_reference_arm_cannot_also_be_experimental(tmp_path: Path) -> None:
    path = _variant(tmp_path, (_TWO_ARMS, "  experimental: [CBT + adjunct, CBT alone]\n"))
    with pytest.raises(ProtocolError, match="distinct"):
        load_sap(path)


def test_parameters_are_any_paramcd_with_their_visits(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        ("  gad7: [2, 4, 8, 12]\n", "  gad7: [2, 4, 8, 12]\n  madrs: [2, 4, 8, 16]\n"),
    )
    assert load_sap(path).plan.visits["madrs"] == (2, 4, 8, 16)
    bad = _variant(tmp_path, ("  gad7: [2, 4, 8, 12]\n", "  gad7: [2, 4, 8, 12]\n  Madrs: [2]\n"))
    with pytest.raises(ProtocolError) as caught:
        load_sap(bad)
    assert "visits" in str(caught.value.key)
