"""Highest AE severity follows the study's own severity scale, not only the CDISC terms."""

from __future__ import annotations

import pandas as pd

from studyman.analysis.models import ae_highest_severity
from studyman.analysis.sap import AEAnalysis

ANALYSIS = AEAnalysis(
    id="ae_severity", kind="ae_highest_severity", role="safety", label="x", population="safety"
)
ARMS = ("A", "B")


def _frames(severities: list[tuple[str, str, int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    adae = pd.DataFrame(
        {
            "SUBJID": [s for s, _, _ in severities],
            "AESEV": [label for _, label, _ in severities],
            "AESEVN": pd.array([rank for _, _, rank in severities], dtype="Int64"),
            "TRTEMFL": "Y",
            "AESER": "N",
            "AESI": "",
        }
    )
    safety = pd.DataFrame({"SUBJID": ["1", "2", "3", "4"], "ARM": ["A", "A", "B", "B"]})
    return adae, safety


def test_a_graded_scale_ranks_by_the_dictionarys_order() -> None:
    adae, safety = _frames(
        [("1", "GRADE 1", 1), ("1", "GRADE 3", 3), ("2", "GRADE 2", 2), ("3", "GRADE 1", 1)]
    )
    table = ae_highest_severity(ANALYSIS, adae, safety, arms=ARMS).tables["highest_severity"]
    counts = table.set_index("highest_severity")[["n_A", "n_B"]]
    assert counts.index.tolist() == ["NONE", "GRADE 1", "GRADE 2", "GRADE 3"]
    assert counts.loc["GRADE 3"].tolist() == [1, 0]  # participant 1: grade 1 and 3 -> 3
    assert counts.loc["GRADE 2"].tolist() == [1, 0]
    assert counts.loc["GRADE 1"].tolist() == [0, 1]
    assert counts.loc["NONE"].tolist() == [0, 1]


def test_the_cdisc_terms_rank_as_cdisc_orders_them_whatever_their_codes() -> None:
    # a dictionary listing "Severe" first: the rank codes say 1 but SEVERE is still the worst
    adae, safety = _frames([("1", "SEVERE", 1), ("1", "MILD", 3), ("3", "MODERATE", 2)])
    table = ae_highest_severity(ANALYSIS, adae, safety, arms=ARMS).tables["highest_severity"]
    counts = table.set_index("highest_severity")[["n_A", "n_B"]]
    assert counts.index.tolist() == ["NONE", "MILD", "MODERATE", "SEVERE"]
    assert counts.loc["SEVERE"].tolist() == [1, 0]
    assert counts.loc["MODERATE"].tolist() == [0, 1]
