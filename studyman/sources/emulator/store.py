"""The emulator's record store: REDCap's data table, export shapes and import rules.

Rows are kept as REDCap keeps them: one row per record, event, repeating instrument and instance,
holding only non-blank values under their export column names (checkbox ``x___1``). The store
builds flat and EAV exports (raw or labels), imports flat rows and deletes records. It is
thread-safe (one lock) and keeps a last-modified time per record for ``dateRangeBegin/End``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import pandas as pd

from studyman.protocol.logic import EvaluationContext, LogicExpression
from studyman.protocol.redcap_project import checkbox_column
from studyman.sources.emulator.model import Field, Project, parse_choices

__all__ = ["Column", "ExportOptions", "RecordImportError", "RecordStore", "RowKey"]

#: (event unique name or "" in a classic project, repeating instrument or "", instance or 0)
RowKey = tuple[str, str, int]

_DEFAULTED = ("checkbox", "complete")
STATUS_LABELS = {"0": "Incomplete", "1": "Unverified", "2": "Complete"}
IDENTITY_COLUMNS = (
    "redcap_event_name",
    "redcap_repeat_instrument",
    "redcap_repeat_instance",
    "redcap_data_access_group",
    "redcap_survey_identifier",
)


@dataclass(frozen=True)
class Column:
    """One export column: its name, its form, what it is, and the field behind it.

    ``kind`` is ``field`` (one column per field), ``checkbox`` (one per choice; ``code`` holds the
    raw choice code), ``complete`` (``<form>_complete``) or ``timestamp`` (``<form>_timestamp``).
    """

    name: str
    form: str
    kind: str
    base: str
    field: Field | None = None
    code: str = ""


@dataclass(frozen=True)
class ExportOptions:
    """What a record export asks for, already validated by the request handler."""

    columns: tuple[Column, ...]
    include_identity: bool = True
    records: frozenset[str] | None = None
    events: frozenset[str] | None = None
    raw_labels: bool = False
    label_headers: bool = False
    export_dags: bool = False
    survey_fields: bool = False
    blank_gray_status: bool = False
    checkbox_labels: bool = False
    decimal: str = ""
    date_begin: datetime | None = None
    date_end: datetime | None = None
    dag: str | None = None
    row_filter: LogicExpression | None = None


@dataclass(frozen=True)
class RecordImportError(Exception):
    """A flat import that REDCap would refuse, with REDCap's message."""

    message: str


_PATTERNS = {
    "date": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "datetime": re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$"),
    "datetime_seconds": re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"),
    "time": re.compile(r"^\d{2}:\d{2}$"),
    "integer": re.compile(r"^[-+]?\d+$"),
    "number": re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$"),
    "number_comma": re.compile(r"^[-+]?(\d+(,\d*)?|,\d+)$"),
    "email": re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
}
_FORMAT_MESSAGE = (
    "The value you provided could not be validated because it does not follow the expected "
    "format. Please try again."
)


def _value_problem(column: Column, value: str) -> str:
    """REDCap's message for a value it would refuse in *column* ("" when accepted)."""
    if column.kind == "checkbox":
        return "" if value in ("0", "1") else f"The value is not a valid category for {column.base}"
    if column.kind == "complete":
        return (
            ""
            if value in ("0", "1", "2")
            else f"The value is not a valid category for {column.name}"
        )
    field = column.field
    if field is None or column.kind != "field":
        return ""
    if field.field_type in ("radio", "dropdown", "yesno", "truefalse"):
        codes = {code for code, _ in field.choices}
        return "" if value in codes else f"The value is not a valid category for {field.field_name}"
    validation = field.text_validation_type_or_show_slider_number
    if field.field_type != "text" or not validation:
        return ""
    if validation.startswith("datetime_seconds"):
        kind = "datetime_seconds"
    elif validation.startswith("datetime"):
        kind = "datetime"
    elif validation.startswith("date"):
        kind = "date"
    elif validation.startswith("time") and validation != "time_mm_ss":
        kind = "time"
    elif validation == "integer":
        kind = "integer"
    elif validation.startswith("number") and "comma" in validation:
        kind = "number_comma"
    elif validation.startswith("number"):
        kind = "number"
    elif validation == "email":
        kind = "email"
    else:
        return ""
    return "" if _PATTERNS[kind].match(value) else _FORMAT_MESSAGE


