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
    "as_text",
    "assemble_records",
    "days_to_text",
    "minutes_to_text",
    "sort_records",
]

ObjectArray = npt.NDArray[np.object_]
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True, slots=True)
class FormBlock:
    """The rows of one form at one or more events, for many participants at once."""

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


def days_to_text(
    days: npt.NDArray[np.int64], missing: npt.NDArray[np.bool_] | None = None
) -> ObjectArray:
    """Day numbers (days since 1970-01-01) as ``YYYY-MM-DD`` text; *missing* rows become ``""``."""
    text = np.asarray((_EPOCH + np.asarray(days, dtype=np.int64)).astype(str), dtype=object)
    if missing is not None:
        text[np.asarray(missing, dtype=bool)] = ""
    return text


def minutes_to_text(
    minutes: npt.NDArray[np.int64], missing: npt.NDArray[np.bool_] | None = None
) -> ObjectArray:
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

    # Row keys first, in creation order (base rows, then repeating rows block by block) ...
    key_record = np.empty(n_rows, dtype=object)
    key_event = np.empty(n_rows, dtype=object)
    key_form = np.full(n_rows, "", dtype=object)
    key_instance = np.full(n_rows, "", dtype=object)
    key_record[:n_base] = keys["r"].to_numpy(dtype=object)
    key_event[:n_base] = keys["e"].to_numpy(dtype=object)
    start = n_base
    spans: list[tuple[FormBlock, int, int]] = []
    for block in rep_blocks:
        stop = start + len(block)
        instances = (
            block.instances if block.instances is not None else np.ones(len(block), np.int64)
        )
        key_record[start:stop] = block.record_ids
        key_event[start:stop] = block.events
        key_form[start:stop] = block.form
        key_instance[start:stop] = instances.astype(str).astype(object)
        spans.append((block, start, stop))
        start = stop
    # ... then REDCap's export order, so that every value is written straight to its final row.
    order = _export_order(design, key_record, key_event, key_form, key_instance)
    position = np.empty(n_rows, dtype=np.intp)
    position[order] = np.arange(n_rows)
    blank = np.full(n_rows, "", dtype=object)
    data: list[ObjectArray] = [blank.copy() for _ in columns]
    data[0] = key_record[order]
    data[1] = key_event[order]
    data[2] = key_form[order]
    data[3] = key_instance[order]
    data[4] = np.asarray([dag_of[r] for r in data[0]], dtype=object) if n_rows else data[4]

    base_index = pd.MultiIndex.from_frame(keys)
    base_event = key_event[:n_base]
    base_position = position[:n_base]

    # Designated-but-unsaved forms on base rows: status "0", checkboxes "0".
    for event, forms in design.event_forms.items():
        at_event = base_position[base_event == event]
        if not len(at_event):
            continue
        for form in forms:
            if form in design.repeating_forms:
                continue
            data[col_index[f"{form}_complete"]][at_event] = "0"
            for col in checkbox_cols.get(form, []):
                data[col_index[col]][at_event] = "0"

    for block in base_blocks:
        rows = base_position[
            base_index.get_indexer(pd.MultiIndex.from_arrays([block.record_ids, block.events]))
        ]
        for name, values in block.values.items():
            data[col_index[name]][rows] = values
        data[col_index[f"{block.form}_complete"]][rows] = block.status

    for block, start, stop in spans:
        rows = position[start:stop]
        for col in checkbox_cols.get(block.form, []):
            data[col_index[col]][rows] = "0"
        for name, values in block.values.items():
            data[col_index[name]][rows] = values
        data[col_index[f"{block.form}_complete"]][rows] = block.status

    # Object columns of Python strings: what REDCap's CSV holds, without a costly conversion.
    frame = pd.DataFrame(dict(zip(columns, data, strict=True)), dtype=object, copy=False)
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
            "f": np.asarray(
                [-1 if f == "" else form_rank.get(f, 10**6) for f in instruments], dtype=np.int64
            ),
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
