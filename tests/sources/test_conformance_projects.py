"""Issue 7: 28 projects exported from live REDCap servers round-trip through the emulator.

Each fixture project (``tests/data/redcap-projects/<name>/``, REDCapR's test projects, MIT) is
served from its ``project.xml`` (REDCap's whole-project ODM export) and read back through
unchanged PyCap over real HTTP. The raw flat CSV export must equal ``data.csv`` byte for byte (after
line-ending normalisation); the metadata must match ``dictionary.csv``; events and arms must match
``event.csv``/``arm.csv``; label and EAV exports must agree with the raw export and the dictionary.

Some fixture files disagree with each other (they were recorded at different times, or written
by R rather than by REDCap). Each such project is named in ``RECORD_CASES`` or ``METADATA_CASES``
with the reason, and the test compares everything that does agree: a named case relaxes only the
comparison it names.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redcap

from studyman.sources.emulator import EmulatorServer
from studyman.sources.emulator.model import parse_choices
from studyman.sources.emulator.project_dir import read_dictionary

PROJECTS_DIR = Path(__file__).resolve().parents[1] / "data" / "redcap-projects"
PROJECTS = sorted(p.name for p in PROJECTS_DIR.iterdir() if (p / "project.xml").is_file())
TOKEN = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00"


@dataclass(frozen=True)
class RecordCase:
    """How ``data.csv`` relates to ``project.xml`` when the two files do not agree exactly."""

    reason: str
    common_rows_only: bool = False  # compare the rows (by key) present in both files
    common_columns_only: bool = False  # compare the columns present in both files
    skip_columns: frozenset[str] = frozenset()  # columns whose values differ between the files
    squeeze_whitespace: bool = False  # compare cells with runs of white space collapsed
    written_by_r: bool = False  # data.csv was written by R (row names, NA, <U+XXXX>, TRUE/FALSE)
    no_data_csv: bool = False


RECORD_CASES: dict[str, RecordCase] = {
    "arm-single-delete": RecordCase(
        "data.csv holds 20 records recorded before 4 were deleted; the ODM holds the 16 left",
        common_rows_only=True,
    ),
    "arm-multiple-delete": RecordCase(
        "data.csv was recorded before records were deleted and added to arms 2 and 3",
        common_rows_only=True,
    ),
    "checkboxes-1": RecordCase(
        "the ODM writes a blank line inside a note as one line break, data.csv kept two "
        "(REDCap's CSV shows each line break as spaces)",
        squeeze_whitespace=True,
    ),
    "metadata-write": RecordCase(
        "as checkboxes-1: blank lines inside notes are lost in the ODM", squeeze_whitespace=True
    ),
    "multilevel-model-1": RecordCase(
        "data.csv holds ' -0.119' with a leading space where the ODM holds '-0.119'",
        squeeze_whitespace=True,
    ),
    "survey": RecordCase(
        "survey timestamps: data.csv was recorded in 2018, the ODM re-exported in 2024 with new "
        "timestamps",
        skip_columns=frozenset(
            {"prescreening_survey_timestamp", "participant_info_survey_timestamp"}
        ),
    ),
    "validation-types-1": RecordCase(
        "the calculated field was recalculated (7) after data.csv was recorded (blank)",
        skip_columns=frozenset({"f_calculated"}),
    ),
    "russian": RecordCase(
        "data.csv was written by R's write.csv (row names, NA, <U+XXXX> escapes), not by REDCap",
        written_by_r=True,
    ),
    "simple": RecordCase(
        "data.csv was written by R (TRUE/FALSE for the 0/1 sex codes, line breaks kept) from an "
        "older REDCap that showed a file field as '[document]', before the field "
        "interpreter_needed was added",
        written_by_r=True,
        common_columns_only=True,
        squeeze_whitespace=True,
        skip_columns=frozenset({"mugshot"}),
    ),
    "simple-write": RecordCase("no data.csv (a project written to by tests)", no_data_csv=True),
}


@dataclass(frozen=True)
class MetadataCase:
    """Dictionary cells the ODM cannot reproduce, with the reason."""

    reason: str
    skip: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    extra_fields: frozenset[str] = frozenset()


METADATA_CASES: dict[str, MetadataCase] = {
    "metadata-write": MetadataCase(
        "the dictionary was downloaded after 'age' became a text field; the ODM has the calc",
        frozenset({("age", "field_type"), ("age", "select_choices_or_calculations")}),
    ),
    "repeating-instruments-sparse": MetadataCase(
        "the dictionary was downloaded when 'age' was a calc field; the ODM has it as text",
        frozenset({("age", "field_type"), ("age", "select_choices_or_calculations")}),
    ),
    "validation-types-1": MetadataCase(
        "REDCap's ODM carries neither a slider's min/max nor an sql field's query",
        frozenset(
            {
                ("f_slider", "text_validation_min"),
                ("f_slider", "text_validation_max"),
                ("f_sql", "select_choices_or_calculations"),
            }
        ),
    ),
    "simple": MetadataCase(
        "the field interpreter_needed was added after the dictionary was downloaded",
        extra_fields=frozenset({"interpreter_needed"}),
    ),
}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, EmulatorServer]]:
    """One emulator per fixture project, started on first use and stopped with the module."""
    started: dict[str, EmulatorServer] = {}
    yield started
    for server in started.values():
        server.stop()


def project_for(servers: dict[str, EmulatorServer], name: str) -> redcap.Project:
    if name not in servers:
        path = PROJECTS_DIR / name / "project.xml"
        servers[name] = EmulatorServer(path, tokens={TOKEN: "api"}).start()
    return redcap.Project(servers[name].url, TOKEN)


def dictionary_path(name: str) -> Path | None:
    # decimal-comma ships its dictionary misspelt as 'dictionay.csv'.
    for file_name in ("dictionary.csv", "dictionay.csv"):
        if (PROJECTS_DIR / name / file_name).is_file():
            return PROJECTS_DIR / name / file_name
    return None


def parse_csv(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return (rows[0], rows[1:]) if rows else ([], [])


def undo_r(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Undo R's write.csv: drop the row-name column, NA → blank, <U+XXXX> → the character."""

    def cell(value: str) -> str:
        value = "" if value == "NA" else value
        value = {"TRUE": "1", "FALSE": "0"}.get(value, value)
        return re.sub(r"<U\+([0-9A-Fa-f]{4})>", lambda m: chr(int(m.group(1), 16)), value)

    if header and header[0] == "":
        header, rows = header[1:], [row[1:] for row in rows]
    return header, [[cell(v) for v in row] for row in rows]


