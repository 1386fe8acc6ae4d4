"""Locking the analysis plan: its sha256 and version recorded in ``sap.lock.json``.

A locked plan may change only through an amendment: a new ``version`` with an entry under
``amendments`` (version, date, reason). :func:`check_lock` is what ``studyman analyze`` calls
before it runs anything.

The lock also knows unblinding: the first time ``analyze`` reads the allocation (the
randomisation list), :func:`record_unblinding` writes into the lock which snapshot was analysed,
when (UTC), and which plan versions were locked then. From that moment an amendment is
*post-unblinding* when its version was not yet locked at unblinding (whatever date it claims:
a backdated amendment is caught too) or when it is dated after the day of unblinding.
:func:`check_lock` refuses such a plan unless the caller gives a reason
(``--post-unblinding-amendment``), and the reason then travels in the provenance of every
output and at the top of the report.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from studyman.analysis.sap import Amendment, LoadedPlan, load_sap
from studyman.errors import ProtocolError
from studyman.protocol.text_files import TextEncodingError, decode_utf8
from studyman.sources.snapshot import write_bytes_atomic

__all__ = [
    "LockEntry",
    "LockFile",
    "PlanProvenance",
    "PostUnblindingAmendment",
    "UnblindingRecord",
    "check_lock",
    "default_lock_path",
    "lock_sap",
    "post_unblinding_amendments",
    "record_unblinding",
]


class LockEntry(BaseModel):
    """One locked version of the plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    sha256: str


class UnblindingRecord(BaseModel):
    """When the allocation was first read by ``analyze``, on which snapshot, under which plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    snapshot_id: str
    read_at: dt.datetime
    plan_version: str
    plan_sha256: str
    #: Plan versions in the lock history at that moment (with ``plan_version``: the plan as it
    #: stood before anyone saw the allocation).
    locked_versions: tuple[str, ...]


class LockFile(BaseModel):
    """The content of ``sap.lock.json``: the current lock, every earlier one, and unblinding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: str
    version: str
    sha256: str
    history: tuple[LockEntry, ...]
    unblinding: UnblindingRecord | None = None


class PostUnblindingAmendment(BaseModel):
    """Amendments made after unblinding that a user chose to run, and the reason given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str
    amendments: tuple[Amendment, ...]


class PlanProvenance(BaseModel):
    """What every output carries about the plan that produced it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    sha256: str
    locked_version: str
    locked_sha256: str
    amendments: tuple[Amendment, ...]
    unblinding: UnblindingRecord | None = None
    post_unblinding_amendment: PostUnblindingAmendment | None = None


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
    text = json.dumps(lock.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True)
    text += "\n"
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
        unblinding=current.unblinding,
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


def post_unblinding_amendments(
    loaded: LoadedPlan, unblinding: UnblindingRecord | None
) -> tuple[Amendment, ...]:
    """The plan's amendments made after the allocation was first read (none before unblinding).

    Notes
    -----
    An amendment is post-unblinding when its version was neither locked nor the analysed
    version at unblinding (so a backdated amendment is caught by its version), or when its date
    is after the day of unblinding. The day of unblinding itself counts as before: a date cannot
    order events within a day, and the plan analysed that day is in ``plan_version``.
    """
    if unblinding is None:
        return ()
    before = {*unblinding.locked_versions, unblinding.plan_version}
    day = unblinding.read_at.date()
    return tuple(
        amendment
        for amendment in loaded.plan.amendments
        if amendment.version not in before or amendment.date > day
    )


def check_lock(
    loaded: LoadedPlan,
    lock_path: str | Path | None = None,
    *,
    post_unblinding_amendment: str | None = None,
) -> PlanProvenance:
    """Check that *loaded* is the locked plan or a recorded amendment of it.

    Parameters
    ----------
    loaded
        The plan to run.
    lock_path
        The lock; default ``sap.lock.json`` beside the plan.
    post_unblinding_amendment
        The reason for running a plan amended after unblinding (``analyze
        --post-unblinding-amendment``); required exactly when such an amendment exists.

    Raises
    ------
    ProtocolError
        No lock exists, the plan changed without an amendment, an amendment was made after the
        allocation was first read and no reason is given, or a reason is given with no such
        amendment to justify.
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
    late = post_unblinding_amendments(loaded, lock.unblinding)
    reason = (post_unblinding_amendment or "").strip()
    if post_unblinding_amendment is not None and not reason:
        raise ProtocolError(
            "--post-unblinding-amendment needs a reason (a non-blank text)", file=loaded.path
        )
    post: PostUnblindingAmendment | None = None
    if late:
        unblinding = lock.unblinding
        assert unblinding is not None  # late amendments exist only after unblinding
        if not reason:
            listed = ", ".join(f"version {a.version} dated {a.date.isoformat()}" for a in late)
            raise ProtocolError(
                f"the plan was amended after unblinding ({listed}): allocation was first read "
                f"by analyze at {unblinding.read_at.isoformat()} on snapshot "
                f"{unblinding.snapshot_id[:12]}… under plan version {unblinding.plan_version}; "
                'to run it anyway give --post-unblinding-amendment "reason" (stated in the '
                "report and the provenance of every output)",
                file=loaded.path,
                key="amendments",
            )
        post = PostUnblindingAmendment(reason=reason, amendments=late)
    elif reason:
        raise ProtocolError(
            "--post-unblinding-amendment was given but no amendment of the plan is after "
            "unblinding"
            + (
                ""
                if lock.unblinding is not None
                else " (the allocation has not been read by analyze yet)"
            )
            + "; run without it",
            file=loaded.path,
            key="amendments",
        )
    return PlanProvenance(
        version=loaded.plan.version,
        sha256=loaded.sha256,
        locked_version=lock.version,
        locked_sha256=lock.sha256,
        amendments=loaded.plan.amendments,
        unblinding=lock.unblinding,
        post_unblinding_amendment=post,
    )


def record_unblinding(
    loaded: LoadedPlan,
    snapshot: str,
    lock_path: str | Path | None = None,
    *,
    now: dt.datetime | None = None,
) -> UnblindingRecord:
    """Record in the lock that ``analyze`` is about to read the allocation (first time only).

    Parameters
    ----------
    loaded
        The plan being run (already passed :func:`check_lock`).
    snapshot
        The snapshot id (:func:`studyman.sources.snapshot.snapshot_id`) being analysed.
    lock_path
        The lock; default beside the plan.
    now
        The time to record (UTC); default the current time, to the second.

    Returns
    -------
    UnblindingRecord
        The record now in the lock: the existing one when the allocation was read before
        (it is never moved), else the new one, written atomically.
    """
    target = Path(lock_path) if lock_path is not None else default_lock_path(loaded.path)
    lock = _read_lock(target)
    if lock.unblinding is not None:
        return lock.unblinding
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    record = UnblindingRecord(
        snapshot_id=snapshot,
        read_at=moment,
        plan_version=loaded.plan.version,
        plan_sha256=loaded.sha256,
        locked_versions=tuple(entry.version for entry in lock.history),
    )
    _write_lock(target, lock.model_copy(update={"unblinding": record}))
    return record
