"""Request handling: REDCap's API calls over a :class:`RecordStore`, without any HTTP.

:class:`Emulator` takes the decoded POST fields of one call and returns an :class:`Answer`
(status, content type, body). The HTTP server (:mod:`studyman.sources.emulator.server`) only
decodes requests and writes answers, so every REDCap rule lives here.

Notes
-----
Decisions where REDCap's behaviour is not pinned down by ``redcap-api.md``:

* A user whose ``forms_export`` right on a form is 0 (a blinded user and the randomisation or
  dosing form) never receives that form's fields. They are trimmed from a record export, as REDCap
  trims fields outside a user's export rights (PyCap names every field of the project in each
  export, so a blinded user's whole-project export must succeed without them). A call that asks
  only for such content (``forms=randomization``, ``fields=rand_arm``; the record-ID field aside)
  is refused as a whole with REDCap's 403 ``You do not have API Export privileges``, so that a
  client asking for the blinded forms gets an error, not an empty data set. The metadata export
  still lists every field, as REDCap's does. Export rights 2 (de-identified) and 3 (remove
  identifiers) drop the form's identifier fields (``identifier = y``).
* ``eventName`` is ignored: like REDCap's raw export, events are unique names unless
  ``rawOrLabel=label``.
* Imported values are validated against field types only with ``check_values=True`` (REDCap
  always refuses, for example, a date in the wrong format or an unknown choice code); by default
  the emulator keeps them so that the synthetic trial's planted data errors reach the checks.

Behaviour copied from the raw exports recorded from live REDCap 14 servers
(``tests/data/redcap-projects``, checked by ``tests/sources/test_conformance_projects.py``):
a CSV record export writes each line break inside a value as a space (JSON keeps it); an export
without rows is a single ``\n``; a multi-arm project is listed arm by arm; a file field shows the
document's name. Unverified choices (no fixture pins them): rows of a repeating form none of whose
fields were asked for are left out; an EAV export lists the record-ID field once per base row.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from studyman.errors import StudymanError, ValidationError
from studyman.protocol.logic import compile_logic
from studyman.protocol.redcap_project import checkbox_column
from studyman.sources.emulator.formats import (
    error_body,
    records_csv,
    to_csv,
    to_json,
    to_xml_records,
)
from studyman.sources.emulator.model import (
    USER_COLUMNS,
    USER_RIGHT_COLUMNS,
    Project,
    User,
)
from studyman.sources.emulator.store import Column, ExportOptions, RecordImportError, RecordStore

__all__ = ["FULL_RIGHTS", "Answer", "Emulator", "LogEntry", "ProjectState"]

_PROJECT_TOKEN = re.compile(r"^[0-9A-F]{32}$", re.IGNORECASE)
_SUPER_TOKEN = re.compile(r"^[0-9A-F]{64}$", re.IGNORECASE)
_ARRAY = re.compile(r"^(?P<name>[A-Za-z_]+)\[(?P<index>\d*)\]$")
_LIST_PARAMETERS = ("records", "fields", "forms", "events", "arms", "dags")

#: Rights of a full-rights API user (``--token``, or a token whose user is not in users.csv).
FULL_RIGHTS: dict[str, int] = {name: 1 for name in USER_RIGHT_COLUMNS}


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, content type and body."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LogEntry:
    """One logged call (never the token)."""

    time: datetime
    username: str
    action: str
    details: str
    record: str = ""
    content: str = ""
    status: int = 200

    def as_export(self) -> dict[str, str]:
        """The entry as REDCap's ``content=log`` row."""
        return {
            "timestamp": self.time.strftime("%Y-%m-%d %H:%M"),
            "username": self.username,
            "action": self.action,
            "details": self.details,
        }


class _RefusedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ProjectState:
    """A served project: its model, record store, users and log."""

    project: Project
    store: RecordStore
    log: list[LogEntry] = field(default_factory=list)

    def user(self, username: str) -> User:
        for user in self.project.users:
            if user.username == username:
                return user
        return User(username=username, rights=FULL_RIGHTS)


def _flag(value: str | None) -> bool:
    return value is not None and (value == "1" or value.strip().lower() == "true")


def _parse_time(value: str, name: str) -> datetime:
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value.strip(), pattern)
        except ValueError:
            continue
    raise _RefusedError(
        400, f'The value of the parameter "{name}" is not a valid date/time ({value}).'
    )


