"""Estimands worded per ICH E9(R1): withdrawal is missing data, the imputation model and the
Kenward-Roger variant are declared, and the report renders the plan's text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from studyman.analysis.report_notes import plan_text_html
from studyman.analysis.sap import MMRMAnalysis, load_sap
from studyman.errors import ProtocolError

SAP = Path(__file__).resolve().parents[2] / "analysis" / "sap.yaml"


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = SAP.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "sap.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_no_estimand_treats_leaving_the_study_as_an_intercurrent_event() -> None:
    plan = load_sap(SAP).plan
    for estimand in plan.estimands:
        for event in estimand.intercurrent_events:
            assert not re.search(r"withdraw|missing|lost to", event.event, re.IGNORECASE)
        assert estimand.missing_data, estimand.id
    primary = next(e for e in plan.estimands if e.id == "primary")
    assert {e.strategy for e in primary.intercurrent_events} == {"treatment_policy"}
    assert "missing at random" in primary.missing_data
    assert "retrieved" in primary.rationale


@pytest.mark.parametrize(
    "event", ["Withdrawal from the study (missing outcome)", "Lost to follow-up", "Dropout"]
)
def test_withdrawal_listed_as_an_intercurrent_event_is_refused_with_its_key(
    tmp_path: Path, event: str
) -> None:
    path = _variant(
        tmp_path,
        "      - event: Start of a prohibited antidepressant before week 12\n"
        "        strategy: treatment_policy\n"
        "        note: The week-12 HAM-D-17 is used as observed after the start.\n",
        f"      - event: {event}\n        strategy: hypothetical\n",
    )
    with pytest.raises(ProtocolError, match=r"missing data, not an intercurrent event") as caught:
        load_sap(path)
    assert caught.value.key == "estimands[0].intercurrent_events[1]"


def test_the_imputation_model_is_declared_and_the_mi_analyses_must_follow_it(
    tmp_path: Path,
) -> None:
    plan = load_sap(SAP).plan
    assert plan.imputation_model is not None
    assert set(plan.imputation_model.variables) == {"BASE", "STRATSEV", "SITEID"}
    path = _variant(
        tmp_path, "  variables: [BASE, STRATSEV, SITEID]", "  variables: [BASE, STRATSEV]"
    )
    with pytest.raises(ProtocolError, match="differ from the declared imputation model") as caught:
        load_sap(path)
    assert caught.value.key is not None
    assert caught.value.key.endswith(".strata")


def test_the_plan_says_which_kenward_roger() -> None:
    primary = load_sap(SAP).plan.analysis("primary_mmrm")
    assert isinstance(primary, MMRMAnalysis)
    text = primary.inference_text()
    assert "DDFM=KR" in text
    assert "'Kenward-Roger-Linear'" in text
    linear = primary.model_copy(update={"df_method": "kenward-roger-linear"})
    assert "KR(LINEAR)" in linear.inference_text()


def test_the_report_renders_estimands_missing_data_imputation_model_and_multiplicity() -> None:
    text = plan_text_html(load_sap(SAP).plan)
    for expected in (
        "<dt>Missing data</dt>",
        "<dt>Rationale</dt>",
        "treatment policy strategy",
        "<h3>Imputation model</h3>",
        "Barnard-Rubin",
        "<h3>Inference in the MMRM analyses</h3>",
        "Kenward-Roger-Linear",
        "<h3>Multiplicity</h3>",
        "0.025, one-sided",
    ):
        assert expected in text, expected
    assert "Withdrawal from the study" not in text
