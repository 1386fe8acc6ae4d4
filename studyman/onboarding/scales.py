"""Rating scales recognised in a REDCap form by their items (count, value ranges, labels).

A form is taken for a known scale when its scored items (radio or dropdown fields whose codes
are all integers) match the scale's item count and item value ranges, and the form's name or
label, or its items' labels, carry the scale's usual words. The recognised scale becomes a
``scoring`` entry of the draft protocol: items with the codes the dictionary gives them, the
calc total of the form, the total range as the sum of the item maxima, and the scale's usual
severity bands. Missing-item rules and proration are the scale manual's usual ones and are
listed as guesses for a person to review.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from studyman.protocol.redcap_project import DictionaryField

__all__ = ["KNOWN_SCALES", "RecognisedScale", "ScaleSpec", "recognise_scale"]


@dataclass(frozen=True, slots=True)
class ScaleSpec:
    """What a known rating scale looks like in a data dictionary.

    Attributes
    ----------
    key
        Short name (``HAM-D-17``), used as the scoring label.
    paramcd
        The ADaM parameter code usually given to its total.
    words
        A pattern that the form's name or label (or its items' labels) must match.
    item_counts
        Accepted numbers of scored items.
    item_maxima
        Accepted maxima of one item's codes.
    max_missing_items, proration
        The usual missing-item rule.
    bands
        Usual severity bands of the total: ``(name, min, max)``.
    either_or_pattern
        Labels of two items of which exactly one is scored (HAM-D-17 16A/16B).
    unscored_pattern
        Labels of items that belong to the form but not to the total (PHQ-9's difficulty item).
    """

    key: str
    paramcd: str
    words: re.Pattern[str]
    item_counts: frozenset[int]
    item_maxima: frozenset[int]
    max_missing_items: int
    proration: str
    bands: tuple[tuple[str, float, float], ...] = ()
    either_or_pattern: re.Pattern[str] | None = None
    unscored_pattern: re.Pattern[str] | None = None


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text, re.IGNORECASE)


KNOWN_SCALES: tuple[ScaleSpec, ...] = (
    ScaleSpec(
        key="HAM-D-17",
        paramcd="HAMD17",
        words=_pattern(r"ham[\s_-]*d|hamilton"),
        # 17 items, or 18 when weight loss is rated two ways (16A by history, 16B measured).
        item_counts=frozenset({17, 18}),
        item_maxima=frozenset({2, 4}),
        max_missing_items=0,
        proration="none",
        bands=(),
        either_or_pattern=_pattern(r"^\s*16\s*[ab]\b"),
    ),
    ScaleSpec(
        key="MADRS",
        paramcd="MADRS",
        words=_pattern(r"madrs|montgomery"),
        item_counts=frozenset({10}),
        item_maxima=frozenset({6}),
        max_missing_items=0,
        proration="none",
        bands=(
            ("normal", 0, 6),
            ("mild", 7, 19),
            ("moderate", 20, 34),
            ("severe", 35, 60),
        ),
    ),
    ScaleSpec(
        key="PHQ-9",
        paramcd="PHQ9",
        words=_pattern(r"phq|patient health questionnaire"),
        item_counts=frozenset({9}),
        item_maxima=frozenset({3}),
        max_missing_items=1,
        proration="prorate",
        bands=(
            ("minimal", 0, 4),
            ("mild", 5, 9),
            ("moderate", 10, 14),
            ("moderately severe", 15, 19),
            ("severe", 20, 27),
        ),
        unscored_pattern=_pattern(r"how difficult"),
    ),
    ScaleSpec(
        key="GAD-7",
        paramcd="GAD7",
        words=_pattern(r"gad|generali[sz]ed anxiety"),
        item_counts=frozenset({7}),
        item_maxima=frozenset({3}),
        max_missing_items=1,
        proration="prorate",
        bands=(("minimal", 0, 4), ("mild", 5, 9), ("moderate", 10, 14), ("severe", 15, 21)),
        unscored_pattern=_pattern(r"how difficult"),
    ),
    ScaleSpec(
        key="COWS",
        paramcd="COWS",
        words=_pattern(r"cows|opiate withdrawal|opioid withdrawal"),
        item_counts=frozenset({11}),
        item_maxima=frozenset({3, 4, 5}),
        max_missing_items=0,
        proration="none",
        bands=(
            ("none", 0, 4),
            ("mild", 5, 12),
            ("moderate", 13, 24),
            ("moderately severe", 25, 36),
            ("severe", 37, 48),
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class RecognisedScale:
    """A form recognised as a known scale.

    Attributes
    ----------
    spec
        The scale.
    form
        The form's name.
    items
        ``(field, values)`` of each scored item, in dictionary order.
    unscored
        ``(field, values)`` of the form's unscored items.
    total_field
        The form's calc total, or ``""`` when it has none.
    either_or
        Fields of which exactly one is scored (empty when the scale has none).
    """

    spec: ScaleSpec
    form: str
    items: tuple[tuple[str, tuple[int, ...]], ...]
    unscored: tuple[tuple[str, tuple[int, ...]], ...]
    total_field: str
    either_or: tuple[str, ...]

    @property
    def max_total(self) -> int:
        """Sum of the item maxima (one of an either-or pair counted once)."""
        maxima = {field: max(values) for field, values in self.items}
        total = sum(maxima.values())
        if self.either_or:
            total -= sum(maxima[field] for field in self.either_or[1:])
        return total


def _integer_codes(field: DictionaryField) -> tuple[int, ...] | None:
    if field.field_type not in ("radio", "dropdown"):
        return None
    codes = field.choice_codes
    if not codes or not all(re.fullmatch(r"-?\d+", code) for code in codes):
        return None
    return tuple(int(code) for code in codes)


def recognise_scale(
    form: str, form_label: str, fields: Sequence[DictionaryField]
) -> RecognisedScale | None:
    """The known scale that *form* holds, or None.

    Parameters
    ----------
    form, form_label
        The form's REDCap name and label.
    fields
        The form's dictionary fields, in order.
    """
    coded = [(field, _integer_codes(field)) for field in fields]
    candidates = [(field, codes) for field, codes in coded if codes is not None]
    totals = [
        field.field_name
        for field in fields
        if field.field_type == "calc" and re.search(r"total|score|sum", field.field_label, re.I)
    ]
    names = f"{form} {form_label}"
    for spec in KNOWN_SCALES:
        scored = [
            (field, codes)
            for field, codes in candidates
            if not (spec.unscored_pattern and spec.unscored_pattern.search(field.field_label))
        ]
        unscored = [
            (field, codes)
            for field, codes in candidates
            if spec.unscored_pattern and spec.unscored_pattern.search(field.field_label)
        ]
        worded = spec.words.search(names) or any(
            spec.words.search(field.field_label) for field in fields if field.field_type == "calc"
        )
        if not worded or len(scored) not in spec.item_counts:
            continue
        if not all(min(codes) == 0 and max(codes) in spec.item_maxima for _, codes in scored):
            continue
        either_or: tuple[str, ...] = ()
        if spec.either_or_pattern is not None:
            pair = tuple(
                field.field_name
                for field, _ in scored
                if spec.either_or_pattern.search(field.field_label)
            )
            if len(pair) == 2:
                either_or = pair
            if len(scored) - max(len(either_or) - 1, 0) != min(spec.item_counts):
                continue
        return RecognisedScale(
            spec=spec,
            form=form,
            items=tuple((field.field_name, codes) for field, codes in scored),
            unscored=tuple((field.field_name, codes) for field, codes in unscored),
            total_field=totals[0] if totals else "",
            either_or=either_or,
        )
    return None
