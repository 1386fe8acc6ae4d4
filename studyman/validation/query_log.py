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
    the problem came back after closing (same id).

Every change is a row in ``history`` with its time and who made it; rows are never updated in
``history`` and never deleted from either table (SQLite triggers refuse it). Each run or import
is one transaction: it applies completely or not at all.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import pandas as pd

from studyman.errors import ValidationError

__all__ = [
    "QUERY_COLUMNS",
    "RESPONSES",
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
CREATE TRIGGER IF NOT EXISTS queries_never_deleted BEFORE DELETE ON queries
BEGIN SELECT RAISE(ABORT, 'queries are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS history_never_deleted BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'query history is never deleted'); END;
CREATE TRIGGER IF NOT EXISTS history_never_changed BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'query history is never changed'); END;
"""

_KEY_FIELDS: Final = ("check_id", "record_id", "event", "instrument", "instance", "field")


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


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one validation run changed in the log."""

    opened: tuple[str, ...]
    reopened: tuple[str, ...]
    closed: tuple[str, ...]
    still_open: tuple[str, ...]


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
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

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
        who: str = "studyman validate",
        at: str | None = None,
        source: str = "",
    ) -> SyncResult:
        """Record one validation run: open new queries, close resolved ones, re-open returns.

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
        who, at
            Who ran it and when (UTC ISO time; now by default).
        source
            What was validated (snapshot path), for the run table.

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
            existing = {
                row[0]: row
                for row in connection.execute(
                    "SELECT query_id, status, close_reason, "
                    "confirmed_value, value, check_id, instrument FROM queries"
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
                    if reason == "confirmed_correct" and confirmed_value == value:
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
            to_close = [
                qid
                for qid, row in existing.items()
                if qid not in found
                and row[1] != "closed"
                and row[5] in ran
                and row[6] not in unchecked
            ]
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
            connection.execute(
                "INSERT INTO runs (at, who, source, opened, reopened, closed, still_open) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (stamp, who, source, len(opened), len(reopened), len(closed), len(still)),
            )
        return SyncResult(tuple(opened), tuple(reopened), tuple(closed), tuple(still))

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
        any other response makes it ``answered`` until the next run sees the data corrected.

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
            "SELECT status, value FROM queries WHERE query_id = ?", (qid,)
        ).fetchone()
        if row is None:
            raise ValidationError(f"query {qid}: no such query in {self.path}")
        status_before, value = row
        new_status: QueryStatus
        if response == "confirmed_correct":
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

    def import_responses(
        self, table: pd.DataFrame, *, who: str = "coordinator", at: str | None = None
    ) -> int:
        """Apply the responses in a coordinator's edited listing; return how many changed.

        The table needs ``query_id`` and ``response`` columns (``note`` or ``response_note``
        optional). Rows with a blank response, or with the response and note the log already
        holds, are skipped, so importing the same sheet twice changes nothing. The whole import
        is one transaction.

        Raises
        ------
        ValidationError
            When a column is missing, an id is unknown or a response is not one of
            :data:`RESPONSES` (nothing is applied then).
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
                if current[qid] == (response, note):
                    continue
                self._respond(connection, qid, response, note, who, stamp)
                changed += 1
        return changed

    # ------------------------------------------------------------------------------ reading

    def queries(self, *, as_of: str | None = None) -> pd.DataFrame:
        """Every query with its current status and age in days (:data:`QUERY_COLUMNS`)."""
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
