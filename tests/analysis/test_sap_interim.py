"""The plan's interim looks: a group-sequential design declared in ``interim:``, loaded strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.analysis.sap import load_sap
from studyman.errors import ProtocolError

SAP = Path(__file__).resolve().parents[2] / "analysis" / "sap.yaml"
_REFERENCE_INTERIM = "interim:\n"

#: The group-sequential declaration the tests start from (one look at half the information).
LOOKS = """interim:
  dsmb_efficacy: true
  analysis: primary_mmrm
  information_fractions: [0.5, 1.0]
  spending: obrien_fleming
  power: 0.9
  planned_participants: 120
  futility: {rule: conditional_power, under: current_trend, threshold: 0.1}
"""


def _plan_with(tmp_path: Path, interim: str) -> Path:
    """The reference plan with its ``interim:`` block replaced by *interim*."""
    lines = SAP.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index(_REFERENCE_INTERIM)
    end = start + 1
    while end < len(lines) and (lines[end].startswith(" ") or not lines[end].strip()):
        end += 1
    path = tmp_path / "sap.yaml"
    path.write_text("".join([*lines[:start], interim, *lines[end:]]), encoding="utf-8")
    return path


def test_reference_plan_declares_no_interim_look() -> None:
    plan = load_sap(SAP).plan
    assert plan.interim.information_fractions == ()
    assert plan.interim_benefit() is None


def test_declared_looks_load_with_defaults_from_the_plan(tmp_path: Path) -> None:
    plan = load_sap(_plan_with(tmp_path, LOOKS)).plan
    interim = plan.interim
    assert interim.information_fractions == (0.5, 1.0)
    assert interim.spending == "obrien_fleming"
    assert interim.planned_participants == 120
    assert interim.futility is not None
    assert interim.futility.threshold == 0.1
    # alpha and sidedness from the multiplicity section, direction from hypothesis H1
    assert plan.interim_significance() == (0.025, "one_sided")
    assert plan.interim_benefit() == "lower"


def test_an_explicit_alpha_and_benefit_override_the_plan(tmp_path: Path) -> None:
    text = LOOKS + "  alpha: 0.05\n  sidedness: two_sided\n  benefit: higher\n"
    plan = load_sap(_plan_with(tmp_path, text)).plan
    assert plan.interim_significance() == (0.05, "two_sided")
    assert plan.interim_benefit() == "higher"


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("dsmb_efficacy: true", "dsmb_efficacy: false", "interim.dsmb_efficacy", "set it to true"),
        ("analysis: primary_mmrm", "analysis: no_such", "interim.analysis", "unknown analysis"),
        ("[0.5, 1.0]", "[0.5, 0.9]", r"interim.information_fractions\[1\]", "final analysis"),
        ("[0.5, 1.0]", "[0.6, 0.4, 1.0]", r"interim.information_fractions\[1\]", "increasing"),
        ("[0.5, 1.0]", "[1.0]", "interim.information_fractions", "at least one interim look"),
        ("spending: obrien_fleming", "spending: haybittle", "interim.spending", "pocock"),
        ("threshold: 0.1", "threshold: 1.5", "interim.futility.threshold", "less than 1"),
        ("power: 0.9", "power: 90", "interim.power", "less than 1"),
        ("planned_participants: 120", "planned_participant: 120", "interim", "unknown key"),
    ],
)
def test_a_malformed_interim_declaration_names_its_key(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    assert old in LOOKS
    path = _plan_with(tmp_path, LOOKS.replace(old, new))
    with pytest.raises(ProtocolError, match=message) as raised:
        load_sap(path)
    assert str(path) in str(raised.value)
    assert raised.match(key)


def test_a_futility_rule_without_looks_is_refused(tmp_path: Path) -> None:
    text = "interim:\n  futility: {threshold: 0.2}\n"
    with pytest.raises(ProtocolError, match="needs interim looks") as raised:
        load_sap(_plan_with(tmp_path, text))
    assert raised.match("interim.futility")


def test_a_monitored_analysis_without_a_direction_needs_benefit(tmp_path: Path) -> None:
    text = LOOKS.replace("analysis: primary_mmrm", "analysis: ae_incidence")
    with pytest.raises(ProtocolError, match="give 'benefit'") as raised:
        load_sap(_plan_with(tmp_path, text))
    assert raised.match("interim.benefit")
    plan = load_sap(_plan_with(tmp_path, text + "  benefit: lower\n")).plan
    assert plan.interim_benefit() == "lower"
