"""Splitting REDCap's flat record export into one typed table per instrument.

The flat export has one row per record, event and repeat instance, and one column per field of
every instrument. :class:`TidyBuilder` takes that export in batches (as text), keeps for each
instrument only the rows where the instrument holds data, and at the end types each table by the
data dictionary (:mod:`studyman.sources.casting`).

Decisions
---------
* **Keys.** Every table starts with the record-ID field (under its REDCap name, e.g. ``record_id``
  or ``study_id``), then those of ``redcap_event_name``, ``redcap_repeat_instrument`` and
  ``redcap_repeat_instance`` that the export has (the event only in longitudinal projects, the
  repeat columns only in projects with repeating instruments or events), then the record-level
  columns ``redcap_data_access_group`` and ``redcap_survey_identifier`` when exported.
* **Which rows belong to an instrument.** A row whose ``redcap_repeat_instrument`` names a form
  belongs to that form only. Any other row (a non-repeating row, or an instance of a repeating
  event) belongs to every form that *has data* in it: any of the form's fields non-blank (a
  missing-data code counts as data), any checkbox of the form ticked (``1``), a survey time
  stamp, or a form status of ``1`` (Unverified) or ``2`` (Complete). A status ``0`` alone does
  not count: REDCap exports ``0`` for every form designated on an event, entered or not, so it
  cannot tell "saved empty" from "never opened". Unticked checkboxes (``0``) likewise do not count.
* **Rows without a record ID** (lines of empty cells) are dropped when every cell is blank; a row
  with values but no record ID is kept, with a missing record ID, and reported as a finding.
* **Columns the dictionary does not know** are kept as text in a table ``_unmapped`` (keys plus
  those columns) and each is reported once as a finding.
* **Forms not exported.** A form none of whose columns is in the export (REDCap leaves out the
  forms a user may not export, e.g. randomisation for a blinded user) gets no table at all.
* **Order.** Rows keep the order of the export; columns keep the export order, each typed column
  followed by its ``__raw`` and ``__missing`` columns when they exist. Findings are ordered by
  row, then column, whatever the batch size, so a batched pull and a one-file import give the
  same tables and findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from studyman.errors import SourceError
from studyman.findings import FINDING_COLUMNS, Finding, findings_frame
from studyman.sources.casting import (
    KEY_COLUMNS,
    MISSING_SUFFIX,
    RAW_SUFFIX,
    RECORD_LEVEL_COLUMNS,
    CastKind,
    ColumnSpec,
    ProjectDictionary,
    arrow_to_pandas,
    cast_array,
    cast_finding,
)

__all__ = ["UNMAPPED_TABLE", "TidyBuilder", "TidyTables"]

UNMAPPED_TABLE = "_unmapped"
_ROW = "__row__"


@dataclass(frozen=True)
class TidyTables:
    """The typed tables of one export.

    Attributes
    ----------
    tables
        Instrument name → typed table, in dictionary form order (``_unmapped`` last, if any).
    findings
        Findings (:data:`~studyman.findings.FINDING_COLUMNS`), in export row order.
    record_ids
        The distinct record IDs, in export order.
    columns
        The export header.
    """

    tables: dict[str, pd.DataFrame]
    findings: pd.DataFrame
    record_ids: tuple[str, ...]
    columns: tuple[str, ...]


@dataclass
class _Layout:
    header: tuple[str, ...]
    record_id: str
    keys: list[str]
    record_level: list[str]
    form_columns: dict[str, list[str]]
    specs: dict[str, ColumnSpec]
    unknown: list[str] = field(default_factory=list)


def _as_text_table(frame: pd.DataFrame) -> pa.Table:
    columns = {
        str(name): pa.array(frame[name].astype("string").fillna("").tolist(), type=pa.string())
        for name in frame.columns
    }
    return pa.table(columns) if columns else pa.table({})


def _text_frame(table: pa.Table) -> pd.DataFrame:
    frame: pd.DataFrame = table.to_pandas(
        types_mapper=lambda t: pd.StringDtype() if t == pa.string() else None
    )
    return frame


def _any(masks: list[pa.ChunkedArray], length: int) -> pa.ChunkedArray:
    if not masks:
        return pa.chunked_array([pa.array(np.zeros(length, dtype=bool))])
    result = masks[0]
    for mask in masks[1:]:
        result = pc.or_(result, mask)
    return result


def _table_source(form: str) -> str:
    return f"tables/{form}.parquet"


class TidyBuilder:
    """Collect the flat export batch by batch, then build the typed instrument tables.

    Parameters
    ----------
    dictionary
        The project's data dictionary.
    missing_codes
        The project's missing-data codes.
    """

    def __init__(self, dictionary: ProjectDictionary, missing_codes: Sequence[str] = ()) -> None:
        self.dictionary = dictionary
        self.missing_codes = tuple(missing_codes)
        self._layout: _Layout | None = None
        self._pieces: dict[str, list[pd.DataFrame]] = {}
        self._row_findings: list[tuple[int, int, Finding]] = []
        self._rows_seen = 0
        self._record_ids: dict[str, None] = {}

    # -- batches -------------------------------------------------------------------------------
    def _make_layout(self, header: tuple[str, ...]) -> _Layout:
        record_id = self.dictionary.record_id_field
        if record_id not in header:
            raise SourceError(
                f"the records export has no column for the record-ID field {record_id!r} of "
                f"the data dictionary (header starts with {header[:3]!r}); is it the export of "
                "this project, with raw (not label) headers?"
            )
        keys = [record_id, *(c for c in KEY_COLUMNS if c in header)]
        record_level = [c for c in RECORD_LEVEL_COLUMNS if c in header]
        specs: dict[str, ColumnSpec] = {}
        form_columns: dict[str, list[str]] = {form: [] for form in self.dictionary.forms}
        unknown: list[str] = []
        for column in header:
            if column in keys or column in record_level:
                spec = self.dictionary.column_spec(column)
                if spec is not None:
                    specs[column] = spec
                continue
            spec = self.dictionary.column_spec(column)
            if spec is None or spec.form not in form_columns:
                unknown.append(column)
                specs[column] = ColumnSpec(column, column, UNMAPPED_TABLE, CastKind.TEXT)
                continue
            specs[column] = spec
            form_columns[spec.form].append(column)
        if unknown:
            form_columns[UNMAPPED_TABLE] = unknown
        return _Layout(header, record_id, keys, record_level, form_columns, specs, unknown)

    def add_batch(self, batch: pd.DataFrame | pa.Table) -> None:
        """Add rows of the flat export: every cell text, blanks as empty strings.

        Parameters
        ----------
        batch
            A pyarrow table of string columns (fast path) or a DataFrame of text.

        Raises
        ------
        SourceError
            When the batch's columns differ from the first batch's, or the header has no
            record-ID column.
        """
        table = batch if isinstance(batch, pa.Table) else _as_text_table(batch)
        header = tuple(str(c) for c in table.column_names)
        if not header:
            return  # an empty export (no header line): nothing to add
        if self._layout is None:
            self._layout = self._make_layout(header)
            if header[0] != self._layout.record_id:
                self._row_findings.append(
                    (
                        -2,
                        0,
                        Finding(
                            check_id="import.column_order",
                            severity="minor",
                            message=(
                                f"the record-ID field {self._layout.record_id!r} is not the "
                                "first column: the file is not REDCap's own export"
                            ),
                            field=self._layout.record_id,
                            source="records",
                        ),
                    )
                )
            for position, column in enumerate(self._layout.unknown):
                self._row_findings.append(
                    (
                        -1,
                        position,
                        Finding(
                            check_id="import.unknown_column",
                            severity="minor",
                            message=(
                                f"column {column!r} is not a field of the data dictionary; "
                                f"kept as text in table {UNMAPPED_TABLE}"
                            ),
                            field=column,
                            source=_table_source(UNMAPPED_TABLE),
                        ),
                    )
                )
        elif header != self._layout.header:
            missing = [c for c in self._layout.header if c not in header]
            extra = [c for c in header if c not in self._layout.header]
            raise SourceError(
                "batches of the records export disagree on columns "
                f"(missing {missing[:5]}, extra {extra[:5]}, or a different order)"
            )
        layout = self._layout
        first_row = self._rows_seen
        self._rows_seen += table.num_rows
        if table.num_rows == 0:
            return
        table = table.append_column(
            _ROW, pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
        )
        filled = {column: pc.not_equal(table.column(column), "") for column in layout.header}
        any_filled = _any(list(filled.values()), table.num_rows)
        record_id = table.column(layout.record_id)
        no_id = pc.invert(filled[layout.record_id])
        keep = pc.invert(pc.and_(no_id, pc.invert(any_filled)))
        blank_id_rows = pc.and_(no_id, any_filled)
        if pc.any(blank_id_rows).as_py():
            for row in table.filter(blank_id_rows).column(_ROW).to_pylist():
                self._row_findings.append(
                    (
                        int(row),
                        0,
                        Finding(
                            check_id="import.missing_record_id",
                            severity="major",
                            message=f"row {int(row) + 1} of the export has values but no record ID",
                            field=layout.record_id,
                            source="records",
                        ),
                    )
                )
        for rid in pc.unique(record_id.filter(filled[layout.record_id])).to_pylist():
            self._record_ids.setdefault(str(rid), None)
        if "redcap_repeat_instance" in header:
            self._instance_findings(table.filter(keep))
        repeat_instrument = (
            table.column("redcap_repeat_instrument")
            if "redcap_repeat_instrument" in header
            else None
        )
        front = [*layout.keys, *layout.record_level]
        for form, columns in layout.form_columns.items():
            rows = keep
            if repeat_instrument is not None and form != UNMAPPED_TABLE:
                rows = pc.and_(
                    rows,
                    pc.or_(pc.equal(repeat_instrument, ""), pc.equal(repeat_instrument, form)),
                )
            rows = pc.and_(rows, self._has_data(columns, table, filled))
            if not pc.any(rows).as_py():
                continue
            piece = table.select([*front, *columns, _ROW]).filter(rows)
            self._pieces.setdefault(form, []).append(piece)

    def _has_data(
        self, columns: list[str], table: pa.Table, filled: dict[str, pa.ChunkedArray]
    ) -> pa.ChunkedArray:
        layout = self._layout
        assert layout is not None  # set by add_batch before this is called
        signs: list[pa.ChunkedArray] = []
        for column in columns:
            spec = layout.specs[column]
            values = table.column(column)
            if spec.kind is CastKind.STATUS:
                signs.append(pc.is_in(values, value_set=pa.array(["1", "2"])))
            elif spec.is_checkbox:
                signs.append(pc.equal(values, "1"))
            elif spec.kind is CastKind.SURVEY_TIMESTAMP:
                signs.append(pc.and_(filled[column], pc.not_equal(values, "[not completed]")))
            else:
                signs.append(filled[column])
        return _any(signs, table.num_rows)

    def _instance_findings(self, table: pa.Table) -> None:
        layout = self._layout
        assert layout is not None
        instance = table.column("redcap_repeat_instance")
        bad = pc.and_(
            pc.not_equal(instance, ""),
            pc.invert(pc.match_substring_regex(instance, r"^\s*[1-9]\d{0,17}\s*$")),
        )
        if not pc.any(bad).as_py():
            return
        spec = layout.specs["redcap_repeat_instance"]
        column = layout.header.index("redcap_repeat_instance")
        for row in table.filter(bad).to_pylist():
            self._row_findings.append(
                (
                    int(row[_ROW]),
                    column,
                    cast_finding(
                        spec,
                        str(row["redcap_repeat_instance"]),
                        record_id=str(row[layout.record_id]),
                        event=str(row.get("redcap_event_name", "")),
                        instrument=str(row.get("redcap_repeat_instrument", "")),
                        instance=str(row["redcap_repeat_instance"]),
                        source="records",
                    ),
                )
            )

    # -- tables --------------------------------------------------------------------------------
    def finish(self) -> TidyTables:
        """Type and return the tables and findings of everything added."""
        layout = self._layout
        if layout is None:
            layout = self._make_layout((self.dictionary.record_id_field,))
            layout.form_columns = {
                form: [
                    c
                    for c in self.dictionary.default_columns(form)
                    if self.dictionary.column_spec(c)
                ]
                for form in self.dictionary.forms
            }
            for columns in layout.form_columns.values():
                for column in columns:
                    spec = self.dictionary.column_spec(column)
                    assert spec is not None  # filtered just above
                    layout.specs[column] = spec
        position = {column: i for i, column in enumerate(layout.header)}
        tables: dict[str, pd.DataFrame] = {}
        findings = list(self._row_findings)
        for form, columns in layout.form_columns.items():
            if not columns:
                # Not one column of this form was exported (a user without export rights to it,
                # e.g. a blinded user and the randomisation form): no table, rather than an
                # empty one that would read as "no data".
                continue
            pieces = self._pieces.pop(form, [])
            if pieces:
                raw = pa.concat_tables(pieces)
            else:
                empty = pa.array([], pa.string())
                raw = pa.table(
                    {c: empty for c in [*layout.keys, *layout.record_level, *columns]}
                ).append_column(_ROW, pa.array([], pa.int64()))
            table, table_findings = self._cast_table(form, raw, layout, position)
            tables[form] = table
            findings.extend(table_findings)
        findings.sort(key=lambda item: (item[0], item[1]))
        frame = findings_frame(f for _, _, f in findings)
        if frame.empty:
            frame = pd.DataFrame({c: pd.Series([], dtype="string") for c in FINDING_COLUMNS})
        frame = frame.astype("string")
        return TidyTables(
            tables=tables,
            findings=frame,
            record_ids=tuple(self._record_ids),
            columns=layout.header,
        )

    def _cast_table(
        self,
        form: str,
        raw: pa.Table,
        layout: _Layout,
        position: dict[str, int],
    ) -> tuple[pd.DataFrame, list[tuple[int, int, Finding]]]:
        out: dict[str, pa.Array] = {}
        findings: list[tuple[int, int, Finding]] = []
        source = _table_source(form)
        for column in [*layout.keys, *layout.record_level]:
            spec = layout.specs.get(column) or ColumnSpec(column, column, "", CastKind.TEXT)
            out[column] = cast_array(raw.column(column), spec).typed
        codes = self.missing_codes if form != UNMAPPED_TABLE else ()
        key_names = (
            layout.record_id,
            "redcap_event_name",
            "redcap_repeat_instrument",
            "redcap_repeat_instance",
        )
        for column in layout.form_columns[form]:
            spec = layout.specs[column]
            result = cast_array(raw.column(column), spec, codes)
            out[column] = result.typed
            if result.raw is not None:
                out[column + RAW_SUFFIX] = result.raw
                failing = raw.filter(pa.array(result.failed))
                keys = {
                    name: failing.column(name).to_pylist()
                    if name in failing.column_names
                    else [""] * failing.num_rows
                    for name in key_names
                }
                rows = failing.column(_ROW).to_pylist()
                values = failing.column(column).to_pylist()
                for index, value in enumerate(values):
                    findings.append(
                        (
                            int(rows[index]),
                            position.get(column, 0),
                            cast_finding(
                                spec,
                                str(value),
                                record_id=str(keys[layout.record_id][index] or ""),
                                event=str(keys["redcap_event_name"][index] or ""),
                                instrument=form,
                                instance=str(keys["redcap_repeat_instance"][index] or ""),
                                source=source,
                            ),
                        )
                    )
            if result.missing is not None:
                out[column + MISSING_SUFFIX] = result.missing
        table = arrow_to_pandas(pa.table(out))
        table.index = pd.RangeIndex(len(table))
        return table, findings
