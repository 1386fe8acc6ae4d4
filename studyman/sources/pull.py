"""Pulling a REDCap project through PyCap into a snapshot.

:func:`pull_snapshot` talks to REDCap (or the emulator) only through PyCap's ``redcap.Project``:

1. metadata (the data dictionary), form-event mappings (a classic project answers 400: it is
   then classic), events and arms (longitudinal only), repeating forms, project info, version;
2. the record IDs (an export of the record-ID field alone);
3. the records, in batches of IDs (``batch_size``), ``concurrency`` batches at a time, as raw
   flat CSV; each batch is checked (see below) and retried with exponential back-off on 5xx,
   429, 408, time-outs, dropped connections and damaged bodies;
4. casting and splitting (:mod:`studyman.sources.tidy`; checked batches reach it in order, in
   groups of at least ``_BUILDER_ROWS`` flat rows, since its cost per call is mostly fixed) and
   an atomic snapshot (:mod:`studyman.sources.snapshot`).

What is checked, because PyCap does not
---------------------------------------
PyCap never looks at the HTTP status, and with ``format=csv`` it hands back an HTML 500 page as
if it were data. Every request therefore goes through a :class:`requests.Session` that refuses a
status other than 200, an HTML body, and a body shorter than its ``Content-Length``. Each records
batch must then parse as a well-formed CSV table ending in a newline, have the first batch's
columns, and hold every requested record ID and no other. A record ID that comes back in two
batches is an error. Whatever cannot be trusted is retried; when the retries run out the pull
raises :class:`~studyman.errors.SourceError` and writes nothing (no snapshot directory, no
manifest).

Completeness: an answer cut at any byte is never taken for a whole one
-----------------------------------------------------------------------
A proxy or a dying server can hand over a cut body with a matching ``Content-Length``. Every
answer is therefore one that a cut cannot leave whole-looking:

* metadata, project information, events, arms, mappings, repeating forms and the record IDs are
  asked for as JSON: a JSON array or object cut at any byte does not parse;
* the version (plain text such as ``14.5.10``, which a cut can leave a valid ``14.5.1``) is asked
  for twice, and both answers must agree;
* a records batch is CSV (the export the offline import reads, and a fraction of JSON's size);
  cut at a line end it still parses, losing the last rows of the last record in it. So each
  batch also asks for one more record, the first of the next batch (its *sentinel*): the rows of
  a record come together, so when the answer ends with the sentinel's rows, every record before
  it is whole; the sentinel's rows are dropped (the next batch brings it whole). When there is no
  next batch (or the server put the sentinel elsewhere), the record whose rows end the answer is
  exported again on its own, as JSON, and must have the same rows. A record whose rows are apart
  (a record in two arms, which REDCap lists arm by arm: the record-ID export shows it, or the
  answer does) breaks the sentinel's argument, so a batch holding one is checked whole that way.

The token
---------
The token is held in a :class:`pydantic.SecretStr` and given to PyCap only; it is never in a
message, a log line, the manifest or a repr. Error texts from the network (which may quote the
request) are never passed on: messages are rebuilt from the status and a short excerpt of the
answer, which is dropped whole when the answer echoes the token in any form (another case, split
by spaces or lines, URL- or HTML-encoded), and exceptions are raised ``from None``. The token is
sent only to the origin (scheme, host, port) of the URL the user gave: a redirect to another
origin is refused, not followed, since a 307/308 redirect would re-send the POST body, token and
all.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote_plus, urljoin, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import requests
from pydantic import SecretStr
from redcap.project import Project as _PyCapProject
from redcap.request import _ContentConfig, _RCRequest

from studyman import __version__
from studyman.errors import SnapshotError, SourceError
from studyman.protocol import Protocol
from studyman.sources.blinding import blind_export, blind_form_rows, is_blinded_export
from studyman.sources.casting import ProjectDictionary, parse_missing_data_codes
from studyman.sources.offline import (
    conformance_file,
    default_snapshot_name,
    parse_records_table,
    protocol_manifest,
    snapshot_manifest_tables,
)
from studyman.sources.redcap_log import LOG_TABLE, log_table
from studyman.sources.snapshot import SnapshotResult, json_bytes, write_tidy_snapshot
from studyman.sources.tidy import TidyBuilder

__all__ = [
    "TOKEN_ENV",
    "PullProgress",
    "pull_snapshot",
    "read_token",
]

TOKEN_ENV = "STUDYMAN_REDCAP_TOKEN"
logger = logging.getLogger(__name__)
_TOKEN_PATTERN = re.compile(r"[0-9A-Fa-f]{32}")
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Checked batches are handed to the tidy builder in groups of at least this many flat rows (a
#: fixed bound on memory, whatever the batch size; a larger batch goes on its own).
_BUILDER_ROWS = 10_000


# -- token -----------------------------------------------------------------------------------
def read_token(
    token_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> SecretStr:
    """Return the API token from *token_file*, else from ``STUDYMAN_REDCAP_TOKEN``.

    Raises
    ------
    SourceError
        When the file is readable or writable by group or others (``chmod 600`` it), cannot be
        read, or no token is given at all. The message never holds the token.
    """
    if token_file is not None:
        path = Path(token_file)
        try:
            mode = path.stat().st_mode
        except OSError as error:
            raise SourceError(f"token file {path}: cannot read it ({error.strerror})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SourceError(
                f"token file {path} is accessible to group or others (mode "
                f"{stat.filemode(mode)}); make it private with: chmod 600 {path}"
            )
        try:
            data = path.read_bytes()
        except OSError as error:
            raise SourceError(f"token file {path}: cannot read it ({error.strerror})") from None
        try:
            text = data.removeprefix(b"\xef\xbb\xbf").decode("ascii").strip()
        except UnicodeDecodeError:
            # Neither the bytes nor the decoding error (whose repr holds them) may surface.
            text = None
        del data
        if text is None:
            raise SourceError(
                f"token file {path} is not plain ASCII text: expected the 32 hexadecimal "
                "characters of the API token (saved as UTF-8 or ASCII, not UTF-16)"
            )
        if not text:
            raise SourceError(f"token file {path} is empty")
        return SecretStr(text)
    environment = os.environ if environ is None else environ
    value = environment.get(TOKEN_ENV, "").strip()
    if not value:
        raise SourceError(
            f"no REDCap API token: set the environment variable {TOKEN_ENV} or pass --token-file"
        )
    return SecretStr(value)


# -- transport -------------------------------------------------------------------------------
class _TransientError(Exception):
    """A failure worth retrying (message already scrubbed)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _RefusedError(Exception):
    """REDCap answered with an error that retrying will not change (message already scrubbed)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: Characters of a server's answer quoted in a message, at most.
_EXCERPT_LIMIT = 160
#: An answer holding any run of this many consecutive token characters (in any case, spacing or
#: encoding) is taken to echo the token; the chance that unrelated text does is negligible.
_ECHO_WINDOW = 12
_TOKEN_LIKE = re.compile(r"[0-9A-Fa-f]{20,}")
_ECHOED = "[the answer quoted the API token; its text is not shown]"


def _decodings(text: str) -> list[str]:
    """*text* and what it reads as once URL- and HTML-decoded (a few rounds)."""
    variants = [text]
    current = text
    for _ in range(3):
        decoded = html.unescape(unquote_plus(current))
        if decoded == current:
            break
        variants.append(decoded)
        current = decoded
    return variants


def _echoes_token(text: str, token: str) -> bool:
    """True when *text* holds the token or a long piece of it in any case, spacing or encoding."""
    if not token or not text:
        return False
    secret = token.lower()
    window = min(_ECHO_WINDOW, len(secret))
    pieces = {secret[i : i + window] for i in range(len(secret) - window + 1)}
    for variant in _decodings(text):
        hex_only = re.sub(r"[^0-9a-f]", "", variant.lower())
        if any(piece in hex_only for piece in pieces):
            return True
    return False


def _excerpt(body: str, token: str = "", limit: int = _EXCERPT_LIMIT) -> str:
    """A short, printable excerpt of a server's answer; nothing of it when it echoes the token.

    Markup is dropped, white space collapsed, control characters replaced and token-like hex runs
    masked; the whole excerpt is withheld when the *full* body, or the message decoded from it
    (JSON escapes included), quotes the token in any form.
    """
    text = re.sub(r"<[^>]+>", " ", body[: 64 * 1024])
    try:
        document = json.loads(body)
        if isinstance(document, dict) and "error" in document:
            text = str(document["error"])
    except (ValueError, TypeError, RecursionError):
        pass
    if _echoes_token(body, token) or _echoes_token(text, token):
        return _ECHOED
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    if text.lower().startswith("error:"):
        text = text[6:].strip()
    text = _TOKEN_LIKE.sub("***", text)
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of *url* (the port filled in for http and https)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port if port is not None else default


class _CheckedSession(requests.Session):
    """A session that refuses what PyCap would take as data (non-200, HTML, short bodies) and
    never follows a redirect to another origin than *url*'s (it would re-send the token)."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__()
        self._url = url
        self._origin = _origin(url)
        self._token = token

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is None or _origin(urljoin(resp.url, target)) != self._origin:
            return None  # not followed: request() refuses the redirect in one line
        return target

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.TooManyRedirects:
            raise _RefusedError("too many redirects; give REDCap's API URL itself", 310) from None
        response.encoding = "utf-8"  # REDCap answers UTF-8, whatever the Content-Type says
        status = response.status_code
        if 300 <= status < 400 and response.headers.get("Location"):
            target = urljoin(response.url, response.headers["Location"])
            raise _RefusedError(
                f"HTTP {status}: REDCap's address redirects to {_public_url(target)}, another "
                f"host or port than {_public_url(self._url)}; the token is sent only to the "
                "address given, so the redirect was not followed (if the new address is "
                "REDCap's, pass it as the URL)",
                status,
            )
        if status != 200:
            message = f"HTTP {status}: {_excerpt(response.text, self._token)}"
            if status in _RETRY_STATUSES:
                retry_after = response.headers.get("Retry-After")
                seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise _TransientError(message, seconds)
            raise _RefusedError(message, status)
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != len(response.content):
            raise _TransientError(f"truncated answer ({len(response.content)} of {declared} bytes)")
        content_type = response.headers.get("Content-Type", "")
        if "html" in content_type.lower() or (
            response.content.lstrip()[:1] == b"<" and (b"<html" in response.content[:512].lower())
        ):
            raise _TransientError(
                f"an HTML page instead of data: {_excerpt(response.text, self._token)}"
            )
        return response


