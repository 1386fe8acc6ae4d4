"""Every value of a clean generated trial fits its study's REDCap data dictionary.

Both shipped studies: the reference study and the second study (``cbt-madrs-3arm``, other names,
other scales, three arms).

The check is written here directly against the dictionary CSV (read with the csv module, not
with studyman's reader), so it tests both the generator and the dictionary.
"""

from __future__ import annotations

import csv
import re
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from studyman.protocol import load_protocol
from studyman.synthetic import generate_trial

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
#: study folder -> (participants, calc fields that must be there)
STUDIES = {
    "cbt-adjunct": (300, {"hamd_total", "phq9_total", "gad7_total", "cows_total"}),
    "cbt-madrs-3arm": (150, {"madrs_total", "phq_score", "gad_score"}),
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _choices(text: str) -> set[str]:
    return {part.split(",", 1)[0].strip() for part in text.split("|") if part.strip()}


def _branching_mask(logic: str, frame: pd.DataFrame) -> pd.Series:
    """Evaluate the dictionary's simple branching logic (same-row comparisons, and/or)."""
    expression = logic.replace("<>", "!=")
    expression = re.sub(r"(?<![!<>=])=(?!=)", "==", expression)
    names: dict[str, pd.Series] = {}

    def field(match: re.Match[str]) -> str:
        key = f"f_{len(names)}"
        names[key] = frame[match.group(1)].astype(str)
        return key

    expression = re.sub(r"\[([a-z0-9_]+)\]", field, expression)
    expression = re.sub(r"\bor\b", "|", expression)
    expression = re.sub(r"\band\b", "&", expression)
    expression = re.sub(r"(f_\d+)\s*(==|!=)\s*'([^']*)'", r"(\1 \2 '\3')", expression)
    return pd.Series(eval(expression, {}, names), index=frame.index)


@pytest.fixture(scope="module", params=sorted(STUDIES))
def study(request: pytest.FixtureRequest) -> Path:
    return PROTOCOLS / str(request.param)


@pytest.fixture(scope="module")
def dictionary(study: Path) -> list[dict[str, str]]:
    return _rows(study / "redcap" / "data_dictionary.csv")


@pytest.fixture(scope="module")
def records(study: Path) -> pd.DataFrame:
    protocol = load_protocol(study / "protocol.yaml")
    return generate_trial(protocol, n_participants=STUDIES[study.name][0], seed=11).records


def test_columns_are_redcap_flat_export_columns_in_dictionary_order(
    dictionary: list[dict[str, str]], records: pd.DataFrame
) -> None:
    record_id = dictionary[0]["field_name"]
    expected = [
        record_id,
        "redcap_event_name",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "redcap_data_access_group",
    ]
    forms = list(dict.fromkeys(row["form_name"] for row in dictionary))
    for form in forms:
        for row in dictionary:
            if row["form_name"] != form or row["field_name"] == record_id:
                continue
            if row["field_type"] == "checkbox":
                expected += [
                    f"{row['field_name']}___{c}"
                    for c in sorted(_choices(row["select_choices_or_calculations"]), key=int)
                ]
            elif row["field_type"] != "descriptive":
                expected.append(row["field_name"])
        expected.append(f"{form}_complete")
    assert list(records.columns) == expected


def test_every_value_is_a_string(records: pd.DataFrame) -> None:
    for column in records.columns:
        assert all(isinstance(v, str) for v in records[column]), column


def test_coded_values_are_dictionary_choices(
    dictionary: list[dict[str, str]], records: pd.DataFrame
) -> None:
    for row in dictionary:
        name, kind = row["field_name"], row["field_type"]
        if kind in ("radio", "dropdown"):
            allowed = _choices(row["select_choices_or_calculations"])
        elif kind in ("yesno", "truefalse"):
            allowed = {"0", "1"}
        elif kind == "checkbox":
            for code in _choices(row["select_choices_or_calculations"]):
                values = set(records[f"{name}___{code}"])
                assert values <= {"", "0", "1"}, name
            continue
        else:
            continue
        values = set(records[name]) - {""}
        assert values <= allowed, f"{name}: {sorted(values - allowed)}"
    for column in [c for c in records.columns if c.endswith("_complete")]:
        assert set(records[column]) <= {"", "0", "1", "2"}, column


def test_validated_text_fits_format_and_range(
    dictionary: list[dict[str, str]], records: pd.DataFrame
) -> None:
    patterns = {
        "date_ymd": r"\d{4}-\d{2}-\d{2}",
        "datetime_ymd": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}",
        "integer": r"-?\d+",
        "number": r"-?\d+(\.\d+)?",
        "number_1dp": r"-?\d+\.\d",
        "number_2dp": r"-?\d+\.\d\d",
    }
    checked = 0
    for row in dictionary:
        validation = row["text_validation_type_or_show_slider_number"]
        if row["field_type"] != "text" or not validation:
            continue
        values = [v for v in records[row["field_name"]] if v != ""]
        pattern = re.compile(patterns[validation])
        for value in values:
            assert pattern.fullmatch(value), f"{row['field_name']}: {value!r}"
            checked += 1
        if validation == "date_ymd":
            for value in values:
                date.fromisoformat(value)
        elif validation == "datetime_ymd":
            for value in values:
                datetime.strptime(value, "%Y-%m-%d %H:%M")
        else:
            numbers = [float(v) for v in values]
            if row["text_validation_min"] and numbers:
                assert min(numbers) >= float(row["text_validation_min"]), row["field_name"]
            if row["text_validation_max"] and numbers:
                assert max(numbers) <= float(row["text_validation_max"]), row["field_name"]
    assert checked > 5_000


