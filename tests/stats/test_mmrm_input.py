"""fit_mmrm refuses unusable data with an AnalysisError naming rows or terms, and counts drops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.errors import AnalysisError
from studyman.stats import MMRMResult, fit_mmrm

DATA = Path(__file__).parents[1] / "data" / "reference"


def _fev() -> pd.DataFrame:
    data = pd.read_csv(DATA / "fev_data.csv")
    data["SEX"] = pd.Categorical(data["SEX"], categories=["Male", "Female"])
    return data


def _fit(data: pd.DataFrame, formula: str = "FEV1 ~ ARMCD * AVISIT") -> MMRMResult:
    return fit_mmrm(data, formula, subject="USUBJID", visit="AVISIT", df_method="satterthwaite")


def test_same_visit_twice_names_subject_and_rows() -> None:
    data = _fev()
    duplicate = data.iloc[[5]].copy()
    duplicate.index = [9999]
    data = pd.concat([data, duplicate])
    with pytest.raises(
        AnalysisError, match=r"subject 'PT2' has visit 'VIS2' more than once"
    ) as err:
        _fit(data)
    assert "5, 9999" in str(err.value)


def test_visit_level_without_observations_is_named() -> None:
    data = _fev()
    data["AVISIT"] = pd.Categorical(
        data["AVISIT"], categories=["VIS1", "VIS2", "VIS3", "VIS4", "VIS5"]
    )
    with pytest.raises(AnalysisError, match="VIS5"):
        _fit(data)


def test_visit_whose_outcomes_are_all_missing_is_named() -> None:
    data = _fev()
    data.loc[data["AVISIT"] == "VIS3", "FEV1"] = np.nan
    with pytest.raises(AnalysisError, match=r"\['VIS3'\].*no observations"):
        _fit(data)


def test_rank_deficient_design_names_the_aliased_terms() -> None:
    data = _fev()
    data["ARM_COPY"] = data["ARMCD"]
    with pytest.raises(AnalysisError, match=r"rank deficient: \['ARM_COPY\[T.TRT\]'\]"):
        _fit(data, "FEV1 ~ ARMCD + ARM_COPY + AVISIT")


def test_non_numeric_outcome_names_rows() -> None:
    data = _fev()
    data["FEV1"] = data["FEV1"].astype(object)
    data.loc[3, "FEV1"] = "n/a"
    with pytest.raises(AnalysisError, match=r"'FEV1' is not numeric: non-numeric values in rows 3"):
        _fit(data)


def test_missing_subject_id_names_rows() -> None:
    data = _fev()
    data.loc[[10, 11], "USUBJID"] = None
    with pytest.raises(AnalysisError, match=r"missing subject id \('USUBJID'\) in rows 10, 11"):
        _fit(data)


def test_rows_with_missing_covariates_are_dropped_and_counted() -> None:
    data = _fev()
    complete = _fit(data, "FEV1 ~ ARMCD * AVISIT + FEV1_BL")
    data.loc[[1, 3], "FEV1_BL"] = np.nan  # both rows have an FEV1
    dropped = _fit(data, "FEV1 ~ ARMCD * AVISIT + FEV1_BL")
    assert complete.n_dropped == 263
    assert dropped.n_dropped == 265
    assert dropped.n_observations == 535
    assert {1, 3} <= set(dropped.dropped_rows)


def test_group_must_be_constant_within_subject() -> None:
    data = _fev()
    data.loc[data.index[1], "RACE"] = (
        "Asian" if data.loc[data.index[1], "RACE"] != "Asian" else "White"
    )
    with pytest.raises(AnalysisError, match="changes within subject"):
        fit_mmrm(data, "FEV1 ~ AVISIT", subject="USUBJID", visit="AVISIT", group="RACE")


def test_unknown_structure_method_and_columns_are_refused() -> None:
    data = _fev()
    with pytest.raises(AnalysisError, match="unknown covariance structure 'spline'"):
        fit_mmrm(data, "FEV1 ~ AVISIT", subject="USUBJID", visit="AVISIT", covariance="spline")
    with pytest.raises(AnalysisError, match="unknown df_method"):
        fit_mmrm(data, "FEV1 ~ AVISIT", subject="USUBJID", visit="AVISIT", df_method="guess")
    with pytest.raises(AnalysisError, match="names columns not in the data: \\['AGE'\\]"):
        fit_mmrm(data, "FEV1 ~ AVISIT + AGE", subject="USUBJID", visit="AVISIT")
    with pytest.raises(AnalysisError, match="the outcome 'FEV2'"):
        fit_mmrm(data, "FEV2 ~ AVISIT", subject="USUBJID", visit="AVISIT")


def test_lsmeans_of_unknown_factor_is_refused() -> None:
    result = fit_mmrm(_fev(), "FEV1 ~ ARMCD * AVISIT", subject="USUBJID", visit="AVISIT")
    with pytest.raises(AnalysisError, match="'RACE' is not a factor of the model"):
        result.lsmeans("RACE")
    with pytest.raises(AnalysisError, match="contrast needs 8 weights"):
        result.contrast([1.0, 2.0])


def test_group_without_observations_at_a_visit_is_named() -> None:
    data = _fev()
    data.loc[(data["ARMCD"] == "TRT") & (data["AVISIT"] == "VIS3"), "FEV1"] = np.nan
    with pytest.raises(AnalysisError, match=r"none at \(group/visit\): \['TRT/VIS3'\]"):
        fit_mmrm(data, "FEV1 ~ ARMCD * AVISIT", subject="USUBJID", visit="AVISIT", group="ARMCD")


def test_visit_labels_sort_naturally() -> None:
    data = _fev()
    data["AVISIT"] = data["AVISIT"].map({"VIS1": "V2", "VIS2": "V5", "VIS3": "V10", "VIS4": "V12"})
    result = fit_mmrm(data, "FEV1 ~ ARMCD * AVISIT", subject="USUBJID", visit="AVISIT")
    assert list(result.covariance.index) == ["V2", "V5", "V10", "V12"]
    assert list(result.lsmeans_contrasts("ARMCD")["visit"]) == ["V2", "V5", "V10", "V12"]
