"""The plan states the intercurrent-event and administrative-censoring rules the code applies,
and the analysis report renders them."""

from __future__ import annotations

import html
from pathlib import Path

from studyman.analysis.report_notes import plan_text_html
from studyman.analysis.sap import load_sap

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"


def _flat(text: str) -> str:
    return " ".join(html.unescape(text).split())


def test_the_plan_dates_the_intercurrent_event_from_the_data() -> None:
    plan = load_sap(SAP).plan
    primary = next(e for e in plan.estimands if e.id == "primary")
    discontinuation = primary.intercurrent_events[0]
    assert discontinuation.strategy == "treatment_policy"
    assert "last study treatment received" in discontinuation.note
    assert plan.imputation_model is not None
    rule = _flat(plan.imputation_model.reference_based)
    assert rule.startswith(
        "Intercurrent event for the reference-based methods: the participant's discontinuation "
        "of study treatment"
    )
    # the old rule survives only as the stated fallback for an undated discontinuation
    assert "A discontinuation without any date takes the visit after the participant's last" in rule
    assert "including those observed after the event, which are kept" in rule
    assert "visits not yet due at the data cut-off" in rule


def test_the_plan_says_ongoing_participants_are_censored_not_non_responders() -> None:
    plan = load_sap(SAP).plan
    by_id = {e.id: _flat(e.missing_data) for e in plan.estimands}
    assert "administratively censored" in by_id["primary"]
    assert "not missing data" in by_id["primary"]
    for composite in ("response", "remission"):
        text = by_id[composite]
        assert "was due at the data cut-off" in text, composite
        assert "administratively censored" in text, composite


def test_the_report_renders_the_intercurrent_event_rules() -> None:
    text = _flat(plan_text_html(load_sap(SAP).plan))
    for expected in (
        "administratively censored: left out of the analysis, not a non-responder",
        "Intercurrent event for the reference-based methods: the participant's discontinuation",
        "dated by the last study treatment received",
        "imputed under MAR by every method",
    ):
        assert expected in text, expected
