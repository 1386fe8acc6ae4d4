"""The analysis plan file: loads into frozen models; malformed plans name file and key."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from studyman.analysis.sap import MMRMAnalysis, load_sap
from studyman.errors import ProtocolError

SAP = Path(__file__).resolve().parents[2] / "analysis" / "sap.yaml"


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = SAP.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "sap.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_reference_plan_loads_with_primary_mmrm_and_fallbacks() -> None:
    loaded = load_sap(SAP)
    primary = loaded.plan.analysis("primary_mmrm")
    assert isinstance(primary, MMRMAnalysis)
    assert primary.covariance == "unstructured"
    assert primary.fallbacks == ("heterogeneous_toeplitz", "ar1", "compound_symmetry")
    assert primary.df_method == "kenward-roger"
    assert primary.contrast_visit == 12
    assert len(loaded.sha256) == 64


def test_estimands_carry_the_five_attributes() -> None:
    plan = load_sap(SAP).plan
    primary = next(e for e in plan.estimands if e.id == "primary")
    assert primary.population == "mitt"
    assert primary.treatment
    assert primary.variable
    assert primary.summary
    strategies = {event.strategy for event in primary.intercurrent_events}
    assert "treatment_policy" in strategies


def test_plan_models_are_frozen() -> None:
    plan = load_sap(SAP).plan
    with pytest.raises(pydantic.ValidationError):
        plan.seed = 1  # type: ignore[misc]


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "    df_method: kenward-roger\n",
        "    df_method: kenward-roger\n    colour: red\n",
    )
    with pytest.raises(ProtocolError) as caught:
        load_sap(path)
    assert caught.value.file == str(path)
    assert caught.value.key == "analyses[0].colour"


def test_unknown_covariance_structure_is_named(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "fallbacks: [heterogeneous_toeplitz, ar1,",
        "fallbacks: [heterogeneous_toeplitz, ar2,",
    )
    with pytest.raises(ProtocolError) as caught:
        load_sap(path)
    assert caught.value.key == "analyses[0].fallbacks[1]"


def test_unknown_population_reference_is_named(tmp_path: Path) -> None:
    path = _variant(tmp_path, "    population: pp\n", "    population: per_protocol\n")
    with pytest.raises(ProtocolError, match="unknown population 'per_protocol'") as caught:
        load_sap(path)
    assert caught.value.key == "analyses[10].population"


def test_contrast_at_a_visit_outside_the_schedule_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, "    contrast_visit: 12\n", "    contrast_visit: 13\n")
    with pytest.raises(ProtocolError, match="visit 13"):
        load_sap(path)


def test_remission_threshold_is_a_plan_parameter(tmp_path: Path) -> None:
    path = _variant(tmp_path, "{kind: at_most, threshold: 7}", "{kind: at_most, threshold: 10}")
    remission = load_sap(path).plan.analysis("remission_logistic")
    assert remission.rule.threshold == 10  # type: ignore[union-attr]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _variant(tmp_path, "seed: 20261125", "seed: [20261125")
    with pytest.raises(ProtocolError, match="YAML syntax error") as caught:
        load_sap(path)
    assert str(caught.value.key).startswith("line ")


def test_analysis_package_exports_are_sorted_and_importable() -> None:
    import studyman.analysis as analysis

    assert analysis.__all__ == sorted(analysis.__all__)
    for name in analysis.__all__:
        assert hasattr(analysis, name), name


def test_empirical_vcov_with_kenward_roger_is_refused_with_its_key(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "    df_method: kenward-roger\n",
        "    df_method: kenward-roger\n    vcov: empirical\n",
    )
    with pytest.raises(ProtocolError, match="between-within") as caught:
        load_sap(path)
    assert caught.value.key is not None
    assert caught.value.key.startswith("analyses[0]")


def test_empirical_vcov_with_between_within_df_loads(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "    df_method: kenward-roger\n",
        "    df_method: between-within\n    vcov: empirical\n",
    )
    primary = load_sap(path).plan.analysis("primary_mmrm")
    assert isinstance(primary, MMRMAnalysis)
    assert primary.vcov == "empirical"
    assert load_sap(SAP).plan.analysis("primary_mmrm").vcov == "model"  # type: ignore[union-attr]


def test_a_key_given_twice_is_refused_not_silently_overridden(tmp_path: Path) -> None:
    path = _variant(tmp_path, 'version: "1.0"\n', 'version: "1.0"\nversion: "9.9"\n')
    with pytest.raises(ProtocolError, match="key 'version' repeats") as caught:
        load_sap(path)
    assert caught.value.file == str(path)
    assert caught.value.key is not None
    assert caught.value.key.startswith("version (line ")


def test_a_misspelt_key_is_named_as_unknown_not_as_the_missing_one(tmp_path: Path) -> None:
    path = _variant(tmp_path, "imputations: 100", "imputation: 100")
    with pytest.raises(ProtocolError, match="unknown key") as caught:
        load_sap(path)
    assert caught.value.key == "imputation"


def test_an_impossible_date_names_its_key(tmp_path: Path) -> None:
    path = _variant(tmp_path, "date: 2026-11-25", "date: 2026-02-30")
    with pytest.raises(ProtocolError, match="valid date") as caught:
        load_sap(path)
    assert caught.value.key == "date"


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("latin-1", r"not UTF-8 text \(line \d+, byte 0xe9\)"), ("utf-16", "UTF-16 text")],
)
def test_a_plan_not_in_utf8_is_one_error_naming_the_file(
    tmp_path: Path, encoding: str, expected: str
) -> None:
    path = tmp_path / "sap.yaml"
    text = SAP.read_text(encoding="utf-8").replace("analysis plan", "plan d'analyse détaillé", 1)
    path.write_bytes(text.encode(encoding))
    with pytest.raises(ProtocolError, match=expected) as caught:
        load_sap(path)
    assert caught.value.file == str(path)


def test_a_tab_indented_plan_is_a_one_line_syntax_error_with_its_line(tmp_path: Path) -> None:
    path = _variant(tmp_path, "  dsmb_efficacy: false", "\tdsmb_efficacy: false")
    with pytest.raises(ProtocolError, match="YAML syntax error") as caught:
        load_sap(path)
    assert caught.value.key is not None
    assert caught.value.key.startswith("line ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("{kind: adherent, threshold: 0.75}", "{kind: adherent}"),
        ("{kind: adherent, threshold: 0.75}", "{kind: adherent, threshold: 1.5}"),
        ("{kind: no_major_deviation}", "{kind: no_major_deviation, threshold: 0.5}"),
    ],
)
def test_an_adherence_criterion_needs_a_threshold_in_0_1_and_nothing_else_takes_one(
    tmp_path: Path, old: str, new: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        load_sap(_variant(tmp_path, old, new))
    assert "populations.pp.criteria" in str(caught.value)
