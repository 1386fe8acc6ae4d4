"""Locking the analysis plan: its sha256 and version recorded in ``sap.lock.json``.

A locked plan may change only through an amendment: a new ``version`` with an entry under
``amendments`` (version, date, reason). :func:`check_lock` is what ``studyman analyze`` calls
before it runs anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from studyman.analysis.sap import Amendment, LoadedPlan, load_sap
from studyman.errors import ProtocolError
from studyman.protocol.text_files import TextEncodingError, decode_utf8
from studyman.sources.snapshot import write_bytes_atomic

__all__ = ["LockEntry", "LockFile", "PlanProvenance", "check_lock", "default_lock_path", "lock_sap"]


class LockEntry(BaseModel):
    """One locked version of the plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    sha256: str


class LockFile(BaseModel):
    """The content of ``sap.lock.json``: the current lock and every earlier one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: str
    version: str
    sha256: str
    history: tuple[LockEntry, ...]


class PlanProvenance(BaseModel):
    """What every output carries about the plan that produced it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    sha256: str
    locked_version: str
    locked_sha256: str
    amendments: tuple[Amendment, ...]


def default_lock_path(sap_path: str | Path) -> Path:
    """``analysis/sap.yaml`` → ``analysis/sap.lock.json``."""
    path = Path(sap_path)
    return path.with_name(path.stem + ".lock.json")


def _read_lock(lock_path: Path) -> LockFile:
    try:
        data = lock_path.read_bytes()
    except OSError as error:
        raise ProtocolError(
            f"cannot read the lock file ({error.strerror})", file=str(lock_path)
        ) from None
    try:
        document = json.loads(decode_utf8(data))
    except TextEncodingError as encoding:
        raise ProtocolError(f"not a valid lock file: {encoding}", file=str(lock_path)) from None
    except json.JSONDecodeError as error:
        raise ProtocolError(
            f"not a valid lock file: not JSON ({error.msg}, column {error.colno}); "
            "restore it from version control",
            file=str(lock_path),
            key=f"line {error.lineno}",
        ) from None
    if not isinstance(document, dict):
        raise ProtocolError(
            "not a valid lock file: expected a JSON object with plan, version, sha256, history",
            file=str(lock_path),
        )
    try:
        return LockFile.model_validate(document)
    except PydanticValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or None
        problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ProtocolError(
            f"not a valid lock file: {problem}", file=str(lock_path), key=key
        ) from None


def _write_lock(lock_path: Path, lock: LockFile) -> None:
    text = json.dumps(lock.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(lock_path, text.encode("utf-8"))


def _amendment_for(loaded: LoadedPlan) -> Amendment | None:
    for amendment in loaded.plan.amendments:
        if amendment.version == loaded.plan.version:
            return amendment
    return None


def lock_sap(sap_path: str | Path, lock_path: str | Path | None = None) -> LockFile:
    """Lock the plan (or record an amended version of a locked plan).

    Parameters
    ----------
    sap_path
        The plan file.
    lock_path
        Where the lock is kept; default ``sap.lock.json`` beside the plan.

    Returns
    -------
    LockFile
        The lock now on disk (unchanged when the plan was already locked as it is).

    Raises
    ------
    ProtocolError
        The plan is invalid, or it changed since it was locked without a new version that has an
        amendment (version, date, reason) recorded.
    """
    loaded = load_sap(sap_path)
    target = Path(lock_path) if lock_path is not None else default_lock_path(sap_path)
    entry = LockEntry(version=loaded.plan.version, sha256=loaded.sha256)
    if not target.exists():
        lock = LockFile(
            plan=Path(sap_path).name,
            version=entry.version,
            sha256=entry.sha256,
            history=(entry,),
        )
        _write_lock(target, lock)
        return lock
    current = _read_lock(target)
    if current.sha256 == loaded.sha256:
        return current
    _require_amendment(loaded, current)
    lock = LockFile(
        plan=current.plan,
        version=entry.version,
        sha256=entry.sha256,
        history=(*current.history, entry),
    )
    _write_lock(target, lock)
    return lock


def _require_amendment(loaded: LoadedPlan, lock: LockFile) -> Amendment:
    locked_versions = {entry.version for entry in lock.history}
    if loaded.plan.version in locked_versions:
        raise ProtocolError(
            f"the plan changed since version {loaded.plan.version} was locked "
            f"(sha256 {lock.sha256[:12]}… now {loaded.sha256[:12]}…); record the change as an "
            "amendment with a new version, date and reason",
            file=loaded.path,
            key="version",
        )
    amendment = _amendment_for(loaded)
    if amendment is None:
        raise ProtocolError(
            f"version {loaded.plan.version} has no amendment recorded (version, date, reason)",
            file=loaded.path,
            key="amendments",
        )
    return amendment


def check_lock(loaded: LoadedPlan, lock_path: str | Path | None = None) -> PlanProvenance:
    """Check that *loaded* is the locked plan or a recorded amendment of it.

    Raises
    ------
    ProtocolError
        No lock exists, or the plan changed without an amendment.
    """
    target = Path(lock_path) if lock_path is not None else default_lock_path(loaded.path)
    if not target.exists():
        raise ProtocolError(
            "the analysis plan is not locked; run `studyman sap lock --sap "
            f"{loaded.path}` before analysing",
            file=str(target),
        )
    lock = _read_lock(target)
    if lock.sha256 != loaded.sha256:
        _require_amendment(loaded, lock)
    return PlanProvenance(
        version=loaded.plan.version,
        sha256=loaded.sha256,
        locked_version=lock.version,
        locked_sha256=lock.sha256,
        amendments=loaded.plan.amendments,
    )
