"""Design writes: REDCap's imports and deletes of a project's structure, as pure functions.

Each function takes the current :class:`~studyman.sources.emulator.model.Project` and the decoded
rows of one API call, and returns the changed project and the count REDCap answers; nothing is
written until every row has been checked (a :class:`DesignError` carries REDCap's message and
leaves the project as it was). The record store then carries the data that still fits the new
design over (:meth:`~studyman.sources.emulator.store.RecordStore.carried_over`), which is how
REDCap's cascading deletes reach the data.

Notes
-----
Cascades, as REDCap documents them in its API help:

* deleting an arm deletes its events; deleting an event deletes its data, its form mappings and
  its repeating settings (``override=1`` on an arm or event import deletes what it does not name);
* a metadata import replaces the data dictionary: data of fields no longer in it is gone, and
  forms no longer in it leave the form-event mappings and repeating settings;
* a form-event mapping import, and a repeating-forms import, replace every mapping (setting);
* deleting a data access group leaves its records and users in no group; deleting a user role
  leaves its users with the rights they had through it; deleting a user ends their API tokens
  (a token whose user is not in the project is refused).

Unverified choices (no recorded answer pins them): the label of a form created by a metadata import
is its name with underscores as spaces, first letter upper case; a user created by an import
without rights gets none (every right 0, no form access), the safe reading of REDCap's "basic"
rights; a new role's unique name is ``U-`` and ten upper-case letters and digits, as REDCap's.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from studyman.sources.emulator.model import (
    DICTIONARY_COLUMNS,
    USER_RIGHT_COLUMNS,
    Arm,
    DataAccessGroup,
    Event,
    Field,
    Instrument,
    Project,
    RepeatingSetting,
    User,
    UserRole,
    unique_event_name,
)

__all__ = [
    "DesignError",
    "delete_arms",
    "delete_dags",
    "delete_events",
    "delete_roles",
    "delete_users",
    "import_arms",
    "import_dags",
    "import_events",
    "import_mappings",
    "import_metadata",
    "import_repeating",
    "import_role_mappings",
    "import_roles",
    "import_user_dags",
    "import_users",
    "role_row",
    "unique_group_name",
]

Row = Mapping[str, object]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD_TYPES = frozenset(
    {
        "text",
        "notes",
        "dropdown",
        "radio",
        "checkbox",
        "yesno",
        "truefalse",
        "calc",
        "file",
        "slider",
        "descriptive",
        "sql",
    }
)
_WITH_CHOICES = frozenset({"dropdown", "radio", "checkbox"})
_USER_TEXT = ("email", "firstname", "lastname", "expiration")


class DesignError(Exception):
    """A design write REDCap would refuse; ``message`` is REDCap's (or the emulator's) text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from a data frame
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _integer(value: object, what: str) -> int:
    text = _text(value)
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise DesignError(f"{what} must be a whole number, not '{text[:40]}'.")
    return int(text)


def _require_rows(rows: Sequence[Row], what: str) -> None:
    if not rows:
        raise DesignError(f"No {what} were provided.")


def _known_columns(rows: Sequence[Row], allowed: Iterable[str], what: str) -> None:
    allowed_set = set(allowed)
    unknown = sorted({str(k) for row in rows for k in row if str(k) not in allowed_set})
    if unknown:
        raise DesignError(
            f"The following {what} attributes are not valid: " + ", ".join(unknown[:20])
        )


