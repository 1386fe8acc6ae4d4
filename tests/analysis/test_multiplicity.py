"""The plan's multiplicity strategy: declared, checked on load, applied to the run's headlines,
and the tipping point tested at the declared alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.analysis.executor import SerialExecutor
from studyman.analysis.models import AnalysisOutcome, Headline, tipping_point_analysis
from studyman.analysis.multiplicity import directional_p_value, multiplicity_outcome
from studyman.analysis.sap import TippingPointAnalysis, load_sap
from studyman.errors import ProtocolError

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
ANTIDEPRESSANT = ROOT / "tests" / "data" / "reference" / "antidepressant.csv"


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = SAP.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "sap.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _outcome(analysis: str, estimate: float, p: float, null: float = 0.0) -> AnalysisOutcome:
    return AnalysisOutcome(
        id=analysis,
        kind="mmrm",
        role="primary",
        label=analysis,
        status="ok",
        headline=Headline("m", estimate, estimate - 1, estimate + 1, p, null_value=null),
    )


def test_reference_plan_declares_alpha_sidedness_and_a_graph_over_the_key_hypotheses() -> None:
    plan = load_sap(SAP).plan
    multiplicity = plan.multiplicity
    assert multiplicity is not None
    assert (multiplicity.alpha, multiplicity.sidedness) == (0.025, "one_sided")
    assert next(h.analysis for h in multiplicity.hypotheses) == "primary_mmrm"
    graph = multiplicity.graph()
    assert graph.weights[0] == 1.0
    assert plan.significance_level() == (0.025, "one_sided")
    assert plan.benefit_of("tipping_point") == "lower"  # via the primary estimand


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("    - [0, 0.5, 0.5, 0, 0]\n", "    - [0, 0.7, 0.5, 0, 0]\n",
         "multiplicity.transitions[0]", r"transitions\[0\] sums to 1.2"),
        ("  weights: [1, 0, 0, 0, 0]", "  weights: [1, 0.5, 0, 0, 0]", "multiplicity.weights",
         "weights sum to 1.5"),
        ("analysis: gad7_mmrm, benefit", "analysis: gad7_mmrn, benefit",
         "multiplicity.hypotheses[4].analysis", "unknown analysis 'gad7_mmrn'"),
        ("analysis: gad7_mmrm, benefit", "analysis: ae_incidence, benefit",
         "multiplicity.hypotheses[4].analysis", "no test of arms"),
        ("  alpha: 0.025\n", "  alpha: 0.05\n", "multiplicity.alpha",
         "does not match confidence_level 0.95"),
        ("  procedure: graphical\n", "  procedure: holm\n", "multiplicity",
         "fixes its own graph"),
        ("{id: H5,", "{id: H4,", "multiplicity.hypotheses", "unique"),
    ],
)  # fmt: skip
def test_a_wrong_multiplicity_section_is_refused_naming_its_key(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(ProtocolError, match=message) as caught:
        load_sap(path)
    assert caught.value.key == key
    assert caught.value.file == str(path)


def test_one_sided_p_value_counts_only_the_direction_of_benefit() -> None:
    better = Headline("d", -3.0, -5.0, -1.0, 0.004)
    worse = Headline("d", 3.0, 1.0, 5.0, 0.004)
    assert directional_p_value(better, "one_sided", "lower") == pytest.approx(0.002)
    assert directional_p_value(worse, "one_sided", "lower") == pytest.approx(0.998)
    odds = Headline("or", 2.0, 1.2, 3.3, 0.01, null_value=1.0)
    assert directional_p_value(odds, "one_sided", "higher") == pytest.approx(0.005)
    assert directional_p_value(worse, "two_sided", "lower") == 0.004


def test_adjusted_decisions_follow_the_graph_and_a_failed_analysis_is_never_rejected() -> None:
    plan = load_sap(SAP).plan
    outcomes = {
        "primary_mmrm": _outcome("primary_mmrm", -3.0, 0.0008),  # one-sided 0.0004
        "response_logistic": _outcome("response_logistic", 1.8, 0.024, null=1.0),  # 0.012
        "phq9_mmrm": _outcome("phq9_mmrm", -2.0, 0.036),  # 0.018
        "remission_logistic": AnalysisOutcome(
            "remission_logistic", "responder_logistic", "secondary", "r", "failed", "separation"
        ),
        "gad7_mmrm": _outcome("gad7_mmrm", 1.0, 0.04),  # wrong direction: 0.98
    }
    result = multiplicity_outcome(plan, outcomes)
    assert result is not None
    assert result.status == "ok"
    table = result.tables["hypotheses"].set_index("hypothesis")
    # H1 at 0.025; H2 and H3 each at 0.0125 fail alone... H2 0.012 <= 0.0125 is rejected,
    # which passes 0.5 of its weight to H3: H3 then has 0.0125 + 0.00625 = 0.01875 >= 0.018.
    assert table["decision"].to_dict() == {
        "H1": "rejected",
        "H2": "rejected",
        "H3": "rejected",
        "H4": "not rejected",
        "H5": "not rejected",
    }
    assert table.loc["H4", "p_value"] == 1.0
    assert table.loc["H5", "p_value"] == pytest.approx(0.98)
    assert "remission_logistic" in result.message
    assert list(result.tables["steps"]["rejected"]) == ["H1", "H2", "H3"]
    assert result.tables["graph"].shape == (5, 7)
    assert result.details["alpha"] == 0.025


def test_family_with_an_analysis_missing_from_the_run_is_refused_not_guessed() -> None:
    plan = load_sap(SAP).plan
    result = multiplicity_outcome(plan, {"primary_mmrm": _outcome("primary_mmrm", -3, 0.001)})
    assert result is not None
    assert result.status == "refused"
    assert "phq9_mmrm" in result.message


def _antidepressant() -> tuple[pd.DataFrame, pd.DataFrame]:
    data = pd.read_csv(ANTIDEPRESSANT)
    subjects = (
        data.drop_duplicates("PATIENT")
        .rename(columns={"PATIENT": "SUBJID", "THERAPY": "ARM", "BASVAL": "BASE"})
        .loc[:, ["SUBJID", "ARM", "BASE"]]
        .assign(SUBJID=lambda f: f["SUBJID"].astype(str))
        .reset_index(drop=True)
    )
    frame = data.rename(columns={"PATIENT": "SUBJID", "VISIT": "AVISITN", "CHANGE": "CHG"})
    frame = frame.assign(SUBJID=frame["SUBJID"].astype(str))[["SUBJID", "AVISITN", "CHG"]]
    return frame, subjects


@pytest.mark.parametrize(("alpha", "sidedness"), [(0.01, "one_sided"), (0.2, "two_sided")])
def test_tipping_point_uses_the_declared_alpha_not_a_fixed_005(
    alpha: float, sidedness: str
) -> None:
    frame, subjects = _antidepressant()
    analysis = TippingPointAnalysis(
        id="tipping_point", kind="tipping_point", role="sensitivity", label="t",
        population="mitt", parameter="HAMD17", visit=7, deltas=(0, 1, 2, 3, 4, 6, 8),
        imputations=5,
    )  # fmt: skip
    outcome = tipping_point_analysis(
        analysis, frame, subjects, visits=[4, 5, 6, 7], experimental="DRUG", imputations=5,
        seed=1, executor=SerialExecutor(), confidence_level=0.95, alpha=alpha,
        sidedness=sidedness, benefit="lower",  # type: ignore[arg-type]
    )  # fmt: skip
    grid = outcome.tables["grid"]
    p = grid["p_value_one_sided"] if sidedness == "one_sided" else grid["p_value"]
    np.testing.assert_array_equal(grid["significant"].to_numpy(), (p < alpha).to_numpy())
    assert outcome.details["alpha"] == alpha
    assert bool(grid["significant"].iloc[0])
    lost = grid.loc[~grid["significant"], "delta"]
    assert outcome.details["tipping_delta"] == float(lost.iloc[0])
    # At 0.05 two-sided the tipping point would be a third value: the level decides it.
    at_005 = grid.loc[grid["p_value"] >= 0.05, "delta"].iloc[0]
    assert outcome.details["tipping_delta"] != at_005