def row_key(header: list[str], row: list[str]) -> tuple[str, ...]:
    keys = [header[0], "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"]
    return tuple(row[header.index(k)] for k in keys if k in header)


@pytest.mark.parametrize("name", PROJECTS)
def test_raw_csv_export_equals_data_csv(servers: dict[str, EmulatorServer], name: str) -> None:
    data_csv = PROJECTS_DIR / name / "data.csv"
    case = RECORD_CASES.get(name)
    expected = (
        data_csv.read_bytes().decode("utf-8-sig").replace("\r\n", "\n")
        if data_csv.is_file()
        else ""
    )
    expected_header = expected.split("\n", 1)[0]
    exported = project_for(servers, name).export_records(
        format_type="csv",
        export_data_access_groups="redcap_data_access_group" in expected_header,
        export_survey_fields="redcap_survey_identifier" in expected_header,
    )
    if case is None:
        assert exported == expected
        return
    got_header, got_rows = parse_csv(exported)
    if case.no_data_csv:
        # Every record of the ODM comes back, keyed by the record-ID field.
        assert got_header[0] == "record_id"
        assert len({row[0] for row in got_rows}) >= 1
        return
    want_header, want_rows = parse_csv(expected)
    if case.written_by_r:
        want_header, want_rows = undo_r(want_header, want_rows)
    if case.common_columns_only:
        assert set(want_header) <= set(got_header), "data.csv columns missing from the export"
    else:
        assert got_header == want_header
    columns = [c for c in want_header if c in got_header and c not in case.skip_columns]

    def cells(header: list[str], row: list[str]) -> list[str]:
        values = [row[header.index(c)] for c in columns]
        if case.squeeze_whitespace:
            values = [" ".join(v.split()) for v in values]
        return values

    got = {row_key(got_header, r): cells(got_header, r) for r in got_rows}
    want = {row_key(want_header, r): cells(want_header, r) for r in want_rows}
    if case.common_rows_only:
        common = [k for k in want if k in got]
        assert len(common) >= len(got) // 2, "the two files should share most rows"
        assert [got[k] for k in common] == [want[k] for k in common]
        # Rows keep REDCap's order: the common rows come in the same order in both.
        assert [k for k in got if k in want] == common
    else:
        assert list(got) == list(want)
        assert list(got.values()) == list(want.values())


