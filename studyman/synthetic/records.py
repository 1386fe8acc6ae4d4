"""Assembling generated form data into REDCap's flat raw record export.

The generator produces *blocks*: the rows of one form for many participants at once (one column
array per field). :func:`assemble_records` merges them into the table REDCap's flat export would
give: one base row per record and event holding the non-repeating forms, one row per repeating
instance holding only its form, every value a string, blanks ``""``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from studyman.synthetic.design import StudyDesign

__all__ = [
    "FormBlock",
    "assemble_records",
    "as_text",
    "days_to_text",
    "minutes_to_text",
    "sort_records",
]

ObjectArray = npt.NDArray[np.object_]
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(slots=True)
class FormBlock:
    """The rows of one form at one or more events (mutable while the generator builds it)."""

    form: str
    record_ids: ObjectArray
    events: ObjectArray
    values: dict[str, ObjectArray] = field(default_factory=dict)
    instances: npt.NDArray[np.int64] | None = None
    status: str = "2"

    def __len__(self) -> int:
        return int(self.record_ids.shape[0])


def as_text(values: Any) -> ObjectArray:
    """Convert an integer array (or list) to REDCap raw text (an object array of ``str``)."""
    array = np.asarray(values)
    if array.dtype == object:
        return array
    return np.asarray(array.astype(str), dtype=object)


def days_to_text(days: npt.NDArray[np.int64], missing: npt.NDArray[np.bool_] | None = None) -> ObjectArray:
    """Day numbers (days since 1970-01-01) as ``YYYY-MM-DD`` text; *missing* rows become ``""``."""
    text = np.asarray((_EPOCH + np.asarray(days, dtype=np.int64)).astype(str), dtype=object)
    if missing is not None:
        text[np.asarray(missing, dtype=bool)] = ""
    return text


def minutes_to_text(minutes: npt.NDArray[np.int64], missing: npt.NDArray[np.bool_] | None = None) -> ObjectArray:
    """Minutes since 1970-01-01 00:00 as REDCap ``datetime_ymd`` text (``YYYY-MM-DD HH:MM``)."""
    stamps = np.datetime64("1970-01-01T00:00", "m") + np.asarray(minutes, dtype=np.int64)
    text = np.asarray(
        [s.replace("T", " ") for s in stamps.astype(str)] if len(stamps) else [], dtype=object
    )
    if missing is not None and len(text):
        text[np.asarray(missing, dtype=bool)] = ""
    return text


def assemble_records(
    design: StudyDesign, blocks: list[FormBlock], dag_of: dict[str, str]
) -> pd.DataFrame:
    """Merge form blocks into REDCap's flat raw export (all values strings).

    Parameters
    ----------
    design
        The study: column order, form–event mapping, repeating forms.
    blocks
        The generated form data; a non-repeating form appears at most once per record and event.
    dag_of
        Data access group (unique group name) of each record.

    Returns
    -------
    pandas.DataFrame
        Rows sorted by record, event order, then base row before repeating rows (by form order
        and instance), as REDCap exports them.

    Notes
    -----
    On a base row, a form designated at that event but never saved exports status ``"0"`` and
    unchecked checkboxes ``"0"``; forms not designated there export ``""``. Repeating rows carry
    only their own form's fields (others ``""``), as REDCap's flat export does.
    """
    columns = design.flat_columns()
    col_index = {name: i for i, name in enumerate(columns)}
    checkbox_cols: dict[str, list[str]] = {}
    for spec in design.fields:
        if spec.field_type == "checkbox":
            checkbox_cols.setdefault(spec.form, []).extend(spec.export_columns)

    base_blocks = [b for b in blocks if b.instances is None and len(b)]
    rep_blocks = [b for b in blocks if b.instances is not None and len(b)]

    # Base rows: one per (record, event) with any non-repeating data.
    if base_blocks:
        keys = pd.DataFrame(
            {
                "r": np.concatenate([b.record_ids for b in base_blocks]),
                "e": np.concatenate([b.events for b in base_blocks]),
            }
        ).drop_duplicates(ignore_index=True)
    else:
        keys = pd.DataFrame({"r": pd.Series([], dtype=object), "e": pd.Series([], dtype=object)})
    n_base = len(keys)
    n_rep = sum(len(b) for b in rep_blocks)
    n_rows = n_base + n_rep
    data: list[ObjectArray] = [np.full(n_rows, "", dtype=object) for _ in columns]

    base_index = pd.MultiIndex.from_frame(keys)
    base_record = keys["r"].to_numpy(dtype=object)
    base_event = keys["e"].to_numpy(dtype=object)
    data[0][:n_base] = base_record
    data[1][:n_base] = base_event

    # Designated-but-unsaved forms on base rows: status "0", checkboxes "0".
    for event, forms in design.event_forms.items():
        at_event = base_event == event
        if not at_event.any():
            continue
        for form in forms:
            if form in design.repeating_forms:
                continue
            data[col_index[f"{form}_complete"]][:n_base][at_event] = "0"
            for col in checkbox_cols.get(form, []):
                data[col_index[col]][:n_base][at_event] = "0"

    for block in base_blocks:
        rows = base_index.get_indexer(pd.MultiIndex.from_arrays([block.record_ids, block.events]))
        for name, values in block.values.items():
            data[col_index[name]][rows] = values
        data[col_index[f"{block.form}_complete"]][rows] = block.status

    start = n_base
    for block in rep_blocks:
        stop = start + len(block)
        instances = block.instances if block.instances is not None else np.ones(len(block), np.int64)
        data[0][start:stop] = block.record_ids
        data[1][start:stop] = block.events
        data[2][start:stop] = block.form
        data[3][start:stop] = instances.astype(str).astype(object)
        for col in checkbox_cols.get(block.form, []):
            data[col_index[col]][start:stop] = "0"
        for name, values in block.values.items():
            data[col_index[name]][start:stop] = values
        data[col_index[f"{block.form}_complete"]][start:stop] = block.status
        start = stop

    order = _export_order(design, data[0], data[1], data[2], data[3])
    data[4] = np.asarray([dag_of[r] for r in data[0]], dtype=object) if n_rows else data[4]
    frame = pd.DataFrame({name: data[i][order] for i, name in enumerate(columns)}, copy=False)
    frame.columns = pd.Index(list(columns))
    return frame


def _export_order(
    design: StudyDesign, records: Any, events: Any, instruments: Any, instances: Any
) -> npt.NDArray[np.intp]:
    """REDCap's row order: record, event order, base row, then repeating form order, instance."""
    event_rank = {event: i for i, event in enumerate(design.event_order)}
    form_rank = {form: i for i, form in enumerate(design.forms())}
    sort_frame = pd.DataFrame(
        {
            "r": np.asarray(records, dtype=object),
            "e": np.asarray([event_rank.get(e, 10**6) for e in events], dtype=np.int64),
            "f": np.asarray([-1 if f == "" else form_rank.get(f, 10**6) for f in instruments], dtype=np.int64),
            "i": np.asarray([0 if i == "" else int(i) for i in instances], dtype=np.int64),
        }
    )
    return np.asarray(sort_frame.sort_values(["r", "e", "f", "i"], kind="stable").index.to_numpy())


def sort_records(design: StudyDesign, frame: pd.DataFrame) -> pd.DataFrame:
    """Return *frame* (flat records) in REDCap's export row order, index reset."""
    columns = list(frame.columns)
    order = _export_order(
        design,
        frame[columns[0]].to_numpy(dtype=object),
        frame["redcap_event_name"].to_numpy(dtype=object),
        frame["redcap_repeat_instrument"].to_numpy(dtype=object),
        frame["redcap_repeat_instance"].to_numpy(dtype=object),
    )
    return frame.iloc[order].reset_index(drop=True)