# ---------------------------------------------------------------------- metadata
def import_metadata(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Replace the data dictionary (``content=metadata`` with ``data``)."""
    _require_rows(rows, "fields")
    _known_columns(rows, DICTIONARY_COLUMNS, "data dictionary")
    fields: list[Field] = []
    seen: set[str] = set()
    problems: list[str] = []
    for number, row in enumerate(rows, start=1):
        values = {name: _text(row.get(name, "")) for name in DICTIONARY_COLUMNS}
        name, form, kind = values["field_name"], values["form_name"], values["field_type"]
        if not _NAME.match(name):
            problems.append(f"row {number}: the field name '{name[:40]}' is not valid")
        elif name in seen:
            problems.append(f"row {number}: the field '{name}' is listed twice")
        if not _NAME.match(form):
            problems.append(f"row {number}: the form name '{form[:40]}' is not valid")
        if kind not in _FIELD_TYPES:
            problems.append(f"row {number}: the field type '{kind[:40]}' is not valid")
        elif kind in _WITH_CHOICES and not values["select_choices_or_calculations"]:
            problems.append(f"row {number}: the {kind} field '{name}' has no choices")
        seen.add(name)
        fields.append(Field(**values))
    if fields and fields[0].field_type != "text":
        problems.append(f"the first field ({fields[0].field_name}) must be a text field")
    if problems:
        raise DesignError("The data dictionary cannot be imported: " + "; ".join(problems[:10]))
    labels = {i.instrument_name: i for i in project.instruments}
    instruments: list[Instrument] = []
    for f in fields:
        if all(i.instrument_name != f.form_name for i in instruments):
            instruments.append(
                labels.get(f.form_name)
                or Instrument(f.form_name, f.form_name.replace("_", " ").capitalize())
            )
    forms = {i.instrument_name for i in instruments}
    changed = replace(
        project,
        fields=tuple(fields),
        instruments=tuple(instruments),
        mappings=tuple(m for m in project.mappings if m[2] in forms),
        repeating=tuple(r for r in project.repeating if not r.form_name or r.form_name in forms),
    )
    return changed, len(fields)


# ---------------------------------------------------------------------- arms and events
def _without_events(project: Project, gone: set[str]) -> dict[str, object]:
    return {
        "events": tuple(e for e in project.events if e.unique_event_name not in gone),
        "mappings": tuple(m for m in project.mappings if m[1] not in gone),
        "repeating": tuple(r for r in project.repeating if r.event_name not in gone),
    }


def _longitudinal(project: Project, what: str) -> None:
    if not project.is_longitudinal and not project.arms:
        raise DesignError(f"You cannot import {what} for classic projects")


def import_arms(project: Project, rows: Sequence[Row], *, override: bool) -> tuple[Project, int]:
    """Add or rename arms; with *override*, delete the arms not named (and their events)."""
    _longitudinal(project, "arms")
    _require_rows(rows, "arms")
    _known_columns(rows, ("arm_num", "name"), "arm")
    named: dict[int, str] = {}
    for row in rows:
        number = _integer(row.get("arm_num"), "arm_num")
        name = _text(row.get("name"))
        if number < 1 or not name:
            raise DesignError("Each arm needs an arm_num of 1 or more and a name.")
        named[number] = name
    arms = {a.arm_num: a.name for a in project.arms}
    if override:
        arms = {}
    arms.update(named)
    gone_arms = {a.arm_num for a in project.arms} - set(arms)
    gone = {e.unique_event_name for e in project.events if e.arm_num in gone_arms}
    changed = replace(
        project,
        arms=tuple(Arm(n, arms[n]) for n in sorted(arms)),
        **_without_events(project, gone),  # type: ignore[arg-type]
    )
    return changed, len(rows)


def delete_arms(project: Project, numbers: Sequence[str]) -> tuple[Project, int]:
    """Delete arms, their events and the events' data."""
    _longitudinal(project, "arms")
    if not numbers:
        raise DesignError("You must specify the arms parameter")
    wanted = {_integer(n, "arms") for n in numbers}
    known = {a.arm_num for a in project.arms}
    missing = sorted(wanted - known)
    if missing:
        raise DesignError("The following arms do not exist: " + ", ".join(str(m) for m in missing))
    gone = {e.unique_event_name for e in project.events if e.arm_num in wanted}
    changed = replace(
        project,
        arms=tuple(a for a in project.arms if a.arm_num not in wanted),
        **_without_events(project, gone),  # type: ignore[arg-type]
    )
    return changed, len(wanted)


def _new_unique_event_name(name: str, arm: int, taken: set[str]) -> str:
    base = unique_event_name(name, arm)
    if base not in taken:
        return base
    stem = base.removesuffix(f"_arm_{arm}")
    # Unverified: the second event of a name gets "b", the third "c" (the first is "a").
    for letter in string.ascii_lowercase[1:]:
        candidate = f"{stem[:17]}{letter}_arm_{arm}"
        if candidate not in taken:
            return candidate
    raise DesignError(f"No unique event name is left for '{name}' in arm {arm}.")


def import_events(project: Project, rows: Sequence[Row], *, override: bool) -> tuple[Project, int]:
    """Add events or rename them (by ``unique_event_name``); *override* deletes the others."""
    _longitudinal(project, "events")
    _require_rows(rows, "events")
    _known_columns(
        rows,
        (
            "event_name",
            "arm_num",
            "unique_event_name",
            "custom_event_label",
            "event_id",
            "day_offset",
            "offset_min",
            "offset_max",
        ),
        "event",
    )
    arms = {a.arm_num for a in project.arms}
    events = [] if override else list(project.events)
    by_unique = {e.unique_event_name: index for index, e in enumerate(events)}
    next_id = max((e.event_id for e in project.events), default=0) + 1
    for row in rows:
        name = _text(row.get("event_name"))
        arm = _integer(row.get("arm_num"), "arm_num")
        if not name:
            raise DesignError("Each event needs an event_name.")
        if arm not in arms:
            raise DesignError(f"The arm_num {arm} does not exist in the project.")
        unique = _text(row.get("unique_event_name"))
        label = _text(row.get("custom_event_label"))
        if unique and unique in by_unique:
            index = by_unique[unique]
            events[index] = replace(events[index], event_name=name, custom_event_label=label)
            continue
        # REDCap derives a new event's unique name from its name and arm; a given name that
        # matches no event is ignored (it may only name an event to rename).
        taken = {e.unique_event_name for e in events}
        unique = _new_unique_event_name(name, arm, taken)
        old = {e.unique_event_name: e.event_id for e in project.events}
        event_id = old.get(unique) or next_id
        if event_id == next_id:
            next_id += 1
        events.append(Event(name, arm, unique, label, event_id))
        by_unique[unique] = len(events) - 1
    order = {a.arm_num: i for i, a in enumerate(project.arms)}
    events.sort(key=lambda e: order.get(e.arm_num, 0))
    gone = {e.unique_event_name for e in project.events} - {e.unique_event_name for e in events}
    cascade = _without_events(project, gone)
    cascade["events"] = tuple(events)
    return replace(project, **cascade), len(rows)  # type: ignore[arg-type]


def delete_events(project: Project, names: Sequence[str]) -> tuple[Project, int]:
    """Delete events (their data, mappings and repeating settings go with them)."""
    _longitudinal(project, "events")
    if not names:
        raise DesignError("You must specify the events parameter")
    known = {e.unique_event_name for e in project.events}
    missing = [n for n in names if n not in known]
    if missing:
        raise DesignError("The following events do not exist: " + ", ".join(missing[:20]))
    return replace(project, **_without_events(project, set(names))), len(set(names))  # type: ignore[arg-type]


def import_mappings(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Replace every form-event mapping (``content=formEventMapping``)."""
    if not project.is_longitudinal:
        raise DesignError("You cannot import form/event mappings for classic projects")
    _require_rows(rows, "form-event mappings")
    _known_columns(rows, ("arm_num", "unique_event_name", "form"), "form-event mapping")
    events = {e.unique_event_name: e.arm_num for e in project.events}
    forms = {i.instrument_name for i in project.instruments}
    mappings: list[tuple[int, str, str]] = []
    for row in rows:
        event, form = _text(row.get("unique_event_name")), _text(row.get("form"))
        arm = _integer(row.get("arm_num"), "arm_num")
        if events.get(event) != arm:
            raise DesignError(f"The event '{event[:60]}' does not exist in arm {arm}.")
        if form not in forms:
            raise DesignError(f"The form '{form[:60]}' does not exist.")
        if (arm, event, form) not in mappings:
            mappings.append((arm, event, form))
    return replace(project, mappings=tuple(mappings)), len(rows)


def import_repeating(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Replace the repeating instruments and events (``content=repeatingFormsEvents``)."""
    _known_columns(rows, ("event_name", "form_name", "custom_form_label"), "repeating")
    events = {e.unique_event_name for e in project.events}
    forms = {i.instrument_name for i in project.instruments}
    settings: list[RepeatingSetting] = []
    for row in rows:
        event, form = _text(row.get("event_name")), _text(row.get("form_name"))
        if project.is_longitudinal and event not in events:
            raise DesignError(f"The event '{event[:60]}' does not exist.")
        if not project.is_longitudinal and event:
            raise DesignError("A classic project's repeating forms take no event_name.")
        if form and form not in forms:
            raise DesignError(f"The form '{form[:60]}' does not exist.")
        if not form and not project.is_longitudinal:
            raise DesignError("Each repeating setting of a classic project needs a form_name.")
        settings.append(RepeatingSetting(event, form, _text(row.get("custom_form_label"))))
    info = {**project.info, "has_repeating_instruments_or_events": int(bool(settings))}
    return replace(project, repeating=tuple(settings), info=info), len(rows)


# ---------------------------------------------------------------------- data access groups
def unique_group_name(name: str, taken: Iterable[str] = ()) -> str:
    """REDCap's unique name of a data access group (lower case, ``_`` for spaces, 18 long)."""
    cleaned = re.sub(r"[^a-z0-9_]", "", name.strip().lower().replace(" ", "_"))[:18] or "dag"
    used = set(taken)
    candidate, number = cleaned, 2
    while candidate in used:
        suffix = f"_{number}"
        candidate, number = cleaned[: 18 - len(suffix)] + suffix, number + 1
    return candidate


def import_dags(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Add data access groups (blank ``unique_group_name``) or rename existing ones."""
    _require_rows(rows, "data access groups")
    _known_columns(
        rows, ("data_access_group_name", "unique_group_name", "data_access_group_id"), "DAG"
    )
    dags = list(project.dags)
    next_id = max((d.data_access_group_id for d in dags), default=0) + 1
    for row in rows:
        name = _text(row.get("data_access_group_name"))
        unique = _text(row.get("unique_group_name"))
        if not name:
            raise DesignError("Each data access group needs a data_access_group_name.")
        if unique:
            index = next((i for i, d in enumerate(dags) if d.unique_group_name == unique), None)
            if index is None:
                raise DesignError(
                    f"The unique_group_name '{unique[:60]}' does not exist: leave it blank to "
                    "create a group."
                )
            dags[index] = replace(dags[index], data_access_group_name=name)
            continue
        new = unique_group_name(name, (d.unique_group_name for d in dags))
        dags.append(DataAccessGroup(name, new, next_id))
        next_id += 1
    return replace(project, dags=tuple(dags)), len(rows)


def delete_dags(project: Project, names: Sequence[str]) -> tuple[Project, int]:
    """Delete data access groups; their records and users are left in no group."""
    if not names:
        raise DesignError("You must specify the dags parameter")
    known = {d.unique_group_name for d in project.dags}
    missing = [n for n in names if n not in known]
    if missing:
        raise DesignError(
            "The following data access groups do not exist: " + ", ".join(missing[:20])
        )
    gone = set(names)
    users = tuple(
        replace(u, data_access_group="") if u.data_access_group in gone else u
        for u in project.users
    )
    dags = tuple(d for d in project.dags if d.unique_group_name not in gone)
    return replace(project, dags=dags, users=users), len(gone)


def import_user_dags(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Assign users to data access groups (``content=userDagMapping``)."""
    _require_rows(rows, "user-DAG assignments")
    _known_columns(rows, ("username", "redcap_data_access_group"), "user-DAG assignment")
    dags = {d.unique_group_name for d in project.dags}
    users = {u.username: u for u in project.users}
    for row in rows:
        name, dag = _text(row.get("username")), _text(row.get("redcap_data_access_group"))
        if name not in users:
            raise DesignError(f"The user '{name[:60]}' is not a user of the project.")
        if dag and dag not in dags:
            raise DesignError(f"The data access group '{dag[:60]}' does not exist.")
        users[name] = replace(users[name], data_access_group=dag)
    return replace(project, users=tuple(users.values())), len(rows)


# ---------------------------------------------------------------------- users and roles
def _form_rights(value: object, forms: Iterable[str], what: str) -> dict[str, int]:
    known = set(forms)
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        pairs = []
        for part in _text(value).split(","):
            if part.strip():
                form, sep, right = part.partition(":")
                if not sep:
                    raise DesignError(f"{what} must be form:right pairs, not '{part[:40]}'.")
                pairs.append((form.strip(), right.strip()))
    rights: dict[str, int] = {}
    for form, right in pairs:
        if form not in known:
            raise DesignError(f"{what} names the form '{form[:60]}', which does not exist.")
        number = _integer(right, f"{what} of {form}")
        if number > 3:
            raise DesignError(f"{what} of {form} must be 0 to 3, not {number}.")
        rights[form] = number
    return rights


def _rights(row: Row, current: Mapping[str, int]) -> dict[str, int]:
    rights = dict(current)
    for name in USER_RIGHT_COLUMNS:
        if name in row and _text(row[name]) != "":
            value = _integer(row[name], name)
            if value > 3:
                raise DesignError(f"The right {name} must be 0 to 3, not {value}.")
            rights[name] = value
    return rights


_USER_COLUMNS_IN = (
    "username",
    *_USER_TEXT,
    "data_access_group",
    "data_access_group_id",
    "data_access_group_label",
    *USER_RIGHT_COLUMNS,
    "forms",
    "forms_export",
)


def import_users(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Add or update users (``content=user``); a new user starts with no rights at all."""
    _require_rows(rows, "users")
    _known_columns(rows, _USER_COLUMNS_IN, "user")
    forms = [i.instrument_name for i in project.instruments]
    dags = {d.unique_group_name for d in project.dags}
    users = {u.username: u for u in project.users}
    for row in rows:
        name = _text(row.get("username"))
        if not name or len(name) > 255 or any(c.isspace() for c in name):
            raise DesignError(f"The username '{name[:60]}' is not valid.")
        current = users.get(name) or User(
            name,
            rights={r: 0 for r in USER_RIGHT_COLUMNS},
            forms={f: 0 for f in forms},
            forms_export={f: 0 for f in forms},
        )
        dag = _text(row.get("data_access_group", current.data_access_group))
        if dag and dag not in dags:
            raise DesignError(f"The data access group '{dag[:60]}' does not exist.")
        texts = {k: _text(row[k]) for k in _USER_TEXT if k in row}
        changed = replace(
            current,
            data_access_group=dag,
            rights=_rights(row, current.rights),
            forms={**current.forms, **_form_rights(row.get("forms", ""), forms, "forms")},
            forms_export={
                **current.forms_export,
                **_form_rights(row.get("forms_export", ""), forms, "forms_export"),
            },
            **texts,
        )
        users[name] = changed
    return replace(project, users=tuple(users.values())), len(rows)


def delete_users(project: Project, names: Sequence[str]) -> tuple[Project, int]:
    """Remove users from the project (their tokens stop working)."""
    if not names:
        raise DesignError("You must specify the users parameter")
    known = {u.username for u in project.users}
    missing = [n for n in names if n not in known]
    if missing:
        raise DesignError("The following users do not exist: " + ", ".join(missing[:20]))
    gone = set(names)
    return replace(project, users=tuple(u for u in project.users if u.username not in gone)), len(
        gone
    )


def _new_role_name(taken: set[str], draw: Callable[[int], str]) -> str:
    while True:
        name = "U-" + draw(10)
        if name not in taken:
            return name


def _draw(length: int) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def import_roles(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Add roles (blank ``unique_role_name``) or update them (``content=userRole``)."""
    _require_rows(rows, "user roles")
    _known_columns(
        rows,
        ("unique_role_name", "role_label", *USER_RIGHT_COLUMNS, "forms", "forms_export"),
        "user role",
    )
    forms = [i.instrument_name for i in project.instruments]
    roles = {r.unique_role_name: r for r in project.roles}
    for row in rows:
        unique = _text(row.get("unique_role_name"))
        label = _text(row.get("role_label"))
        if unique and unique not in roles:
            raise DesignError(
                f"The unique_role_name '{unique[:60]}' does not exist: leave it blank to create "
                "a role."
            )
        if not unique:
            if not label:
                raise DesignError("A new user role needs a role_label.")
            unique = _new_role_name(set(roles), _draw)
            current = UserRole(
                unique,
                label,
                rights={r: 0 for r in USER_RIGHT_COLUMNS},
                forms={f: 0 for f in forms},
                forms_export={f: 0 for f in forms},
            )
        else:
            current = roles[unique]
        roles[unique] = replace(
            current,
            role_label=label or current.role_label,
            rights=_rights(row, current.rights),
            forms={**current.forms, **_form_rights(row.get("forms", ""), forms, "forms")},
            forms_export={
                **current.forms_export,
                **_form_rights(row.get("forms_export", ""), forms, "forms_export"),
            },
        )
    return replace(project, roles=tuple(roles.values())), len(rows)


def delete_roles(project: Project, names: Sequence[str]) -> tuple[Project, int]:
    """Delete roles; their users keep the rights they had through the role."""
    if not names:
        raise DesignError("You must specify the roles parameter")
    roles = {r.unique_role_name: r for r in project.roles}
    missing = [n for n in names if n not in roles]
    if missing:
        raise DesignError("The following user roles do not exist: " + ", ".join(missing[:20]))
    gone = set(names)
    users = []
    for user in project.users:
        if user.role in gone:
            role = roles[user.role]
            user = replace(
                user, role="", rights=role.rights, forms=role.forms, forms_export=role.forms_export
            )
        users.append(user)
    remaining = tuple(r for r in project.roles if r.unique_role_name not in gone)
    return replace(project, roles=remaining, users=tuple(users)), len(gone)


def import_role_mappings(project: Project, rows: Sequence[Row]) -> tuple[Project, int]:
    """Assign users to roles (``content=userRoleMapping``; a blank role: no role)."""
    _require_rows(rows, "user-role assignments")
    _known_columns(rows, ("username", "unique_role_name"), "user-role assignment")
    roles = {r.unique_role_name for r in project.roles}
    users = {u.username: u for u in project.users}
    for row in rows:
        name, role = _text(row.get("username")), _text(row.get("unique_role_name"))
        if name not in users:
            raise DesignError(f"The user '{name[:60]}' is not a user of the project.")
        if role and role not in roles:
            raise DesignError(f"The user role '{role[:60]}' does not exist.")
        users[name] = replace(users[name], role=role)
    return replace(project, users=tuple(users.values())), len(rows)


def role_row(role: UserRole, project: Project, *, as_json: bool) -> dict[str, object]:
    """A role as one row of REDCap's ``content=userRole`` export."""
    row: dict[str, object] = {
        "unique_role_name": role.unique_role_name,
        "role_label": role.role_label,
    }
    for name in USER_RIGHT_COLUMNS:
        row[name] = int(role.rights.get(name, 0))
    # A form a role does not name has the default rights, as for a user (see User).
    forms = {
        i.instrument_name: int(role.forms.get(i.instrument_name, 1)) for i in project.instruments
    }
    export = {
        i.instrument_name: int(role.forms_export.get(i.instrument_name, 1))
        for i in project.instruments
    }
    if as_json:
        row["forms"] = forms
        row["forms_export"] = export
    else:
        row["forms"] = ",".join(f"{k}:{v}" for k, v in forms.items())
        row["forms_export"] = ",".join(f"{k}:{v}" for k, v in export.items())
    return row
