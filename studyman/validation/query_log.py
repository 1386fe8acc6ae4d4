"""The query log: every data query with a stable identity and its full history, in SQLite.

A query's id is derived from where the problem is (check id, record, event, instrument, instance,
field), never from the message or the value, so a re-run finds the same query again. Statuses:

``open``
    raised by a check and not yet answered;
``answered``
    the site responded (data missing, typographical error, wrong source, other);
``closed``
    resolved: the data were corrected (closed automatically by the next run) or the site
    confirmed the value correct;
``reopened``
    the problem came back after closing (same id), or a review sent it back to the site.

Queries that need medical review (every ``critical`` check and the safety checks, see
:func:`~studyman.validation.catalogue.needs_medical_review`) never close on a site response or
on corrected data: they become ``answered`` and only :meth:`QueryLog.review` closes (accepted)
or re-opens (rejected) them, with the reviewer's name in the history.

Every change is a row in ``history`` with its time and who made it; rows are never updated in
``history`` and never deleted from either table (SQLite triggers refuse it). Each run or import
is one transaction: it applies completely or not at all.

A query closes as corrected only on evidence: the run's input (its :class:`Coverage`) holds the
record, event, instance and field the query was raised on, and the check no longer fires there.
Every run records its coverage; input covering less than the last complete run (fewer
participants, fields, events or sites) is refused unless the run is declared partial, and a
partial run leaves the queries outside its coverage as they are (a history row says so).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import pandas as pd

from studyman.errors import ValidationError
from studyman.validation.catalogue import finding_kind, needs_medical_review

__all__ = [
    "DECISIONS",
    "QUERY_COLUMNS",
    "RESPONSES",
    "Coverage",
    "CoverageError",
    "QueryLog",
    "QueryStatus",
    "SyncResult",
    "query_id",
]

QueryStatus = Literal["open", "answered", "closed", "reopened"]
RESPONSES: Final = (
    "confirmed_correct",
    "data_missing",
    "typographical_error",
    "wrong_source",
    "other",
)

QUERY_COLUMNS: Final = [
    "query_id",
    "check_id",
    "severity",
    "site",
    "record_id",
    "event",
    "instrument",
    "instance",
    "field",
    "value",
    "message",
    "status",
    "opened_at",
    "first_opened_at",
    "closed_at",
    "response",
    "response_note",
    "days_open",
    "kind",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY,
    check_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    site TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event TEXT NOT NULL,
    instrument TEXT NOT NULL,
    instance TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'answered', 'closed', 'reopened')),
    first_opened_at TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closed_at TEXT,
    close_reason TEXT,
    response TEXT,
    response_note TEXT,
    confirmed_value TEXT
);
CREATE TABLE IF NOT EXISTS history (
    entry INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id TEXT NOT NULL REFERENCES queries (query_id),
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    status_before TEXT,
    status_after TEXT NOT NULL,
    value TEXT,
    response TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS history_query ON history (query_id);
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    source TEXT NOT NULL,
    opened INTEGER NOT NULL,
    reopened INTEGER NOT NULL,
    closed INTEGER NOT NULL,
    still_open INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS run_coverage (
    run INTEGER PRIMARY KEY REFERENCES runs (run),
    partial INTEGER NOT NULL,
    records TEXT NOT NULL,
    events TEXT NOT NULL,
    fields TEXT NOT NULL,
    sites TEXT NOT NULL,
    unchecked_forms TEXT NOT NULL,
    kept INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS queries_never_deleted BEFORE DELETE ON queries
BEGIN SELECT RAISE(ABORT, 'queries are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS history_never_deleted BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'query history is never deleted'); END;
CREATE TRIGGER IF NOT EXISTS history_never_changed BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'query history is never changed'); END;
"""

_KEY_FIELDS: Final = ("check_id", "record_id", "event", "instrument", "instance", "field")
#: close reasons that keep a query closed while its value is unchanged
_CONFIRMED: Final = ("confirmed_correct", "medical_review")
#: the mark of a medical-review query whose data no longer raise it (status ``answered``)
_AWAITING_REVIEW: Final = "awaiting_review"
DECISIONS: Final = ("accepted", "rejected")