def test_stored_totals_equal_the_item_sums(
    study: Path, dictionary: list[dict[str, str]], records: pd.DataFrame
) -> None:
    totals = [row for row in dictionary if row["field_type"] == "calc"]
    assert {row["field_name"] for row in totals} >= STUDIES[study.name][1]
    protocol = load_protocol(study / "protocol.yaml", with_redcap=False)
    either = {name for s in protocol.scoring for group in s.exactly_one_of for name in group}
    for row in totals:
        items = list(
            dict.fromkeys(re.findall(r"\[([a-z0-9_]+)\]", row["select_choices_or_calculations"]))
        )
        present = records[records[row["field_name"]] != ""]
        assert len(present) > 0, row["field_name"]
        item_sum = present[items].replace("", "0").astype(int).sum(axis=1)
        assert (present[row["field_name"]].astype(int) == item_sum).all(), row["field_name"]
        # No item missing where a total is stored (HAM-D 16A/16B count as one item).
        singles = [i for i in items if i not in either]
        assert (present[singles] != "").all().all(), row["field_name"]


def test_forms_appear_only_at_their_designated_events(
    study: Path, dictionary: list[dict[str, str]], records: pd.DataFrame
) -> None:
    designated: dict[str, set[str]] = {}
    for row in _rows(study / "redcap" / "instrument_event_mapping.csv"):
        designated.setdefault(row["form"], set()).add(row["unique_event_name"])
    repeating = {row["form_name"] for row in _rows(study / "redcap" / "repeating_instruments.csv")}
    for form, events in designated.items():
        filled = records[records[f"{form}_complete"].isin(["1", "2"])]
        assert set(filled["redcap_event_name"]) <= events, form
        if form in repeating:
            assert (filled["redcap_repeat_instrument"] == form).all(), form
            assert (filled["redcap_repeat_instance"].astype(int) >= 1).all(), form
        else:
            assert (filled["redcap_repeat_instrument"] == "").all(), form
    keys = records[
        [
            dictionary[0]["field_name"],
            "redcap_event_name",
            "redcap_repeat_instrument",
            "redcap_repeat_instance",
        ]
    ]
    assert not keys.duplicated().any()


def test_branching_hides_and_requires_exactly_what_the_dictionary_says(
    dictionary: list[dict[str, str]], records: pd.DataFrame
) -> None:
    for row in dictionary:
        name, form = row["field_name"], row["form_name"]
        if name == dictionary[0]["field_name"] or row["field_type"] in ("descriptive", "calc"):
            continue
        saved = records[f"{form}_complete"] == "2"
        rows = records[saved]
        shown = (
            _branching_mask(row["branching_logic"], rows)
            if row["branching_logic"]
            else pd.Series(True, index=rows.index)
        )
        columns = (
            [f"{name}___{c}" for c in _choices(row["select_choices_or_calculations"])]
            if row["field_type"] == "checkbox"
            else [name]
        )
        for column in columns:
            values = rows[column]
            if row["field_type"] == "checkbox":
                hidden_values = values[~shown]
                assert (hidden_values == "0").all(), f"{column} checked while hidden"
            else:
                assert (values[~shown] == "").all(), (
                    f"{name} has a value while hidden by {row['branching_logic']}"
                )
        if row["required_field"] == "y":
            if row["field_type"] == "checkbox":
                checked = rows.loc[shown, columns].eq("1").any(axis=1)
                assert checked.all(), f"{name}: required checkbox with nothing checked"
            else:
                assert (rows.loc[shown, name] != "").all(), f"required {name} blank"
