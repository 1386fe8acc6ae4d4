"""Read and write a REDCap project directory (the layout of ``docs/design.md``).

The data dictionary may carry REDCap's raw API headers or the human headers of the file downloaded
from REDCap's web page; both are read by position once recognised. Every file is read as UTF-8
(a byte-order mark is accepted). Errors name the file and the row or column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from studyman.errors import ProtocolError
from studyman.protocol.redcap_project import HUMAN_DICTIONARY_HEADERS
from studyman.sources.emulator.model import (
    DICTIONARY_COLUMNS,
    USER_COLUMNS,
    USER_RIGHT_COLUMNS,
    Arm,
    DataAccessGroup,
    Event,
    Field,
    Instrument,
    Project,
    RepeatingSetting,
    User,
)
from studyman.sources.snapshot import write_bytes_atomic

__all__ = [
    "HUMAN_DICTIONARY_HEADERS",
    "default_project_info",
    "load_project_dir",
    "read_dictionary",
    "write_project_dir",
]

_TOKEN = re.compile(r"^[0-9A-Fa-f]{32}$|^[0-9A-Fa-f]{64}$")


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        # Bytes, not text mode: a value's \r\n must survive (universal newlines would not keep it).
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ProtocolError(f"not UTF-8 text ({error.reason})", file=str(path)) from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise ProtocolError("empty file: expected a header row", file=str(path))
    return rows[0], rows[1:]


def _read_table(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    header, rows = _read_csv(path)
    missing = [name for name in required if name not in header]
    if missing:
        raise ProtocolError(
            f"missing column(s) {', '.join(missing)}; found {', '.join(header)}", file=str(path)
        )
    table = []
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise ProtocolError(
                f"{len(row)} cells for {len(header)} columns", file=str(path), key=f"line {number}"
            )
        table.append(dict(zip(header, [*row, *[""] * (len(header) - len(row))], strict=True)))
    return table


def read_dictionary(path: Path) -> tuple[Field, ...]:
    """Read a REDCap data dictionary CSV (raw API headers or the web page's human headers).

    Parameters
    ----------
    path
        The CSV file.

    Returns
    -------
    tuple of Field
        The fields in dictionary order.

    Raises
    ------
    ProtocolError
        When the headers are neither REDCap's raw nor its human headers, or a row lacks a field
        name, form name or field type.
    """
    header, rows = _read_csv(path)
    normalised = [h.strip() for h in header]
    raw_ok = normalised[: len(DICTIONARY_COLUMNS)] == list(DICTIONARY_COLUMNS)
    human_ok = [h.lower() for h in normalised[: len(HUMAN_DICTIONARY_HEADERS)]] == [
        h.lower() for h in HUMAN_DICTIONARY_HEADERS
    ]
    if not (raw_ok or human_ok):
        raise ProtocolError(
            "not a REDCap data dictionary: expected the columns "
            f"{', '.join(DICTIONARY_COLUMNS)} (or the web page's human headers)",
            file=str(path),
            key="header",
        )
    fields: list[Field] = []
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [*row[: len(DICTIONARY_COLUMNS)], *[""] * (len(DICTIONARY_COLUMNS) - len(row))]
        values = dict(zip(DICTIONARY_COLUMNS, cells, strict=True))
        for required in ("field_name", "form_name", "field_type"):
            if not values[required].strip():
                raise ProtocolError(f"empty {required}", file=str(path), key=f"line {number}")
        values["field_name"] = values["field_name"].strip()
        values["form_name"] = values["form_name"].strip()
        values["field_type"] = values["field_type"].strip()
        fields.append(Field(**values))
    return tuple(fields)


def default_project_info(
    title: str, *, longitudinal: bool, repeating: bool, surveys: bool = False
) -> dict[str, object]:
    """The ``content=project`` answer REDCap gives for a new project with these settings."""
    return {
        "project_id": 1,
        "project_title": title,
        "creation_time": "2026-01-01 00:00:00",
        "production_time": "",
        "in_production": 0,
        "project_language": "English",
        "purpose": 0,
        "purpose_other": "",
        "project_notes": "",
        "custom_record_label": "",
        "secondary_unique_field": "",
        "is_longitudinal": int(longitudinal),
        "has_repeating_instruments_or_events": int(repeating),
        "surveys_enabled": int(surveys),
        "scheduling_enabled": 0,
        "record_autonumbering_enabled": 0,
        "randomization_enabled": 0,
        "ddp_enabled": 0,
        "project_irb_number": "",
        "project_grant_number": "",
        "project_pi_firstname": "",
        "project_pi_lastname": "",
        "display_today_now_button": 1,
        "missing_data_codes": "",
        "external_modules": "",
        "bypass_branching_erase_field_prompt": 0,
    }


def _int(value: str, path: Path, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(
            f"expected an integer, found {value!r}", file=str(path), key=key
        ) from None


def _form_rights(text: str, path: Path, key: str) -> dict[str, int]:
    rights: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        form, sep, value = part.partition(":")
        if not sep:
            raise ProtocolError(f"expected form:right, found {part!r}", file=str(path), key=key)
        rights[form.strip()] = _int(value.strip(), path, key)
    return rights


def _read_users(path: Path) -> tuple[User, ...]:
    users = []
    for number, row in enumerate(_read_table(path, ["username"]), start=2):
        rights = {
            name: _int(row[name] or "0", path, f"line {number}, {name}")
            for name in USER_RIGHT_COLUMNS
            if name in row
        }
        users.append(
            User(
                username=row["username"],
                email=row.get("email", ""),
                firstname=row.get("firstname", ""),
                lastname=row.get("lastname", ""),
                expiration=row.get("expiration", ""),
                data_access_group=row.get("data_access_group", ""),
                rights=rights,
                forms=_form_rights(row.get("forms", ""), path, f"line {number}, forms"),
                forms_export=_form_rights(
                    row.get("forms_export", ""), path, f"line {number}, forms_export"
                ),
            )
        )
    return tuple(users)


def _read_tokens(path: Path) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for number, row in enumerate(_read_table(path, ["username", "token"]), start=2):
        token = row["token"].strip()
        if not _TOKEN.match(token):
            # The token itself never goes into the message.
            raise ProtocolError(
                "a token must be 32 (project) or 64 (super) hexadecimal characters",
                file=str(path),
                key=f"line {number}",
            )
        tokens[token] = row["username"].strip()
    return tokens


def _read_records(path: Path) -> tuple[dict[str, str], ...]:
    header, rows = _read_csv(path)
    records = []
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            if not row:
                continue
            raise ProtocolError(
                f"{len(row)} cells for {len(header)} columns", file=str(path), key=f"line {number}"
            )
        records.append(dict(zip(header, row, strict=True)))
    return tuple(records)


def load_project_dir(directory: Path) -> Project:
    """Load a project directory into a :class:`Project`.

    Parameters
    ----------
    directory
        A directory laid out as in ``docs/design.md``: ``data_dictionary.csv`` (required) and the
        optional ``project.json``, ``instruments.csv``, ``arms.csv``, ``events.csv``,
        ``instrument_event_mapping.csv``, ``repeating_instruments.csv``, ``dags.csv``,
        ``users.csv``, ``records.csv`` and ``api_tokens.csv``.

    Raises
    ------
    ProtocolError
        When a file is missing or malformed (the message names the file and line).
    """
    directory = Path(directory)
    dictionary = directory / "data_dictionary.csv"
    if not dictionary.is_file():
        raise ProtocolError(
            "not a REDCap project directory: data_dictionary.csv is missing", file=str(directory)
        )
    fields = read_dictionary(dictionary)
    form_order = list(dict.fromkeys(f.form_name for f in fields))
    labels = {form: form.replace("_", " ").title() for form in form_order}
    surveys: set[str] = set()
    if (directory / "instruments.csv").is_file():
        path = directory / "instruments.csv"
        for row in _read_table(path, ["instrument_name", "instrument_label"]):
            labels[row["instrument_name"]] = row["instrument_label"]
            if row.get("is_survey", "").strip() in ("1", "y", "yes", "true"):
                surveys.add(row["instrument_name"])
    instruments = tuple(Instrument(f, labels[f], f in surveys) for f in form_order)

    arms: tuple[Arm, ...] = ()
    if (directory / "arms.csv").is_file():
        path = directory / "arms.csv"
        arms = tuple(
            Arm(_int(row["arm_num"], path, f"arm {row['arm_num']}"), row["name"])
            for row in _read_table(path, ["arm_num", "name"])
        )
    events: tuple[Event, ...] = ()
    if (directory / "events.csv").is_file():
        path = directory / "events.csv"
        rows = _read_table(path, ["event_name", "arm_num", "unique_event_name"])
        events = tuple(
            Event(
                event_name=row["event_name"],
                arm_num=_int(row["arm_num"], path, f"event {row['unique_event_name']}"),
                unique_event_name=row["unique_event_name"],
                custom_event_label=row.get("custom_event_label", ""),
                event_id=_int(row.get("event_id") or str(index), path, "event_id"),
            )
            for index, row in enumerate(rows, start=1)
        )
        if not arms:
            arms = tuple(Arm(n, f"Arm {n}") for n in dict.fromkeys(e.arm_num for e in events))
    mappings: tuple[tuple[int, str, str], ...] = ()
    if (directory / "instrument_event_mapping.csv").is_file():
        path = directory / "instrument_event_mapping.csv"
        mappings = tuple(
            (_int(row["arm_num"], path, "arm_num"), row["unique_event_name"], row["form"])
            for row in _read_table(path, ["arm_num", "unique_event_name", "form"])
        )
    repeating: tuple[RepeatingSetting, ...] = ()
    if (directory / "repeating_instruments.csv").is_file():
        path = directory / "repeating_instruments.csv"
        repeating = tuple(
            RepeatingSetting(
                row.get("event_name", ""), row["form_name"], row.get("custom_form_label", "")
            )
            for row in _read_table(path, ["form_name"])
        )
    dags: tuple[DataAccessGroup, ...] = ()
    if (directory / "dags.csv").is_file():
        path = directory / "dags.csv"
        dags = tuple(
            DataAccessGroup(row["data_access_group_name"], row["unique_group_name"], index)
            for index, row in enumerate(
                _read_table(path, ["data_access_group_name", "unique_group_name"]), start=1
            )
        )
    users = _read_users(directory / "users.csv") if (directory / "users.csv").is_file() else ()
    records = (
        _read_records(directory / "records.csv") if (directory / "records.csv").is_file() else ()
    )
    tokens = (
        _read_tokens(directory / "api_tokens.csv")
        if (directory / "api_tokens.csv").is_file()
        else {}
    )
    redcap_version = "14.5.0"
    if (directory / "project.json").is_file():
        path = directory / "project.json"
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ProtocolError(f"invalid JSON: {error}", file=str(path)) from None
        if not isinstance(info, dict):
            raise ProtocolError("expected one JSON object", file=str(path))
        redcap_version = str(info.pop("redcap_version", redcap_version))
    else:
        info = default_project_info(
            directory.name,
            longitudinal=bool(events),
            repeating=bool(repeating),
            surveys=bool(surveys),
        )
    return Project(
        info=info,
        fields=fields,
        instruments=instruments,
        arms=arms,
        events=events,
        mappings=mappings,
        repeating=repeating,
        dags=dags,
        users=users,
        records=records,
        tokens=tokens,
        redcap_version=redcap_version,
    )


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    handle = io.StringIO(newline="")
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    write_bytes_atomic(path, handle.getvalue().encode("utf-8"))


def _rights_text(rights: Mapping[str, int]) -> str:
    return ",".join(f"{form}:{right}" for form, right in rights.items())


def write_project_dir(project: Project, directory: Path, *, with_tokens: bool = False) -> None:
    """Write *project* as a project directory (records included; tokens only when asked).

    Parameters
    ----------
    project
        The project.
    directory
        Created when missing; existing files of the layout are replaced.
    with_tokens
        Write ``api_tokens.csv`` too (never for a real study).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = dict(project.info)
    info["redcap_version"] = project.redcap_version
    write_bytes_atomic(
        directory / "project.json",
        (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    )
    _write_csv(
        directory / "data_dictionary.csv",
        DICTIONARY_COLUMNS,
        ([getattr(f, c) for c in DICTIONARY_COLUMNS] for f in project.fields),
    )
    _write_csv(
        directory / "instruments.csv",
        ("instrument_name", "instrument_label", "is_survey"),
        ((i.instrument_name, i.instrument_label, int(i.is_survey)) for i in project.instruments),
    )
    if project.is_longitudinal:
        _write_csv(
            directory / "arms.csv", ("arm_num", "name"), ((a.arm_num, a.name) for a in project.arms)
        )
        _write_csv(
            directory / "events.csv",
            ("event_name", "arm_num", "unique_event_name", "custom_event_label", "event_id"),
            (
                (e.event_name, e.arm_num, e.unique_event_name, e.custom_event_label, e.event_id)
                for e in project.events
            ),
        )
        _write_csv(
            directory / "instrument_event_mapping.csv",
            ("arm_num", "unique_event_name", "form"),
            project.mappings,
        )
    if project.repeating:
        _write_csv(
            directory / "repeating_instruments.csv",
            ("event_name", "form_name", "custom_form_label"),
            ((r.event_name, r.form_name, r.custom_form_label) for r in project.repeating),
        )
    if project.dags:
        _write_csv(
            directory / "dags.csv",
            ("data_access_group_name", "unique_group_name"),
            ((d.data_access_group_name, d.unique_group_name) for d in project.dags),
        )
    if project.users:
        _write_csv(
            directory / "users.csv",
            USER_COLUMNS,
            (
                [
                    u.username,
                    u.email,
                    u.firstname,
                    u.lastname,
                    u.expiration,
                    u.data_access_group,
                    *[u.rights.get(c, 0) for c in USER_RIGHT_COLUMNS],
                    _rights_text(u.forms),
                    _rights_text(u.forms_export),
                ]
                for u in project.users
            ),
        )
    if project.records:
        header = list(dict.fromkeys(k for row in project.records for k in row))
        _write_csv(
            directory / "records.csv",
            header,
            ([row.get(c, "") for c in header] for row in project.records),
        )
    if with_tokens and project.tokens:
        _write_csv(
            directory / "api_tokens.csv",
            ("username", "token"),
            ((u, t) for t, u in project.tokens.items()),
        )