def query_id(
    check_id: str, record_id: str, event: str, instrument: str, instance: str, field: str
) -> str:
    """The stable id of the query for a problem at this place.

    A SHA-256 digest of the six parts (unit-separator joined), shortened to 16 hex digits and
    prefixed ``Q-``; the same place always gives the same id, on any machine and in any run.
    """
    key = "\x1f".join((check_id, record_id, event, instrument, str(instance), field))
    return "Q-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16].upper()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CoverageError(ValidationError):
    """The input covers less than the query log's last complete run (nothing was changed)."""


@dataclass(frozen=True)
class Coverage:
    """What one run's input held: the places where its queries may close.

    Attributes
    ----------
    records
        Record ids present in the input.
    events
        Unique event names with at least one row (empty for a classic project).
    fields
        ``(form, field)`` of every dictionary field the input has a column for.
    sites
        Sites (data access groups) of the records.
    rows
        ``(record, event, repeat instrument, instance)`` of every row; a query's own row must
        be among them for it to close.
    columns
        Every column of the input (status fields, checkbox boxes, ...).
    lacking
        Data-dictionary fields the input has no column for. The checks read across fields
        (a total from its items, a form's completeness from its required fields), so such an
        input is evidence for no place: none of its queries may close.
    expected
        ``(form, field)`` of every data field of the dictionary this run reads (a blinded run:
        its blinded view). Only these are compared with an earlier run's fields, so a blinded
        run after an unblinded one is not short of the fields it may not see.
    """

    records: frozenset[str]
    events: frozenset[str]
    fields: frozenset[tuple[str, str]]
    sites: frozenset[str]
    rows: frozenset[tuple[str, str, str, str]] = field(default=frozenset(), repr=False)
    columns: frozenset[str] = field(default=frozenset(), repr=False)
    lacking: frozenset[str] = frozenset()
    expected: frozenset[tuple[str, str]] = field(default=frozenset(), repr=False)

    def has_field(self, name: str) -> bool:
        """Whether the input holds field (or column) *name*."""
        return name in self.columns or any(name == field_name for _, field_name in self.fields)

    @property
    def forms(self) -> frozenset[str]:
        """Forms with at least one field in the input."""
        return frozenset(form for form, _ in self.fields)

    def absent(self, record: str, event: str, instrument: str, instance: str, name: str) -> str:
        """What of this place the input lacks ("" when the whole place is present).

        The record must have a row at the event (for a repeating form or event, the row of that
        instance), and the field must be a column of the input.
        """
        if self.lacking:
            return f"the input lacks fields the checks read ({_some(sorted(self.lacking))})"
        if record not in self.records:
            return f"record {record} not in the input"
        if event and event not in self.events:
            return f"event {event} not in the input"
        if instance:
            if (record, event, instrument, instance) not in self.rows and (
                record,
                event,
                "",
                instance,
            ) not in self.rows:
                return f"{record} {event} {instrument} #{instance} not in the input"
        elif event and not any(
            (record, event, repeat, "") in self.rows for repeat in ("", instrument)
        ):
            return f"{record} has no row at {event} in the input"
        if name and not self.has_field(name):
            return f"field {name} not in the input"
        return ""

    def shortfall(self, reference: Coverage | None, *, ignore_forms: Iterable[str] = ()) -> str:
        """What *reference* covered, or the data dictionary has, that this input lacks, in
        words ("" when nothing).

        Fields of *ignore_forms* (the forms a blinded run leaves out) are not compared.
        """
        parts = [] if reference is None else self._short_of(reference, set(ignore_forms))
        named = {name for part in parts for name in re.findall(r"[\w-]+", part)}
        lacking = sorted(self.lacking - named)
        if lacking:
            parts.append(f"{len(lacking)} fields of the data dictionary missing ({_some(lacking)})")
        return "; ".join(parts)

    def _short_of(self, reference: Coverage, ignored: set[str]) -> list[str]:
        parts: list[str] = []
        sites = sorted(reference.sites - self.sites)
        if sites:
            parts.append(
                f"{len(sites)} of {len(reference.sites)} sites (DAGs) missing ({_some(sites)})"
            )
        records = sorted(reference.records - self.records)
        if records:
            parts.append(
                f"{len(records)} of {len(reference.records)} participants missing "
                f"({_some(records)})"
            )
        events = sorted(reference.events - self.events)
        if events:
            parts.append(f"{len(events)} events missing ({_some(events)})")
        wanted = {
            (form, name)
            for form, name in reference.fields
            if form not in ignored and (not self.expected or (form, name) in self.expected)
        }
        lacking = wanted - self.fields
        if lacking:
            forms = sorted(
                form
                for form in {form for form, _ in lacking}
                if not any(other == form for other, _ in self.fields)
            )
            names = sorted(name for form, name in lacking if form not in forms)
            if forms:
                parts.append(f"{len(forms)} forms missing ({_some(forms)})")
            if names:
                parts.append(f"{len(names)} fields missing ({_some(names)})")
        return parts

    def to_row(self) -> dict[str, str]:
        """The coverage as JSON text columns (rows are not stored: they are per run)."""
        fields: dict[str, list[str]] = {}
        for form, name in sorted(self.fields):
            fields.setdefault(form, []).append(name)
        return {
            "records": json.dumps(sorted(self.records)),
            "events": json.dumps(sorted(self.events)),
            "fields": json.dumps(fields, sort_keys=True),
            "sites": json.dumps(sorted(self.sites)),
        }

    @classmethod
    def from_row(cls, records: str, events: str, fields: str, sites: str) -> Coverage:
        """The coverage stored by :meth:`to_row` (without rows)."""
        by_form: dict[str, list[str]] = json.loads(fields)
        return cls(
            records=frozenset(json.loads(records)),
            events=frozenset(json.loads(events)),
            fields=frozenset((form, name) for form, names in by_form.items() for name in names),
            sites=frozenset(json.loads(sites)),
        )


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one validation run changed in the log.

    ``kept`` holds the queries that no longer fired but stayed as they were because the run's
    input did not hold their place (a partial run, or a row no longer exported);
    ``awaiting_review`` the medical-review queries that no longer fired and now wait for the
    review that alone closes them.
    """

    opened: tuple[str, ...]
    reopened: tuple[str, ...]
    closed: tuple[str, ...]
    still_open: tuple[str, ...]
    kept: tuple[str, ...] = ()
    awaiting_review: tuple[str, ...] = ()


class QueryLog:
    """A query log in a SQLite file (created on first use).

    Parameters
    ----------
    path
        The SQLite file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # an unblinded run's queries name participants and arms: the log is its owner's
                # only from its creation (SQLite gives its journal files the log's mode)
                self.path.touch(mode=0o600)
            self._connection = sqlite3.connect(self.path, isolation_level=None)
            self._connection.execute("PRAGMA foreign_keys = ON")
            tables = {
                str(row[0])
                for row in self._connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            } - {"sqlite_sequence"}
            if tables and not {"queries", "history"} <= tables:
                self._connection.close()
                raise ValidationError(
                    f"{self.path}: not a studyman query log (it holds the tables "
                    f"{', '.join(sorted(tables))}); give a new file or an existing query log"
                )
            self._connection.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise ValidationError(f"{self.path}: cannot open the query log ({error})") from error

    def close(self) -> None:
        """Close the database connection."""
        self._connection.close()

    def __enter__(self) -> QueryLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise ValidationError(
                f"{self.path}: the query log cannot be written ({error}); is another run or "
                "import using it? Nothing was changed"
            ) from None
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise ValidationError(
                f"{self.path}: cannot commit to the query log ({error}); it is unchanged"
            ) from None

    def _history(
        self,
        connection: sqlite3.Connection,
        rows: Iterable[
            tuple[str, str, str, str, str | None, str, str | None, str | None, str | None]
        ],
    ) -> None:
        connection.executemany(
            "INSERT INTO history (query_id, at, who, action, status_before, status_after, value, "
            "response, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            list(rows),
        )

    # ------------------------------------------------------------------------------- sync

    def sync(
        self,
        findings: pd.DataFrame,
        *,
        checks_run: Iterable[str],
        unchecked_instruments: Iterable[str] = (),
        coverage: Coverage | None = None,
        partial: bool = False,
        who: str = "studyman validate",
        at: str | None = None,
        source: str = "",
    ) -> SyncResult:
        """Record one validation run: open new queries, close resolved ones, re-open returns.

        The same as :meth:`staged_sync` committed at once; see it for the parameters.
        """
        with self.staged_sync(
            findings,
            checks_run=checks_run,
            unchecked_instruments=unchecked_instruments,
            coverage=coverage,
            partial=partial,
            who=who,
            at=at,
            source=source,
        ) as result:
            pass
        return result

    def last_coverage(self) -> tuple[str, Coverage] | None:
        """The time and coverage of the last complete (not partial) run, if any."""
        return self._last_coverage(self._connection)

    @staticmethod
    def _last_coverage(connection: sqlite3.Connection) -> tuple[str, Coverage] | None:
        row = connection.execute(
            "SELECT runs.at, records, events, fields, sites FROM run_coverage "
            "JOIN runs USING (run) WHERE partial = 0 ORDER BY run DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), Coverage.from_row(*row[1:])

    @contextmanager
    def staged_sync(
        self,
        findings: pd.DataFrame,
        *,
        checks_run: Iterable[str],
        unchecked_instruments: Iterable[str] = (),
        coverage: Coverage | None = None,
        partial: bool = False,
        who: str = "studyman validate",
        at: str | None = None,
        source: str = "",
    ) -> Iterator[SyncResult]:
        """Apply one validation run in an open transaction, committed when the block ends.

        Inside the ``with`` block :meth:`queries` already shows the run's changes; an exception
        in the block rolls the whole run back, so a caller can write its listings first and
        let the log change only when they all succeeded.

        Parameters
        ----------
        findings
            The run's findings (check_id, severity, message, record_id, event, instrument,
            instance, field, value, and ``site``).
        checks_run
            The checks that ran: only their queries may close (a blinded run does not close the
            queries of checks that need the arm).
        unchecked_instruments
            Instruments the run did not see (the unblinded forms in a blinded run): their
            queries neither close nor change.
        coverage
            What the run's input held. A query closes only when its record, event, instance and
            field are in it; the coverage is recorded with the run. ``None`` (a caller that
            passes findings alone, as the unit tests do) treats every place as covered and
            records nothing to compare with.
        partial
            The input is knowingly incomplete: do not compare it with the last complete run.
        who, at
            Who ran it and when (UTC ISO time; now by default).
        source
            What was validated (snapshot path), for the run table and messages.

        Raises
        ------
        CoverageError
            When *coverage* lacks participants, sites, events or fields the last complete run
            had and the run is not *partial* (nothing is changed).

        Notes
        -----
        A query closed because the site confirmed the value stays closed while the value is
        unchanged; when the value changes and the problem remains, it re-opens. A query closed
        because the data were corrected re-opens when the problem comes back.
        """
        stamp = at or _now()
        ran = set(checks_run)
        unchecked = set(unchecked_instruments)
        frame = findings.copy()
        if "site" not in frame.columns:
            frame["site"] = ""
        for column in (*_KEY_FIELDS, "severity", "message", "value", "site"):
            if column not in frame.columns:
                frame[column] = ""
            frame[column] = (
                frame[column].astype(object).where(frame[column].notna(), "").astype(str)
            )
        frame = frame.drop_duplicates(subset=list(_KEY_FIELDS), keep="first")
        ids = [
            query_id(*parts)
            for parts in zip(*(frame[column].tolist() for column in _KEY_FIELDS), strict=True)
        ]
        frame["query_id"] = ids
        opened: list[str] = []
        reopened: list[str] = []
        closed: list[str] = []
        still: list[str] = []
        with self._transaction() as connection:
            if coverage is not None and not partial:
                last = self._last_coverage(connection)
                missing = coverage.shortfall(
                    None if last is None else last[1], ignore_forms=unchecked
                )
                if missing:
                    than = (
                        f"the query log's last complete run ({last[0]})"
                        if last is not None
                        else "a complete export"
                    )
                    raise CoverageError(
                        f"{source or 'the input'}: covers less than {than}: {missing}; nothing "
                        "was changed (validate the complete export, or run with --partial to "
                        "close only the queries inside this input)"
                    )
            existing = {
                row[0]: row
                for row in connection.execute(
                    "SELECT query_id, status, close_reason, confirmed_value, value, check_id, "
                    "instrument, record_id, event, instance, field, severity FROM queries"
                )
            }
            inserts: list[tuple[object, ...]] = []
            updates: list[tuple[str, tuple[object, ...]]] = []
            history: list[
                tuple[str, str, str, str, str | None, str, str | None, str | None, str | None]
            ] = []
            found: set[str] = set()
            for record in frame.to_dict("records"):
                row = _Row({str(key): str(item) for key, item in record.items()})
                qid = row.query_id
                found.add(qid)
                value = str(row.value)
                previous = existing.get(qid)
                if previous is None:
                    inserts.append(
                        (
                            qid,
                            row.check_id,
                            row.severity,
                            row.site,
                            row.record_id,
                            row.event,
                            row.instrument,
                            row.instance,
                            row.field,
                            value,
                            row.message,
                            "open",
                            stamp,
                            stamp,
                        )
                    )
                    history.append(
                        (qid, stamp, who, "opened", None, "open", value, None, row.message)
                    )
                    opened.append(qid)
                    continue
                status, reason, confirmed_value, old_value = (
                    previous[1],
                    previous[2],
                    previous[3],
                    previous[4],
                )
                if status == "closed":
                    if reason in _CONFIRMED and confirmed_value == value:
                        continue
                    updates.append(
                        (
                            "UPDATE queries SET status = 'reopened', "
                            "opened_at = ?, closed_at = NULL, "
                            "close_reason = NULL, value = ?, message "
                            "= ?, severity = ? WHERE query_id = ?",
                            (stamp, value, row.message, row.severity, qid),
                        )
                    )
                    history.append(
                        (
                            qid,
                            stamp,
                            who,
                            "reopened",
                            "closed",
                            "reopened",
                            value,
                            None,
                            row.message,
                        )
                    )
                    reopened.append(qid)
                    continue
                still.append(qid)
                if reason == _AWAITING_REVIEW:
                    # corrected, awaiting review, and now the problem is back
                    updates.append(
                        (
                            "UPDATE queries SET status = 'reopened', close_reason = NULL, "
                            "value = ?, message = ? WHERE query_id = ?",
                            (value, row.message, qid),
                        )
                    )
                    history.append(
                        (qid, stamp, who, "reopened", status, "reopened", value, None, row.message)
                    )
                    continue
                if old_value != value:
                    updates.append(
                        (
                            "UPDATE queries SET value = ?, message = ? WHERE query_id = ?",
                            (value, row.message, qid),
                        )
                    )
                    history.append(
                        (qid, stamp, who, "value changed", status, status, value, None, row.message)
                    )
            connection.executemany(
                "INSERT INTO queries (query_id, check_id, severity, site, record_id, event, "
                "instrument, instance, field, value, message, status, first_opened_at, opened_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
            for statement, parameters in updates:
                connection.execute(statement, parameters)
            candidates = [
                qid
                for qid, row in existing.items()
                if qid not in found
                and row[1] != "closed"
                and row[5] in ran
                and row[6] not in unchecked
            ]
            to_close: list[str] = []
            kept: list[str] = []
            awaiting: list[str] = []
            for qid in candidates:
                row = existing[qid]
                if needs_medical_review(row[5], row[11]) and not (
                    coverage is not None
                    and coverage.absent(row[7], row[8], row[6], row[9], row[10])
                ):
                    # the data no longer raise it, but only a medical review closes it
                    if row[2] != _AWAITING_REVIEW:
                        connection.execute(
                            "UPDATE queries SET status = 'answered', close_reason = ? "
                            "WHERE query_id = ?",
                            (_AWAITING_REVIEW, qid),
                        )
                        history.append(
                            (
                                qid,
                                stamp,
                                who,
                                "data corrected: awaiting medical review",
                                row[1],
                                "answered",
                                None,
                                None,
                                None,
                            )
                        )
                        awaiting.append(qid)
                    continue
                lacking = (
                    coverage.absent(row[7], row[8], row[6], row[9], row[10])
                    if coverage is not None
                    else ""
                )
                if not lacking:
                    to_close.append(qid)
                    continue
                kept.append(qid)
                action = "kept: outside the partial run" if partial else "kept: place not in input"
                history.append((qid, stamp, who, action, row[1], row[1], None, None, lacking))
            connection.executemany(
                "UPDATE queries SET status = 'closed', "
                "closed_at = ?, close_reason = 'data_corrected' "
                "WHERE query_id = ?",
                [(stamp, qid) for qid in to_close],
            )
            history.extend(
                (
                    qid,
                    stamp,
                    who,
                    "closed: data corrected",
                    existing[qid][1],
                    "closed",
                    None,
                    None,
                    None,
                )
                for qid in to_close
            )
            closed.extend(to_close)
            self._history(connection, history)
            run = connection.execute(
                "INSERT INTO runs (at, who, source, opened, reopened, closed, still_open) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (stamp, who, source, len(opened), len(reopened), len(closed), len(still)),
            ).lastrowid
            if coverage is not None:
                stored = coverage.to_row()
                connection.execute(
                    "INSERT INTO run_coverage (run, partial, records, events, fields, sites, "
                    "unchecked_forms, kept) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run,
                        int(partial),
                        stored["records"],
                        stored["events"],
                        stored["fields"],
                        stored["sites"],
                        json.dumps(sorted(unchecked)),
                        len(kept),
                    ),
                )
            yield SyncResult(
                tuple(opened),
                tuple(reopened),
                tuple(closed),
                tuple(still),
                tuple(kept),
                tuple(awaiting),
            )

    # -------------------------------------------------------------------------- responses

    def respond(
        self,
        qid: str,
        response: str,
        note: str = "",
        *,
        who: str = "site",
        at: str | None = None,
    ) -> QueryStatus:
        """Record a site response to query *qid* and return its new status.

        ``confirmed_correct`` closes the query (it stays closed while the value is unchanged);
        any other response makes it ``answered`` until the next run sees the data corrected. A
        query that needs medical review (every ``critical`` one and the safety checks) becomes
        ``answered`` whatever the response: only :meth:`review` closes it.

        Raises
        ------
        ValidationError
            For an unknown query id or response.
        """
        if response not in RESPONSES:
            raise ValidationError(
                f"query {qid}: unknown response {response!r}; "
                f"expected one of {', '.join(RESPONSES)}"
            )
        stamp = at or _now()
        with self._transaction() as connection:
            status = self._respond(connection, qid, response, note, who, stamp)
        return status

    def _respond(
        self,
        connection: sqlite3.Connection,
        qid: str,
        response: str,
        note: str,
        who: str,
        stamp: str,
    ) -> QueryStatus:
        row = connection.execute(
            "SELECT status, value, check_id, severity FROM queries WHERE query_id = ?", (qid,)
        ).fetchone()
        if row is None:
            raise ValidationError(f"query {qid}: no such query in {self.path}")
        status_before, value, check_id, severity = row
        new_status: QueryStatus
        if response == "confirmed_correct" and not needs_medical_review(check_id, severity):
            new_status = "closed"
            connection.execute(
                "UPDATE queries SET status = 'closed', closed_at "
                "= ?, close_reason = 'confirmed_correct', "
                "confirmed_value = ?, response = ?, response_note = ? WHERE query_id = ?",
                (stamp, value, response, note, qid),
            )
        else:
            new_status = "closed" if status_before == "closed" else "answered"
            connection.execute(
                "UPDATE queries SET status = ?, response = ?, response_note = ? WHERE query_id = ?",
                (new_status, response, note, qid),
            )
        self._history(
            connection,
            [
                (
                    qid,
                    stamp,
                    who,
                    f"response: {response}",
                    status_before,
                    new_status,
                    value,
                    response,
                    note,
                )
            ],
        )
        return new_status

    def review(
        self,
        qid: str,
        decision: str,
        *,
        reviewer: str,
        note: str = "",
        at: str | None = None,
    ) -> QueryStatus:
        """Record a medical (or central) review of query *qid*; return its new status.

        ``accepted`` closes the query (it stays closed while its value is unchanged; a changed
        value that still raises it re-opens it); ``rejected`` re-opens it for the site. The
        history row names the reviewer and holds the note.

        Raises
        ------
        ValidationError
            For an unknown query or decision, a blank reviewer, or accepting a closed query.
        """
        if decision not in DECISIONS:
            raise ValidationError(
                f"query {qid}: unknown decision {decision!r}; expected one of "
                f"{', '.join(DECISIONS)}"
            )
        if not reviewer.strip():
            raise ValidationError(f"query {qid}: a review needs the reviewer's name (--reviewer)")
        stamp = at or _now()
        with self._transaction() as connection:
            row = connection.execute(
                "SELECT status, value FROM queries WHERE query_id = ?", (qid,)
            ).fetchone()
            if row is None:
                raise ValidationError(f"query {qid}: no such query in {self.path}")
            status_before, value = row
            new_status: QueryStatus
            if decision == "accepted":
                if status_before == "closed":
                    raise ValidationError(f"query {qid}: already closed; nothing to accept")
                new_status = "closed"
                connection.execute(
                    "UPDATE queries SET status = 'closed', closed_at = ?, "
                    "close_reason = 'medical_review', confirmed_value = ? WHERE query_id = ?",
                    (stamp, value, qid),
                )
            else:
                new_status = "reopened"
                connection.execute(
                    "UPDATE queries SET status = 'reopened', closed_at = NULL, "
                    "close_reason = NULL, "
                    "opened_at = CASE WHEN status = 'closed' THEN ? ELSE opened_at END "
                    "WHERE query_id = ?",
                    (stamp, qid),
                )
            self._history(
                connection,
                [
                    (
                        qid,
                        stamp,
                        reviewer.strip(),
                        f"review: {decision}",
                        status_before,
                        new_status,
                        value,
                        None,
                        note,
                    )
                ],
            )
        return new_status

    def import_responses(
        self,
        table: pd.DataFrame,
        *,
        who: str = "coordinator",
        at: str | None = None,
        site: str = "",
    ) -> int:
        """Apply the responses in a coordinator's edited listing; return how many changed.

        The table needs ``query_id`` and ``response`` columns (``note`` or ``response_note``
        optional). Rows with a blank response, or with the response and note the log already
        holds, are skipped, so importing the same sheet twice changes nothing. The whole import
        is one transaction.

        With *site* (a site's workbook), every row must be a query of that site.

        Raises
        ------
        ValidationError
            When a column is missing, an id is unknown, a response is not one of
            :data:`RESPONSES`, or a row belongs to another site than *site* (nothing is applied
            then).
        """
        if "query_id" not in table.columns or "response" not in table.columns:
            raise ValidationError(
                "the imported listing needs query_id and "
                f"response columns, found {list(table.columns)}"
            )
        note_column = "response_note" if "response_note" in table.columns else "note"
        stamp = at or _now()
        changed = 0
        with self._transaction() as connection:
            current = {
                row[0]: (row[1] or "", row[2] or "")
                for row in connection.execute(
                    "SELECT query_id, response, response_note FROM queries"
                )
            }
            site_of = dict(connection.execute("SELECT query_id, site FROM queries").fetchall())
            for position, row in enumerate(table.to_dict("records"), start=2):
                qid = _cell(row.get("query_id"))
                response = _cell(row.get("response"))
                note = _cell(row.get(note_column))
                if not qid or not response:
                    continue
                if response not in RESPONSES:
                    raise ValidationError(
                        f"imported listing, row {position} ({qid}): unknown response {response!r}; "
                        f"expected one of {', '.join(RESPONSES)}"
                    )
                if qid not in current:
                    raise ValidationError(f"imported listing, row {position}: no such query {qid}")
                if site and site_of[qid] != site:
                    raise ValidationError(
                        f"imported listing, row {position}: query {qid} is site "
                        f"{site_of[qid]}'s, not a query of this workbook's site {site}; nothing "
                        "was imported"
                    )
                if current[qid] == (response, note):
                    continue
                self._respond(connection, qid, response, note, who, stamp)
                changed += 1
        return changed

    # ------------------------------------------------------------------------------ reading

    def queries(self, *, as_of: str | None = None) -> pd.DataFrame:
        """Every query with its current status, age in days and kind (:data:`QUERY_COLUMNS`).

        ``kind`` is ``site_query`` or ``review_signal`` (see
        :func:`~studyman.validation.catalogue.finding_kind`).
        """
        frame = pd.read_sql_query(
            "SELECT query_id, check_id, severity, site, record_id, event, instrument, instance, "
            "field, value, message, status, opened_at, first_opened_at, closed_at, response, "
            "response_note FROM queries ORDER BY site, record_id, check_id, query_id",
            self._connection,
        )
        reference = pd.Timestamp(as_of or _now())
        if reference.tzinfo is None:
            reference = reference.tz_localize("UTC")
        opened = pd.to_datetime(frame["opened_at"], utc=True)
        closed = pd.to_datetime(frame["closed_at"], utc=True)
        until = closed.where(frame["status"] == "closed", reference)
        frame["days_open"] = [int(delta.days) for delta in (until - opened)]
        for column in ("closed_at", "response", "response_note"):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "")
        frame["kind"] = [finding_kind(str(check)) for check in frame["check_id"]]
        return frame[QUERY_COLUMNS]

    def history(self, qid: str | None = None) -> pd.DataFrame:
        """The change history (of one query, or of all), oldest first."""
        sql = (
            "SELECT entry, query_id, at, who, action, status_before, status_after, value, "
            "response, note FROM history"
        )
        parameters: tuple[str, ...] = ()
        if qid is not None:
            sql += " WHERE query_id = ?"
            parameters = (qid,)
        return pd.read_sql_query(sql + " ORDER BY entry", self._connection, params=parameters)


class _Row:
    """Attribute access to one finding (all values as text)."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError as missing:
            raise AttributeError(name) from missing


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()