def semantic(field_type: str, column: str, value: str) -> object:
    """A dictionary cell as compared: choices as (code, label) pairs, text stripped.

    REDCap's ODM writes choices in one spelling (``1, one | 2, two``) whatever was typed, while a
    downloaded dictionary keeps the typing (checkboxes-1 has ``1, one|2, two``), and the ODM trims
    an annotation's leading space (file-repo's `` @TODAY``): what REDCap pins down is the codes,
    the labels and the text, so those are compared.
    """
    if column == "select_choices_or_calculations" and field_type in (
        "radio",
        "dropdown",
        "checkbox",
    ):
        return parse_choices(value)
    return value.strip()


@pytest.mark.parametrize("name", PROJECTS)
def test_metadata_export_matches_dictionary(servers: dict[str, EmulatorServer], name: str) -> None:
    path = dictionary_path(name)
    metadata = project_for(servers, name).export_metadata()
    if path is None:
        # russian and simple-write ship no dictionary: the metadata still lists typed fields.
        assert metadata
        assert all(row["field_type"] for row in metadata)
        return
    case = METADATA_CASES.get(name, MetadataCase(""))
    expected = [f.as_metadata() for f in read_dictionary(path)]
    names = [row["field_name"] for row in metadata if row["field_name"] not in case.extra_fields]
    assert names == [row["field_name"] for row in expected]
    by_name = {row["field_name"]: row for row in metadata}
    for want in expected:
        got = by_name[str(want["field_name"])]
        for column, value in want.items():
            if (want["field_name"], column) in case.skip:
                continue
            field_type = str(want["field_type"])
            assert semantic(field_type, column, str(got[column])) == semantic(
                field_type, column, str(value)
            ), f"{want['field_name']}.{column}"


@pytest.mark.parametrize("name", PROJECTS)
def test_events_and_arms_equal_event_and_arm_csv(
    servers: dict[str, EmulatorServer], name: str
) -> None:
    project = project_for(servers, name)
    event_csv = PROJECTS_DIR / name / "event.csv"
    arm_csv = PROJECTS_DIR / name / "arm.csv"
    if not event_csv.is_file():
        if project.is_longitudinal:
            # arm-single-delete, for one, is longitudinal without event.csv: events are listed.
            assert project.export_events()
        else:
            with pytest.raises(redcap.RedcapError, match="classic projects"):
                project.export_instrument_event_mappings()
        return
    _, want = parse_csv(event_csv.read_text(encoding="utf-8-sig"))
    got = project.export_events()
    # event_id is REDCap's database key, which the ODM does not carry: compared are the rest.
    assert [
        [e["event_name"], str(e["arm_num"]), e["unique_event_name"], e["custom_event_label"]]
        for e in got
    ] == [row[:4] for row in want]
    if arm_csv.is_file():
        _, want_arms = parse_csv(arm_csv.read_text(encoding="utf-8-sig"))
        assert [[str(a["arm_num"]), a["name"]] for a in project.export_arms()] == want_arms


STATUS = {"0": "Incomplete", "1": "Unverified", "2": "Complete"}


