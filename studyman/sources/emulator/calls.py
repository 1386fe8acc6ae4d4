"""REDCap's API calls other than records: design, users and roles, groups, files, PDF, surveys.

Each handler takes one :class:`Call` (the project's state, the calling user with effective rights,
the decoded parameters) and returns an :class:`~studyman.sources.emulator.answers.Answer`, or
raises :class:`~studyman.sources.emulator.answers.RefusedError` with REDCap's status and message.
Rights are checked here, call by call, as REDCap checks them:

* exports need API Export; imports and deletes API Import/Update;
* design writes (metadata, arms, events, mappings, repeating settings) need Project Design;
  users, roles and their assignments need User Rights; groups and user-group assignments need
  Data Access Groups; the File Repository needs File Repository; the participant list needs
  Manage Survey Participants; the log needs Logging;
* a user in a data access group (DAG) sees only the group's records, users and folders, and may
  change neither the design, nor users, roles or groups (REDCap reserves these to users in no
  group);
* a file-upload field follows its form's rights: export rights to download it, edit rights
  (data entry 1 or 3) to upload or delete it.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from studyman.sources.emulator import design
from studyman.sources.emulator.answers import (
    Answer,
    RefusedError,
    answer_rows,
    count_answer,
    text_answer,
)
from studyman.sources.emulator.formats import ImportFormatError, parse_import_rows
from studyman.sources.emulator.model import USER_COLUMNS, USER_RIGHT_COLUMNS, Project, User
from studyman.sources.emulator.pdf import render_pdf
from studyman.sources.emulator.state import ProjectState
from studyman.sources.emulator.store import ExportOptions

__all__ = ["HANDLERS", "Call", "Upload", "user_row"]

_ROLE_COLUMNS = ("unique_role_name", "role_label", *USER_RIGHT_COLUMNS, "forms", "forms_export")


@dataclass(frozen=True)
class Upload:
    """A file sent in a multipart request: its name, MIME type and bytes."""

    filename: str
    mime_type: str
    data: bytes


@dataclass
class Call:
    """One API call as the handlers see it."""

    state: ProjectState
    user: User
    content: str
    action: str
    scalars: dict[str, str]
    lists: dict[str, list[str]]
    fmt: str
    uploads: Mapping[str, Upload] = field(default_factory=dict)
    base_url: str = ""

    @property
    def project(self) -> Project:
        """The project's current design."""
        return self.state.project

    @property
    def dag(self) -> str | None:
        """The caller's data access group (``None`` when in none)."""
        return self.user.data_access_group or None

    def require(self, right: str, message: str) -> None:
        """Refuse (403, REDCap's *message*) unless the caller has *right*."""
        if self.user.right(right) != 1:
            raise RefusedError(403, message)

    def require_no_dag(self, what: str) -> None:
        """Refuse a caller restricted to a data access group."""
        if self.dag is not None:
            raise RefusedError(
                403,
                f"A user in a Data Access Group cannot {what} (REDCap reserves it to users "
                "in no group).",
            )

    def rows(self) -> list[dict[str, object]]:
        """The rows of the call's ``data`` (in ``format``)."""
        if "data" not in self.scalars:
            raise RefusedError(400, "The data parameter is missing.")
        try:
            return parse_import_rows(self.scalars["data"], self.scalars.get("format", "xml"))
        except ImportFormatError as error:
            raise RefusedError(400, error.message) from None


Handler = Callable[[Call], Answer]


# ---------------------------------------------------------------------- design
Change = Callable[[Project], tuple[Project, int]]


def _apply(call: Call, change: Change) -> int:
    with call.state.write_lock:
        try:
            project, count = change(call.state.project)
        except design.DesignError as error:
            raise RefusedError(400, error.message) from None
        call.state.redesign(project)
    return count


def _delete_answer(count: int) -> Answer:
    # REDCap answers a delete with the bare count, whatever the format.
    return Answer(200, "text/plain; charset=utf-8", str(count).encode())


def _design_change(call: Call, change: Change) -> int:
    call.require("api_import", "You do not have API Import/Update privileges")
    call.require("design", "You do not have Project Design/Setup privileges")
    call.require_no_dag("change the project's design")
    return _apply(call, change)


