"""Rating scales recognised by their items: count, value ranges and the words of their labels."""

from __future__ import annotations

import pytest

from studyman.onboarding import recognise_scale
from studyman.protocol.redcap_project import DictionaryField


def _item(name: str, form: str, values: range | list[int], label: str = "") -> DictionaryField:
    choices = " | ".join(f"{v}, {v}" for v in values)
    return DictionaryField(
        field_name=name,
        form_name=form,
        field_type="radio",
        field_label=label or name,
        select_choices_or_calculations=choices,
    )


def _total(name: str, form: str, label: str = "Total score") -> DictionaryField:
    return DictionaryField(
        field_name=name,
        form_name=form,
        field_type="calc",
        field_label=label,
        select_choices_or_calculations="1",
    )


def _items(prefix: str, form: str, n: int, values: range) -> list[DictionaryField]:
    return [_item(f"{prefix}{i}", form, values) for i in range(1, n + 1)]


def test_a_madrs_is_recognised_by_ten_items_scored_zero_to_six_under_any_names() -> None:
    fields = [*_items("q", "mont", 10, range(7)), _total("q_sum", "mont")]
    scale = recognise_scale("mont", "MADRS (rater)", fields)
    assert scale is not None
    assert scale.spec.key == "MADRS"
    assert scale.total_field == "q_sum"
    assert scale.max_total == 60
    assert [name for name, _ in scale.items] == [f"q{i}" for i in range(1, 11)]


def test_a_hamd17_with_16a_and_16b_counts_the_pair_as_one_item() -> None:
    values = [range(5) if i in (1, 2, 3, 7, 8, 9, 10, 11, 15) else range(3) for i in range(1, 18)]
    fields = [_item(f"h{i}", "ham", v, f"{i}. item") for i, v in enumerate(values, start=1)]
    fields.insert(16, _item("h16b", "ham", range(3), "16B. Weight measured"))
    fields[15] = _item("h16a", "ham", range(3), "16A. Weight by history")
    scale = recognise_scale("ham", "Hamilton depression", [*fields, _total("ht", "ham")])
    assert scale is not None
    assert scale.spec.key == "HAM-D-17"
    assert scale.either_or == ("h16a", "h16b")
    assert scale.max_total == 52


def test_phq9_keeps_its_difficulty_question_out_of_the_total() -> None:
    fields = [
        *_items("p", "phq", 9, range(4)),
        _item("p10", "phq", range(4), "How difficult have these problems made it"),
        _total("ptot", "phq"),
    ]
    scale = recognise_scale("phq", "PHQ-9", fields)
    assert scale is not None
    assert scale.spec.key == "PHQ-9"
    assert [name for name, _ in scale.unscored] == ["p10"]
    assert scale.max_total == 27


def test_cows_items_keep_their_own_uneven_codes() -> None:
    fields = [_item(f"c{i}", "cows", [0, 1, 2, 4]) for i in range(1, 11)]
    fields.append(_item("c11", "cows", [0, 3, 5]))
    scale = recognise_scale("cows", "Clinical Opiate Withdrawal Scale", fields)
    assert scale is not None
    assert scale.spec.key == "COWS"
    assert scale.items[-1] == ("c11", (0, 3, 5))
    assert scale.total_field == ""  # no calc total on the form: the draft asks for one


@pytest.mark.parametrize(
    ("label", "fields"),
    [
        # Nine 0-3 items, but nothing says PHQ: a questionnaire of the site's own.
        ("Sleep diary", _items("s", "f", 9, range(4))),
        # Called PHQ-9, but the items run 0-4: not the PHQ-9's answers.
        ("PHQ-9", _items("s", "f", 9, range(5))),
        # Called MADRS, but eight items.
        ("MADRS", _items("s", "f", 8, range(7))),
        # Called HAM-D, 17 items, but one of them 0-6.
        ("HAM-D", [*_items("s", "f", 16, range(3)), _item("s17", "f", range(7))]),
    ],
)
def test_a_form_that_only_looks_like_a_scale_is_not_taken_for_it(
    label: str, fields: list[DictionaryField]
) -> None:
    assert recognise_scale("f", label, fields) is None


def test_items_with_text_codes_are_not_scored_items() -> None:
    fields = [
        DictionaryField(
            field_name=f"g{i}",
            form_name="gad",
            field_type="radio",
            field_label=f"{i}.",
            select_choices_or_calculations="a, Not at all | b, Several days | c, More | d, Nearly",
        )
        for i in range(1, 8)
    ]
    assert recognise_scale("gad", "GAD-7", fields) is None
