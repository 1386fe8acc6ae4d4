"""Uploaded files: a project's file-upload fields and its File Repository, kept on disk.

Every document gets a ``doc_id`` (REDCap's numbering: one sequence per project) and is written
atomically to ``<directory>/<doc_id>`` (owner-only, 0600); the directory is the project's own
folder under the emulator's storage directory. Names, folders and which record field holds which
document are kept in memory, as REDCap keeps them in its database.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from studyman.sources.snapshot import write_bytes_atomic

__all__ = ["Document", "FileStore", "Folder"]

#: Where a file-upload field's document sits: record, event ("" classic), instance (0 none), field.
FieldSlot = tuple[str, str, int, str]


@dataclass(frozen=True)
class Document:
    """A stored document: its id, name, MIME type, size and repository folder (0: top level)."""

    doc_id: int
    name: str
    mime_type: str
    size: int
    folder_id: int = 0
    in_repository: bool = False


@dataclass(frozen=True)
class Folder:
    """A File Repository folder (``parent_id`` 0: top level; ``dag_id``/``role_id`` 0: any)."""

    folder_id: int
    name: str
    parent_id: int = 0
    dag_id: int = 0
    role_id: str = ""


class FileStore:
    """The documents of one project, under *directory* (created when the first file comes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._documents: dict[int, Document] = {}
        self._fields: dict[FieldSlot, int] = {}
        self._folders: dict[int, Folder] = {}
        self._next_doc = 1
        self._next_folder = 1

    # ------------------------------------------------------------------ documents
    def _store(self, data: bytes, name: str, mime_type: str, folder_id: int, repo: bool) -> int:
        with self._lock:
            doc_id = self._next_doc
            self._next_doc += 1
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_bytes_atomic(self.directory / str(doc_id), data, mode=0o600)
        with self._lock:
            self._documents[doc_id] = Document(doc_id, name, mime_type, len(data), folder_id, repo)
        return doc_id

    def read(self, doc_id: int) -> tuple[Document, bytes] | None:
        """A document and its bytes (``None`` when there is no such document)."""
        with self._lock:
            document = self._documents.get(doc_id)
        if document is None:
            return None
        return document, (self.directory / str(doc_id)).read_bytes()

    def _remove(self, doc_id: int) -> None:
        with self._lock:
            self._documents.pop(doc_id, None)
        (self.directory / str(doc_id)).unlink(missing_ok=True)

    # ------------------------------------------------------------------ file-upload fields
    def field_document(self, slot: FieldSlot) -> int | None:
        """The doc_id a record's file field holds (``None`` when empty)."""
        with self._lock:
            return self._fields.get(slot)

    def put_field(self, slot: FieldSlot, data: bytes, name: str, mime_type: str) -> int:
        """Store a file-upload field's document (replacing the one it held); return its id."""
        old = self.field_document(slot)
        doc_id = self._store(data, name, mime_type, 0, False)
        with self._lock:
            self._fields[slot] = doc_id
        if old is not None:
            self._remove(old)
        return doc_id

    def delete_field(self, slot: FieldSlot) -> bool:
        """Empty a file-upload field; whether it held a document."""
        with self._lock:
            doc_id = self._fields.pop(slot, None)
        if doc_id is None:
            return False
        self._remove(doc_id)
        return True

    # ------------------------------------------------------------------ repository
    def folder(self, folder_id: int) -> Folder | None:
        """A repository folder by id."""
        with self._lock:
            return self._folders.get(folder_id)

    def create_folder(self, name: str, parent_id: int, dag_id: int, role_id: str) -> int:
        """Create a repository folder; return its id."""
        with self._lock:
            folder_id = self._next_folder
            self._next_folder += 1
            self._folders[folder_id] = Folder(folder_id, name, parent_id, dag_id, role_id)
            return folder_id

    def put_repository(self, data: bytes, name: str, mime_type: str, folder_id: int) -> int:
        """Store a File Repository document in *folder_id* (0: top level); return its id."""
        return self._store(data, name, mime_type, folder_id, True)

    def listing(self, folder_id: int) -> tuple[list[Folder], list[Document]]:
        """The folders and repository documents directly in *folder_id*."""
        with self._lock:
            folders = [f for f in self._folders.values() if f.parent_id == folder_id]
            documents = [
                d for d in self._documents.values() if d.in_repository and d.folder_id == folder_id
            ]
        return folders, documents

    def delete_repository(self, doc_id: int) -> bool:
        """Delete a repository document; whether there was one."""
        with self._lock:
            document = self._documents.get(doc_id)
        if document is None or not document.in_repository:
            return False
        self._remove(doc_id)
        return True
