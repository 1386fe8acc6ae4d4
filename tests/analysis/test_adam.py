"""Reading the randomisation list and small ADaM rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis.adam import choice_labels, visit_number
from studyman.analysis.analyze import read_randomization
from studyman.errors import AnalysisError

ARMS = {"1": "CBT + adjunct", "2": "CBT alone"}


def test_randomization_codes_are_decoded_to_arm_names(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_text("record_id,rand_number,rand_arm\nS01-0001,S01S001,1\nS01-0002,S01M001,2\n")
    frame = read_randomization(path, ARMS)
    assert frame["TRT01P"].tolist() == ["CBT + adjunct", "CBT alone"]


def test_randomization_with_an_unknown_arm_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_text("record_id,rand_arm\nS01-0001,3\n")
    with pytest.raises(AnalysisError, match=r"randomization\.csv.*unknown arm\(s\) 3"):
        read_randomization(path, ARMS)


def test_randomization_listing_a_participant_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "randomization.parquet"
    pd.DataFrame({"record_id": ["S01-0001", "S01-0001"], "rand_arm": ["1", "2"]}).to_parquet(path)
    with pytest.raises(AnalysisError, match="listed twice"):
        read_randomization(path, ARMS)


def test_randomization_without_an_arm_column_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "randomization.csv"
    path.write_text("record_id,group\nS01-0001,1\n")
    with pytest.raises(AnalysisError, match="record_id, group"):
        read_randomization(path, ARMS)


def test_visit_numbers_are_weeks_of_the_event_names() -> None:
    assert visit_number("screening_arm_1") == -1
    assert visit_number("baseline_arm_1") == 0
    assert visit_number("week_12_arm_1") == 12
    assert visit_number("logs_arm_1") is None


def test_choice_labels_read_the_dictionary_choices() -> None:
    rows = [
        {"field_name": "ae_severity", "field_type": "radio",
         "select_choices_or_calculations": "1, mild | 2, moderate | 3, severe"},
        {"field_name": "age", "field_type": "text", "select_choices_or_calculations": ""},
    ]  # fmt: skip
    assert choice_labels(rows) == {"ae_severity": {"1": "mild", "2": "moderate", "3": "severe"}}
