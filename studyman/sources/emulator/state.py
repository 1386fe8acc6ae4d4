"""A served project's mutable state: its design, records, documents, log and survey codes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from studyman.sources.emulator.files import FileStore
from studyman.sources.emulator.model import USER_RIGHT_COLUMNS, Project, User
from studyman.sources.emulator.store import RecordStore

__all__ = ["FULL_RIGHTS", "LogEntry", "ProjectState", "full_rights_user"]

#: Rights of a full-rights user (a ``--token`` user, or the creator of a project).
FULL_RIGHTS: dict[str, int] = {name: 1 for name in USER_RIGHT_COLUMNS}


def full_rights_user(username: str) -> User:
    """A user with every right (every form editable and exportable in full)."""
    return User(username=username, rights=FULL_RIGHTS)


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


@dataclass
class ProjectState:
    """A served project: its design (:attr:`project`), records, documents and log.

    Design writes replace :attr:`project` and carry the records over (:meth:`redesign`); every
    write holds :attr:`write_lock`, so that a design change never loses a concurrent import.
    """

    project: Project
    store: RecordStore
    files: FileStore
    log: list[LogEntry] = field(default_factory=list)
    survey_codes: dict[tuple[str, str, str, str, int], str] = field(default_factory=dict)
    write_lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def create(
        cls, project: Project, directory: Path, clock: Callable[[], datetime] = datetime.now
    ) -> ProjectState:
        """A state for *project* whose documents live under *directory*."""
        return cls(project, RecordStore(project, clock), FileStore(directory))

    def redesign(self, project: Project) -> None:
        """Make *project* the design; the records that still fit it are carried over."""
        with self.write_lock:
            self.store = self.store.carried_over(project)
            self.project = replace(project, records=())

    def user(self, username: str) -> User | None:
        """The user *username* with their effective rights (a role's, when assigned to one).

        ``None`` when the project has no such user: the call is refused (fail closed).
        """
        project = self.project
        for user in project.users:
            if user.username != username:
                continue
            for role in project.roles:
                if user.role and role.unique_role_name == user.role:
                    return replace(
                        user, rights=role.rights, forms=role.forms, forms_export=role.forms_export
                    )
            return user
        return None