def parse_parameters(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Split decoded POST pairs into scalar parameters and list parameters.

    Lists travel as indexed keys (``fields[0]=a``, PyCap), ``fields[]=a``, or a comma list
    (``fields=a,b``, REDCapR); all three are accepted for records, fields, forms, events, arms
    and dags.
    """
    scalars: dict[str, str] = {}
    indexed: dict[str, list[tuple[int, int, str]]] = {}
    for order, (key, value) in enumerate(pairs):
        match = _ARRAY.match(key)
        if match:
            index = int(match.group("index")) if match.group("index") else order
            indexed.setdefault(match.group("name"), []).append((index, order, value))
        else:
            scalars[key] = value
    lists: dict[str, list[str]] = {}
    for name in _LIST_PARAMETERS:
        if name in indexed:
            lists[name] = [v for _, _, v in sorted(indexed[name])]
        elif name in scalars and scalars[name].strip():
            lists[name] = [part.strip() for part in scalars[name].split(",") if part.strip()]
    for name, values in indexed.items():
        if name not in lists:
            lists[name] = [v for _, _, v in sorted(values)]
    return scalars, lists


class Emulator:
    """REDCap's API for one or more projects, keyed by token.

    Parameters
    ----------
    project
        The project served.
    tokens
        Extra ``token → username`` pairs (added to the project's own ``api_tokens.csv``); a
        username absent from the project's users gets full rights.
    super_tokens
        Super API tokens (64 hex characters) allowed to create projects (``content=project``
        with ``odm``).
    clock
        "Now", injected for tests.
    odm_reader
        Turns ODM XML text into a :class:`Project` (for project creation).
    check_values
        Refuse imported values REDCap would refuse (invalid codes, dates not in ISO form,
        non-numbers), with REDCap's error lines. Off by default so that the synthetic trial's
        planted data errors can be loaded.
    """

    def __init__(
        self,
        project: Project,
        *,
        tokens: Mapping[str, str] | None = None,
        super_tokens: Sequence[str] = (),
        clock: Callable[[], datetime] = datetime.now,
        odm_reader: Callable[[str], Project] | None = None,
        check_values: bool = False,
    ) -> None:
        self._clock = clock
        self._check_values = check_values
        self._lock = threading.Lock()
        self._odm_reader = odm_reader
        self.state = ProjectState(project, RecordStore(project, clock))
        self._tokens: dict[str, tuple[ProjectState, str]] = {}
        for token, username in {**project.tokens, **(tokens or {})}.items():
            self._tokens[token.upper()] = (self.state, username)
        self._super_tokens = {t.upper() for t in super_tokens}
        self.server_log: list[LogEntry] = []

    @property
    def store(self) -> RecordStore:
        """The record store of the first project."""
        return self.state.store

    def add_token(self, token: str, username: str, state: ProjectState | None = None) -> None:
        """Let *token* call as *username* (full rights unless the project lists the user)."""
        if not _PROJECT_TOKEN.match(token):
            raise StudymanError("an API token must be 32 hexadecimal characters")
        with self._lock:
            self._tokens[token.upper()] = (state or self.state, username)

    def projects(self) -> list[ProjectState]:
        """Every project served (the first, then those created through the API)."""
        with self._lock:
            seen: list[ProjectState] = []
            for state, _ in self._tokens.values():
                if all(state is not s for s in seen):
                    seen.append(state)
            if all(self.state is not s for s in seen):
                seen.insert(0, self.state)
            return seen

    # ------------------------------------------------------------------ entry point
    def handle(self, pairs: Sequence[tuple[str, str]]) -> Answer:
        """Answer one API call given its decoded POST fields."""
        scalars, lists = parse_parameters(pairs)
        fmt = scalars.get("returnFormat") or scalars.get("format") or "xml"
        if fmt not in ("json", "csv", "xml"):
            fmt = "xml"
        token = scalars.get("token", "").strip().upper()
        content = scalars.get("content", "")
        with self._lock:
            owner = self._tokens.get(token)
            is_super = token in self._super_tokens
        state: ProjectState | None = owner[0] if owner else None
        username = owner[1] if owner else ("(super token)" if is_super else "(unknown token)")
        try:
            # A super token creates projects (content=project with data/odm); REDCap answers
            # the new project's token as plain text.
            if is_super and content == "project" and ("odm" in scalars or "data" in scalars):
                answer = self._create_project(scalars)
                self._log(None, username, "Create project (API)", content, "", 200)
                return answer
            if state is None:
                raise _RefusedError(403, "You do not have permissions to use the API")
            answer, record_actions = self._dispatch(
                state, state.user(username), content, scalars, lists, fmt
            )
        except _RefusedError as refused:
            body, content_type = error_body(refused.message, fmt)
            self._log(
                state,
                username,
                "API request refused",
                content,
                _details(scalars, lists, refused.message),
                refused.status,
            )
            return Answer(refused.status, content_type, body.encode("utf-8"))
        except RecordImportError as refusal:
            body, content_type = error_body(refusal.message, fmt)
            self._log(
                state,
                username,
                "API request refused",
                content,
                _details(scalars, lists, refusal.message),
                400,
            )
            return Answer(400, content_type, body.encode("utf-8"))
        if record_actions:
            for action, record in record_actions:
                self._log(
                    state,
                    username,
                    action,
                    content,
                    _details(scalars, lists),
                    answer.status,
                    record,
                )
        else:
            self._log(
                state,
                username,
                _action(content, scalars),
                content,
                _details(scalars, lists),
                answer.status,
            )
        return answer

    def _log(
        self,
        state: ProjectState | None,
        username: str,
        action: str,
        content: str,
        details: str,
        status: int,
        record: str = "",
    ) -> None:
        entry = LogEntry(self._clock(), username, action, details, record, content, status)
        with self._lock:
            self.server_log.append(entry)
            if state is not None:
                state.log.append(entry)

    # ------------------------------------------------------------------ dispatch
    def _dispatch(
        self,
        state: ProjectState,
        user: User,
        content: str,
        scalars: dict[str, str],
        lists: dict[str, list[str]],
        fmt: str,
    ) -> tuple[Answer, list[tuple[str, str]]]:
        project = state.project
        store = state.store
        action = scalars.get("action", "")
        if content == "record" and action == "delete":
            return self._delete(state, user, scalars, lists, fmt)
        if content == "record" and (
            action == "import" or ("data" in scalars and action != "export")
        ):
            return self._import(state, user, scalars, fmt)
        if user.right("api_export") != 1:
            raise _RefusedError(403, "You do not have API Export privileges")
        if content == "version":
            return Answer(200, "text/plain; charset=utf-8", project.redcap_version.encode()), []
        if content == "record":
            return self._export_records(state, user, scalars, lists, fmt), []
        rows: list[dict[str, object]]
        if content == "metadata":
            rows = [dict(f.as_metadata()) for f in project.fields]
            forms = lists.get("forms")
            fields = lists.get("fields")
            if fields:
                _check_known("fields", fields, {f.field_name for f in project.fields})
            if forms:
                _check_known("forms", forms, set(store.forms))
            if fields or forms:
                rows = [
                    r
                    for r in rows
                    if (fields and r["field_name"] in fields) or (forms and r["form_name"] in forms)
                ]
            return _answer(rows, fmt, list(rows[0]) if rows else []), []
        if content == "project":
            info = dict(project.info)
            return _answer_one(info, fmt), []
        if content == "exportFieldNames":
            wanted = scalars.get("field", "")
            rows = []
            last_of_form = {f.form_name: f.field_name for f in project.fields}
            for f in project.fields:
                if f.field_type == "checkbox":
                    for code, _ in f.choices:
                        rows.append(
                            {
                                "original_field_name": f.field_name,
                                "choice_value": code,
                                "export_field_name": checkbox_column(f.field_name, code),
                            }
                        )
                elif f.field_type not in ("descriptive", "file"):
                    rows.append(
                        {
                            "original_field_name": f.field_name,
                            "choice_value": "",
                            "export_field_name": f.field_name,
                        }
                    )
                if last_of_form[f.form_name] == f.field_name:
                    rows.append(
                        {
                            "original_field_name": f"{f.form_name}_complete",
                            "choice_value": "",
                            "export_field_name": f"{f.form_name}_complete",
                        }
                    )
            if wanted:
                rows = [r for r in rows if r["original_field_name"] == wanted]
                if not rows:
                    raise _RefusedError(
                        400,
                        'The following values in the parameter "field" are not valid: '
                        f"'{wanted}'",
                    )
            return _answer(
                rows, fmt, ["original_field_name", "choice_value", "export_field_name"]
            ), []
        if content == "instrument":
            rows = [
                {"instrument_name": i.instrument_name, "instrument_label": i.instrument_label}
                for i in project.instruments
            ]
            return _answer(rows, fmt, ["instrument_name", "instrument_label"]), []
        if content in ("arm", "event", "formEventMapping"):
            if not project.is_longitudinal:
                what = {
                    "arm": "arms",
                    "event": "events",
                    "formEventMapping": "form/event mappings",
                }[content]
                raise _RefusedError(400, f"You cannot export {what} for classic projects")
            arms = lists.get("arms")
            wanted_arms = {int(a) for a in arms if a.strip().isdigit()} if arms else None
            if content == "arm":
                rows = [
                    {"arm_num": a.arm_num, "name": a.name}
                    for a in project.arms
                    if wanted_arms is None or a.arm_num in wanted_arms
                ]
                return _answer(rows, fmt, ["arm_num", "name"]), []
            if content == "event":
                rows = [
                    {
                        "event_name": e.event_name,
                        "arm_num": e.arm_num,
                        "unique_event_name": e.unique_event_name,
                        "custom_event_label": e.custom_event_label,
                        "event_id": e.event_id,
                    }
                    for e in project.events
                    if wanted_arms is None or e.arm_num in wanted_arms
                ]
                return _answer(
                    rows,
                    fmt,
                    [
                        "event_name",
                        "arm_num",
                        "unique_event_name",
                        "custom_event_label",
                        "event_id",
                    ],
                ), []
            rows = [
                {"arm_num": arm, "unique_event_name": event, "form": form}
                for arm, event, form in project.mappings
                if wanted_arms is None or arm in wanted_arms
            ]
            return _answer(rows, fmt, ["arm_num", "unique_event_name", "form"]), []
        if content == "repeatingFormsEvents":
            rows_r: list[dict[str, object]] = []
            for setting in project.repeating:
                row: dict[str, object] = {}
                if project.is_longitudinal:
                    row["event_name"] = setting.event_name
                row["form_name"] = setting.form_name
                row["custom_form_label"] = setting.custom_form_label
                rows_r.append(row)
            header = (["event_name"] if project.is_longitudinal else []) + [
                "form_name",
                "custom_form_label",
            ]
            return _answer(rows_r, fmt, header), []
        if content == "dag":
            rows = [
                {
                    "data_access_group_name": d.data_access_group_name,
                    "unique_group_name": d.unique_group_name,
                    "data_access_group_id": d.data_access_group_id,
                }
                for d in project.dags
            ]
            return _answer(
                rows, fmt, ["data_access_group_name", "unique_group_name", "data_access_group_id"]
            ), []
        if content == "user":
            if user.right("user_rights") != 1:
                raise _RefusedError(403, "You do not have permissions to use the API")
            return _answer(
                [_user_row(u, project, fmt) for u in project.users], fmt, list(USER_COLUMNS)
            ), []
        if content == "log":
            if user.right("logging") != 1:
                raise _RefusedError(403, "You do not have permissions to use the API")
            return self._export_log(state, scalars, fmt), []
        if content == "generateNextRecordName":
            numbers = [int(r) for r in store.record_ids() if r.isdigit()]
            return Answer(
                200, "text/plain; charset=utf-8", str(max(numbers, default=0) + 1).encode()
            ), []
        raise _RefusedError(400, 'The value of the parameter "content" is not valid')

    # ------------------------------------------------------------------ records
    def _columns_for(
        self, state: ProjectState, user: User, lists: dict[str, list[str]]
    ) -> tuple[tuple[Column, ...], bool]:
        store = state.store
        fields = lists.get("fields")
        forms = lists.get("forms")
        field_names = {f.field_name for f in state.project.fields}
        extra = {c.name for c in store.columns if c.kind in ("complete", "timestamp")}
        if fields:
            _check_known("fields", fields, field_names | extra)
        if forms:
            _check_known("forms", forms, set(store.forms))
        refused_forms = {form for form in store.forms if not user.can_export_form(form)}
        if fields or forms:
            wanted = set(fields or [])
            wanted_forms = set(forms or [])
            # Requested content outside the user's export rights is trimmed, as REDCap does
            # (PyCap always names every field, so a blinded user's full export must work);
            # a request left with nothing the user may export is refused (see module Notes).
            allowed = [
                name
                for name in (fields or [])
                if name != store.record_id_field
                and (
                    store.fields[name].form_name
                    if name in store.fields
                    else store.column_by_name[name].form
                )
                not in refused_forms
            ] + [form for form in (forms or []) if form not in refused_forms]
            named_other = [n for n in (fields or []) if n != store.record_id_field] + list(
                forms or []
            )
            if named_other and not allowed:
                raise _RefusedError(403, "You do not have API Export privileges")
            columns = tuple(
                c
                for c in store.columns
                if c.base in wanted or c.name in wanted or c.form in wanted_forms
            )
            # A survey form's timestamp comes with any of the form's fields.
            forms_touched = {c.form for c in columns}
            chosen = {c.name for c in columns}
            columns = tuple(
                c
                for c in store.columns
                if c.name in chosen or (c.kind == "timestamp" and c.form in forms_touched)
            )
            if not columns:
                raise _RefusedError(
                    400,
                    'The following values in the parameter "fields" are not valid: '
                    + ", ".join(f"'{n}'" for n in (fields or [])),
                )
            include_identity = (
                store.record_id_field in wanted
                or store.fields[store.record_id_field].form_name in wanted_forms
            )
        else:
            columns = tuple(store.columns)
            include_identity = True
        deidentified = {form for form in store.forms if user.forms_export.get(form, 1) in (2, 3)}
        columns = tuple(
            c
            for c in columns
            if c.form not in refused_forms
            and not (
                c.form in deidentified
                and c.field is not None
                and c.field.identifier.strip().lower() == "y"
                and c.name != store.record_id_field
            )
        )
        return columns, include_identity

    def _export_records(
        self,
        state: ProjectState,
        user: User,
        scalars: dict[str, str],
        lists: dict[str, list[str]],
        fmt: str,
    ) -> Answer:
        store = state.store
        columns, include_identity = self._columns_for(state, user, lists)
        events = lists.get("events")
        if events:
            if not store.longitudinal:
                events = None
            else:
                _check_known("events", events, set(store.events))
        record_type = scalars.get("type", "flat")
        if record_type not in ("flat", "eav"):
            raise _RefusedError(400, 'The value of the parameter "type" is not valid')
        filter_logic = scalars.get("filterLogic", "").strip()
        row_filter = None
        if filter_logic:
            try:
                row_filter = compile_logic(filter_logic)
            except ValidationError as error:
                raise _RefusedError(
                    400, f"The filterLogic parameter is not valid: {error}"
                ) from None
        dag = user.data_access_group or None
        options = ExportOptions(
            columns=columns,
            include_identity=include_identity,
            records=frozenset(lists["records"]) if lists.get("records") else None,
            events=frozenset(events) if events else None,
            raw_labels=scalars.get("rawOrLabel", "raw") == "label",
            label_headers=scalars.get("rawOrLabelHeaders", "raw") == "label",
            export_dags=_flag(scalars.get("exportDataAccessGroups")),
            survey_fields=_flag(scalars.get("exportSurveyFields")),
            blank_gray_status=_flag(scalars.get("exportBlankForGrayFormStatus")),
            checkbox_labels=_flag(scalars.get("exportCheckboxLabel")),
            decimal=scalars.get("decimalCharacter", "")
            if scalars.get("decimalCharacter", "") in (",", ".")
            else "",
            date_begin=_parse_time(scalars["dateRangeBegin"], "dateRangeBegin")
            if scalars.get("dateRangeBegin")
            else None,
            date_end=_parse_time(scalars["dateRangeEnd"], "dateRangeEnd")
            if scalars.get("dateRangeEnd")
            else None,
            dag=dag,
            row_filter=row_filter,
        )
        if record_type == "eav":
            rows = store.export_eav(options)
            header = ["record"]
            if store.longitudinal:
                header.append("redcap_event_name")
            if store.repeating_forms or store.repeating_events:
                header += ["redcap_repeat_instrument", "redcap_repeat_instance"]
            header += ["field_name", "value"]
            if fmt == "csv":
                text = records_csv(header, [[row[h] for h in header] for row in rows])
                return Answer(200, "text/csv; charset=utf-8", text.encode("utf-8"))
            return _answer(rows, fmt, header, xml_root="records")
        if fmt == "csv":
            header, rows_flat = store.export_flat_rows(options)
            shown = _header_labels(store, header) if options.label_headers else header
            text = records_csv(shown, rows_flat)
            return Answer(200, "text/csv; charset=utf-8", text.encode("utf-8"))
        header, flat = store.export_flat(options)
        return _answer(flat, fmt, header, xml_root="records")

    def _import(
        self, state: ProjectState, user: User, scalars: dict[str, str], fmt: str
    ) -> tuple[Answer, list[tuple[str, str]]]:
        if user.right("api_import") != 1:
            raise _RefusedError(403, "You do not have API Import/Update privileges")
        data = scalars.get("data", "")
        data_format = scalars.get("format", "xml")
        record_type = scalars.get("type", "flat")
        if record_type not in ("flat", "eav"):
            raise _RefusedError(400, 'The value of the parameter "type" is not valid')
        rows: list[dict[str, object]]
        if data_format == "json":
            try:
                parsed = json.loads(data)
            except json.JSONDecodeError as error:
                raise _RefusedError(
                    400, f"The data being imported is not formatted correctly (JSON: {error.msg})."
                ) from None
            if isinstance(parsed, dict):
                parsed = [parsed]
            if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
                raise _RefusedError(
                    400,
                    "The data being imported is not formatted correctly "
                    "(expected a JSON list of objects).",
                )
            rows = parsed
        elif data_format == "csv":
            reader = csv.DictReader(io.StringIO(data.lstrip("\ufeff"), newline=""))
            rows = [dict(r) for r in reader]
            if any(None in r for r in rows):
                raise _RefusedError(
                    400,
                    "The data being imported is not formatted correctly "
                    "(a CSV row has more cells than the header).",
                )
        else:
            raise _RefusedError(400, f"The emulator imports json or csv data, not {data_format}.")
        store = state.store
        if record_type == "eav":
            rows = _eav_to_flat(rows, store)
        date_format = scalars.get("dateFormat", "YMD").upper()
        if date_format in ("DMY", "MDY"):
            rows = [_to_ymd(row, store, date_format) for row in rows]
        before = set(store.record_ids())
        renamed: dict[str, str] = {}
        if _flag(scalars.get("forceAutoNumber")):
            # REDCap gives each imported record ID the next free number (rows of one ID stay
            # together); returnContent=auto_ids answers "new,old" pairs.
            taken = [int(r) for r in before if r.isdigit()]
            next_id = max(taken, default=0) + 1
            for row in rows:
                old_id = str(row.get(store.record_id_field, "") or "")
                if old_id not in renamed:
                    renamed[old_id] = str(next_id)
                    next_id += 1
                row[store.record_id_field] = renamed[old_id]
        ids = store.import_rows(
            rows,
            overwrite=scalars.get("overwriteBehavior", "normal") == "overwrite",
            dag=user.data_access_group or None,
            check_values=self._check_values,
        )
        actions = [
            ("Create record (API)" if r not in before else "Update record (API)", r) for r in ids
        ]
        return_content = scalars.get("returnContent", "count")
        result: object
        if return_content in ("ids", "auto_ids"):
            if return_content == "auto_ids":
                old_of = {new: old for old, new in renamed.items()}
                ids = [f"{i},{old_of.get(i, i)}" for i in ids]
            result = ids
            if fmt == "csv":
                return Answer(
                    200,
                    "text/csv; charset=utf-8",
                    ("id\n" + "".join(f"{i}\n" for i in ids)).encode(),
                ), actions
        else:
            result = {"count": len(ids)}
            if fmt == "csv":
                return Answer(
                    200, "text/csv; charset=utf-8", f"count\n{len(ids)}\n".encode()
                ), actions
        if fmt == "xml":
            return Answer(
                200,
                "text/xml; charset=utf-8",
                to_xml_records([{"count": len(ids)}], "ids").encode(),
            ), actions
        return Answer(200, "application/json; charset=utf-8", to_json(result).encode()), actions

    def _delete(
        self,
        state: ProjectState,
        user: User,
        scalars: dict[str, str],
        lists: dict[str, list[str]],
        fmt: str,
    ) -> tuple[Answer, list[tuple[str, str]]]:
        if user.right("api_import") != 1:
            raise _RefusedError(403, "You do not have API Import/Update privileges")
        if user.right("record_delete") != 1:
            raise _RefusedError(403, "You do not have Delete Record privileges")
        records = lists.get("records") or []
        if not records:
            raise _RefusedError(400, "You must specify the records parameter")
        arm = scalars.get("arm", "").strip()
        instance = scalars.get("repeat_instance", "").strip()
        event = scalars.get("event", "").strip() or None
        instrument = scalars.get("instrument", "").strip() or None
        if event is not None and event not in state.store.event_index:
            raise _RefusedError(400, f"The event '{event}' is not valid.")
        if instrument is not None and instrument not in state.store.form_index:
            raise _RefusedError(400, f"The instrument '{instrument}' is not valid.")
        count = state.store.delete(
            records,
            dag=user.data_access_group or None,
            arm=int(arm) if arm.isdigit() else None,
            event=event,
            instrument=instrument,
            instance=int(instance) if instance.isdigit() else None,
        )
        return Answer(200, "text/plain; charset=utf-8", str(count).encode()), [
            ("Delete record (API)", r) for r in records
        ]

    def _export_log(self, state: ProjectState, scalars: dict[str, str], fmt: str) -> Answer:
        with self._lock:
            entries = list(state.log)
        logtype = scalars.get("logtype", "")
        wanted_user = scalars.get("user", "")
        wanted_record = scalars.get("record", "")
        begin = _parse_time(scalars["beginTime"], "beginTime") if scalars.get("beginTime") else None
        end = _parse_time(scalars["endTime"], "endTime") if scalars.get("endTime") else None
        kinds = {
            "export": ("Data export",),
            "record": ("Create record", "Update record", "Delete record"),
            "record_add": ("Create record",),
            "record_edit": ("Update record",),
            "record_delete": ("Delete record",),
            "manage": ("Create project",),
        }
        rows = []
        for entry in reversed(entries):
            if logtype and not entry.action.startswith(kinds.get(logtype, (logtype,))):
                continue
            if wanted_user and entry.username != wanted_user:
                continue
            if wanted_record and entry.record != wanted_record:
                continue
            if begin and entry.time < begin:
                continue
            if end and entry.time > end:
                continue
            rows.append(entry.as_export())
        return _answer(rows, fmt, ["timestamp", "username", "action", "details"])

    # ------------------------------------------------------------------ projects
    def _create_project(self, scalars: dict[str, str]) -> Answer:
        if self._odm_reader is None or not scalars.get("odm", "").strip():
            raise _RefusedError(400, "The emulator creates projects from an odm parameter only.")
        try:
            project = self._odm_reader(scalars["odm"])
        except StudymanError as error:
            raise _RefusedError(400, f"The ODM file could not be read: {error}") from None
        settings: dict[str, object] = {}
        if scalars.get("data"):
            try:
                parsed = json.loads(scalars["data"])
            except json.JSONDecodeError:
                raise _RefusedError(
                    400, "The data being imported is not formatted correctly."
                ) from None
            if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
                settings = parsed[0]
        info = {**project.info, **{k: v for k, v in settings.items() if k in project.info}}
        with self._lock:
            info["project_id"] = 1 + len(
                {id(s) for s, _ in self._tokens.values()} | {id(self.state)}
            )
        project = replace(project, info=info, tokens={})
        state = ProjectState(project, RecordStore(project, self._clock))
        token = secrets.token_hex(16).upper()
        self.add_token(token, "super_user", state)
        return Answer(200, "text/plain; charset=utf-8", token.encode())


def _eav_to_flat(
    rows: Sequence[Mapping[str, object]], store: RecordStore
) -> list[dict[str, object]]:
    """EAV rows (``record, [redcap_event_name, …], field_name, value``) as flat rows.

    A checkbox row names the base field and one checked code, as in an EAV export.
    """
    flat: dict[tuple[str, ...], dict[str, object]] = {}
    for number, row in enumerate(rows, start=1):
        if "record" not in row or "field_name" not in row:
            raise _RefusedError(
                400, f"EAV row {number} needs the columns record, field_name and value."
            )
        identity = {
            name: str(row.get(name, "") or "")
            for name in ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
            if name in row
        }
        record = str(row["record"])
        key = (record, *identity.values())
        target = flat.setdefault(key, {store.record_id_field: record, **identity})
        name = str(row["field_name"])
        value = "" if row.get("value") is None else str(row.get("value"))
        field = store.fields.get(name)
        if field is not None and field.field_type == "checkbox":
            target[checkbox_column(name, value)] = "1"
        elif name != store.record_id_field:
            target[name] = value
    return list(flat.values())


_DATE_PART = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(.*)$")


def _to_ymd(row: Mapping[str, object], store: RecordStore, order: str) -> dict[str, object]:
    """Turn ``dateFormat=DMY``/``MDY`` dates of date and datetime fields into REDCap's Y-M-D."""
    out = dict(row)
    for name, value in row.items():
        column = store.column_by_name.get(name)
        field = column.field if column is not None else None
        if field is None or not isinstance(value, str):
            continue
        if not field.text_validation_type_or_show_slider_number.startswith(("date", "datetime")):
            continue
        match = _DATE_PART.match(value.strip())
        if match:
            first, second, year, rest = match.groups()
            day, month = (first, second) if order == "DMY" else (second, first)
            out[name] = f"{year}-{int(month):02d}-{int(day):02d}{rest}"
    return out


def _check_known(name: str, values: Sequence[str], known: set[str]) -> None:
    bad = [v for v in values if v not in known]
    if bad:
        raise _RefusedError(
            400,
            f'The following values in the parameter "{name}" are not valid: '
            + ", ".join(f"'{b}'" for b in bad),
        )


def _answer(
    rows: Sequence[Mapping[str, object]], fmt: str, header: Sequence[str], xml_root: str = "records"
) -> Answer:
    if fmt == "json":
        return Answer(200, "application/json; charset=utf-8", to_json(list(rows)).encode("utf-8"))
    if fmt == "csv":
        return Answer(200, "text/csv; charset=utf-8", to_csv(header, rows).encode("utf-8"))
    return Answer(200, "text/xml; charset=utf-8", to_xml_records(rows, xml_root).encode("utf-8"))


def _answer_one(row: Mapping[str, object], fmt: str) -> Answer:
    if fmt == "json":
        return Answer(200, "application/json; charset=utf-8", to_json(dict(row)).encode("utf-8"))
    if fmt == "csv":
        return Answer(200, "text/csv; charset=utf-8", to_csv(list(row), [row]).encode("utf-8"))
    return Answer(
        200, "text/xml; charset=utf-8", to_xml_records([row], "project", "item").encode("utf-8")
    )


_TAG = re.compile(r"<[^>]+>")


def _header_labels(store: RecordStore, header: Sequence[str]) -> list[str]:
    fixed = {
        "redcap_event_name": "Event Name",
        "redcap_repeat_instrument": "Repeat Instrument",
        "redcap_repeat_instance": "Repeat Instance",
        "redcap_data_access_group": "Data Access Group",
        "redcap_survey_identifier": "Survey Identifier",
    }
    labels = []
    for name in header:
        if name in fixed:
            labels.append(fixed[name])
            continue
        column = store.column_by_name.get(name)
        if column is None or column.kind == "complete":
            labels.append("Complete?")
        elif column.kind == "timestamp":
            labels.append("Survey Timestamp")
        elif column.field is None:
            labels.append(name)
        elif column.kind == "checkbox":
            choice = dict(column.field.choices).get(column.code, column.code)
            labels.append(f"{_TAG.sub('', column.field.field_label).strip()} (choice={choice})")
        else:
            labels.append(_TAG.sub("", column.field.field_label).strip())
    return labels


def _user_row(user: User, project: Project, fmt: str) -> dict[str, object]:
    row: dict[str, object] = {
        "username": user.username,
        "email": user.email,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "expiration": user.expiration,
        "data_access_group": user.data_access_group,
    }
    for name in USER_RIGHT_COLUMNS:
        row[name] = user.right(name)
    forms = {
        i.instrument_name: int(user.forms.get(i.instrument_name, 1)) for i in project.instruments
    }
    export = {
        i.instrument_name: int(user.forms_export.get(i.instrument_name, 1))
        for i in project.instruments
    }
    if fmt == "json":
        row["forms"] = forms
        row["forms_export"] = export
    else:
        row["forms"] = ",".join(f"{k}:{v}" for k, v in forms.items())
        row["forms_export"] = ",".join(f"{k}:{v}" for k, v in export.items())
    return row


def _action(content: str, scalars: Mapping[str, str]) -> str:
    if content == "record":
        return "Data export (API)"
    return f"Export {content or '(no content)'} (API)"


def _details(scalars: Mapping[str, str], lists: Mapping[str, list[str]], error: str = "") -> str:
    # Never the token; the data of an import is summarised by size.
    parts = []
    for key in sorted(scalars):
        if key == "token":
            continue
        value = scalars[key]
        if key in ("data", "odm"):
            value = f"<{len(value)} characters>"
        elif len(value) > 200:
            value = value[:200] + "…"
        parts.append(f"{key}={value}")
    for key in sorted(lists):
        values = lists[key]
        shown = ",".join(values[:20]) + (f",… ({len(values)} in all)" if len(values) > 20 else "")
        parts.append(f"{key}={shown}")
    text = "; ".join(parts)
    return f"{text}; error: {error}" if error else text
