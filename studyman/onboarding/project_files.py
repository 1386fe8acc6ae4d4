"""A REDCap project's design as a project directory, from exported files or a live project.

Both ways write the layout of ``docs/design.md`` (``project.json``, ``data_dictionary.csv``,
``instruments.csv`` and, where the project has them, ``arms.csv``, ``events.csv``,
``instrument_event_mapping.csv``, ``repeating_instruments.csv``, ``dags.csv``) and read it back
with :func:`~studyman.protocol.load_redcap_project`, so an exported file is checked by the same
reader (file, line and what was expected) as a study's own project files. Records and tokens
are never written; users only from an exported ``users.csv``.

The live project is read through PyCap with the transport of :mod:`studyman.sources.pull`
(non-200 answers, HTML pages and short bodies refused; the token sent only to the URL's origin,
never in a message).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from studyman.errors import ProtocolError, SourceError
from studyman.protocol.redcap_project import (
    USER_COLUMNS,
    DataDictionary,
    RedcapProject,
    load_redcap_project,
    read_data_dictionary,
)
from studyman.sources.pull import (
    _call,
    _CheckedSession,
    _fail,
    _Policy,
    _Project,
    _public_url,
    _RefusedError,
)
from studyman.sources.snapshot import write_bytes_atomic

__all__ = ["fetch_project_dir", "replace_directory", "write_exported_project_dir"]

_TOKEN_PATTERN = re.compile(r"[0-9A-Fa-f]{32}")

_LAYOUT: dict[str, tuple[str, ...]] = {
    "instruments.csv": ("instrument_name", "instrument_label"),
    "arms.csv": ("arm_num", "name"),
    "events.csv": ("event_name", "arm_num", "unique_event_name", "custom_event_label", "event_id"),
    "instrument_event_mapping.csv": ("arm_num", "unique_event_name", "form"),
    "repeating_instruments.csv": ("event_name", "form_name", "custom_form_label"),
    "dags.csv": ("data_access_group_name", "unique_group_name"),
}


def _csv_bytes(header: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    handle = io.StringIO(newline="")
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else str(row.get(c)) for c in header])
    return handle.getvalue().encode("utf-8")


def _project_json(info: Mapping[str, Any]) -> bytes:
    return (json.dumps(dict(info), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_exported_project_dir(
    directory: Path,
    *,
    dictionary: Path,
    events: Path | None = None,
    mapping: Path | None = None,
    arms: Path | None = None,
    instruments: Path | None = None,
    repeating: Path | None = None,
    dags: Path | None = None,
    users: Path | None = None,
    project_info: Path | None = None,
) -> RedcapProject:
    """Write a project directory from files exported from REDCap, and read it back.

    Parameters
    ----------
    directory
        The new project directory (created).
    dictionary
        The data dictionary (raw API or web-download headers).
    events, mapping, arms, instruments, repeating, dags
        REDCap's CSV exports of events, the instrument-event mapping, arms, instruments,
        repeating forms and data access groups (the API's column names), where there are any.
    users
        REDCap's user import CSV (the users and their form rights), when given.
    project_info
        The project information as JSON (``content=project``); without it the title is left
        for the draft to ask.

    Raises
    ------
    ProtocolError
        A file cannot be read or is malformed (named with its line), or the files disagree.
    """
    directory.mkdir(parents=True)
    parsed = read_data_dictionary(dictionary)
    write_bytes_atomic(directory / "data_dictionary.csv", parsed.to_csv_text().encode("utf-8"))
    given = {
        "events.csv": events,
        "instrument_event_mapping.csv": mapping,
        "arms.csv": arms,
        "instruments.csv": instruments,
        "repeating_instruments.csv": repeating,
        "dags.csv": dags,
        "users.csv": users,
    }
    for name, source in given.items():
        if source is not None:
            write_bytes_atomic(directory / name, _read_bytes(source))
    if instruments is None:
        write_bytes_atomic(
            directory / "instruments.csv",
            _csv_bytes(
                _LAYOUT["instruments.csv"],
                (
                    {"instrument_name": form, "instrument_label": form.replace("_", " ").title()}
                    for form in parsed.forms
                ),
            ),
        )
    if project_info is not None:
        info_bytes = _read_bytes(project_info)
    else:
        info_bytes = _project_json(
            {
                "project_id": 0,
                "project_title": "",
                "is_longitudinal": int(events is not None),
                "has_repeating_instruments_or_events": int(repeating is not None),
            }
        )
    write_bytes_atomic(directory / "project.json", info_bytes)
    sources = {name: str(path) for name, path in given.items() if path is not None}
    sources["data_dictionary.csv"] = str(dictionary)
    if project_info is not None:
        sources["project.json"] = str(project_info)
    try:
        return load_redcap_project(directory)
    except ProtocolError as error:
        raise _renamed(error, directory, sources) from None


def _renamed(error: ProtocolError, directory: Path, sources: Mapping[str, str]) -> ProtocolError:
    """*error* naming the file the user gave instead of its copy in *directory*."""
    if error.file is None or Path(error.file).parent != directory:
        return error
    name = Path(error.file).name
    source = sources.get(name, name)
    prefix = ": ".join(part for part in (error.file, error.key) if part) + ": "
    message = str(error).removeprefix(prefix)
    return ProtocolError(message, file=source, key=error.key)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ProtocolError(f"cannot read the file ({error.strerror})", file=str(path)) from None


def fetch_project_dir(
    url: str,
    token: SecretStr,
    directory: Path,
    *,
    retries: int = 3,
    timeout: float = 60.0,
) -> RedcapProject:
    """Read a live project's design through PyCap into a new project directory.

    Parameters
    ----------
    url
        REDCap's API URL (ending in ``/api/``).
    token
        The API token (32 hexadecimal characters); it reaches PyCap only.
    directory
        The new project directory (created).
    retries, timeout
        Retries of a request that failed on the way, and seconds to wait for an answer.

    Raises
    ------
    SourceError
        REDCap refused a request (a bad token, no design rights) or did not answer; the message
        never holds the token.
    """
    raw = token.get_secret_value()
    if not _TOKEN_PATTERN.fullmatch(raw):
        raise SourceError("the REDCap API token is not 32 hexadecimal characters")
    if not url.endswith("/api/"):
        raise SourceError(f"the REDCap API URL must end in /api/ (got {_public_url(url)})")
    policy = _Policy(retries=retries, backoff=0.5, max_backoff=8.0)
    project = _Project(url, token, _CheckedSession(url, raw), timeout)

    def call(what: str, function: Callable[[_Project], Any]) -> Any:
        try:
            return _call(what, lambda: function(project), policy, raw)
        except _RefusedError as refused:
            _fail(what, refused, raw)

    def optional(what: str, function: Callable[[_Project], Any]) -> Any:
        try:
            return _call(what, lambda: function(project), policy, raw)
        except _RefusedError as refused:
            if refused.status in (400, 403):
                return None
            _fail(what, refused, raw)

    metadata = call("metadata", lambda p: p.export_metadata(format_type="json"))
    if not isinstance(metadata, list) or not metadata:
        raise SourceError("metadata: REDCap returned no data dictionary")
    info = call("project info", lambda p: p.export_project_info(format_type="json"))
    if not isinstance(info, dict):
        raise SourceError("project info: REDCap returned no project information")
    version = optional("version", lambda p: p.export_version())
    forms = call("instruments", lambda p: p.export_instruments(format_type="json"))
    mappings = optional(
        "form-event mappings", lambda p: p.export_instrument_event_mappings(format_type="json")
    )
    # A classic project answers the mapping export with 400 (None here) or says so in its info.
    longitudinal = isinstance(mappings, list) and str(info.get("is_longitudinal", "1")) != "0"
    events = call("events", lambda p: p.export_events(format_type="json")) if longitudinal else None
    arms = call("arms", lambda p: p.export_arms(format_type="json")) if longitudinal else None
    repeating = optional(
        "repeating forms", lambda p: p.export_repeating_instruments_events(format_type="json")
    )
    dags = optional("data access groups", lambda p: p.export_dags(format_type="json"))
    # Users and their form rights, for the blinding checks: only with user-rights privilege.
    users = optional("users", lambda p: p.export_users(format_type="json"))

    directory.mkdir(parents=True)
    dictionary = _dictionary_from_rows(metadata)
    write_bytes_atomic(directory / "data_dictionary.csv", dictionary.encode("utf-8"))
    info = dict(info)
    if version is not None:
        info["redcap_version"] = str(version).strip()
    write_bytes_atomic(directory / "project.json", _project_json(info))
    tables: dict[str, Any] = {
        "instruments.csv": forms,
        "arms.csv": arms,
        "events.csv": events,
        "instrument_event_mapping.csv": mappings if longitudinal else None,
        "repeating_instruments.csv": repeating,
        "dags.csv": dags,
    }
    for name, rows in tables.items():
        if isinstance(rows, list) and rows and all(isinstance(row, dict) for row in rows):
            write_bytes_atomic(directory / name, _csv_bytes(_LAYOUT[name], rows))
    if isinstance(users, list) and users and all(isinstance(user, dict) for user in users):
        write_bytes_atomic(
            directory / "users.csv", _csv_bytes(USER_COLUMNS, (_user_row(u) for u in users))
        )
    try:
        return load_redcap_project(directory)
    except ProtocolError as error:
        renamed = _renamed(error, directory, {})
        raise SourceError(f"the project's design does not read as REDCap's: {renamed}") from None


def _user_row(user: Mapping[str, Any]) -> dict[str, Any]:
    """A user of REDCap's user export as a row of ``users.csv`` (form rights as form:right)."""
    row = dict(user)
    for column in ("forms", "forms_export"):
        rights = user.get(column)
        if isinstance(rights, dict):
            row[column] = ",".join(f"{form}:{right}" for form, right in rights.items())
    return row


def _dictionary_from_rows(rows: list[Any]) -> str:
    try:
        return DataDictionary.from_rows(rows, source="metadata export").to_csv_text()
    except ProtocolError as error:
        raise SourceError(f"metadata: {error}") from None


def replace_directory(staged: Path, target: Path) -> None:
    """Put the finished directory *staged* at *target*, replacing what was there."""
    if target.exists():
        aside = target.with_name(f".{target.name}.replaced")
        if aside.exists():
            shutil.rmtree(aside)
        target.rename(aside)
        staged.rename(target)
        shutil.rmtree(aside)
    else:
        staged.rename(target)
