"""Reading the randomisation list and small ADaM rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis.adam import analysis_parameters, choice_labels, visit_numbers
from studyman.analysis.analyze import read_randomization
from studyman.errors import AnalysisError
from studyman.protocol.loader import load_protocol

PROTOCOL = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct" / "protocol.yaml"

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


def test_randomization_headers_may_be_the_protocols_record_id_and_arm_fields(
    tmp_path: Path,
) -> None:
    protocol = load_protocol(PROTOCOL)
    renamed = protocol.model_copy(
        update={
            "study": protocol.study.model_copy(update={"record_id_field": "subject_id"}),
            "arms": protocol.arms.model_copy(update={"field": "allocation"}),
        }
    )
    path = tmp_path / "randomization.csv"
    path.write_text("subject_id,allocation\nS01-0001,2\nS01-0002,1\n")
    frame = read_randomization(path, ARMS, renamed)
    assert frame["SUBJID"].tolist() == ["S01-0001", "S01-0002"]
    assert frame["TRT01P"].tolist() == ["CBT alone", "CBT + adjunct"]
    # without the protocol those headers are not known: the error names file and headers
    with pytest.raises(AnalysisError) as caught:
        read_randomization(path, ARMS)
    message = str(caught.value)
    assert message.startswith(f"{path}: no record-ID column")
    assert "subject_id, allocation" in message


def test_a_list_missing_the_protocols_arm_header_names_it(tmp_path: Path) -> None:
    protocol = load_protocol(PROTOCOL)
    renamed = protocol.model_copy(
        update={"arms": protocol.arms.model_copy(update={"field": "allocation"})}
    )
    path = tmp_path / "randomization.csv"
    path.write_text("record_id,group\nS01-0001,1\n")
    with pytest.raises(AnalysisError) as caught:
        read_randomization(path, ARMS, renamed)
    assert str(caught.value).startswith(f"{path}: no arm column (allocation or rand_arm")


def test_visit_numbers_are_the_weeks_of_the_protocols_schedule() -> None:
    protocol = load_protocol(PROTOCOL)
    numbers = visit_numbers(protocol)
    days = {v.event: v.target_day for v in protocol.visits}
    assert numbers[protocol.visits[0].event] == -1  # screening, whatever its target day
    baseline = next(v.event for v in protocol.visits if v.kind == "baseline")
    assert numbers[baseline] == 0
    for event, number in numbers.items():
        if number > 0:
            assert days[event] == 7 * number
    assert sorted(n for n in numbers.values() if n > 0) == [1, 2, 4, 6, 8, 12, 16]
    logs = [v.event for v in protocol.visits if v.target_day is None]
    assert logs
    assert not set(logs) & set(numbers)


def test_visit_numbers_ignore_event_names() -> None:
    protocol = load_protocol(PROTOCOL)
    renamed = protocol.model_copy(
        update={
            "visits": tuple(
                v.model_copy(update={"event": f"ev{i}_zz_{i * 3}"})
                for i, v in enumerate(protocol.visits)
            )
        }
    )
    before, after = visit_numbers(protocol), visit_numbers(renamed)
    assert sorted(before.values()) == sorted(after.values())
    assert all(event.startswith("ev") for event in after)


def test_a_visit_that_is_not_a_whole_week_is_refused_naming_the_key() -> None:
    protocol = load_protocol(PROTOCOL)
    visits = list(protocol.visits)
    index = next(i for i, v in enumerate(visits) if v.target_day == 28)
    visits[index] = visits[index].model_copy(update={"target_day": 30})
    odd = protocol.model_copy(update={"visits": tuple(visits)})
    with pytest.raises(AnalysisError, match=rf"visits\[{index}\] .*target day 30"):
        visit_numbers(odd)


def test_a_plan_parameter_the_protocol_lacks_is_refused() -> None:
    protocol = load_protocol(PROTOCOL)
    scales = analysis_parameters(protocol, {"hamd17": (12,), "gad7": (12,)})
    assert [s.parameter_code for s in scales] == ["HAMD17", "GAD7"]
    with pytest.raises(AnalysisError, match="MADRS that no scale of the protocol declares"):
        analysis_parameters(protocol, {"hamd17": (12,), "madrs": (12,)})


def test_choice_labels_read_the_dictionary_choices() -> None:
    rows = [
        {"field_name": "ae_severity", "field_type": "radio",
         "select_choices_or_calculations": "1, mild | 2, moderate | 3, severe"},
        {"field_name": "age", "field_type": "text", "select_choices_or_calculations": ""},
    ]  # fmt: skip
    assert choice_labels(rows) == {"ae_severity": {"1": "mild", "2": "moderate", "3": "severe"}}
