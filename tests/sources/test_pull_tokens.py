"""The token goes only where the user said, and no server answer brings it back to the screen
(issue 11, items 8 and 9). Tiny real HTTP servers on loopback play a hostile or broken REDCap."""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote_plus

import pytest

from studyman.cli import main
from studyman.errors import SourceError
from studyman.sources.pull import TOKEN_ENV, pull_snapshot

TOKEN = "C0FFEE0123456789ABCDEF0123456789"  # made up, 32 hex characters as REDCap's


class _Server:
    """A loopback HTTP server whose POST answers come from *answer(path)*; it keeps every
    request it received (path and body)."""

    def __init__(self, answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.received: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.received.append((self.path, self.rfile.read(length).decode("utf-8")))
                status, headers, body = answer(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/api/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def saw_token(self) -> bool:
        return any(TOKEN in unquote_plus(body) for _, body in self.received)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> _Server:
        server = _Server(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _json_error(message: str) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/json"}, json.dumps({"error": message}).encode()


# -- item 8: redirects -----------------------------------------------------------------------
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_port_is_refused_and_the_token_never_reaches_it(
    serve: Callable[..., _Server], tmp_path: Path, status: int
) -> None:
    elsewhere = serve(lambda path: (200, *_json_error("should never be asked")))
    named = serve(lambda path: (status, {"Location": elsewhere.url()}, b""))
    with pytest.raises(SourceError) as refused:
        pull_snapshot(None, named.url(), TOKEN, tmp_path / "out", retries=2, backoff=0.001)
    message = str(refused.value)
    assert f"redirects to {elsewhere.url()}" in message
    assert "not followed" in message
    assert "\n" not in message
    assert named.saw_token()  # the address the user named gets it, once
    assert len(named.received) == 1  # a refused redirect is not retried
    assert elsewhere.received == []
    assert list((tmp_path / "out").iterdir()) == []


def test_a_redirect_to_https_on_the_same_host_is_another_origin_and_refused(
    serve: Callable[..., _Server], tmp_path: Path
) -> None:
    named = serve(lambda path: (307, {"Location": f"https://127.0.0.1:{path and 1}/api/"}, b""))
    with pytest.raises(SourceError, match=r"redirects to https://127\.0\.0\.1:1/api/"):
        pull_snapshot(None, named.url(), TOKEN, tmp_path, retries=0)


def test_a_redirect_within_the_same_origin_is_followed(
    serve: Callable[..., _Server], tmp_path: Path
) -> None:
    def answer(path: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/old/api/":
            return 307, {"Location": "/api/"}, b""
        return 403, *_json_error("You do not have permissions to use the API")

    server = serve(answer)
    with pytest.raises(SourceError, match=r"HTTP 403: You do not have permissions to use the API"):
        pull_snapshot(None, server.url("/old/api/"), TOKEN, tmp_path, retries=0)
    assert [path for path, _ in server.received] == ["/old/api/", "/api/"]
    assert all(TOKEN in unquote_plus(body) for _, body in server.received)


# -- item 9: echoed tokens -------------------------------------------------------------------
def _leaks(text: str) -> bool:
    """True when *text* carries the token or a 12-character piece of it, however spelled."""
    variants = [text, unquote_plus(text), html.unescape(unquote_plus(text))]
    pieces = [TOKEN.lower()[i : i + 12] for i in range(len(TOKEN) - 11)]
    for variant in variants:
        stream = re.sub(r"[^0-9a-f]", "", variant.lower())
        if any(piece in stream for piece in pieces):
            return True
    return False


ECHOES = {
    "as is": TOKEN,
    "lower case": TOKEN.lower(),
    "alternating case": "".join(c.lower() if i % 2 else c for i, c in enumerate(TOKEN)),
    "spaced": " ".join(TOKEN),
    "split by lines": TOKEN[:9] + "\n" + TOKEN[9:20] + "\r\n" + TOKEN[20:],
    "split by tabs and dashes": "-\t".join(TOKEN[i : i + 4] for i in range(0, 32, 4)),
    "url-encoded": "".join(f"%{ord(c):02X}" for c in TOKEN),
    "url-encoded twice": quote("".join(f"%{ord(c):02X}" for c in TOKEN)),
    "html entities": "".join(f"&#{ord(c)};" for c in TOKEN),
    "first half only": TOKEN[:16].lower(),
    "past the excerpt": "x" * 150 + " " + TOKEN,
}

ANSWERS: dict[str, Callable[[str], tuple[int, dict[str, str], bytes]]] = {
    "403 json": lambda echo: (403, *_json_error(f"Invalid token {echo}")),
    "500 json": lambda echo: (500, *_json_error(f"Error for token={echo}")),
    "200 json error": lambda echo: (200, *_json_error(f"token {echo} unknown")),
    "502 html": lambda echo: (
        502,
        {"Content-Type": "text/html"},
        f"<html><body><h1>502</h1><pre>token={echo}</pre></body></html>".encode(),
    ),
    "400 plain": lambda echo: (400, {"Content-Type": "text/plain"}, f"ERROR: {echo}".encode()),
    "200 json unicode escapes": lambda echo: (
        200,
        {"Content-Type": "application/json"},
        ('{"error": "bad token ' + "".join(f"\\u{ord(c):04x}" for c in echo) + '"}').encode(),
    ),
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_an_answer_echoing_the_token_in_any_spelling_never_reaches_messages_or_logs(
    serve: Callable[..., _Server],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    answer: str,
    echo: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(lambda path: ANSWERS[answer](ECHOES[echo]))
    with pytest.raises(SourceError) as failed:
        pull_snapshot(None, server.url(), TOKEN, tmp_path, retries=1, backoff=0.001)
    texts = [str(failed.value), repr(failed.value), caplog.text]
    for text in texts:
        assert not _leaks(text), text
    assert "not shown" in str(failed.value)
    assert "\n" not in str(failed.value)
    assert failed.value.__cause__ is None
    assert failed.value.__suppress_context__


def test_the_cli_prints_no_echoed_token_and_a_short_printable_excerpt(
    serve: Callable[..., _Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    echoing = serve(lambda path: (403, *_json_error("wrong token " + " ".join(TOKEN.lower()))))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with pytest.raises(SystemExit) as exited:
        main(["pull", "--url", echoing.url(), "--out", str(tmp_path / "a"), "--retries", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "HTTP 403" in err
    assert not _leaks(err)
    # A long body with terminal escapes: a short excerpt, no control characters.
    noisy = "\x1b[2J\x1b[31mREDCap is down for maintenance\x07 " + "lorem ipsum " * 2000
    talker = serve(lambda path: (403, {"Content-Type": "text/plain"}, noisy.encode()))
    with pytest.raises(SystemExit):
        main(["pull", "--url", talker.url(), "--out", str(tmp_path / "b"), "--retries", "0"])
    err = capsys.readouterr().err
    assert "REDCap is down for maintenance" in err
    assert "\x1b" not in err
    assert "\x07" not in err
    assert len(err.strip()) < 300
    assert len(err.strip().splitlines()) == 1


def test_a_harmless_error_body_is_still_quoted(
    serve: Callable[..., _Server], tmp_path: Path
) -> None:
    server = serve(lambda path: (403, *_json_error("You do not have API Export privileges")))
    with pytest.raises(SourceError, match=r"HTTP 403: You do not have API Export privileges$"):
        pull_snapshot(None, server.url(), TOKEN, tmp_path, retries=0)