def _design_write(call: Call, change: Change) -> Answer:
    return count_answer(_design_change(call, change), call.fmt)


def _design_delete(call: Call, change: Change) -> Answer:
    return _delete_answer(_design_change(call, change))


def metadata_import(call: Call) -> Answer:
    """``content=metadata`` with ``data``: replace the data dictionary."""
    rows = call.rows()
    return _design_write(call, lambda p: design.import_metadata(p, rows))


def arm_import(call: Call) -> Answer:
    """``content=arm&action=import`` (``override=1`` replaces every arm)."""
    rows = call.rows()
    override = call.scalars.get("override", "0").strip() in ("1", "true", "True")
    return _design_write(call, lambda p: design.import_arms(p, rows, override=override))


def arm_delete(call: Call) -> Answer:
    """``content=arm&action=delete``: arms, their events and the events' data."""
    arms = call.lists.get("arms") or []
    return _design_delete(call, lambda p: design.delete_arms(p, arms))


def event_import(call: Call) -> Answer:
    """``content=event&action=import``."""
    rows = call.rows()
    override = call.scalars.get("override", "0").strip() in ("1", "true", "True")
    return _design_write(call, lambda p: design.import_events(p, rows, override=override))


def event_delete(call: Call) -> Answer:
    """``content=event&action=delete``: events and their data."""
    events = call.lists.get("events") or []
    return _design_delete(call, lambda p: design.delete_events(p, events))


def mapping_import(call: Call) -> Answer:
    """``content=formEventMapping`` with ``data``: replace every mapping."""
    rows = call.rows()
    return _design_write(call, lambda p: design.import_mappings(p, rows))


def repeating_import(call: Call) -> Answer:
    """``content=repeatingFormsEvents`` with ``data``: replace the repeating settings."""
    rows = call.rows()
    return _design_write(call, lambda p: design.import_repeating(p, rows))


# ---------------------------------------------------------------------- groups
def dag_export(call: Call) -> Answer:
    """``content=dag``: a user in a group sees only that group."""
    rows = [
        {
            "data_access_group_name": d.data_access_group_name,
            "unique_group_name": d.unique_group_name,
            "data_access_group_id": d.data_access_group_id,
        }
        for d in call.project.dags
        if call.dag is None or d.unique_group_name == call.dag
    ]
    return answer_rows(
        rows, call.fmt, ["data_access_group_name", "unique_group_name", "data_access_group_id"]
    )


def _group_write(call: Call, change: Change) -> int:
    call.require("api_import", "You do not have API Import/Update privileges")
    call.require("data_access_groups", "You do not have Data Access Groups privileges")
    call.require_no_dag("change data access groups")
    return _apply(call, change)


def dag_import(call: Call) -> Answer:
    """``content=dag&action=import``."""
    rows = call.rows()
    return count_answer(_group_write(call, lambda p: design.import_dags(p, rows)), call.fmt)


def dag_delete(call: Call) -> Answer:
    """``content=dag&action=delete``: the groups' records and users are left in no group."""
    dags = call.lists.get("dags") or []
    return _delete_answer(_group_write(call, lambda p: design.delete_dags(p, dags)))


def dag_switch(call: Call) -> Answer:
    """``content=dag&action=switch``: not emulated (there is no DAG Switcher assignment)."""
    raise RefusedError(
        400,
        "The emulator does not implement action=switch: it has no DAG Switcher assignments "
        "(assign a user's group with content=userDagMapping).",
    )


def user_dag_export(call: Call) -> Answer:
    """``content=userDagMapping``."""
    call.require("data_access_groups", "You do not have Data Access Groups privileges")
    rows = [
        {"username": u.username, "redcap_data_access_group": u.data_access_group}
        for u in call.project.users
        if call.dag is None or u.data_access_group == call.dag
    ]
    return answer_rows(rows, call.fmt, ["username", "redcap_data_access_group"])


def user_dag_import(call: Call) -> Answer:
    """``content=userDagMapping&action=import``."""
    rows = call.rows()
    return count_answer(_group_write(call, lambda p: design.import_user_dags(p, rows)), call.fmt)


