"""REDCap logic: parsing real dictionaries, computing REDCap's stored calculations, blank rules."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.errors import ValidationError
from studyman.protocol.logic import (
    MAX_LOGIC_DEPTH,
    EvaluationContext,
    Values,
    check_logic,
    compile_logic,
    parse_logic,
)

PROJECTS = Path(__file__).parents[1] / "data" / "redcap-projects"


def _dictionary(project: Path) -> pd.DataFrame:
    path = next(project.glob("dict*.csv"))
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [
        "field_name",
        "form_name",
        "section_header",
        "field_type",
        "field_label",
        "select_choices_or_calculations",
        "field_note",
        "validation",
        *frame.columns[8:],
    ]
    return frame


def _expressions_in_xml(project: Path) -> list[str]:
    text = (project / "project.xml").read_text(encoding="utf-8")
    found = re.findall(r'redcap:(?:BranchingLogic|Calculation)="([^"]*)"', text)
    return [html.unescape(expression) for expression in found]


def _projects_with_dictionaries() -> list[Path]:
    return sorted(path.parent for path in PROJECTS.glob("*/dict*.csv"))


@pytest.mark.parametrize("project", _projects_with_dictionaries(), ids=lambda path: path.name)
def test_every_calculation_and_branching_in_real_dictionaries_parses(project: Path) -> None:
    dictionary = _dictionary(project)
    expressions = [
        *dictionary.loc[dictionary["field_type"] == "calc", "select_choices_or_calculations"],
        *(logic for logic in dictionary.iloc[:, 11] if logic.strip()),
    ]
    for expression in expressions:
        assert compile_logic(expression).tree is not None, expression


def test_every_expression_in_the_odm_exports_parses() -> None:
    expressions = [
        e
        for path in sorted(PROJECTS.glob("*/project.xml"))
        for e in _expressions_in_xml(path.parent)
    ]
    assert len(expressions) > 50  # the Russian survey alone carries dozens of branching rules
    for expression in expressions:
        compile_logic(expression)


# (project, calc field, the date REDCap computed 'today' on, comma-decimal fields)
CALCULATIONS = [
    ("simple", "bmi", None, frozenset()),
    ("metadata-write", "bmi", None, frozenset()),
    ("decimal-dot", "bmi", None, frozenset()),
    ("decimal-comma-and-dot", "bmi", None, frozenset()),
    ("decimal-comma-and-dot", "bmi_comma", None, frozenset({"weight_comma", "height_comma"})),
    ("decimal-comma", "bmi", None, frozenset({"weight", "height"})),
    ("longitudinal", "bmi", None, frozenset()),
    ("longitudinal", "bmi2", None, frozenset()),
    # age = rounddown(datediff("today", [dob], "y", "ymd"), 1), saved on the enrolment date
    ("repeating-instruments-sparse", "age", "2019-10-14", frozenset()),
]


@pytest.mark.parametrize(("project", "calc_field", "today", "comma_fields"), CALCULATIONS)
def test_calculations_equal_the_values_redcap_stored(
    project: str, calc_field: str, today: str | None, comma_fields: frozenset[str]
) -> None:
    folder = PROJECTS / project
    dictionary = _dictionary(folder).set_index("field_name")
    data = pd.read_csv(folder / "data.csv", dtype=str, keep_default_na=False)
    expression = compile_logic(dictionary.loc[calc_field, "select_choices_or_calculations"])
    context = EvaluationContext(
        today=datetime.fromisoformat(today) if today else datetime(2000, 1, 1),
        comma_decimal_fields=comma_fields,
    )
    stored = data[calc_field]
    rows = (stored != "").to_numpy().copy()
    if today is not None:
        # only the first record was saved on that date
        rows &= (data["record_id"] == "1").to_numpy()
    computed = expression.evaluate(data, context).number
    assert rows.sum() >= 1
    np.testing.assert_allclose(computed[rows], stored[rows].astype(float).to_numpy(), atol=1e-9)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": ["1", "1", "2", "3"],
            "redcap_event_name": [
                "baseline_arm_1",
                "week_1_arm_1",
                "baseline_arm_1",
                "baseline_arm_1",
            ],
            "a": ["2", "", "5", "x"],
            "b": ["3", "4", "", ""],
            "d1": ["2020-01-01", "", "2020-03-01", "2020-13-45"],
            "d2": ["2020-01-31", "2020-01-01", "2020-02-01", "2020-01-01"],
            "chk___1": ["1", "0", "0", ""],
            "chk___2": ["0", "1", "0", ""],
        }
    )


def _numbers(expression: str, context: EvaluationContext | None = None) -> list[float]:
    return list(compile_logic(expression).evaluate(_frame(), context).number)


def _truth(expression: str) -> list[bool]:
    return list(compile_logic(expression).mask(_frame()))


def test_sum_ignores_blanks_and_is_blank_when_every_argument_is() -> None:
    result = _numbers("sum([a], [b])")
    assert result[:3] == [5.0, 4.0, 5.0]
    assert np.isnan(result[3])  # 'x' and '' are not numbers


def test_arithmetic_with_a_blank_is_blank() -> None:
    result = _numbers("[a] + [b]")
    assert result[0] == 5.0
    assert all(np.isnan(result[1:]))


def test_comparison_with_empty_string_tests_blank() -> None:
    assert _truth("[b] = ''") == [False, False, True, True]
    assert _truth('[b] <> ""') == [True, True, False, False]
    assert _truth("[b] != ''") == [True, True, False, False]


def test_equality_is_numeric_between_numbers_and_textual_otherwise() -> None:
    assert _truth("[a] = 2.0") == [True, False, False, False]
    assert _truth("[a] = 'x'") == [False, False, False, True]


def test_ordered_comparison_with_a_blank_is_false() -> None:
    assert _truth("[b] < 10") == [True, True, False, False]
    assert _truth("[b] >= 4") == [False, True, False, False]


def test_dates_order_as_iso_text() -> None:
    assert _truth("[d1] < [d2]") == [True, False, False, False]


def test_checkbox_codes_read_the_export_columns() -> None:
    assert _truth("[chk(1)] = '1' or [chk(2)] = '1'") == [True, True, False, False]


def test_logical_operators_in_words_and_symbols_agree() -> None:
    words = _truth("([a] = 2 and [b] = 3) or not [d1] = ''")
    symbols = _truth("([a] = 2 && [b] = 3) || ![d1] = ''")
    assert words == symbols == [True, False, True, True]


def test_datediff_units_sign_and_invalid_dates() -> None:
    days = _numbers('datediff([d1], [d2], "d")')
    assert days[0] == 30.0
    assert np.isnan(days[1])  # blank date
    assert days[2] == 29.0  # absolute by default
    assert np.isnan(days[3])  # impossible date 2020-13-45
    signed = _numbers('datediff([d1], [d2], "d", true)')
    assert signed[2] == -29.0
    signed_with_format = _numbers('datediff([d1], [d2], "d", "ymd", true)')
    assert signed_with_format[2] == -29.0
    years = _numbers('datediff("2000-01-01", "2010-01-01", "y")')
    assert years[0] == pytest.approx(3653 / 365.2425)
    months = _numbers("datediff('2020-01-01', '2020-03-01', 'M')")
    assert months[0] == pytest.approx(60 / 30.44)
    hours = _numbers("datediff('2020-01-01 00:00', '2020-01-02 06:30', 'h')")
    assert hours[0] == pytest.approx(30.5)


def test_today_is_the_context_reference_date() -> None:
    context = EvaluationContext(today=datetime(2020, 1, 11))
    assert _numbers("datediff([d2], 'today', 'd', true)", context)[1] == 10.0


def test_rounding_functions_follow_redcap() -> None:
    assert _numbers("round(2.5)")[0] == 3.0
    assert _numbers("round(-2.5)")[0] == -3.0
    assert _numbers("round(2.345, 2)")[0] == pytest.approx(2.35)
    assert _numbers("roundup(2.301, 1)")[0] == pytest.approx(2.4)
    assert _numbers("rounddown(2.399, 1)")[0] == pytest.approx(2.3)


def test_arithmetic_precedence_and_power() -> None:
    assert _numbers("1 + 2 * 3 ^ 2")[0] == 19.0
    assert _numbers("(1 + 2) * 3")[0] == 9.0
    assert _numbers("-2 ^ 2")[0] == -4.0
    assert _numbers("2 ^ 3 ^ 2")[0] == 512.0
    assert np.isnan(_numbers("1 / 0")[0])


def test_if_and_aggregates() -> None:
    labels = compile_logic("if([a] > 3, 'high', 'low')").evaluate(_frame()).strings()
    assert list(labels) == ["low", "low", "high", "low"]
    assert _numbers("min([a], [b])")[:3] == [2.0, 4.0, 5.0]
    assert _numbers("max([a], [b], 10)")[0] == 10.0
    assert _numbers("mean([a], [b])")[0] == 2.5
    assert _numbers("median(1, 5, 3)")[0] == 3.0
    assert _numbers("abs(-3) + sqrt(16)")[0] == 7.0


def test_text_and_type_functions() -> None:
    assert _truth("isnumber([a])") == [True, False, True, False]
    assert _truth("isblankormissingcode([b])") == [False, False, True, True]
    context = EvaluationContext(missing_codes=frozenset({"x"}))
    assert list(compile_logic("isblankormissingcode([a])").mask(_frame(), context)) == [
        False,
        True,
        False,
        True,
    ]
    assert _truth("contains([d1], '-03-')") == [False, False, True, False]
    assert _truth("starts_with([d2], '2020-02')") == [False, False, True, False]


def test_event_prefixed_reference_reads_that_event_of_the_same_record() -> None:
    result = _numbers("[baseline_arm_1][a]")
    assert result[:3] == [2.0, 2.0, 5.0]


def test_event_prefixed_record_id_reads_the_record_id_where_the_record_has_that_event() -> None:
    assert _truth("[week_1_arm_1][record_id] = '1'") == [True, True, False, False]
    assert _truth("[week_1_arm_1][record_id] = ''") == [False, False, True, True]


def test_field_absent_from_the_frame_is_blank() -> None:
    assert _truth("[nowhere] = ''") == [True, True, True, True]


def test_fields_lists_every_reference() -> None:
    expression = compile_logic("[e1][x] + [y(2)] + sum([z], [record-name])")
    names = [(ref.event, ref.name, ref.code) for ref in expression.fields]
    assert names == [("e1", "x", None), (None, "y", "2"), (None, "z", None)]


@pytest.mark.parametrize(
    ("expression", "position"),
    [
        ("[a] = ", 7),
        ("(1 + 2", 7),
        ("foo([a])", 1),
        ("[a] = 'open", 7),
        ("[a] @ 2", 5),
        ("round()", 1),
        ("[a] = 1 2", 9),
        ("[a", 1),
    ],
)
def test_a_parse_error_names_the_expression_and_position(expression: str, position: int) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_logic(expression)
    message = str(caught.value)
    assert repr(expression) in message
    assert f"position {position}" in message


def test_evaluation_is_vectorised_over_many_rows() -> None:
    rows = 200_000
    frame = pd.DataFrame(
        {"x": np.arange(rows).astype(str), "y": np.where(np.arange(rows) % 2 == 0, "", "1")}
    )
    mask = compile_logic("[x] > 10 and [y] = '' and sum([x], [y]) < 1000").mask(frame)
    assert int(mask.sum()) == len(range(12, 1000, 2))


STUDY = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"


def test_reference_study_calculations_match_the_generator_totals() -> None:
    # the generator scores items with its own code (studyman.synthetic.scores): an independent
    # implementation of the same protocol rules
    from studyman.protocol.loader import load_protocol
    from studyman.synthetic.generator import generate_trial

    dictionary = pd.read_csv(
        STUDY / "redcap" / "data_dictionary.csv", dtype=str, keep_default_na=False
    )
    for logic in dictionary["branching_logic"]:
        if logic.strip():
            compile_logic(logic)
    calcs = dictionary[dictionary["field_type"] == "calc"]
    assert set(calcs["field_name"]) == {"hamd_total", "phq9_total", "gad7_total", "cows_total"}
    records = generate_trial(load_protocol(STUDY), n_participants=40, seed=3).records
    for name, formula in zip(
        calcs["field_name"], calcs["select_choices_or_calculations"], strict=True
    ):
        stored = records[name]
        rows = (stored != "").to_numpy()
        assert rows.sum() > 20, name
        computed = compile_logic(formula).evaluate(records).number
        np.testing.assert_array_equal(
            computed[rows], stored[rows].astype(float).to_numpy(), err_msg=name
        )


# --------------------------------------------------------------------------------------------
# Nesting depth (issue 11 item 12): deep logic is one line of error, never a RecursionError


def _nested(kind: str, depth: int) -> str:
    """Logic whose nesting is *depth* levels of *kind* around ``[a]``."""
    if kind == "parentheses":
        return "(" * depth + "[a]" + ")" * depth + " + 1"
    if kind == "if":
        return "if([a] = 9, 0, " * depth + "[a]" + ")" * depth
    if kind == "minus":
        return "-" * depth + "[a]"
    if kind == "not":
        return "not " * depth + "[a]"
    if kind == "power":
        return "^".join(["1"] * (depth + 1))
    if kind == "sum":
        return "sum(" * depth + "[a]" + ")" * depth
    raise AssertionError(kind)


_KINDS = ["parentheses", "if", "minus", "not", "power", "sum"]


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("depth", [MAX_LOGIC_DEPTH + 1, 150, 5_000])
def test_logic_nested_too_deep_is_one_line_error(kind: str, depth: int) -> None:
    text = _nested(kind, depth)
    with pytest.raises(ValidationError) as raised:
        compile_logic(text)
    message = str(raised.value)
    assert f"nested more than {MAX_LOGIC_DEPTH} levels deep" in message
    assert "\n" not in message
    assert len(message) < 400  # the expression is quoted by its start only
    assert check_logic(text) == message


def _at_stack_depth(frames: int, call: Callable[[], object]) -> object:
    """Run *call* with *frames* more Python frames on the stack (a deep caller: CLI, pytest)."""
    if frames == 0:
        return call()
    return _at_stack_depth(frames - 1, call)


@pytest.mark.parametrize("kind", _KINDS)
def test_logic_at_the_depth_limit_evaluates_from_a_deep_caller(kind: str) -> None:
    # the deepest nesting accepted must also evaluate: parser and evaluator stay inside
    # Python's recursion limit even when the caller already uses a few hundred frames
    depth = MAX_LOGIC_DEPTH - 1 if kind == "if" else MAX_LOGIC_DEPTH  # if() nests its test too
    text = _nested(kind, depth)
    assert check_logic(text) is None
    frame = pd.DataFrame({"a": ["1", "2", ""]})
    compile_logic.cache_clear()
    values = _at_stack_depth(300, lambda: compile_logic(text).evaluate(frame))
    assert isinstance(values, Values)
    expected = {
        "parentheses": [2.0, 3.0, np.nan],
        "if": [1.0, 2.0, np.nan],
        "minus": [1.0, 2.0, np.nan],  # an even number of signs
        "not": [1.0, 1.0, 0.0],  # an even number of nots
        "power": [1.0, 1.0, 1.0],
        "sum": [1.0, 2.0, np.nan],
    }[kind]
    np.testing.assert_array_equal(values.number, expected)


def test_a_long_chain_of_one_operator_is_not_nesting() -> None:
    # 'or' over many codes is common in real branching logic: a chain is a loop, whatever its
    # length, in parsing, evaluation, field listing, hashing and printing
    terms = 20_000
    frame = pd.DataFrame({"a": ["1", "2", str(terms - 1), ""]})
    either = compile_logic(" or ".join(f"[a] = '{code}'" for code in range(2, terms)))
    np.testing.assert_array_equal(either.mask(frame), [False, True, True, False])
    every = compile_logic(" and ".join(["[a] <> ''"] * terms))
    np.testing.assert_array_equal(every.mask(frame), [True, True, True, False])
    total = compile_logic(" + ".join(["[a]"] * terms) + " - " + " - ".join(["1"] * 3))
    np.testing.assert_array_equal(total.evaluate(frame).number[:2], [terms - 3, 2 * terms - 3])
    assert len(either.fields) == terms - 2
    assert either == compile_logic(either.source)
    assert hash(either) == hash(either.source)
    assert len(repr(either)) < 120


def test_precedence_is_unchanged_by_the_depth_limited_parser() -> None:
    frame = pd.DataFrame({"a": ["2"]})
    cases = {
        "-[a]^2": -4.0,
        "2^3^2": 512.0,
        "2^-1": 0.5,
        "-2*3 + 1": -5.0,
        "not [a] = 3 and 1": 1.0,
        "[a] = 2 = 1": 1.0,
        "1 or 0 and 0": 1.0,
        "not not [a]": 1.0,
        "10 - 4 - 3": 3.0,
        "12 / 3 / 2": 2.0,
    }
    for text, expected in cases.items():
        assert compile_logic(text).evaluate(frame).number[0] == expected, text
    for text in ("[a] = not 1", "1 + not 1", "-not 1"):
        with pytest.raises(ValidationError, match="unexpected word 'not'"):
            compile_logic(text)
