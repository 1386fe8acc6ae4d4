"""The emulator's HTTP server: REDCap's API on a loopback port, in a background thread.

Built on the standard library's :class:`~http.server.ThreadingHTTPServer` so that every byte of
an answer is under control (a Content-Length that lies, a connection dropped mid-body).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl

from studyman.errors import SourceError
from studyman.sources.emulator.api import Answer, Emulator, LogEntry
from studyman.sources.emulator.calls import Upload
from studyman.sources.emulator.faults import FaultInjector, FaultPlan
from studyman.sources.emulator.formats import error_body
from studyman.sources.emulator.loader import load_project
from studyman.sources.emulator.model import Project
from studyman.sources.emulator.odm import read_odm_text
from studyman.sources.emulator.store import RecordStore

__all__ = ["MAX_BODY_BYTES", "EmulatorServer", "serve_project"]

logger = logging.getLogger(__name__)

#: The largest request body accepted (REDCap's default upload limit is of this order).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: The most form fields one request may carry.
MAX_FIELDS = 100_000

_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 504: "Gateway Time-out"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64  # concurrent pulls open several connections at once
    owner: EmulatorServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after a minute
    server_version = "Apache"
    sys_version = ""
    # TCP_NODELAY: the headers and the body go out in two writes; with Nagle's algorithm the
    # body waits for the client's delayed ACK of the headers, ~40 ms on every kept-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        # Request lines carry no token (tokens travel in the body), but stay quiet anyway:
        # the emulator keeps its own log of every call.
        return

    def _send(self, answer: Answer, *, close: bool = False) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for key, value in answer.headers:
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer.body)

    def _not_implemented(self) -> None:
        # Read a body the client sent, so that closing does not reset the connection under it.
        text = (self.headers.get("Content-Length") or "").strip()
        if re.fullmatch(r"[0-9]{1,12}", text) and int(text) <= MAX_BODY_BYTES:
            self.rfile.read(int(text))
        body = b"The requested method is not implemented."
        self._send(Answer(501, "text/plain; charset=utf-8", body))

    def do_GET(self) -> None:
        """REDCap answers any method but POST with 501."""
        self._not_implemented()

    def do_PUT(self) -> None:
        """As GET."""
        self._not_implemented()

    def do_DELETE(self) -> None:
        """As GET."""
        self._not_implemented()

    def do_PATCH(self) -> None:
        """As GET."""
        self._not_implemented()

    def do_HEAD(self) -> None:
        """As GET."""
        self._not_implemented()

    def _refuse(self, message: str, fmt: str = "xml", status: int = 400) -> None:
        body, ctype = error_body(message, fmt)
        self._send(Answer(status, ctype, body.encode()), close=True)

    def _read_body(self) -> bytes | None:
        """The request body, or ``None`` after answering 400 for an unusable Content-Length."""
        text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
            self._refuse("The emulator does not accept chunked request bodies.")
            return None
        if text is None or not text.strip():
            return b""
        if not re.fullmatch(r"\s*[0-9]{1,12}\s*", text):
            self._refuse("The Content-Length header is not a valid length.")
            return None
        length = int(text)
        if length > MAX_BODY_BYTES:
            self._refuse(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
            return None
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self._refuse(f"The request body ended after {len(body)} of {length} bytes.")
            return None
        return body

    def do_POST(self) -> None:
        """Answer one API call; no input makes the handler raise (a bug answers 500)."""
        try:
            self._post()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # the last line of defence: never drop a client
            self.server.owner.internal_errors += 1
            logger.exception("the emulator failed on a request")
            try:
                self._refuse("The server encountered an error processing your request.", status=500)
            except OSError:
                self.close_connection = True

    def _post(self) -> None:
        owner = self.server.owner
        if not self.path.split("?", 1)[0].rstrip("/").endswith("/api"):
            self._send(Answer(404, "text/plain; charset=utf-8", b"Not Found"), close=True)
            return
        raw = self._read_body()
        if raw is None:
            return
        content_type = self.headers.get("Content-Type", "")
        uploads: dict[str, Upload] = {}
        if content_type.lower().startswith("multipart/"):
            parsed = _parse_multipart(content_type, raw)
            if parsed is None:
                self._refuse("The multipart request body could not be read.")
                return
            pairs, uploads = parsed
        else:
            pairs = parse_qsl(
                raw.decode("utf-8", errors="replace"),
                keep_blank_values=True,
                max_num_fields=MAX_FIELDS,
            )
        scalars = dict(pairs)
        fmt = scalars.get("returnFormat") or scalars.get("format") or "xml"
        fault, plan = owner.faults.draw(scalars.get("content", ""))
        if plan.latency:
            owner.stopping.wait(plan.latency)
        if fault == "timeout":
            owner.stopping.wait(plan.hang_seconds)
            self.close_connection = True
            return
        if fault == "429":
            host = self.client_address[0]
            message = f"Your IP address ({host}) has been banned due to suspected abuse."
            self._send(Answer(429, "text/plain; charset=utf-8", message.encode()), close=True)
            return
        if fault == "500":
            body, ctype = error_body(
                "The server encountered an error processing your request.", fmt
            )
            self._send(Answer(500, ctype, body.encode()), close=True)
            return
        if fault in ("500html", "502", "504"):
            status = 500 if fault == "500html" else int(fault)
            page = _PAGE.format(status=status, reason=_REASONS[status])
            self._send(Answer(status, "text/html", page.encode()), close=True)
            return
        answer = owner.emulator.handle(pairs, uploads)
        if fault == "cut" and len(answer.body) > 1:
            self._send(
                Answer(
                    answer.status,
                    answer.content_type,
                    answer.body[: plan.kept_bytes(len(answer.body))],
                    answer.headers,
                ),
                close=True,
            )
            return
        if fault == "truncate" and len(answer.body) > 1:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer.body[: plan.kept_bytes(len(answer.body))])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(answer)


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[list[tuple[str, str]], dict[str, Upload]] | None:
    """The fields and files of a ``multipart/form-data`` body (``None`` when unreadable)."""
    if "boundary=" not in content_type:
        return None
    head = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode(
        "latin-1", errors="replace"
    )
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return None
    pairs: list[tuple[str, str]] = []
    uploads: dict[str, Upload] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            uploads[name] = Upload(filename, part.get_content_type(), data)
        else:
            pairs.append((name, data.decode("utf-8", errors="replace")))
        if len(pairs) > MAX_FIELDS:
            return None
    return pairs, uploads


class EmulatorServer:
    """REDCap's API for one project, served over HTTP from a background thread.

    Parameters
    ----------
    project
        A :class:`Project`, a project directory or an ODM XML file.
    host, port
        Where to listen (port 0: a free port, read it from :attr:`url` after :meth:`start`).
    tokens
        Extra ``token → username`` pairs (32 hex characters each). A username that names one of
        the project's users (for an ODM file: one of its user roles, such as REDCapR's ``api``)
        gets that user's rights; any other username gets full rights.
    super_tokens
        64-hex-character tokens allowed to create projects from ODM (``content=project``).
    faults
        A fault plan (see :mod:`studyman.sources.emulator.faults`); none by default.
    control_file
        A JSON file re-read whenever it changes, replacing the fault plan.
    clock
        "Now" for record times and the log (injected for tests).
    check_values
        Refuse imported values REDCap would refuse (off by default: see
        :mod:`~studyman.sources.emulator.api`).
    storage
        Where uploaded documents are kept (one ``project-<id>/`` folder per project); by default
        a private temporary directory removed by :meth:`stop`.

    Examples
    --------
    >>> with EmulatorServer("tests/data/redcap-projects/simple/project.xml",
    ...                     tokens={"0" * 32: "api_user"}) as server:  # doctest: +SKIP
    ...     redcap.Project(server.url, "0" * 32).export_records()
    """

    def __init__(
        self,
        project: Project | Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Mapping[str, str] | None = None,
        super_tokens: Sequence[str] = (),
        faults: FaultPlan | None = None,
        control_file: Path | str | None = None,
        clock: Callable[[], datetime] = datetime.now,
        check_values: bool = False,
        storage: Path | str | None = None,
    ) -> None:
        model = project if isinstance(project, Project) else load_project(project)
        self.emulator = Emulator(
            model,
            tokens=tokens,
            super_tokens=super_tokens,
            clock=clock,
            odm_reader=read_odm_text,
            check_values=check_values,
            storage=Path(storage) if storage is not None else None,
        )
        #: Requests whose handling raised (answered 500): a bug, 0 in every test.
        self.internal_errors = 0
        self.faults = FaultInjector(faults, Path(control_file) if control_file else None)
        self.stopping = threading.Event()
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self._server else "stopped"
        title = self.project.info.get("project_title", "")
        records = len(self.store.record_ids())
        url = self.url if self._server else None
        return f"EmulatorServer({title!r}, records={records}, {state}, url={url!r})"

    @property
    def project(self) -> Project:
        """The served project's current design (it changes with design imports)."""
        return self.emulator.state.project

    @property
    def url(self) -> str:
        """The API URL (``http://host:port/api/``) once started."""
        if self._server is None:
            raise SourceError("the emulator is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    @property
    def port(self) -> int:
        """The port listened on once started."""
        if self._server is None:
            raise SourceError("the emulator is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def store(self) -> RecordStore:
        """The record store of the served project."""
        return self.emulator.store

    @property
    def log(self) -> list[LogEntry]:
        """Every call received, oldest first (never a token)."""
        return list(self.emulator.server_log)

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Replace the fault plan (``None``: no faults) and restart its draw."""
        self.faults.set_plan(plan)

    def add_token(self, token: str, username: str) -> None:
        """Let *token* call as *username* (full rights unless the project lists the user)."""
        self.emulator.add_token(token, username)

    def start(self) -> EmulatorServer:
        """Bind and serve from a daemon thread; return self."""
        if self._server is not None:
            return self
        try:
            server = _Server((self._host, self._port), _Handler)
        except OSError as error:
            raise SourceError(
                f"cannot listen on {self._host}:{self._port}: {error.strerror}"
            ) from None
        server.owner = self
        self.stopping.clear()
        self._server = server
        self.emulator.base_url = self.url
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="redcap-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (hanging answers are released at once), close the socket and remove the
        private storage of uploaded documents."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.emulator.close()

    def wait(self) -> None:
        """Block until interrupted (for the command line)."""
        try:
            while self._server is not None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_project(
    project: Project | Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: object,
) -> EmulatorServer:
    """Start an :class:`EmulatorServer` for *project* in a background thread and return it.

    ``options`` are :class:`EmulatorServer`'s keyword arguments (``tokens``, ``faults``, ...).
    Stop it with ``server.stop()`` (or use it as a context manager).
    """
    return EmulatorServer(project, host=host, port=port, **options).start()  # type: ignore[arg-type]
