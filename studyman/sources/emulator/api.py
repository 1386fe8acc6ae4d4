"""Request handling: REDCap's API calls over a served project's state, without any HTTP.

:class:`Emulator` takes the decoded POST fields of one call and returns an :class:`Answer`
(status, content type, body). The HTTP server (:mod:`studyman.sources.emulator.server`) only
decodes requests and writes answers, so every REDCap rule lives here (records) and in
:mod:`~studyman.sources.emulator.calls` (design, users, groups, files, PDF, surveys).

Notes
-----
Rights (every call):

* A token belongs to a user of its project. A token whose user is not (or no longer) in the
  project is refused with REDCap's 403 ``You do not have permissions to use the API`` (fail
  closed). ``tokens=`` passed to the emulator (``--token``) are the one exception: each names a
  user that the emulator adds with full rights when the project does not list it.
* A user whose ``forms_export`` right on a form is 0 (a blinded user and the randomisation or
  dosing form) never receives that form's fields. They are trimmed from a record export, as REDCap
  trims fields outside a user's export rights (PyCap names every field of the project in each
  export, so a blinded user's whole-project export must succeed without them). A call that asks
  only for such content (``forms=randomization``, ``fields=rand_arm``; the record-ID field aside)
  is refused as a whole with REDCap's 403 ``You do not have API Export privileges``, so that a
  client asking for the blinded forms gets an error, not an empty data set. A ``filterLogic``
  naming a field the caller may not export (or an identifier field of a form exported
  de-identified) is refused the same way: the filter would reveal the field's values through
  which records it keeps. The metadata export still lists every field, as REDCap's does. Export
  rights 2 (de-identified) and 3 (remove identifiers) drop the form's identifier fields
  (``identifier = y``).
* A record import needs edit rights (data entry 1 or 3) on the form of every field it names, and
  Create Records for a record that does not exist; a user in a data access group imports into
  that group only.
* Malformed requests (an unreadable number, logic or JSON nested too deeply, a document type
  declaration in XML) are answered 400 with REDCap's error body; they never raise.

Other choices where REDCap's behaviour is not pinned down:

* ``eventName`` is ignored: like REDCap's raw export, events are unique names unless
  ``rawOrLabel=label``.
* Imported values are validated against field types only with ``check_values=True`` (REDCap
  always refuses, for example, a date in the wrong format or an unknown choice code); by default
  the emulator keeps them so that the synthetic trial's planted data errors reach the checks.
* A project created through the API from an ODM file keeps no values of calculated fields (REDCap
  leaves them to its next recalculation): PyCap's own integration suite counts 30 EAV values for
  its simple project, whose ODM holds 34, four of them calculations.

Behaviour copied from the raw exports recorded from live REDCap 14 servers
(``tests/data/redcap-projects``, checked by ``tests/sources/test_conformance_projects.py``):
a CSV record export writes each line break inside a value as a space (JSON keeps it); an export
without rows is a single ``\n``; a multi-arm project is listed arm by arm; a file field shows the
document's name. Unverified choices (no fixture pins them): rows of a repeating form none of whose
fields were asked for are left out; an EAV export lists the record-ID field once per base row.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from studyman.errors import StudymanError, ValidationError
from studyman.protocol.logic import LogicExpression, compile_logic
from studyman.protocol.redcap_project import checkbox_column
from studyman.sources.emulator.answers import (
    Answer,
    RefusedError,
    answer_one,
    answer_rows,
    check_known,
    count_answer,
    text_answer,
)
from studyman.sources.emulator.calls import HANDLERS, Call, Upload
from studyman.sources.emulator.formats import (
    ImportFormatError,
    error_body,
    parse_import_rows,
    records_csv,
    to_json,
)
from studyman.sources.emulator.model import (
    EMULATOR_REDCAP_VERSION,
    Arm,
    Event,
    Field,
    Instrument,
    Project,
    User,
)
from studyman.sources.emulator.project_dir import default_project_info
from studyman.sources.emulator.state import (
    FULL_RIGHTS,
    LogEntry,
    ProjectState,
    full_rights_user,
)
from studyman.sources.emulator.store import Column, ExportOptions, RecordImportError, RecordStore

__all__ = ["FULL_RIGHTS", "Answer", "Emulator", "LogEntry", "ProjectState", "parse_parameters"]

_PROJECT_TOKEN = re.compile(r"^[0-9A-F]{32}$", re.IGNORECASE)
_SUPER_TOKEN = re.compile(r"^[0-9A-F]{64}$", re.IGNORECASE)
_ARRAY = re.compile(r"^(?P<name>[A-Za-z_]+)\[(?P<index>\d{0,9})\]$")
_LIST_PARAMETERS = ("records", "fields", "forms", "events", "arms", "dags", "users", "roles")
#: A filterLogic longer than this, or nested deeper, is refused before it is parsed.
_MAX_LOGIC_LENGTH = 100_000
_MAX_LOGIC_NESTING = 100


#: The actions each content accepts (a call without ``action`` is an import when it has
#: ``data`` and the content takes imports, else an export). REDCap contents the emulator does
#: not implement are answered 400 naming them, never with another call's answer.
def _actions() -> dict[str, frozenset[str]]:
    exports = (
        "record",
        "metadata",
        "project",
        "version",
        "exportFieldNames",
        "instrument",
        "generateNextRecordName",
        "log",
        "arm",
        "event",
        "formEventMapping",
        "repeatingFormsEvents",
    )
    actions: dict[str, set[str]] = {content: {"export"} for content in exports}
    actions["record"] |= {"import", "delete"}
    for content, action in HANDLERS:
        actions.setdefault(content, set()).add(action)
    return {content: frozenset(names) for content, names in actions.items()}


_ACTIONS = _actions()
_NOT_IMPLEMENTED = frozenset(
    {
        "report",
        "project_settings",
        "project_xml",
        "fieldValidation",
        "attachment",
        "appRightsCheck",
        "tableau",
        "mycap",
    }
)
_MANAGE = "Manage/Design"


def _flag(value: str | None) -> bool:
    return value is not None and (value == "1" or value.strip().lower() == "true")


def _parse_time(value: str, name: str) -> datetime:
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value.strip(), pattern)
        except ValueError:
            continue
    raise RefusedError(
        400, f'The value of the parameter "{name}" is not a valid date/time ({value[:40]}).'
    )


def parse_parameters(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Split decoded POST pairs into scalar parameters and list parameters.

    Lists travel as indexed keys (``fields[0]=a``, PyCap), ``fields[]=a``, or a comma list
    (``fields=a,b``, REDCapR); all three are accepted for records, fields, forms, events, arms,
    dags, users and roles.
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


def _resolve_action(content: str, scalars: Mapping[str, str]) -> str:
    action = scalars.get("action", "").strip()
    if action:
        return action
    if content == "record":
        return "import" if "data" in scalars else "export"
    if "data" in scalars and "import" in _ACTIONS.get(content, frozenset()):
        return "import"
    return "export"


class Emulator:
    """REDCap's API for one or more projects, keyed by token.

    Parameters
    ----------
    project
        The project served.
    tokens
        Extra ``token → username`` pairs (added to the project's own ``api_tokens.csv``); a
        username the project does not list is added as a full-rights user (a test convenience:
        ``--token``). A token of ``api_tokens.csv`` whose user is not in the project is refused.
    super_tokens
        Super API tokens (64 hex characters) allowed to create projects (``content=project``).
    clock
        "Now", injected for tests.
    odm_reader
        Turns ODM XML text into a :class:`Project` (for project creation).
    check_values
        Refuse imported values REDCap would refuse (invalid codes, dates not in ISO form,
        non-numbers), with REDCap's error lines. Off by default so that the synthetic trial's
        planted data errors can be loaded.
    storage
        The directory under which each project keeps its uploaded documents (``project-<id>/``);
        by default a private temporary directory, removed by :meth:`close`.
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
        storage: Path | None = None,
    ) -> None:
        self._clock = clock
        self._check_values = check_values
        self._lock = threading.Lock()
        self._odm_reader = odm_reader
        self._own_storage: tempfile.TemporaryDirectory[str] | None = None
        self._storage = storage
        #: The URL the server answers at (for survey links), set by the HTTP server.
        self.base_url = "http://127.0.0.1/api/"
        listed = {u.username for u in project.users}
        extra = [
            full_rights_user(name)
            for name in dict.fromkeys((tokens or {}).values())
            if name not in listed
        ]
        if extra:
            project = replace(project, users=(*project.users, *extra))
        self.state = ProjectState.create(project, self._project_storage(project), clock)
        self._tokens: dict[str, tuple[ProjectState, str]] = {}
        for token, username in {**project.tokens, **(tokens or {})}.items():
            self._tokens[token.upper()] = (self.state, username)
        self._super_tokens = {t.upper() for t in super_tokens}
        self.server_log: list[LogEntry] = []

    def _project_storage(self, project: Project) -> Path:
        if self._storage is None:
            if self._own_storage is None:
                self._own_storage = tempfile.TemporaryDirectory(prefix="redcap-emulator-")
            root = Path(self._own_storage.name)
        else:
            root = self._storage
        return root / f"project-{project.info.get('project_id', 1)}"

    def close(self) -> None:
        """Remove the private storage directory (uploaded documents), if the emulator made one."""
        own, self._own_storage = self._own_storage, None
        if own is not None:
            own.cleanup()

    @property
    def store(self) -> RecordStore:
        """The record store of the first project."""
        return self.state.store

    def add_token(self, token: str, username: str, state: ProjectState | None = None) -> None:
        """Let *token* call as *username* (added with full rights when the project lacks it)."""
        if not _PROJECT_TOKEN.match(token):
            raise StudymanError("an API token must be 32 hexadecimal characters")
        target = state or self.state
        with target.write_lock:
            if target.user(username) is None:
                target.redesign(
                    replace(
                        target.project, users=(*target.project.users, full_rights_user(username))
                    )
                )
        with self._lock:
            self._tokens[token.upper()] = (target, username)

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
    def handle(
        self, pairs: Sequence[tuple[str, str]], uploads: Mapping[str, Upload] | None = None
    ) -> Answer:
        """Answer one API call given its decoded POST fields (and multipart files)."""
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
                return self._create_project(scalars)
            user = state.user(username) if state is not None else None
            if state is None or user is None:
                raise RefusedError(403, "You do not have permissions to use the API")
            answer, record_actions = self._dispatch(
                state, user, content, scalars, lists, fmt, uploads or {}
            )
        except RefusedError as refused:
            return self._refusal(state, username, content, scalars, lists, fmt, refused)
        except RecordImportError as refusal:
            as_refused = RefusedError(400, refusal.message)
            return self._refusal(state, username, content, scalars, lists, fmt, as_refused)
        except (RecursionError, OverflowError) as error:
            # Input nested or sized beyond what the parsers take: REDCap's 400, never a crash.
            unreadable = RefusedError(
                400, f"The request could not be read ({type(error).__name__}): simplify it."
            )
            return self._refusal(state, username, content, scalars, lists, fmt, unreadable)
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
                _action(content, _resolve_action(content, scalars)),
                content,
                _details(scalars, lists),
                answer.status,
            )
        return answer

    def _refusal(
        self,
        state: ProjectState | None,
        username: str,
        content: str,
        scalars: dict[str, str],
        lists: dict[str, list[str]],
        fmt: str,
        refused: RefusedError,
    ) -> Answer:
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
        uploads: Mapping[str, Upload],
    ) -> tuple[Answer, list[tuple[str, str]]]:
        if content in _NOT_IMPLEMENTED:
            raise RefusedError(400, f"The emulator does not implement content={content}.")
        if content not in _ACTIONS:
            raise RefusedError(400, 'The value of the parameter "content" is not valid')
        action = _resolve_action(content, scalars)
        if action not in _ACTIONS[content]:
            raise RefusedError(
                400,
                f'The value of the parameter "action" ({action[:40]}) is not valid for '
                f"content={content}.",
            )
        if content == "record" and action == "delete":
            with state.write_lock:
                return self._delete(state, user, scalars, lists, fmt)
        if content == "record" and action == "import":
            with state.write_lock:
                return self._import(state, user, scalars, fmt)
        handler = HANDLERS.get((content, action))
        if handler is not None:
            call = Call(state, user, content, action, scalars, lists, fmt, uploads, self.base_url)
            return handler(call), []
        # Every other call is an export.
        if user.right("api_export") != 1:
            raise RefusedError(403, "You do not have API Export privileges")
        return self._export(state, user, content, scalars, lists, fmt), []

    def _export(
        self,
        state: ProjectState,
        user: User,
        content: str,
        scalars: dict[str, str],
        lists: dict[str, list[str]],
        fmt: str,
    ) -> Answer:
        project = state.project
        store = state.store
        if content == "version":
            return text_answer(project.redcap_version)
        if content == "record":
            return self._export_records(state, user, scalars, lists, fmt)
        rows: list[dict[str, object]]
        if content == "metadata":
            rows = [dict(f.as_metadata()) for f in project.fields]
            forms = lists.get("forms")
            fields = lists.get("fields")
            if fields:
                check_known("fields", fields, {f.field_name for f in project.fields})
            if forms:
                check_known("forms", forms, set(store.forms))
            if fields or forms:
                rows = [
                    r
                    for r in rows
                    if (fields and r["field_name"] in fields) or (forms and r["form_name"] in forms)
                ]
            return answer_rows(rows, fmt, list(rows[0]) if rows else [])
        if content == "project":
            return answer_one(dict(project.info), fmt)
        if content == "exportFieldNames":
            return self._export_field_names(project, scalars, fmt)
        if content == "instrument":
            rows = [
                {"instrument_name": i.instrument_name, "instrument_label": i.instrument_label}
                for i in project.instruments
            ]
            return answer_rows(rows, fmt, ["instrument_name", "instrument_label"])
        if content in ("arm", "event", "formEventMapping"):
            return self._export_arms_events(project, content, lists, fmt)
        if content == "repeatingFormsEvents":
            rows = []
            for setting in project.repeating:
                row: dict[str, object] = {}
                if project.is_longitudinal:
                    row["event_name"] = setting.event_name
                row["form_name"] = setting.form_name
                row["custom_form_label"] = setting.custom_form_label
                rows.append(row)
            header = (["event_name"] if project.is_longitudinal else []) + [
                "form_name",
                "custom_form_label",
            ]
            return answer_rows(rows, fmt, header)
        if content == "log":
            if user.right("logging") != 1:
                raise RefusedError(403, "You do not have permissions to use the API")
            return self._export_log(state, user, scalars, fmt)
        if content == "generateNextRecordName":
            dag = user.data_access_group or None
            if dag is None:
                numbers = [int(r) for r in store.record_ids() if r.isdigit()]
                return text_answer(str(max(numbers, default=0) + 1))
            # REDCap names a group's new records "<group id>-<n>".
            group_id = next(
                (d.data_access_group_id for d in project.dags if d.unique_group_name == dag), 0
            )
            prefix = f"{group_id}-"
            numbers = [
                int(r[len(prefix) :])
                for r in store.record_ids(dag)
                if r.startswith(prefix) and r[len(prefix) :].isdigit()
            ]
            return text_answer(f"{prefix}{max(numbers, default=0) + 1}")
        raise RefusedError(400, 'The value of the parameter "content" is not valid')

    @staticmethod
    def _export_field_names(project: Project, scalars: dict[str, str], fmt: str) -> Answer:
        wanted = scalars.get("field", "")
        rows: list[dict[str, object]] = []
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
                raise RefusedError(
                    400,
                    'The following values in the parameter "field" are not valid: '
                    f"'{wanted[:60]}'",
                )
        return answer_rows(rows, fmt, ["original_field_name", "choice_value", "export_field_name"])

    @staticmethod
    def _export_arms_events(
        project: Project, content: str, lists: dict[str, list[str]], fmt: str
    ) -> Answer:
        if not project.is_longitudinal:
            what = {
                "arm": "arms",
                "event": "events",
                "formEventMapping": "form/event mappings",
            }[content]
            raise RefusedError(400, f"You cannot export {what} for classic projects")
        arms = lists.get("arms")
        wanted_arms = (
            {int(a) for a in arms if re.fullmatch(r"\d{1,9}", a.strip())} if arms else None
        )
        if content == "arm":
            # REDCap lists an arm only once it has an event.
            with_events = {e.arm_num for e in project.events}
            rows: list[dict[str, object]] = [
                {"arm_num": a.arm_num, "name": a.name}
                for a in project.arms
                if (wanted_arms is None or a.arm_num in wanted_arms) and a.arm_num in with_events
            ]
            return answer_rows(rows, fmt, ["arm_num", "name"])
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
            return answer_rows(
                rows,
                fmt,
                ["event_name", "arm_num", "unique_event_name", "custom_event_label", "event_id"],
            )
        rows = [
            {"arm_num": arm, "unique_event_name": event, "form": form}
            for arm, event, form in project.mappings
            if wanted_arms is None or arm in wanted_arms
        ]
        return answer_rows(rows, fmt, ["arm_num", "unique_event_name", "form"])

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
            check_known("fields", fields, field_names | extra)
        if forms:
            check_known("forms", forms, set(store.forms))
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
                raise RefusedError(403, "You do not have API Export privileges")
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
                raise RefusedError(
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

    @staticmethod
    def _row_filter(state: ProjectState, user: User, logic: str) -> LogicExpression | None:
        """The compiled ``filterLogic`` (``None`` when blank), within the caller's rights.

        A filter that names a field the caller may not export (or an identifier of a form they
        export de-identified) is refused: which records it keeps would tell the field's values.
        """
        if not logic:
            return None
        if len(logic) > _MAX_LOGIC_LENGTH or _nesting(logic) > _MAX_LOGIC_NESTING:
            raise RefusedError(
                400,
                f"The filterLogic parameter is not valid: longer than {_MAX_LOGIC_LENGTH} "
                f"characters or nested deeper than {_MAX_LOGIC_NESTING} parentheses.",
            )
        try:
            compiled = compile_logic(logic)
            references = compiled.fields
        except ValidationError as error:
            raise RefusedError(400, f"The filterLogic parameter is not valid: {error}") from None
        store = state.store
        refused = []
        for reference in references:
            found = store.fields.get(reference.name)
            column = store.column_by_name.get(reference.name)
            if found is not None:
                form = found.form_name
                identifier = found.identifier.strip().lower() == "y"
            elif column is not None:  # <form>_complete, <form>_timestamp
                form, identifier = column.form, False
            else:
                continue  # an unknown name is blank in REDCap's logic: it reveals nothing
            deidentified = user.forms_export.get(form, 1) in (2, 3)
            if not user.can_export_form(form) or (deidentified and identifier):
                refused.append(reference.name)
        if refused:
            raise RefusedError(
                403,
                "You do not have API Export privileges for the field(s) in filterLogic: "
                + ", ".join(dict.fromkeys(refused)),
            )
        return compiled

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
                check_known("events", events, set(store.events))
        record_type = scalars.get("type", "flat")
        if record_type not in ("flat", "eav"):
            raise RefusedError(400, 'The value of the parameter "type" is not valid')
        row_filter = self._row_filter(state, user, scalars.get("filterLogic", "").strip())
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
            return answer_rows(rows, fmt, header, xml_root="records")
        if fmt == "csv":
            header, rows_flat = store.export_flat_rows(options)
            shown = _header_labels(store, header) if options.label_headers else header
            text = records_csv(shown, rows_flat)
            return Answer(200, "text/csv; charset=utf-8", text.encode("utf-8"))
        header, flat = store.export_flat(options)
        return answer_rows(flat, fmt, header, xml_root="records")

    def _import(
        self, state: ProjectState, user: User, scalars: dict[str, str], fmt: str
    ) -> tuple[Answer, list[tuple[str, str]]]:
        if user.right("api_import") != 1:
            raise RefusedError(403, "You do not have API Import/Update privileges")
        data = scalars.get("data", "")
        data_format = scalars.get("format", "xml")
        record_type = scalars.get("type", "flat")
        if record_type not in ("flat", "eav"):
            raise RefusedError(400, 'The value of the parameter "type" is not valid')
        if data_format not in ("json", "csv", "xml"):
            raise RefusedError(
                400, f'The value of the parameter "format" ({data_format[:20]}) is not valid.'
            )
        try:
            rows = parse_import_rows(data, data_format)
        except ImportFormatError as error:
            raise RefusedError(400, error.message) from None
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
        # Checked on the IDs as they will be written (forceAutoNumber makes every record new).
        _check_import_rights(store, user, rows, before)
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
        if return_content in ("ids", "auto_ids"):
            if return_content == "auto_ids":
                old_of = {new: old for old, new in renamed.items()}
                ids = [f"{i},{old_of.get(i, i)}" for i in ids]
            if fmt == "csv":
                body = "id\n" + "".join(f"{i}\n" for i in ids)
                return Answer(200, "text/csv; charset=utf-8", body.encode()), actions
            if fmt == "xml":
                items = "".join(f"<id>{i}</id>" for i in ids)
                body = f'<?xml version="1.0" encoding="UTF-8" ?><ids>{items}</ids>'
                return Answer(200, "text/xml; charset=utf-8", body.encode()), actions
            return Answer(200, "application/json; charset=utf-8", to_json(ids).encode()), actions
        if fmt == "json":
            body = to_json({"count": len(ids)})
            return Answer(200, "application/json; charset=utf-8", body.encode()), actions
        # REDCap: csv answers the bare count, xml <?xml …?><count>N</count>.
        return count_answer(len(ids), fmt), actions

    def _delete(
        self,
        state: ProjectState,
        user: User,
        scalars: dict[str, str],
        lists: dict[str, list[str]],
        fmt: str,
    ) -> tuple[Answer, list[tuple[str, str]]]:
        if user.right("api_import") != 1:
            raise RefusedError(403, "You do not have API Import/Update privileges")
        if user.right("record_delete") != 1:
            raise RefusedError(403, "You do not have Delete Record privileges")
        records = lists.get("records") or []
        if not records:
            raise RefusedError(400, "You must specify the records parameter")
        arm = scalars.get("arm", "").strip()
        instance = scalars.get("repeat_instance", "").strip()
        event = scalars.get("event", "").strip() or None
        instrument = scalars.get("instrument", "").strip() or None
        if event is not None and event not in state.store.event_index:
            raise RefusedError(400, f"The event '{event}' is not valid.")
        if instrument is not None and instrument not in state.store.form_index:
            raise RefusedError(400, f"The instrument '{instrument}' is not valid.")
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

    def _export_log(
        self, state: ProjectState, user: User, scalars: dict[str, str], fmt: str
    ) -> Answer:
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
            "manage": (_MANAGE,),
        }
        dag = user.data_access_group or None
        group_of = {u.username: u.data_access_group for u in state.project.users}
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
            if dag is not None and group_of.get(entry.username, "") != dag:
                continue  # a group's user sees the group's users' entries only
            rows.append(entry.as_export())
        return answer_rows(rows, fmt, ["timestamp", "username", "action", "details"])

    # ------------------------------------------------------------------ projects
    def _create_project(self, scalars: dict[str, str]) -> Answer:
        """``content=project`` with a super token: a new project; answers its token."""
        fmt = scalars.get("format", "xml")
        settings: dict[str, object] = {}
        if scalars.get("data", "").strip():
            try:
                rows = parse_import_rows(scalars["data"], fmt if fmt in ("json", "csv") else "xml")
            except ImportFormatError as error:
                raise RefusedError(400, error.message) from None
            if len(rows) != 1:
                raise RefusedError(400, "The project settings must be one item.")
            settings = rows[0]
        title = str(settings.get("project_title", "")).strip()
        purpose = str(settings.get("purpose", "")).strip()
        if not title or purpose not in ("0", "1", "2", "3", "4"):
            raise RefusedError(
                400, "The project settings need a project_title and a purpose (0 to 4)."
            )
        if scalars.get("odm", "").strip():
            if self._odm_reader is None:
                raise RefusedError(400, "The emulator cannot read ODM here.")
            try:
                project = self._odm_reader(scalars["odm"])
            except StudymanError as error:
                raise RefusedError(400, f"The ODM file could not be read: {error}") from None
            calculated = {f.field_name for f in project.fields if f.field_type == "calc"}
            records = tuple(
                {k: v for k, v in row.items() if k not in calculated} for row in project.records
            )
        else:
            project = _blank_project(
                title, longitudinal=_flag(str(settings.get("is_longitudinal", "")))
            )
            records = ()
        info = dict(project.info)
        for key, value in settings.items():
            if key in info and key not in ("project_id", "is_longitudinal"):
                current = info[key]
                text = str(value).strip()
                info[key] = int(text) if isinstance(current, int) and text.isdigit() else text
        now = self._clock()
        info["creation_time"] = now.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            info["project_id"] = 1 + len(
                {id(s) for s, _ in self._tokens.values()} | {id(self.state)}
            )
        creator = full_rights_user("super_user")
        project = replace(
            project,
            info=info,
            tokens={},
            users=(creator,),
            records=records,
            redcap_version=EMULATOR_REDCAP_VERSION,
        )
        state = ProjectState.create(project, self._project_storage(project), self._clock)
        token = secrets.token_hex(16).upper()
        with self._lock:
            self._tokens[token] = (state, creator.username)
        self._log(state, creator.username, _MANAGE, "project", "Create project (API)", 200)
        return text_answer(token)


