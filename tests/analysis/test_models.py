"""The plan's analysis functions against outside reference values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis.models import (
    _log_rank,
    kaplan_meier,
    mmrm_analysis,
    newcombe_interval,
    responder_logistic_analysis,
    wilson_interval,
)
from studyman.analysis.sap import MMRMAnalysis, ResponderLogisticAnalysis
from studyman.stats import fit_mmrm

DATA = Path(__file__).resolve().parents[1] / "data" / "reference" / "antidepressant.csv"


def test_primary_style_mmrm_reproduces_sas_on_antidepressant_data() -> None:
    long = pd.read_csv(DATA)
    frame = pd.DataFrame(
        {
            "SUBJID": long["PATIENT"].astype(str),
            "ARM": long["THERAPY"].astype(pd.CategoricalDtype(["PLACEBO", "DRUG"])),
            "VISIT": long["VISIT"].astype(pd.CategoricalDtype([4, 5, 6, 7])),
            "CHG": long["CHANGE"].astype(float),
            "BASE": long["BASVAL"].astype(float),
        }
    )
    analysis = MMRMAnalysis(
        id="antidepressant", kind="mmrm", role="primary", label="SAS comparison",
        population="itt", parameter="HAMD17", contrast_visit=7,
        fallbacks=("heterogeneous_toeplitz", "ar1", "compound_symmetry"),
    )  # fmt: skip
    outcome = mmrm_analysis(analysis, frame, confidence_level=0.95)
    assert outcome.details["covariance_structure"] == "unstructured"
    # SAS PROC MIXED, MODEL change = basval*VISIT THERAPY*VISIT / DDFM=KR; REPEATED VISIT /
    # TYPE=UN: DRUG − PLACEBO at week 6 −2.8018 (SE 1.1163, df 150, p 0.0131).
    assert outcome.headline is not None
    assert outcome.headline.estimate == pytest.approx(-2.8018, abs=1e-4)
    assert outcome.headline.p_value == pytest.approx(0.0131, abs=1e-4)
    differences = outcome.tables["lsmean_differences"]
    assert differences["std_error"].tolist() == pytest.approx(
        [0.6826, 0.9244, 1.0008, 1.1163], abs=1e-4
    )  # SAS KR standard errors, weeks 1, 2, 4, 6
    assert differences["df"].iloc[-1] == pytest.approx(150, abs=0.5)  # SAS df (rounded)
    assert outcome.details["deviance"] == pytest.approx(3494.20285008, rel=1e-6)  # SAS -2 RLL
    participants = outcome.tables["participants"].set_index("arm")
    assert participants.loc["PLACEBO", "analysed"] == 88
    assert participants.loc["DRUG", "analysed"] == 84
    assert participants["with_data_visit_7"].sum() == 129  # 128 complete + 1 intermittent


def test_wilson_interval_matches_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 → 0.2553 to 0.3662.
    lower, upper = wilson_interval(81, 263)
    assert lower == pytest.approx(0.2553, abs=1e-4)
    assert upper == pytest.approx(0.3662, abs=1e-4)


def test_newcombe_hybrid_score_interval_matches_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, method 10, example (a):
    # 56/70 − 48/80 = 0.2000, 95 % CI 0.0524 to 0.3339.
    difference, lower, upper = newcombe_interval(56, 70, 48, 80)
    assert difference == pytest.approx(0.2, abs=1e-12)
    assert lower == pytest.approx(0.0524, abs=1e-4)
    assert upper == pytest.approx(0.3339, abs=1e-4)


def test_kaplan_meier_steps_at_event_times_and_censors() -> None:
    # Hand computation: times 1, 2+, 3, 3, 4+ (+ censored): S(1) = 4/5, S(3) = 4/5 · 1/3.
    curve = kaplan_meier([1, 2, 3, 3, 4], [True, False, True, True, False])
    assert curve["time"].tolist() == [1.0, 3.0]
    assert curve["survival"].tolist() == pytest.approx([0.8, 0.8 / 3])
    assert curve["at_risk"].tolist() == [5, 3]


def test_mmrm_analysis_with_empirical_vcov_uses_the_sandwich() -> None:
    long = pd.read_csv(DATA)
    frame = pd.DataFrame(
        {
            "SUBJID": long["PATIENT"].astype(str),
            "ARM": long["THERAPY"].astype(pd.CategoricalDtype(["PLACEBO", "DRUG"])),
            "VISIT": long["VISIT"].astype(pd.CategoricalDtype([4, 5, 6, 7])),
            "CHG": long["CHANGE"].astype(float),
            "BASE": long["BASVAL"].astype(float),
        }
    )
    common = {
        "id": "robust", "kind": "mmrm", "role": "sensitivity", "label": "sandwich",
        "population": "itt", "parameter": "HAMD17", "contrast_visit": 7,
        "df_method": "between-within",
    }  # fmt: skip
    model = mmrm_analysis(MMRMAnalysis(**common), frame, confidence_level=0.95)
    robust = mmrm_analysis(MMRMAnalysis(**common, vcov="empirical"), frame, confidence_level=0.95)
    assert model.details["vcov"] == "model"
    assert robust.details["vcov"] == "empirical"
    fitted = fit_mmrm(
        frame.dropna(subset=["CHG"]),
        "CHG ~ ARM * VISIT + BASE * VISIT",
        subject="SUBJID",
        visit="VISIT",
        df_method="between-within",
        vcov="empirical",
    )
    expected = fitted.lsmeans_contrasts("ARM")
    differences = robust.tables["lsmean_differences"]
    assert differences["estimate"].tolist() == pytest.approx(expected["estimate"].tolist())
    assert differences["std_error"].tolist() == pytest.approx(expected["std_error"].tolist())
    # same estimates, different standard errors
    assert robust.headline is not None
    assert model.headline is not None
    assert robust.headline.estimate == pytest.approx(model.headline.estimate, rel=1e-12)
    assert (
        robust.tables["lsmean_differences"]["std_error"].iloc[-1]
        != model.tables["lsmean_differences"]["std_error"].iloc[-1]
    )


FIRTH = Path(__file__).resolve().parents[1] / "stats" / "reference"


def _remission_subjects(name: str) -> pd.DataFrame:
    data = pd.read_csv(FIRTH / f"firth_{name}.csv")
    arm_type = pd.CategoricalDtype(["CBT alone", "CBT + adjunct"])
    return pd.DataFrame(
        {
            "SUBJID": [f"P{i:03d}" for i in range(len(data))],
            "ARM": data["ARM"].astype(arm_type),
            "BASE": data["BASE"].astype(float),
            "STRATSEV": data["STRATSEV"].astype("string"),
            # remission: HAM-D-17 at most 7; non-remitters well above it, some never assessed
            "AVAL": [3.0 if r else (float("nan") if i % 9 == 0 else 15.0)
                     for i, r in enumerate(data["RESPONDER"])],
            "PCHG": float("nan"),
        }
    )  # fmt: skip


def _remission(sparse: dict[str, object] | None) -> ResponderLogisticAnalysis:
    return ResponderLogisticAnalysis.model_validate(
        {
            "id": "remission_logistic", "kind": "responder_logistic", "role": "secondary",
            "label": "remission", "population": "mitt", "parameter": "HAMD17", "visit": 12,
            "rule": {"kind": "at_most", "threshold": 7}, "strata": ["STRATSEV"],
            "sparse_data": sparse,
        }
    )  # fmt: skip


def test_sparse_remission_uses_firth_with_profile_interval_matching_r() -> None:
    import json
    import math

    reference = json.loads((FIRTH / "firth_logistic.json").read_text())["cases"][0]
    assert reference["name"] == "separated"
    arm = reference["coefficients"]["ARMCBT + adjunct"]
    outcome = responder_logistic_analysis(
        _remission({"method": "firth", "min_events": 10}),
        _remission_subjects("separated"),
        confidence_level=0.95,
    )
    assert outcome.status == "ok"
    assert outcome.headline is not None
    # R: tests/stats/reference/firth_logistic.R (base-R Firth = brglm2 AS_mean; profile_ci)
    assert outcome.headline.estimate == pytest.approx(math.exp(arm["estimate"]), rel=1e-6)
    assert outcome.headline.ci_lower == pytest.approx(math.exp(arm["ci_lower"]), rel=1e-6)
    assert outcome.headline.ci_upper == pytest.approx(math.exp(arm["ci_upper"]), rel=1e-6)
    assert outcome.headline.p_value == pytest.approx(arm["p_value"], rel=1e-6)
    assert "Firth" in outcome.message
    assert "0 < 10" in outcome.message
    assert outcome.details["fewest_events_in_an_arm"] == 0


def test_without_a_sparse_data_rule_separation_is_still_an_error_not_a_silent_switch() -> None:
    from studyman.errors import AnalysisError

    with pytest.raises(AnalysisError, match="separation"):
        responder_logistic_analysis(
            _remission(None), _remission_subjects("separated"), confidence_level=0.95
        )


def test_enough_events_keep_maximum_likelihood() -> None:
    outcome = responder_logistic_analysis(
        _remission({"method": "firth", "min_events": 2}),
        _remission_subjects("sparse"),
        confidence_level=0.95,
    )
    assert outcome.details["method"] == "maximum likelihood, Wald CI"
    assert "Firth" not in outcome.message


_REFERENCE = Path(__file__).parents[1] / "stats" / "reference"


def test_kaplan_meier_log_rank_and_newcombe_match_r() -> None:
    """statsmodels-backed estimators against R survival and prop.test (survival_newcombe.R)."""
    reference = json.loads((_REFERENCE / "survival_newcombe.json").read_text(encoding="utf-8"))
    data = pd.read_csv(_REFERENCE / "survival_synthetic.csv")
    for arm in ("A", "B"):
        part = data[data["group"] == arm]
        curve = kaplan_meier(part["time"].tolist(), (part["event"] == 1).tolist())
        expected = reference[f"km_{arm}"]
        assert curve["time"].tolist() == pytest.approx(expected["time"], abs=1e-12)
        assert curve["at_risk"].tolist() == expected["at_risk"]
        assert curve["events"].tolist() == expected["events"]
        assert curve["survival"].tolist() == pytest.approx(expected["survival"], abs=1e-12)
        # R leaves the standard error undefined (NA) once the survival reaches 0, as we do
        r_se = [math.nan if v in (None, "NA") else float(v) for v in expected["std_error"]]
        for ours, theirs, survival in zip(curve["std_error"], r_se, curve["survival"], strict=True):
            if math.isnan(theirs):
                assert survival == 0.0
                assert math.isnan(ours)
            else:
                assert ours == pytest.approx(theirs, abs=1e-12)
    p_value = _log_rank(data["time"], data["event"] == 1, data["group"] == "A")
    assert p_value == pytest.approx(reference["log_rank_p"], abs=1e-12)
    for case in reference["newcombe"]:
        x1, n1, x2, n2 = (int(v) for v in case["input"])
        assert newcombe_interval(x1, n1, x2, n2) == pytest.approx(case["result"], abs=1e-12)