class _Project(_PyCapProject):
    """PyCap's Project, unchanged except that its requests go through a checked session."""

    def __init__(
        self, url: str, token: SecretStr, session: requests.Session, timeout: float
    ) -> None:
        super().__init__(url, token.get_secret_value(), timeout=timeout)
        self._checked_session = session

    def __repr__(self) -> str:
        return f"<studyman REDCap project at {self.url}>"

    def _call_api(self, payload: dict[str, Any], return_type: str, file: Any = None) -> Any:
        config = _ContentConfig(
            return_empty_json=return_type == "empty_json",
            return_bytes=return_type == "file_map",
        )
        request = _RCRequest(
            url=self.url, payload=payload, config=config, session=self._checked_session
        )
        return request.execute(
            verify_ssl=self.verify_ssl,
            return_headers=return_type == "file_map",
            file=file,
            **self._request_kwargs,
        )


# -- retries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Policy:
    retries: int
    backoff: float
    max_backoff: float


def _classify(error: BaseException, token: str) -> _TransientError | _RefusedError | None:
    """Map an exception from PyCap/requests to a scrubbed transient or permanent failure."""
    if isinstance(error, _TransientError | _RefusedError):
        return error
    if isinstance(error, requests.exceptions.JSONDecodeError):
        return _TransientError("an answer that is not valid JSON (damaged or truncated)")
    if isinstance(error, requests.Timeout):
        return _TransientError("no answer within the time-out")
    if isinstance(error, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return _TransientError("the connection failed or was closed mid-answer")
    if isinstance(error, requests.RequestException):
        # PyCap's RedcapError: REDCap's own error message (from a 200 answer in CSV/JSON).
        content = error.args[0] if error.args else ""
        if isinstance(content, dict) and "error" in content:
            content = json.dumps(content, ensure_ascii=False)  # its message, not a Python repr
        return _RefusedError(f"REDCap refused the request: {_excerpt(str(content), token)}", 400)
    return None


def _scrub(text: str, token: str) -> str:
    """*text* without the token: the last net under the excerpts (already sanitised)."""
    if not token:
        return text
    text = re.sub(re.escape(token), "***", text, flags=re.IGNORECASE)
    return _ECHOED if _echoes_token(text, token) else text


def _call(
    what: str,
    function: Callable[[], Any],
    policy: _Policy,
    token: str,
    stop: threading.Event | None = None,
) -> Any:
    """Call *function*, retrying transient failures with exponential back-off."""
    attempt = 0
    while True:
        try:
            return function()
        except Exception as error:
            failure = _classify(error, token)
            if failure is None:
                raise
        if isinstance(failure, _RefusedError):
            raise failure from None
        attempt += 1
        message = _scrub(str(failure), token)
        if attempt > policy.retries:
            raise SourceError(
                f"{what}: gave up after {attempt} attempts; last failure: {message}"
            ) from None
        delay = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
        if failure.retry_after is not None:
            delay = max(delay, min(policy.max_backoff, failure.retry_after))
        logger.warning(
            "%s: attempt %d failed (%s); retrying in %.2f s", what, attempt, message, delay
        )
        if stop is not None and stop.wait(delay):
            raise SourceError(f"{what}: cancelled")
        if stop is None:
            time.sleep(delay)


def _fail(what: str, error: _RefusedError, token: str) -> NoReturn:
    raise SourceError(_scrub(f"{what}: {error}", token)) from None


# -- pull ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PullProgress:
    """Progress of a pull: records received so far out of all records."""

    stage: str
    done: int
    total: int


def _check_batch(
    text: str,
    requested: Sequence[str],
    sentinel: str | None,
    record_id_field: str,
    header: tuple[str, ...] | None,
    source: str,
    apart: bool = False,
) -> tuple[pa.Table, list[str]]:
    """Parse one batch's CSV and check it; raise _TransientError when it cannot be trusted.

    Returns the batch's rows (the sentinel's dropped) and the records whose completeness is not
    yet proven: none when the answer ends with the sentinel's rows and each record's rows come
    together (a cut can then only have shortened the sentinel), else the record whose rows end
    the answer, or every record when a record's rows are apart (*apart*: so in the record-ID
    export; or so in this answer): a record in two arms, listed arm by arm, whose later rows a
    cut could remove while leaving the answer ending with the sentinel.
    """
    if not text.endswith("\n"):
        raise _TransientError(f"{source}: the CSV does not end with a newline (truncated)")
    try:
        table = parse_records_table(text, source)
    except SourceError as error:
        raise _TransientError(str(error)) from None
    columns = tuple(table.column_names)
    if not columns or columns[0] != record_id_field:
        raise _TransientError(f"{source}: the CSV does not start with the record-ID field")
    if header is not None and columns != header:
        raise _TransientError(f"{source}: the columns differ from the first batch's")
    ids = table.column(record_id_field)
    returned = set(pc.unique(ids).to_pylist())
    wanted = set(requested) | ({sentinel} if sentinel is not None else set())
    if returned != wanted:
        missing = sorted(wanted - returned)
        extra = sorted(str(x) for x in returned - wanted)
        raise _TransientError(
            f"{source}: {len(missing)} requested record(s) missing ({missing[:3]}) and "
            f"{len(extra)} not requested ({extra[:3]})"
        )
    rows = table.num_rows
    runs = 1 + (
        int(pc.sum(pc.not_equal(ids.slice(1), ids.slice(0, rows - 1))).as_py() or 0)
        if rows > 1
        else 0
    )
    kept = table if sentinel is None else table.filter(pc.not_equal(ids, sentinel))
    if apart or runs != len(returned):
        return kept, list(dict.fromkeys(requested))
    last = str(ids[rows - 1].as_py())
    return kept, ([] if last == sentinel else [last])


_ROW_KEYS = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")


def _row_identities(
    table: pa.Table, record_id_field: str, records: Collection[str]
) -> list[tuple[str, ...]]:
    """(record, event, repeat instrument, instance) of each row of *records*, in order."""
    names = [record_id_field, *(name for name in _ROW_KEYS if name in table.column_names)]
    rows = table.filter(pc.is_in(table.column(record_id_field), pa.array(list(records))))
    columns = [rows.column(name).to_pylist() for name in names]
    return [tuple(str(value) for value in row) for row in zip(*columns, strict=True)]


def _json_row_identities(
    answer: Any, table: pa.Table, record_id_field: str, records: Collection[str], source: str
) -> list[tuple[str, ...]]:
    """The same identities from a JSON export of *records* (the proof of completeness)."""
    names = [record_id_field, *(name for name in _ROW_KEYS if name in table.column_names)]
    if not isinstance(answer, list) or not all(isinstance(row, dict) for row in answer):
        raise _TransientError(f"{source}: the JSON export to check the batch is not a list")
    wanted = set(records)
    found: list[tuple[str, ...]] = []
    for row in answer:
        identity = tuple("" if row.get(name) is None else str(row.get(name)) for name in names)
        if identity[0] not in wanted:
            raise _TransientError(f"{source}: the JSON export to check the batch holds another")
        found.append(identity)
    return found


def pull_snapshot(
    protocol: Protocol | None,
    url: str,
    token: str | SecretStr,
    out_dir: Path,
    *,
    batch_size: int = 100,
    concurrency: int = 2,
    retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 30.0,
    timeout: float = 60.0,
    progress: Callable[[PullProgress], None] | None = None,
    name: str | None = None,
) -> SnapshotResult:
    """Pull a REDCap project through PyCap into a new snapshot.

    Parameters
    ----------
    protocol
        The study protocol (recorded in the manifest), or None.
    url
        REDCap's API URL, ending in ``/api/``.
    token
        The project API token (32 hexadecimal characters); never written anywhere.
    out_dir
        The snapshots directory; the snapshot is ``out_dir/<name>``.
    batch_size
        Record IDs per records request.
    concurrency
        Records requests in flight at once.
    retries
        Retries of one request after its first failure (so ``retries + 1`` attempts).
    backoff, max_backoff
        The first retry waits ``backoff`` seconds, each next one twice as long, at most
        ``max_backoff`` (or longer when REDCap sends ``Retry-After``).
    timeout
        Seconds to wait for an answer (connect and read).
    progress
        Called with a :class:`PullProgress` after each stage and batch.
    name
        The snapshot's directory name (default ``<UTC time>-pull``).

    Returns
    -------
    SnapshotResult

    Raises
    ------
    SourceError
        REDCap refused a request (bad token, no export rights), or retries ran out. Nothing is
        written then.
    SnapshotError
        The snapshot exists already.
    """
    if batch_size < 1 or concurrency < 1 or retries < 0:
        raise SourceError("batch_size and concurrency must be at least 1, retries at least 0")
    secret = token if isinstance(token, SecretStr) else SecretStr(token)
    raw_token = secret.get_secret_value()
    if not _TOKEN_PATTERN.fullmatch(raw_token):
        raise SourceError("the REDCap API token is not 32 hexadecimal characters")
    if not url.endswith("/api/"):
        raise SourceError(f"the REDCap API URL must end in /api/ (got {_public_url(url)})")
    # Where the snapshot goes is checked before the pull, not after minutes of it.
    out_dir = Path(out_dir)
    if name is not None and (out_dir / name).exists():
        raise SnapshotError(
            f"snapshot {out_dir / name} exists already; snapshots are never overwritten"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
        pass  # an OSError naming out_dir when it cannot be written to
    policy = _Policy(retries=retries, backoff=backoff, max_backoff=max_backoff)
    report = progress or (lambda _: None)
    local = threading.local()

    known_metadata: list[Any] = []

    def project() -> _Project:
        current: _Project | None = getattr(local, "project", None)
        if current is None:
            current = _Project(url, secret, _CheckedSession(url, raw_token), timeout)
            if known_metadata:
                current._metadata = known_metadata[0]  # PyCap reuses it for records exports
            local.project = current
        return current

    def call(what: str, function: Callable[[_Project], Any]) -> Any:
        try:
            return _call(what, lambda: function(project()), policy, raw_token)
        except _RefusedError as refused:
            _fail(what, refused, raw_token)

    def optional(what: str, function: Callable[[_Project], Any]) -> Any:
        """A call a classic project (or a project without the feature) answers with 400."""
        try:
            return _call(what, lambda: function(project()), policy, raw_token)
        except _RefusedError as refused:
            if refused.status == 400:
                return None
            _fail(what, refused, raw_token)

    def optional_log(function: Callable[[_Project], Any]) -> Any:
        """The log, or None when REDCap refuses it (no Logging right, no such feature)."""
        try:
            return _call("log", lambda: function(project()), policy, raw_token)
        except _RefusedError as refused:
            logger.info("the REDCap log was not exported (REDCap answered %d)", refused.status)
            return None

    started = time.monotonic()
    metadata = call("metadata", lambda p: p.export_metadata(format_type="json"))
    if not isinstance(metadata, list) or not metadata:
        raise SourceError("metadata: REDCap returned no data dictionary")
    known_metadata.append(metadata)
    project()._metadata = metadata  # PyCap reuses it for every records export
    mappings = optional(
        "form-event mappings", lambda p: p.export_instrument_event_mappings(format_type="json")
    )
    longitudinal = isinstance(mappings, list)
    events = call("events", lambda p: p.export_events(format_type="json")) if longitudinal else None
    arms = call("arms", lambda p: p.export_arms(format_type="json")) if longitudinal else None
    repeating = optional(
        "repeating forms", lambda p: p.export_repeating_instruments_events(format_type="json")
    )
    info = call("project info", lambda p: p.export_project_info(format_type="json"))
    # A cut can leave a plain-text version valid (14.5.10 -> 14.5.1): two answers must agree.
    version = call("version", lambda p: _checked_version(p.export_version(), p.export_version()))
    report(PullProgress("metadata", 1, 1))
    stages = {"metadata": time.monotonic() - started}

    dictionary = ProjectDictionary(metadata)
    record_id_field = dictionary.record_id_field
    # JSON: a cut at any byte (a line end included) leaves an answer that does not parse.
    record_ids, apart = call(
        "record IDs",
        lambda p: _check_ids(
            p.export_records(format_type="json", fields=[record_id_field], event_name="unique"),
            record_id_field,
        ),
    )
    total = len(record_ids)
    report(PullProgress("records", 0, total))
    stages["record_ids"] = time.monotonic() - started - sum(stages.values())

    missing_codes = parse_missing_data_codes(
        str(info.get("missing_data_codes", "") or "") if isinstance(info, dict) else ""
    )
    builder = TidyBuilder(dictionary, missing_codes)
    batches = [record_ids[i : i + batch_size] for i in range(0, total, batch_size)]
    surveys = bool(isinstance(info, dict) and str(info.get("surveys_enabled", "0")) == "1")
    header: list[tuple[str, ...]] = []
    header_lock = threading.Lock()
    stop = threading.Event()

    def fetch(index: int, ids: list[str]) -> pa.Table:
        source = f"records batch {index + 1} of {len(batches)}"
        # The first record of the next batch comes last in this answer (see module notes).
        sentinel = batches[index + 1][0] if index + 1 < len(batches) else None
        requested = ids if sentinel is None else [*ids, sentinel]
        split = not apart.isdisjoint(requested)

        def attempt() -> pa.Table:
            text = project().export_records(
                format_type="csv",
                records=requested,
                event_name="unique",
                export_data_access_groups=True,
                export_survey_fields=surveys,
            )
            with header_lock:
                expected = header[0] if header else None
            table, unproven = _check_batch(
                text, ids, sentinel, record_id_field, expected, source, split
            )
            if unproven:
                # The same records as JSON, which a cut cannot leave whole: the same rows?
                answer = project().export_records(
                    format_type="json", records=unproven, event_name="unique"
                )
                proof = _json_row_identities(answer, table, record_id_field, unproven, source)
                if proof != _row_identities(table, record_id_field, unproven):
                    shown = ", ".join(unproven[:3]) + (" ..." if len(unproven) > 3 else "")
                    raise _TransientError(
                        f"{source}: record(s) {shown} came with other rows than in a JSON "
                        "export of them (the answer was cut?)"
                    )
            with header_lock:
                if not header:
                    header.append(tuple(table.column_names))
            return table

        try:
            result: pa.Table = _call(source, attempt, policy, raw_token, stop)
        except _RefusedError as refused:
            _fail(source, refused, raw_token)
        return result

    results: dict[int, pa.Table] = {}
    next_index = 0
    done = 0
    seen: set[str] = set()
    group: list[pa.Table] = []
    group_rows = 0
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="studyman-pull")
    try:
        pending: dict[Future[pa.Table], int] = {}
        cursor = 0
        while cursor < len(batches) or pending:
            while cursor < len(batches) and len(pending) < concurrency * 2:
                pending[executor.submit(fetch, cursor, batches[cursor])] = cursor
                cursor += 1
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                results[index] = future.result()
            # Hand batches to the builder in order, as soon as they are complete, so that memory
            # holds only the batches in flight, one group (below) and the typed tables.
            while next_index in results:
                batch = results.pop(next_index)
                ids = {str(x) for x in pc.unique(batch.column(record_id_field)).to_pylist()}
                repeated = ids & seen
                if repeated:
                    raise SourceError(
                        f"records batch {next_index + 1}: record(s) {sorted(repeated)[:3]} came "
                        "back in an earlier batch too"
                    )
                seen |= ids
                # The builder's cost per call is mostly fixed (hundreds of pyarrow compute calls
                # over the columns), so small batches go to it in groups of _BUILDER_ROWS rows.
                group.append(batch)
                group_rows += batch.num_rows
                done += len(batches[next_index])
                next_index += 1
                if group_rows >= _BUILDER_ROWS or next_index == len(batches):
                    builder.add_batch(group[0] if len(group) == 1 else pa.concat_tables(group))
                    group = []
                    group_rows = 0
                report(PullProgress("records", done, total))
    except BaseException:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    if seen != set(record_ids):
        raise SourceError(f"records: {len(set(record_ids) - seen)} record(s) never came back")
    stages["records"] = time.monotonic() - started - sum(stages.values())
    tidy = builder.finish()
    stages["typing"] = time.monotonic() - started - sum(stages.values())
    # The log (data-entry history), stored as a table when the token may read it: a token
    # without the Logging right is refused (403), which leaves a snapshot without it.
    log_rows = optional_log(lambda p: p.export_logging(format_type="json"))
    if isinstance(log_rows, list):
        log = log_table(
            log_rows,
            field_forms={spec.name: spec.form for spec in dictionary.fields},
            events=events if longitudinal else None,
        )
        tidy = replace(tidy, tables={**tidy.tables, LOG_TABLE: log})
    elapsed = time.monotonic() - started
    logger.info(
        "pulled %d records in %.1f s (%s)",
        total,
        elapsed,
        ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items()),
    )
    project_info = dict(info) if isinstance(info, dict) else {}
    manifest: dict[str, Any] = {
        "kind": "pull",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "studyman_version": __version__,
        "source": {
            "url": _public_url(url),
            "batch_size": batch_size,
            "concurrency": concurrency,
            "seconds": round(elapsed, 3),
        },
        "redcap": {
            "version": str(version) if version is not None else None,
            "project": project_info,
        },
        "protocol": protocol_manifest(protocol),
        "missing_data_codes": list(missing_codes),
        **snapshot_manifest_tables(tidy),
        # REDCap's own answer, also right for a project without records yet.
        "longitudinal": longitudinal,
    }
    extra = {
        "redcap/metadata.json": json_bytes(metadata),
        "redcap/project.json": json_bytes({**project_info, "redcap_version": str(version)}),
        "redcap/repeating_forms.json": json_bytes(repeating or []),
    }
    conformance, conformance_count = conformance_file(
        protocol,
        metadata,
        events=events if longitudinal else None,
        mappings=mappings if longitudinal else None,
        repeating=repeating or [],
    )
    manifest["conformance_findings"] = conformance_count
    extra.update(conformance)
    if longitudinal:
        extra["redcap/events.json"] = json_bytes(events)
        extra["redcap/arms.json"] = json_bytes(arms)
        extra["redcap/form_event_mapping.json"] = json_bytes(mappings)
    # The token could read a form that reveals the allocation (or, without a protocol, that
    # cannot be ruled out): the snapshot is for its owner only, from its creation.
    private = not is_blinded_export(tidy.tables, protocol)
    if protocol is not None and is_blinded_export(tidy.tables, protocol):
        # the blinding gate: a blinded token's snapshot holds only the blinded view
        tidy, blinded_metadata = blind_export(tidy, metadata, protocol)
        extra["redcap/metadata.json"] = json_bytes(blinded_metadata)
        extra["redcap/repeating_forms.json"] = json_bytes(
            blind_form_rows(repeating, protocol, "form_name")
        )
        if longitudinal:
            extra["redcap/form_event_mapping.json"] = json_bytes(
                blind_form_rows(mappings, protocol, "form")
            )
        manifest["view"] = "blinded"
    return write_tidy_snapshot(
        Path(out_dir),
        name or default_snapshot_name("pull"),
        tidy,
        manifest=manifest,
        extra_files=extra,
        private=private,
    )


def _checked_version(version: Any, again: Any) -> Any:
    if version is None or again is None:
        raise _TransientError("the version answer is not a version number (damaged?)")
    if str(version) != str(again):
        raise _TransientError("two answers give different versions (one was cut?)")
    return version


def _check_ids(answer: Any, record_id_field: str) -> tuple[list[str], set[str]]:
    """The distinct record IDs of a JSON export of the record-ID field, in REDCap's order, and
    those whose rows are apart in it (a record in two arms, listed arm by arm)."""
    if not isinstance(answer, list):
        raise _TransientError("the record-ID export is not a JSON list")
    ids: dict[str, None] = {}
    apart: set[str] = set()
    previous = None
    for row in answer:
        value = row.get(record_id_field) if isinstance(row, dict) else None
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            raise _TransientError(f"the record-ID export has a row without {record_id_field!r}")
        record = str(value)
        if record in ids and record != previous:
            apart.add(record)
        ids[record] = None
        previous = record
    return list(ids), apart


def _public_url(url: str) -> str:
    """The URL without user information or query (never a secret in the manifest)."""
    match = re.match(r"^(\w+://)(?:[^@/]*@)?([^?#]*)", url)
    return "".join(match.groups()) if match else url.split("?", 1)[0]