def dictionary_fields(servers: dict[str, EmulatorServer], name: str) -> dict[str, dict[str, str]]:
    path = dictionary_path(name)
    rows = (
        [{k: str(v) for k, v in f.as_metadata().items()} for f in read_dictionary(path)]
        if path is not None
        else project_for(servers, name).export_metadata()
    )
    return {row["field_name"]: row for row in rows}


@pytest.mark.parametrize("name", PROJECTS)
def test_label_export_uses_the_dictionary_labels(
    servers: dict[str, EmulatorServer], name: str
) -> None:
    project = project_for(servers, name)
    raw = project.export_records()
    labels = project.export_records(raw_or_label="label")
    assert len(raw) == len(labels)
    fields = dictionary_fields(servers, name)
    overrides = METADATA_CASES.get(name, MetadataCase("")).skip
    events = (
        {e["unique_event_name"]: e for e in project.export_events()}
        if project.is_longitudinal
        else {}
    )
    checked = 0
    for raw_row, label_row in zip(raw, labels, strict=True):
        assert list(raw_row) == list(label_row)
        for column, value in raw_row.items():
            shown = label_row[column]
            base, _, code = column.partition("___")
            meta = fields.get(base)
            if column == "redcap_event_name":
                assert shown.startswith(events[value]["event_name"])
            elif column.endswith("_complete") and base not in fields:
                assert shown == STATUS.get(str(value), value)
            elif meta is not None and (base, "field_type") not in overrides and value != "":
                field_type = meta["field_type"]
                if field_type == "checkbox" and code:
                    assert shown == ("Checked" if value == "1" else "Unchecked"), column
                elif field_type in ("radio", "dropdown"):
                    choices = dict(parse_choices(meta["select_choices_or_calculations"]))
                    assert shown == choices.get(value, value), column
                elif field_type == "yesno":
                    assert shown == {"1": "Yes", "0": "No"}[value], column
                elif field_type == "truefalse":
                    assert shown == {"1": "True", "0": "False"}[value], column
                else:
                    assert shown == value, column
                checked += 1
    assert checked or not raw


@pytest.mark.parametrize("name", PROJECTS)
def test_eav_export_reassembles_into_the_flat_export(
    servers: dict[str, EmulatorServer], name: str
) -> None:
    project = project_for(servers, name)
    flat = project.export_records()
    eav = project.export_records(record_type="eav")
    record_field = project.def_field

    def key(row: dict[str, object], record: object) -> tuple[str, ...]:
        return (
            str(record),
            str(row.get("redcap_event_name", "")),
            str(row.get("redcap_repeat_instrument", "")),
            str(row.get("redcap_repeat_instance", "")),
        )

    rebuilt: dict[tuple[str, ...], dict[str, str]] = {}
    for item in eav:
        values = rebuilt.setdefault(key(item, item["record"]), {})
        column = str(item["field_name"])
        if f"{column}___" in "".join(f"{k}," for k in flat[0]) if flat else False:
            values[f"{column}___{str(item['value']).lower()}"] = "1"
        else:
            values[column] = str(item["value"])
    expected: dict[tuple[str, ...], dict[str, str]] = {}
    for row in flat:
        values = {}
        for column, value in row.items():
            if column in (
                record_field,
                "redcap_event_name",
                "redcap_repeat_instrument",
                "redcap_repeat_instance",
            ):
                continue
            if value == "" or (value == "0" and ("___" in column or column.endswith("_complete"))):
                continue  # blanks, unchecked boxes and unsaved forms have no EAV row
            values[column] = str(value)
        expected[key(row, row[record_field])] = values
    for row_key_, values in rebuilt.items():
        values.pop(record_field, None)
        assert row_key_ in expected, row_key_
    for row_key_, values in expected.items():
        got = {k: v for k, v in rebuilt.get(row_key_, {}).items() if k != record_field}
        # A saved form status of 0 is an EAV row; a defaulted one is not.
        got = {k: v for k, v in got.items() if not (k.endswith("_complete") and v == "0")}
        assert got == values, row_key_