def _record_sort_key(record: str) -> tuple[float, str]:
    # REDCap orders records as MySQL's ``ORDER BY abs(record), record``: the numeric prefix first.
    match = re.match(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)", record)
    return (abs(float(match.group(0))) if match else 0.0, record)


class RecordStore:
    """A project's records, shaped and exported the way REDCap does.

    Parameters
    ----------
    project
        The project whose layout (fields, events, mappings, repeating settings) rules the rows;
        its ``records`` are loaded as the initial data.
    clock
        Returns "now" for last-modified times (injected so tests can fix time).
    """

    def __init__(self, project: Project, clock: Callable[[], datetime] = datetime.now) -> None:
        self.project = project
        self._clock = clock
        self._lock = threading.RLock()
        self.record_id_field = project.record_id_field
        self.forms = [i.instrument_name for i in project.instruments]
        self.form_labels = {i.instrument_name: i.instrument_label for i in project.instruments}
        self.survey_forms = {i.instrument_name for i in project.instruments if i.is_survey}
        self.fields = {f.field_name: f for f in project.fields}
        self.form_fields: dict[str, list[Field]] = {form: [] for form in self.forms}
        for f in project.fields:
            self.form_fields.setdefault(f.form_name, []).append(f)
            if f.form_name not in self.forms:
                self.forms.append(f.form_name)
                self.form_labels[f.form_name] = f.form_name
        self.columns = self._build_columns()
        self.column_by_name = {c.name: c for c in self.columns}
        self.form_index = {form: index for index, form in enumerate(self.forms)}
        self._form_columns: dict[str, list[str]] = {form: [] for form in self.forms}
        for c in self.columns:
            if c.kind != "complete":
                self._form_columns.setdefault(c.form, []).append(c.name)
        self.longitudinal = project.is_longitudinal
        self.events = [e.unique_event_name for e in project.events] if self.longitudinal else [""]
        self.event_index = {name: index for index, name in enumerate(self.events)}
        self.event_arm = {e.unique_event_name: e.arm_num for e in project.events}
        multiple_arms = len({e.arm_num for e in project.events}) > 1
        arm_names = {a.arm_num: a.name for a in project.arms}
        self.event_labels = {
            e.unique_event_name: (
                f"{e.event_name} (Arm {e.arm_num}: {arm_names.get(e.arm_num, '')})"
                if multiple_arms
                else e.event_name
            )
            for e in project.events
        }
        if self.longitudinal:
            self.designated: dict[str, set[str]] = {e: set() for e in self.events}
            for _, event, form in project.mappings:
                self.designated.setdefault(event, set()).add(form)
        else:
            self.designated = {"": set(self.forms)}
        by_label = {e.event_name: e.unique_event_name for e in project.events}
        self.repeating_forms: set[tuple[str, str]] = set()
        self.repeating_events: set[str] = set()
        for setting in project.repeating:
            event = setting.event_name
            if self.longitudinal:
                event = event if event in self.event_index else by_label.get(event, event)
            else:
                event = ""
            if setting.form_name:
                self.repeating_forms.add((event, setting.form_name))
            else:
                self.repeating_events.add(event)
        self.missing_codes = dict(parse_choices(str(project.info.get("missing_data_codes", ""))))
        self.dag_names = {d.unique_group_name: d.data_access_group_name for d in project.dags}
        self._rows: dict[str, dict[RowKey, dict[str, str]]] = {}
        # Record IDs in export order, kept until a record is added or deleted.
        self._sorted_ids: list[str] | None = None
        # Each record's row keys in export order, kept until the record gains or loses a row.
        self._sorted_keys: dict[str, list[RowKey]] = {}
        self._dags: dict[str, str] = {}
        self._modified: dict[str, datetime] = {}
        self._next_instance_hint = 0
        if project.records:
            self.import_rows(project.records, overwrite=False, dag=None, validate=False)
            # Order the records and their rows now, not in the first export's answer time.
            for record in self.record_ids():
                self._ordered_keys(record)

    def carried_over(self, project: Project) -> RecordStore:
        """A store for *project* (this project with a changed design) holding the data that fits.

        REDCap's cascades reach the data here: rows of deleted events, of forms no longer
        repeating and values of deleted fields are gone; a record left without rows is gone; a
        record whose data access group was deleted is in no group.
        """
        new = RecordStore(replace(project, records=()), self._clock)
        with self._lock:
            columns = set(new.column_by_name)
            for record in self.record_ids():
                kept: dict[RowKey, dict[str, str]] = {}
                for key, row in self._rows[record].items():
                    event, instrument, instance = key
                    if event not in new.event_index:
                        continue
                    if instrument and (event, instrument) not in new.repeating_forms:
                        continue
                    if not instrument and instance and event not in new.repeating_events:
                        continue
                    kept[key] = {k: v for k, v in row.items() if k in columns}
                if not kept:
                    continue
                new._rows[record] = kept
                dag = self._dags.get(record, "")
                if dag in new.dag_names:
                    new._dags[record] = dag
                if record in self._modified:
                    new._modified[record] = self._modified[record]
        return new

    # ------------------------------------------------------------------ layout
    def _build_columns(self) -> list[Column]:
        columns: list[Column] = []
        for form in self.forms:
            fields = self.form_fields.get(form, [])
            if form in self.survey_forms:
                # The survey timestamp sits after the record ID on the first form.
                at = 1 if fields and fields[0].field_name == self.record_id_field else 0
                columns_form: list[Column] = []
                for f in fields:
                    columns_form.extend(self._field_columns(f))
                stamp = Column(f"{form}_timestamp", form, "timestamp", f"{form}_timestamp")
                skip = 1 if at and columns_form else 0
                columns.extend([*columns_form[:skip], stamp, *columns_form[skip:]])
            else:
                for f in fields:
                    columns.extend(self._field_columns(f))
            columns.append(Column(f"{form}_complete", form, "complete", f"{form}_complete"))
        return columns

    @staticmethod
    def _field_columns(f: Field) -> list[Column]:
        if f.field_type == "descriptive":
            return []
        if f.field_type == "checkbox":
            return [
                Column(
                    checkbox_column(f.field_name, code),
                    f.form_name,
                    "checkbox",
                    f.field_name,
                    f,
                    code,
                )
                for code, _ in f.choices
            ]
        return [Column(f.field_name, f.form_name, "field", f.field_name, f)]

    def row_forms(self, key: RowKey) -> set[str]:
        """The forms whose fields a row of this key can hold."""
        event, instrument, instance = key
        if instrument:
            return {instrument}
        designated = self.designated.get(event, set())
        if instance and event in self.repeating_events:
            return set(designated)
        return {form for form in designated if (event, form) not in self.repeating_forms}

    def _row_order(self, key: RowKey) -> tuple[int, int, int]:
        event, instrument, instance = key
        form_index = self.form_index.get(instrument, -1) if instrument else -1
        return (self.event_index.get(event, len(self.events)), form_index, instance)

    def _ordered_keys(self, record: str) -> list[RowKey]:
        """A record's row keys in export order (the caller holds the lock)."""
        keys = self._sorted_keys.get(record)
        if keys is None:
            keys = self._sorted_keys[record] = sorted(self._rows[record], key=self._row_order)
        return keys

    # ------------------------------------------------------------------ reading
    def record_ids(self, dag: str | None = None) -> list[str]:
        """Record IDs in export order (only a data access group's records when *dag* is set)."""
        with self._lock:
            if self._sorted_ids is None:
                self._sorted_ids = sorted(self._rows, key=_record_sort_key)
            if dag is not None:
                return [r for r in self._sorted_ids if self._dags.get(r, "") == dag]
            return list(self._sorted_ids)

    def has_record(self, record: str) -> bool:
        """Whether *record* exists."""
        with self._lock:
            return record in self._rows

    def has_row(self, record: str, event: str) -> bool:
        """Whether *record* has data (a row) on *event*."""
        with self._lock:
            return any(key[0] == event for key in self._rows.get(record, {}))

    def value(self, record: str, event: str, name: str) -> str:
        """A stored value of a record's non-repeating row on *event* ("" when blank)."""
        with self._lock:
            return self._rows.get(record, {}).get((event, "", 0), {}).get(name, "")

    def record_dag(self, record: str) -> str:
        """The unique name of a record's data access group ("" when none)."""
        with self._lock:
            return self._dags.get(record, "")

    def _selected_rows(self, options: ExportOptions) -> list[tuple[str, RowKey, dict[str, str]]]:
        forms_selected = {c.form for c in options.columns}
        out: list[tuple[str, RowKey, dict[str, str]]] = []
        if options.records is None:
            wanted = self.record_ids(options.dag)
        else:
            # Only the requested records, looked up by ID (a batch of 100 need not walk them all).
            wanted = sorted(
                (
                    r
                    for r in options.records
                    if r in self._rows
                    and (options.dag is None or self._dags.get(r, "") == options.dag)
                ),
                key=_record_sort_key,
            )
        for record in wanted:
            modified = self._modified.get(record)
            if options.date_begin and modified and modified < options.date_begin:
                continue
            if options.date_end and modified and modified > options.date_end:
                continue
            rows = self._rows[record]
            for key in self._ordered_keys(record):
                event, instrument, _ = key
                if options.events is not None and event not in options.events:
                    continue
                if instrument and instrument not in forms_selected:
                    # Unverified: REDCap leaves out instances of repeating forms none of whose
                    # fields were asked for (their rows would be blank but for the keys).
                    continue
                out.append((record, key, rows[key]))
        # REDCap 14 lists a multi-arm project arm by arm (all records' rows in arm 1, then arm 2),
        # as the raw exports recorded from live servers show (arm-multiple-delete); the sort is
        # stable, so within an arm records keep their order and rows their event order.
        out.sort(key=lambda item: self.event_arm.get(item[1][0], 0))
        return out

    def _export_rows(self, options: ExportOptions) -> list[tuple[str, RowKey, dict[str, str]]]:
        selected = self._selected_rows(options)
        if options.row_filter is None:
            return selected
        return self._filtered(selected, options.row_filter)

    def _label(self, column: Column, value: str, checkbox_labels: bool = False) -> str:
        if value == "":
            return value
        if value in self.missing_codes and column.kind not in _DEFAULTED:
            return self.missing_codes[value]
        if column.kind == "complete":
            return STATUS_LABELS.get(value, value)
        if column.kind == "checkbox":
            if checkbox_labels and column.field is not None:
                # exportCheckboxLabel: a checked box shows its choice label, an unchecked one "".
                return (
                    dict(column.field.choices).get(column.code, column.code) if value == "1" else ""
                )
            return "Checked" if value == "1" else "Unchecked"
        if column.field is not None and column.field.field_type in (
            "radio",
            "dropdown",
            "yesno",
            "truefalse",
        ):
            return dict(column.field.choices).get(value, value)
        return value

    def _present(self, column: Column, value: str, options: ExportOptions) -> str:
        if options.decimal and value and column.field is not None:
            numeric = column.field.field_type == "calc" or (
                column.field.field_type == "text"
                and column.field.text_validation_type_or_show_slider_number.startswith("number")
            )
            if numeric:
                # decimalCharacter: calc and number-validated fields share one decimal mark.
                value = value.replace("," if options.decimal == "." else ".", options.decimal)
        if options.raw_labels:
            return self._label(column, value, options.checkbox_labels)
        return value

    def identity_columns(self, options: ExportOptions) -> list[str]:
        """The key columns before the fields, in REDCap's order."""
        if not options.include_identity:
            return []
        names = [self.record_id_field]
        if self.longitudinal:
            names.append("redcap_event_name")
        if self.repeating_forms or self.repeating_events:
            names += ["redcap_repeat_instrument", "redcap_repeat_instance"]
        if options.export_dags and self.dag_names and options.dag is None:
            names.append("redcap_data_access_group")
        if options.survey_fields and self.survey_forms:
            names.append("redcap_survey_identifier")
        return names

    def export_flat(self, options: ExportOptions) -> tuple[list[str], list[dict[str, str | int]]]:
        """A flat export: the column names and one dict per row (values raw or labels).

        ``redcap_repeat_instance`` is an integer on repeating rows and ``""`` elsewhere, as in
        REDCap's JSON.
        """
        header, rows = self.export_flat_rows(options)
        return header, [dict(zip(header, row, strict=True)) for row in rows]

    def export_flat_rows(self, options: ExportOptions) -> tuple[list[str], list[list[str | int]]]:
        """As :meth:`export_flat`, with each row a list in header order (cheaper for CSV)."""
        with self._lock:
            identity = self.identity_columns(options)
            columns = [
                c
                for c in options.columns
                if c.name != self.record_id_field
                and (c.kind != "timestamp" or options.survey_fields)
            ]
            names = [c.name for c in columns]
            header = identity + names
            # Values need work only for labels, decimal marks or gray form status; otherwise a
            # row is its stored values with the defaulted "0"s filled in.
            plain = not (options.raw_labels or options.decimal or options.blank_gray_status)
            out: list[list[str | int]] = []
            defaults_cache: dict[tuple[str, str, bool], list[int]] = {}
            for record, key, row in self._export_rows(options):
                event, instrument, instance = key
                values: list[str | int] = []
                for name in identity:
                    if name == self.record_id_field:
                        values.append(record)
                    elif name == "redcap_event_name":
                        values.append(
                            self.event_labels.get(event, event) if options.raw_labels else event
                        )
                    elif name == "redcap_repeat_instrument":
                        values.append(
                            self.form_labels.get(instrument, instrument)
                            if options.raw_labels and instrument
                            else instrument
                        )
                    elif name == "redcap_repeat_instance":
                        values.append(instance if instance else "")
                    elif name == "redcap_data_access_group":
                        dag = self._dags.get(record, "")
                        values.append(self.dag_names.get(dag, dag) if options.raw_labels else dag)
                    else:
                        values.append(row.get(name, ""))
                cache_key = (event, instrument, bool(instance))
                defaulted = defaults_cache.get(cache_key)
                if defaulted is None:
                    forms_here = self.row_forms(key)
                    defaulted = defaults_cache[cache_key] = [
                        index
                        for index, c in enumerate(columns)
                        if c.kind in _DEFAULTED and c.form in forms_here
                    ]
                get = row.get
                cells: list[str] = [get(name, "") for name in names]
                for index in defaulted:
                    if cells[index] == "":
                        cells[index] = "0"
                if not plain:
                    for index, column in enumerate(columns):
                        value = cells[index]
                        if (
                            options.blank_gray_status
                            and column.kind == "complete"
                            and index in defaulted
                            and value == "0"
                            and column.name not in row
                            and not any(get(n, "") for n in self._form_columns[column.form])
                        ):
                            value = ""
                        cells[index] = self._present(column, value, options)
                values.extend(cells)
                out.append(values)
            return header, out

    def _filtered(
        self, selected: list[tuple[str, RowKey, dict[str, str]]], logic: LogicExpression
    ) -> list[tuple[str, RowKey, dict[str, str]]]:
        """The rows of *selected* on which the ``filterLogic`` *logic* holds.

        The expression is evaluated once over a frame of the selected rows (one column per field
        it reads), with the protocol layer's REDCap evaluator. ``[field]`` reads the row's own
        value, else the record's first value on another row of the same event (REDCap evaluates
        per event); ``[event][field]`` reads the record's row on that event. An unchecked
        checkbox reads as ``"0"``, as in REDCap (the store keeps only non-blank values).
        """
        if not selected:
            return selected
        checkboxes = {c.name for c in self.columns if c.kind == "checkbox"}
        keys = {self.record_id_field, "redcap_event_name"}
        here = sorted({r.column for r in logic.fields if r.event is None} - keys)
        elsewhere = sorted({r.column for r in logic.fields if r.event is not None} - keys)
        records = list(dict.fromkeys(record for record, _, _ in selected))
        merged: dict[tuple[str, str], dict[str, str]] = {}
        if here:
            for record in records:
                rows = self._rows[record]
                for key in self._ordered_keys(record):
                    view = merged.setdefault((record, key[0]), {})
                    for name in here:
                        if name not in view and rows[key].get(name, ""):
                            view[name] = rows[key][name]
        columns: dict[str, list[str]] = {
            self.record_id_field: [record for record, _, _ in selected],
            "redcap_event_name": [key[0] for _, key, _ in selected],
        }
        for name in here:
            default = "0" if name in checkboxes else ""
            columns[name] = [
                row.get(name, "") or merged[(record, key[0])].get(name, "") or default
                for record, key, row in selected
            ]
        frame = pd.DataFrame(columns, dtype=object)
        # The evaluator's flag for object columns that hold only Python strings.
        frame.attrs["studyman.validation.text"] = True
        other: pd.DataFrame | None = None
        if elsewhere:
            keyed = [
                (record, key, self._rows[record][key])
                for record in records
                for key in self._ordered_keys(record)
                if key[0] and not key[1]
            ]
            other_columns: dict[str, list[str]] = {
                self.record_id_field: [record for record, _, _ in keyed],
                "redcap_event_name": [key[0] for _, key, _ in keyed],
            }
            for name in elsewhere:
                default = "0" if name in checkboxes else ""
                other_columns[name] = [row.get(name, "") or default for _, _, row in keyed]
            other = pd.DataFrame(other_columns, dtype=object)
            other.attrs["studyman.validation.text"] = True
        comma_fields = frozenset(
            name
            for name, f in self.fields.items()
            if f.text_validation_type_or_show_slider_number == "number_comma_decimal"
        )
        context = EvaluationContext(
            records=other,
            record_id_field=self.record_id_field,
            today=self._clock(),
            missing_codes=frozenset(self.missing_codes),
            comma_decimal_fields=comma_fields,
        )
        keep = logic.mask(frame, context)
        return [item for item, kept in zip(selected, keep.tolist(), strict=True) if kept]

    def export_eav(self, options: ExportOptions) -> list[dict[str, str | int]]:
        """An EAV export: one row per non-blank value (checkboxes one row per checked code)."""
        with self._lock:
            out: list[dict[str, str | int]] = []
            for record, key, row in self._export_rows(options):
                event, instrument, instance = key
                prefix: dict[str, str | int] = {"record": record}
                if self.longitudinal:
                    prefix["redcap_event_name"] = (
                        self.event_labels.get(event, event) if options.raw_labels else event
                    )
                if self.repeating_forms or self.repeating_events:
                    prefix["redcap_repeat_instrument"] = instrument
                    prefix["redcap_repeat_instance"] = instance if instance else ""
                for column in options.columns:
                    if column.kind == "timestamp" and not options.survey_fields:
                        continue
                    if column.name == self.record_id_field:
                        value = record if not instrument and not instance else ""
                    else:
                        value = row.get(column.name, "")
                    if value == "":
                        continue
                    if column.kind == "checkbox":
                        if value != "1":
                            continue
                        out.append(
                            {
                                **prefix,
                                "field_name": column.base,
                                # Unverified: with labels, the checked choice's label.
                                "value": self._label(column, "1", True)
                                if options.raw_labels
                                else column.code,
                            }
                        )
                        continue
                    shown = self._present(column, value, options)
                    out.append({**prefix, "field_name": column.name, "value": shown})
            return out

    # ------------------------------------------------------------------ writing
    def import_rows(
        self,
        rows: Iterable[Mapping[str, object]],
        *,
        overwrite: bool,
        dag: str | None,
        validate: bool = True,
        check_values: bool = False,
    ) -> list[str]:
        """Import flat rows; return the record IDs touched, in first-seen order.

        Parameters
        ----------
        rows
            Flat rows keyed by export column names plus the identity columns.
        overwrite
            REDCap's ``overwriteBehavior=overwrite``: blank values erase stored values
            (``normal`` keeps them).
        dag
            The importing user's data access group: new records are assigned to it, and records of
            other groups cannot be touched.
        validate
            Refuse unknown columns, events and instruments (off for a project's own records).
        check_values
            Refuse values REDCap would refuse (invalid choice codes, dates not in ISO form,
            non-numbers in number fields); every problem is listed, as REDCap lists them.

        Raises
        ------
        RecordImportError
            With REDCap's message, before anything is written.
        """
        rows = [dict(r) for r in rows]
        known = set(self.column_by_name) | {self.record_id_field, *IDENTITY_COLUMNS}
        if validate:
            unknown = list(dict.fromkeys(k for r in rows for k in r if k not in known))
            if unknown:
                raise RecordImportError(
                    "The following fields were not found in the project as real data fields: "
                    + ", ".join(unknown)
                )
        not_values = frozenset({*IDENTITY_COLUMNS, self.record_id_field})
        problems: list[str] = []
        prepared: list[tuple[str, RowKey, dict[str, str], str | None]] = []
        for number, r in enumerate(rows, start=1):
            record = str(r.get(self.record_id_field, "") or "").strip()
            if not record:
                raise RecordImportError(
                    f"The record ID field ({self.record_id_field}) is blank on row {number}."
                )
            event = str(r.get("redcap_event_name", "") or "") if self.longitudinal else ""
            if self.longitudinal and event not in self.event_index:
                raise RecordImportError(
                    f"The value '{event}' in redcap_event_name for record '{record}' is not a "
                    "valid unique event name."
                    if event
                    else f"The redcap_event_name is missing for record '{record}'."
                )
            instrument = str(r.get("redcap_repeat_instrument", "") or "")
            raw_instance = str(r.get("redcap_repeat_instance", "") or "")
            if instrument and instrument not in self.forms:
                raise RecordImportError(
                    f"The value '{instrument}' in redcap_repeat_instrument is not a valid "
                    "instrument."
                )
            instance = 0
            if raw_instance:
                try:
                    instance = int(float(raw_instance))
                except (ValueError, OverflowError):
                    raise RecordImportError(
                        f"The value '{raw_instance}' in redcap_repeat_instance for record "
                        f"'{record}' is not an integer."
                    ) from None
            if validate and instrument and (event, instrument) not in self.repeating_forms:
                raise RecordImportError(
                    f"The instrument '{instrument}' is not a repeating instrument"
                    + (f" on event '{event}'." if event else ".")
                )
            if instrument and not instance:
                instance = 1
            if not instrument and instance and event not in self.repeating_events:
                if validate:
                    raise RecordImportError(
                        f"Record '{record}' has a redcap_repeat_instance but no repeating "
                        "instrument" + (" or repeating event." if self.longitudinal else ".")
                    )
                instance = 0
            values = {
                k: v if isinstance(v, str) else ("" if v is None else str(v))
                for k, v in r.items()
                if (overwrite or (v != "" and v is not None)) and k not in not_values
            }
            group = str(r.get("redcap_data_access_group", "") or "") or None
            if validate and group and group not in self.dag_names:
                raise RecordImportError(
                    f"The value '{group}' in redcap_data_access_group is not a valid unique "
                    "group name."
                )
            with self._lock:
                if dag is not None and record in self._rows and self._dags.get(record, "") != dag:
                    raise RecordImportError(
                        f"You do not have permission to modify record '{record}' "
                        "(it belongs to another Data Access Group)."
                    )
            if check_values:
                problems.extend(self._value_problems(record, values))
            prepared.append((record, (event, instrument, instance), values, group))
        if problems:
            raise RecordImportError("\n".join(problems))
        touched: dict[str, None] = {}
        now = self._clock()
        with self._lock:
            for record, key, values, group in prepared:
                if record not in self._rows:
                    self._sorted_ids = None
                rows_of = self._rows.setdefault(record, {})
                if key not in rows_of or (validate and key[1] and (key[0], "", 0) not in rows_of):
                    self._sorted_keys.pop(record, None)
                stored = rows_of.setdefault(key, {})
                if validate and key[1]:
                    # REDCap keeps the record ID on the event's base row whenever a repeating
                    # form holds data there, so the export lists a (possibly blank) base row.
                    rows_of.setdefault((key[0], "", 0), {})
                for name, value in values.items():
                    if value != "":
                        stored[name] = value
                    elif overwrite:
                        stored.pop(name, None)
                if dag is not None:
                    self._dags[record] = dag
                elif group is not None:
                    self._dags[record] = group
                self._modified[record] = now
                touched[record] = None
        return list(touched)

    def _value_problems(self, record: str, values: Mapping[str, str]) -> list[str]:
        # REDCap's import error lines: "record","field","value","message".
        problems = []
        for name, value in values.items():
            if value == "" or value in self.missing_codes:
                continue
            column = self.column_by_name.get(name)
            if column is None:
                continue
            message = _value_problem(column, value)
            if message:
                shown = value.replace('"', '""')
                problems.append(f'"{record}","{name}","{shown}","{message}"')
        return problems

    def delete(
        self,
        records: Sequence[str],
        dag: str | None = None,
        *,
        arm: int | None = None,
        event: str | None = None,
        instrument: str | None = None,
        instance: int | None = None,
    ) -> int:
        """Delete records, or part of them; return how many records were touched.

        Parameters
        ----------
        records
            Record IDs.
        dag
            The caller's data access group (records of other groups do not exist for it).
        arm, event, instrument, instance
            REDCap 14's partial deletes: only the rows of one arm or event, only one form's
            values (and a repeating form's instance rows), only one instance.

        Raises
        ------
        RecordImportError
            When a record does not exist (or is outside *dag*), with REDCap's message.
        """
        with self._lock:
            missing = [
                r
                for r in records
                if r not in self._rows or (dag is not None and self._dags.get(r, "") != dag)
            ]
            if missing:
                raise RecordImportError(
                    "One or more of the records provided cannot be deleted because they do not "
                    "exist in the project. The following records do not exist: "
                    + ", ".join(missing)
                )
            partial = any(x is not None for x in (arm, event, instrument, instance))
            for r in dict.fromkeys(records):
                self._sorted_keys.pop(r, None)
                if not partial:
                    del self._rows[r]
                    self._sorted_ids = None
                    self._dags.pop(r, None)
                    self._modified.pop(r, None)
                    continue
                rows = self._rows[r]
                for key in list(rows):
                    row_event, row_instrument, row_instance = key
                    if arm is not None and self.event_arm.get(row_event, 1) != arm:
                        continue
                    if event is not None and row_event != event:
                        continue
                    if instance is not None and row_instance != instance:
                        continue
                    if instrument is None or row_instrument == instrument:
                        del rows[key]
                    elif instrument in self.row_forms(key):
                        for name in [
                            *self._form_columns.get(instrument, []),
                            f"{instrument}_complete",
                        ]:
                            rows[key].pop(name, None)
                        if not rows[key]:
                            del rows[key]
                self._modified[r] = self._clock()
                if not rows:
                    del self._rows[r]
                    self._sorted_ids = None
                    self._dags.pop(r, None)
                    self._modified.pop(r, None)
            return len(set(records))

    def select_columns(self, names: Collection[str]) -> tuple[Column, ...]:
        """Columns whose field (or ``<form>_complete``/timestamp) is in *names*, in export order."""
        return tuple(c for c in self.columns if c.base in names or c.name in names)
