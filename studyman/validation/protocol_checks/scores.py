"""Protocol checks of rating scales: ``SCO-*`` (but ``SCO-RAND-LOW``, an eligibility check).

Notes
-----
A stored total is compared with the protocol's scoring: the plain sum when proration is
``none``; ``round(mean of answered items x number of items)`` (halves away from zero) when it is
``prorate``; missing when more items are missing than ``max_missing_items`` allows. Items
16A/16B count as one item (whichever is scored).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from studyman.validation.protocol_checks.view import (
    Emitter,
    StudyView,
    compare,
)
from studyman.validation.records import numbers as column_numbers
from studyman.validation.records import text

__all__ = ["check_scores"]


def check_scores(view: StudyView, out: Emitter) -> None:
    """Raise the ``SCO-*`` findings (but ``SCO-RAND-LOW``)."""
    records = view.records
    threshold = view.protocol.reporting.change_review_threshold
    for scoring in view.protocol.scoring:
        form = scoring.instrument
        rows = view.rows_of(form)
        if not rows.any():
            continue
        grouped = {name for group in scoring.exactly_one_of for name in group}
        items: list[np.ndarray] = []
        for item in scoring.items:
            if item.field in grouped:
                continue
            numbers = column_numbers(records, item.field)
            items.append(numbers)
        for group in scoring.exactly_one_of:
            stacked = np.vstack([column_numbers(records, name) for name in group])
            scored = (~np.isnan(stacked)).sum(axis=0)
            both_or_none = rows & (scored != 1)
            out.rows(
                "SCO-HAMD16",
                both_or_none,
                instrument=form,
                field=group[0],
                value=np.array([f"{int(n)} of {len(group)} scored" for n in scored], dtype=object),
                message=f"Exactly one of {', '.join(group)} must be scored",
            )
            with np.errstate(invalid="ignore"):
                combined = np.where(scored >= 1, np.nansum(stacked, axis=0), np.nan)
            items.append(combined)
        matrix = np.vstack(items)
        answered = ~np.isnan(matrix)
        n_missing = (~answered).sum(axis=0)
        n_items = matrix.shape[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            if scoring.proration == "prorate":
                mean = np.nansum(matrix, axis=0) / np.maximum(answered.sum(axis=0), 1)
                raw = mean * n_items
                expected = np.sign(raw) * np.floor(np.abs(raw) + 0.5 + 1e-9)
            else:
                expected = np.nansum(matrix, axis=0)
        too_many_missing = n_missing > scoring.max_missing_items
        expected = np.where(too_many_missing, np.nan, expected)
        stored_text = text(records, scoring.total_field)
        stored = column_numbers(records, scoring.total_field)
        present = stored_text != ""
        out.rows(
            "SCO-TOTAL-MISSING-ITEMS",
            rows & present & too_many_missing,
            instrument=form,
            field=scoring.total_field,
            value=stored_text,
            message=(
                f"{scoring.label or form} total present although "
                f"{scoring.max_missing_items} or fewer items may be missing"
            ),
        )
        with np.errstate(invalid="ignore"):
            wrong = (
                rows
                & ~too_many_missing
                & (~present | (np.abs(stored - expected) > 1e-6) | np.isnan(stored))
            )
        out.rows(
            "SCO-TOTAL",
            wrong,
            instrument=form,
            field=scoring.total_field,
            value=stored_text,
            message=_total_messages(scoring.label or form, expected),
        )
        for flag in scoring.flags:
            if not flag.requires_instrument:
                continue
            values = column_numbers(records, flag.field)
            raised = rows & compare(values, flag.op, flag.value)
            companion = view.rows_of(flag.requires_instrument)
            keys = pd.Series(view.ids, dtype=object) + "\x1f" + pd.Series(view.events, dtype=object)
            missing = ~keys.isin(set(keys[companion])).to_numpy(dtype=bool)
            out.rows(
                "SCO-PHQ9-CSSRS",
                raised & missing,
                instrument=form,
                field=flag.field,
                value=text(records, flag.field),
                message=f"{flag.label}: no {flag.requires_instrument} at the same visit",
            )
    # large change between consecutive visits (review)
    primary = view.protocol.endpoints.primary
    order = [v.event for v in view.protocol.visits if v.window is not None]
    totals = pd.DataFrame(
        {"record": view.ids, "event": view.events, "total": column_numbers(records, primary.field)}
    )
    totals = totals[
        view.base & ~np.isnan(totals["total"].to_numpy()) & totals["event"].isin(order).to_numpy()
    ]
    if totals.empty:
        return
    totals = totals.assign(position=totals["event"].map({e: i for i, e in enumerate(order)}))
    totals = totals.sort_values(["record", "position"])
    change = totals.groupby("record")["total"].diff().abs()
    flagged_index = totals.index[(change > threshold).to_numpy(dtype=bool)]
    mask = np.zeros(len(records), dtype=bool)
    mask[flagged_index.to_numpy()] = True
    out.rows(
        "SCO-CHANGE",
        mask,
        instrument=primary.instrument,
        field=primary.field,
        value=text(records, primary.field),
        message=f"Change of more than {threshold:g} points since the previous visit (review)",
    )


def _total_messages(label: str, expected: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    def messages(picked: np.ndarray) -> list[str]:
        return [
            f"{label} total should be {expected[i]:g}"
            if not np.isnan(expected[i])
            else f"{label} total should be blank"
            for i in picked
        ]

    return messages