# ---------------------------------------------------------------------- users and roles
def user_row(user: User, project: Project, fmt: str) -> dict[str, object]:
    """A user as one row of REDCap's ``content=user`` export."""
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


def user_export(call: Call) -> Answer:
    """``content=user`` (with each user's effective rights)."""
    call.require("user_rights", "You do not have permissions to use the API")
    users = []
    for listed in call.project.users:
        effective = call.state.user(listed.username) or listed
        if call.dag is None or effective.data_access_group == call.dag:
            users.append(user_row(effective, call.project, call.fmt))
    return answer_rows(users, call.fmt, list(USER_COLUMNS))


def _user_write(call: Call, change: Change) -> int:
    call.require("api_import", "You do not have API Import/Update privileges")
    call.require("user_rights", "You do not have User Rights privileges")
    call.require_no_dag("change users or roles")
    return _apply(call, change)


def user_import(call: Call) -> Answer:
    """``content=user`` with ``data``: add or update users."""
    rows = call.rows()
    return count_answer(_user_write(call, lambda p: design.import_users(p, rows)), call.fmt)


def user_delete(call: Call) -> Answer:
    """``content=user&action=delete``: the users' tokens stop working."""
    names = call.lists.get("users") or []
    if call.user.username in names:
        raise RefusedError(400, "You cannot delete yourself from the project.")
    return _delete_answer(_user_write(call, lambda p: design.delete_users(p, names)))


def role_export(call: Call) -> Answer:
    """``content=userRole``."""
    call.require("user_rights", "You do not have permissions to use the API")
    rows = [
        design.role_row(r, call.project, as_json=call.fmt == "json") for r in call.project.roles
    ]
    return answer_rows(rows, call.fmt, list(_ROLE_COLUMNS))


def role_import(call: Call) -> Answer:
    """``content=userRole`` with ``data``: add (blank unique name) or update roles."""
    rows = call.rows()
    return count_answer(_user_write(call, lambda p: design.import_roles(p, rows)), call.fmt)


def role_delete(call: Call) -> Answer:
    """``content=userRole&action=delete``."""
    roles = call.lists.get("roles") or []
    return _delete_answer(_user_write(call, lambda p: design.delete_roles(p, roles)))


def role_mapping_export(call: Call) -> Answer:
    """``content=userRoleMapping``."""
    call.require("user_rights", "You do not have permissions to use the API")
    rows = [
        {"username": u.username, "unique_role_name": u.role}
        for u in call.project.users
        if call.dag is None or u.data_access_group == call.dag
    ]
    return answer_rows(rows, call.fmt, ["username", "unique_role_name"])


def role_mapping_import(call: Call) -> Answer:
    """``content=userRoleMapping`` with ``data``."""
    rows = call.rows()
    return count_answer(_user_write(call, lambda p: design.import_role_mappings(p, rows)), call.fmt)


# ---------------------------------------------------------------------- records helpers
def _record_in_reach(call: Call, record: str) -> None:
    store = call.state.store
    if (
        not record
        or not store.has_record(record)
        or (call.dag is not None and store.record_dag(record) != call.dag)
    ):
        # A record of another group is answered as one that does not exist (as REDCap does).
        raise RefusedError(400, f"The record '{record[:60]}' does not exist.")


def _event_of(call: Call, form: str) -> str:
    store = call.state.store
    if not store.longitudinal:
        return ""
    event = call.scalars.get("event", "").strip()
    if event not in store.event_index:
        raise RefusedError(400, f"The event '{event[:60]}' is not valid.")
    if form not in store.designated.get(event, set()):
        raise RefusedError(400, f"The instrument '{form}' is not designated for event '{event}'.")
    return event


def _instance_of(call: Call, event: str, form: str) -> int:
    store = call.state.store
    repeating = (event, form) in store.repeating_forms or event in store.repeating_events
    text = call.scalars.get("repeat_instance", "").strip()
    if not repeating:
        return 0
    if not text:
        return 1
    if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) < 1:
        raise RefusedError(400, f"The repeat_instance '{text[:20]}' is not a whole number >= 1.")
    return int(text)