def _eav_to_flat(
    rows: Sequence[Mapping[str, object]], store: RecordStore
) -> list[dict[str, object]]:
    """EAV rows (``record, [redcap_event_name, …], field_name, value``) as flat rows.

    A checkbox row names the base field and one checked code, as in an EAV export.
    """
    flat: dict[tuple[str, ...], dict[str, object]] = {}
    for number, row in enumerate(rows, start=1):
        if "record" not in row or "field_name" not in row:
            raise RefusedError(
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


def _action(content: str, action: str) -> str:
    if content == "record":
        return "Data export (API)"
    if action in ("import", "delete", "createFolder") or (content == "file" and action != "export"):
        if content in ("file", "fileRepository"):
            return f"Upload or delete document ({content}, API)"
        return _MANAGE
    return f"Export {content or '(no content)'} (API)"


def _nesting(text: str) -> int:
    """The deepest parenthesis or bracket nesting of *text* (no parsing, no recursion)."""
    depth = deepest = 0
    for char in text:
        if char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth = max(depth - 1, 0)
    return deepest


def _check_import_rights(
    store: RecordStore, user: User, rows: Sequence[Mapping[str, object]], existing: set[str]
) -> None:
    """Refuse an import naming a field on a form the user cannot edit, or creating a record
    without Create Records, or moving a record into another group (REDCap's 403s)."""
    not_fields = {
        store.record_id_field,
        "redcap_event_name",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "redcap_data_access_group",
        "redcap_survey_identifier",
    }
    refused: dict[str, list[str]] = {}
    for name in dict.fromkeys(str(k) for row in rows for k in row):
        column = store.column_by_name.get(name)
        if name in not_fields or column is None:
            continue
        if not user.can_edit_form(column.form):
            refused.setdefault(column.form, []).append(name)
    if refused:
        forms = "; ".join(f"{form} ({', '.join(names[:10])})" for form, names in refused.items())
        raise RefusedError(403, f"You do not have edit rights on the form(s): {forms}")
    new = {str(row.get(store.record_id_field, "") or "").strip() for row in rows} - existing - {""}
    if new and user.right("record_create") != 1:
        raise RefusedError(403, "You do not have Create Records privileges")
    dag = user.data_access_group
    if dag:
        moved = {str(row.get("redcap_data_access_group", "") or "") for row in rows} - {"", dag}
        if moved:
            raise RefusedError(
                403, "A user in a Data Access Group cannot assign records to another group."
            )


def _blank_project(title: str, *, longitudinal: bool) -> Project:
    """REDCap's new project without ODM: one instrument holding the record ID field."""
    info = default_project_info(title, longitudinal=longitudinal, repeating=False)
    form = "my_first_instrument"
    fields = (Field("record_id", form, "text", "Record ID"),)
    instruments = (Instrument(form, "My First Instrument"),)
    if not longitudinal:
        return Project(info=info, fields=fields, instruments=instruments)
    return Project(
        info=info,
        fields=fields,
        instruments=instruments,
        arms=(Arm(1, "Arm 1"),),
        events=(Event("Event 1", 1, "event_1_arm_1", "", 1),),
        mappings=((1, "event_1_arm_1", form),),
    )


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