# ---------------------------------------------------------------------- file-upload fields
def _file_field(call: Call) -> str:
    name = call.scalars.get("field", "").strip()
    found = call.state.store.fields.get(name)
    if found is None or found.field_type != "file":
        raise RefusedError(400, f"The field '{name[:60]}' is not a file upload field.")
    return name


def _safe_name(name: str) -> str:
    # A file name goes into a header: no quotes, separators or control characters.
    cleaned = re.sub(r'[\x00-\x1f\x7f";\\/]', "_", name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    return cleaned.strip()[:200] or "file"


def _file_answer(name: str, mime_type: str, data: bytes) -> Answer:
    safe = _safe_name(name)
    mime = (
        mime_type if re.fullmatch(r"[\w.+-]+/[\w.+-]+", mime_type) else "application/octet-stream"
    )
    return Answer(
        200,
        f'{mime}; name="{safe}"',
        data,
        (("Content-Disposition", f'attachment; filename="{safe}"'),),
    )


def file_export(call: Call) -> Answer:
    """``content=file&action=export``: a record's document (export rights on its form)."""
    call.require("api_export", "You do not have API Export privileges")
    name = _file_field(call)
    form = call.state.store.fields[name].form_name
    if not call.user.can_export_form(form):
        raise RefusedError(403, "You do not have API Export privileges")
    record = call.scalars.get("record", "").strip()
    _record_in_reach(call, record)
    event = _event_of(call, form)
    slot = (record, event, _instance_of(call, event, form), name)
    doc_id = call.state.files.field_document(slot)
    found = call.state.files.read(doc_id) if doc_id is not None else None
    if found is None:
        raise RefusedError(400, "There is no file to download for this record")
    document, data = found
    return _file_answer(document.name, document.mime_type, data)


def _field_row(call: Call, record: str, event: str, instance: int, form: str) -> dict[str, object]:
    store = call.state.store
    row: dict[str, object] = {store.record_id_field: record}
    if store.longitudinal:
        row["redcap_event_name"] = event
    if (event, form) in store.repeating_forms:
        row["redcap_repeat_instrument"] = form
        row["redcap_repeat_instance"] = str(instance)
    elif instance:
        row["redcap_repeat_instance"] = str(instance)
    return row


def _file_write_checks(call: Call) -> tuple[str, str, str, int, str]:
    call.require("api_import", "You do not have API Import/Update privileges")
    name = _file_field(call)
    form = call.state.store.fields[name].form_name
    if not call.user.can_edit_form(form):
        raise RefusedError(403, f"You do not have edit rights on the form '{form}'.")
    record = call.scalars.get("record", "").strip()
    _record_in_reach(call, record)
    event = _event_of(call, form)
    return name, form, record, _instance_of(call, event, form), event


def file_import(call: Call) -> Answer:
    """``content=file&action=import``: store a document in a record's file-upload field."""
    name, form, record, instance, event = _file_write_checks(call)
    upload = call.uploads.get("file")
    if upload is None:
        raise RefusedError(400, "There is no file to upload (multipart field 'file').")
    filename = _safe_name(upload.filename)
    with call.state.write_lock:
        row = _field_row(call, record, event, instance, form)
        row[name] = filename
        call.state.store.import_rows([row], overwrite=False, dag=call.dag)
        call.state.files.put_field(
            (record, event, instance, name), upload.data, filename, upload.mime_type
        )
    return Answer(200, "application/json; charset=utf-8", b"")


def file_delete(call: Call) -> Answer:
    """``content=file&action=delete``: empty a record's file-upload field."""
    name, form, record, instance, event = _file_write_checks(call)
    with call.state.write_lock:
        if not call.state.files.delete_field((record, event, instance, name)):
            raise RefusedError(400, "There is no file to delete for this record")
        row = _field_row(call, record, event, instance, form)
        row[name] = ""
        call.state.store.import_rows([row], overwrite=True, dag=call.dag)
    return Answer(200, "application/json; charset=utf-8", b"")


# ---------------------------------------------------------------------- File Repository
def _folder_id(call: Call, key: str = "folder_id") -> int:
    text = call.scalars.get(key, "").strip()
    if not text:
        return 0
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise RefusedError(400, f"The {key} '{text[:20]}' is not valid.")
    folder_id = int(text)
    folder = call.state.files.folder(folder_id) if folder_id else None
    if folder_id and (folder is None or not _folder_visible(call, folder.dag_id)):
        raise RefusedError(400, f"The folder_id '{folder_id}' is not valid.")
    return folder_id


def _dag_id(call: Call) -> int:
    for dag in call.project.dags:
        if dag.unique_group_name == call.dag:
            return dag.data_access_group_id
    return 0


def _folder_visible(call: Call, dag_id: int) -> bool:
    return dag_id == 0 or call.dag is None or dag_id == _dag_id(call)


def _repository(call: Call) -> None:
    call.require("file_repository", "You do not have File Repository privileges")


def repository_create_folder(call: Call) -> Answer:
    """``content=fileRepository&action=createFolder`` → ``[{"folder_id": N}]``."""
    _repository(call)
    call.require("api_import", "You do not have API Import/Update privileges")
    name = call.scalars.get("name", "").strip()
    if not name or len(name) > 150:
        raise RefusedError(400, "A folder name of 1 to 150 characters is required.")
    parent = _folder_id(call)
    dag_text = call.scalars.get("dag_id", "").strip()
    dag_id = int(dag_text) if re.fullmatch(r"[0-9]{1,9}", dag_text) else 0
    if dag_id and dag_id not in {d.data_access_group_id for d in call.project.dags}:
        raise RefusedError(400, f"The dag_id '{dag_id}' is not valid.")
    if call.scalars.get("role_id", "").strip():
        # Unverified how REDCap numbers roles (the emulator's roles have unique names only):
        # a role-restricted folder is refused rather than created unrestricted.
        raise RefusedError(400, "The emulator does not implement role-restricted folders.")
    if call.dag is not None:
        dag_id = _dag_id(call)  # a group's user makes folders of their group only
    folder_id = call.state.files.create_folder(name, parent, dag_id, "")
    return answer_rows([{"folder_id": folder_id}], call.fmt, ["folder_id"])


def repository_list(call: Call) -> Answer:
    """``content=fileRepository&action=list``: folders, then documents, of one folder."""
    _repository(call)
    call.require("api_export", "You do not have API Export privileges")
    folders, documents = call.state.files.listing(_folder_id(call))
    rows: list[dict[str, object]] = [
        {"folder_id": f.folder_id, "name": f.name}
        for f in folders
        if _folder_visible(call, f.dag_id)
    ]
    rows += [{"doc_id": d.doc_id, "name": d.name} for d in documents]
    return answer_rows(rows, call.fmt, ["folder_id", "doc_id", "name"])


def _document(call: Call) -> int:
    text = call.scalars.get("doc_id", "").strip()
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise RefusedError(400, f"The doc_id '{text[:20]}' is not valid.")
    doc_id = int(text)
    found = call.state.files.read(doc_id)
    if found is None or not found[0].in_repository:
        raise RefusedError(400, f"The doc_id '{doc_id}' is not valid.")
    folder = call.state.files.folder(found[0].folder_id)
    if folder is not None and not _folder_visible(call, folder.dag_id):
        raise RefusedError(400, f"The doc_id '{doc_id}' is not valid.")
    return doc_id


def repository_export(call: Call) -> Answer:
    """``content=fileRepository&action=export``: one document's bytes."""
    _repository(call)
    call.require("api_export", "You do not have API Export privileges")
    found = call.state.files.read(_document(call))
    assert found is not None  # _document checked it
    return _file_answer(found[0].name, found[0].mime_type, found[1])


def repository_import(call: Call) -> Answer:
    """``content=fileRepository&action=import``: store a document in a folder."""
    _repository(call)
    call.require("api_import", "You do not have API Import/Update privileges")
    upload = call.uploads.get("file")
    if upload is None:
        raise RefusedError(400, "There is no file to upload (multipart field 'file').")
    call.state.files.put_repository(
        upload.data, _safe_name(upload.filename), upload.mime_type, _folder_id(call)
    )
    return Answer(200, "application/json; charset=utf-8", b"")


def repository_delete(call: Call) -> Answer:
    """``content=fileRepository&action=delete``."""
    _repository(call)
    call.require("api_import", "You do not have API Import/Update privileges")
    call.state.files.delete_repository(_document(call))
    return Answer(200, "application/json; charset=utf-8", b"")


# ---------------------------------------------------------------------- PDF
def pdf_export(call: Call) -> Answer:
    """``content=pdf``: the instruments as a PDF (blank, or one record's data).

    With a record, only the forms the caller may export are printed, without the identifier
    fields of forms exported de-identified (rights 2 and 3), as in a record export.
    """
    call.require("api_export", "You do not have API Export privileges")
    store = call.state.store
    instrument = call.scalars.get("instrument", "").strip()
    if instrument and instrument not in store.form_index:
        raise RefusedError(400, f"The instrument '{instrument[:60]}' is not valid.")
    forms = [instrument] if instrument else list(store.forms)
    record = call.scalars.get("record", "").strip()
    values: dict[str, str] = {}
    if record:
        _record_in_reach(call, record)
        forms = [f for f in forms if call.user.can_export_form(f)]
        event = call.scalars.get("event", "").strip() or None
        if event is not None and event not in store.event_index:
            raise RefusedError(400, f"The event '{event[:60]}' is not valid.")
        options = ExportOptions(
            columns=store.select_columns({f.field_name for f in call.project.fields}),
            records=frozenset([record]),
            events=frozenset([event]) if event else None,
            dag=call.dag,
        )
        header, rows = store.export_flat_rows(options)
        for row in rows:
            for name, value in zip(header, row, strict=True):
                if value not in ("", None) and name not in values:
                    values[name] = str(value)
    lines: list[str] = []
    for form in forms:
        lines += ["", f"{store.form_labels.get(form, form)} ({form})", ""]
        deidentified = call.user.forms_export.get(form, 1) in (2, 3)
        for f in store.form_fields.get(form, []):
            label = re.sub(r"<[^>]+>", "", f.field_label).strip()
            shown = ""
            if record and not (deidentified and f.identifier.strip().lower() == "y"):
                shown = values.get(f.field_name, "")
                if f.field_type == "checkbox":
                    shown = ", ".join(
                        code
                        for code, _ in f.choices
                        if values.get(f"{f.field_name}___{code}") == "1"
                    )
            lines.append(
                f"{label} [{f.field_name}]: {shown}"
                if record
                else f"{label} [{f.field_name}]: ______"
            )
    title = str(call.project.info.get("project_title", "REDCap project"))
    return Answer(
        200,
        'application/pdf; name="export.pdf"',
        render_pdf(title + (f" - record {record}" if record else ""), lines),
    )


# ---------------------------------------------------------------------- surveys
def _survey_target(call: Call, *, need_record: bool = True) -> tuple[str, str, str, int]:
    call.require("api_export", "You do not have API Export privileges")
    store = call.state.store
    instrument = call.scalars.get("instrument", "").strip()
    if instrument not in store.survey_forms:
        raise RefusedError(400, f"The instrument '{instrument[:60]}' is not enabled as a survey.")
    record = call.scalars.get("record", "").strip()
    if need_record:
        _record_in_reach(call, record)
    event = _event_of(call, instrument)
    return record, instrument, event, _instance_of(call, event, instrument)


def _code(call: Call, kind: str, key: tuple[str, str, str, int], length: int) -> str:
    alphabet = string.ascii_uppercase + string.digits
    with call.state.write_lock:
        slot = (kind, *key)
        code = call.state.survey_codes.get(slot)
        if code is None:
            code = "".join(secrets.choice(alphabet) for _ in range(length))
            call.state.survey_codes[slot] = code
        return code


def _survey_base(call: Call) -> str:
    return call.base_url.rsplit("/api/", 1)[0] + "/"


def survey_link(call: Call) -> Answer:
    """``content=surveyLink``: this server's survey URL (``…/surveys/?s=``)."""
    key = _survey_target(call)
    return text_answer(f"{_survey_base(call)}surveys/?s={_code(call, 'link', key, 10)}")


def survey_queue_link(call: Call) -> Answer:
    """``content=surveyQueueLink``."""
    call.require("api_export", "You do not have API Export privileges")
    record = call.scalars.get("record", "").strip()
    _record_in_reach(call, record)
    code = _code(call, "queue", (record, "", "", 0), 10)
    return text_answer(f"{_survey_base(call)}surveys/?sq={code}")


def survey_access_code(call: Call) -> Answer:
    """``content=surveyAccessCode``: a 9-character access code."""
    return text_answer(_code(call, "access", _survey_target(call), 9))


def survey_return_code(call: Call) -> Answer:
    """``content=surveyReturnCode``: an 8-character return code."""
    return text_answer(_code(call, "return", _survey_target(call), 8))


def participant_list(call: Call) -> Answer:
    """``content=participantList``: the records that have the survey's event, with codes."""
    call.require(
        "manage_survey_participants", "You do not have Manage Survey Participants privileges"
    )
    _, instrument, event, _ = _survey_target(call, need_record=False)
    store = call.state.store
    rows: list[dict[str, object]] = []
    email_field = str(call.project.info.get("survey_email_participant_field", "") or "")
    for record in store.record_ids(call.dag):
        if store.longitudinal and not store.has_row(record, event):
            continue
        key = (record, instrument, event, 1 if (event, instrument) in store.repeating_forms else 0)
        rows.append(
            {
                "email": store.value(record, event, email_field) if email_field else "",
                "email_occurrence": 1,
                "identifier": "",
                "phone": "",
                "record": record,
                "invitation_sent_status": 0,
                "invitation_send_time": "",
                "response_status": 0,
                "survey_access_code": _code(call, "access", key, 9),
                "survey_link": f"{_survey_base(call)}surveys/?s={_code(call, 'link', key, 10)}",
                "survey_queue_link": f"{_survey_base(call)}surveys/?sq="
                + _code(call, "queue", (record, "", "", 0), 10),
            }
        )
    header = [
        "email",
        "email_occurrence",
        "identifier",
        "phone",
        "record",
        "invitation_sent_status",
        "invitation_send_time",
        "response_status",
        "survey_access_code",
        "survey_link",
        "survey_queue_link",
    ]
    return answer_rows(rows, call.fmt, header)


#: ``(content, action)`` → handler, for every call this module answers.
HANDLERS: dict[tuple[str, str], Handler] = {
    ("metadata", "import"): metadata_import,
    ("arm", "import"): arm_import,
    ("arm", "delete"): arm_delete,
    ("event", "import"): event_import,
    ("event", "delete"): event_delete,
    ("formEventMapping", "import"): mapping_import,
    ("repeatingFormsEvents", "import"): repeating_import,
    ("dag", "export"): dag_export,
    ("dag", "import"): dag_import,
    ("dag", "delete"): dag_delete,
    ("dag", "switch"): dag_switch,
    ("userDagMapping", "export"): user_dag_export,
    ("userDagMapping", "import"): user_dag_import,
    ("user", "export"): user_export,
    ("user", "import"): user_import,
    ("user", "delete"): user_delete,
    ("userRole", "export"): role_export,
    ("userRole", "import"): role_import,
    ("userRole", "delete"): role_delete,
    ("userRoleMapping", "export"): role_mapping_export,
    ("userRoleMapping", "import"): role_mapping_import,
    ("file", "export"): file_export,
    ("file", "import"): file_import,
    ("file", "delete"): file_delete,
    ("fileRepository", "createFolder"): repository_create_folder,
    ("fileRepository", "list"): repository_list,
    ("fileRepository", "export"): repository_export,
    ("fileRepository", "import"): repository_import,
    ("fileRepository", "delete"): repository_delete,
    ("pdf", "export"): pdf_export,
    ("surveyLink", "export"): survey_link,
    ("surveyQueueLink", "export"): survey_queue_link,
    ("surveyAccessCode", "export"): survey_access_code,
    ("surveyReturnCode", "export"): survey_return_code,
    ("participantList", "export"): participant_list,
}
