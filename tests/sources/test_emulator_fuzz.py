"""A seeded fuzz of raw HTTP requests (plain sockets): the emulator answers every one with an HTTP
status that is not a server error and its handler never raises.

The requests mix valid and broken request lines, headers (Content-Length absent, negative, not a
number, larger than the body), content types (form, multipart with good and bad boundaries,
other), parameters (every content and action the emulator knows, unknown ones, list keys with
odd indexes) and payloads (random bytes, deeply nested JSON/XML/logic, numbers like ``1e400``).
``STUDYMAN_EMULATOR_FUZZ_CASES`` sets the number of cases (300 by default, about a second) and
``STUDYMAN_EMULATOR_FUZZ_SEED`` the seed.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Callable
from urllib.parse import quote

import redcap

from studyman.sources.emulator import EmulatorServer
from studyman.sources.emulator.api import _ACTIONS
from tests.sources.conftest import BLINDED_TOKEN, FULL_TOKEN, SITE_TOKEN, simple_with_users

Start = Callable[..., EmulatorServer]
CASES = int(os.environ.get("STUDYMAN_EMULATOR_FUZZ_CASES", "300"))
SEED = int(os.environ.get("STUDYMAN_EMULATOR_FUZZ_SEED", "20261203"))

_TOKENS = [FULL_TOKEN, BLINDED_TOKEN, SITE_TOKEN, "0" * 32, "", "x" * 70, "5" * 64]
_FORMATS = ["json", "csv", "xml", "odm", "", "JSON", "df"]
_FIELDS = ["record_id", "name_first", "height", "mugshot", "race", "nope", "", "[x]"]


def _payload(rng: random.Random) -> str:
    kind = rng.randrange(9)
    depth = rng.choice([1, 10, 200, 3000])
    if kind == 0:
        return "[" * depth + "]" * depth
    if kind == 1:
        return '{"a":' * depth + "1" + "}" * depth
    if kind == 2:
        return "<a>" * depth + "</a>" * depth
    if kind == 3:
        rows = [
            {rng.choice(_FIELDS): rng.choice(["1", "1e400", "", "x" * 300, "\x00", None, 5])}
            for _ in range(rng.randrange(4))
        ]
        return json.dumps(rows)
    if kind == 4:
        return "record_id,height\n1," + rng.choice(["2", '"', "1e400", "\r\n,,,"]) + "\n"
    if kind == 5:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(50)))
    if kind == 6:
        return "(" * depth + "[height] = '1'" + ")" * rng.randrange(depth + 2)
    if kind == 7:
        return '<!DOCTYPE a [<!ENTITY b "c">]><records><item><x>&b;</x></item></records>'
    return rng.choice(["", "[]", "{}", "null", "1", '[{"username": ""}]'])


def _fields(rng: random.Random) -> list[tuple[str, str]]:
    content = rng.choice([*_ACTIONS, "report", "nonsense", ""])
    actions = sorted(_ACTIONS.get(content, frozenset({"export"})))
    pairs = [("token", rng.choice(_TOKENS)), ("content", content)]
    if rng.random() < 0.6:
        pairs.append(("action", rng.choice([*actions, "frobnicate", ""])))
    if rng.random() < 0.7:
        pairs.append(("format", rng.choice(_FORMATS)))
    if rng.random() < 0.3:
        pairs.append(("returnFormat", rng.choice(_FORMATS)))
    for name in ("data", "filterLogic", "odm"):
        if rng.random() < 0.3:
            pairs.append((name, _payload(rng)))
    for name in ("records", "fields", "forms", "events", "arms", "dags", "users", "roles"):
        if rng.random() < 0.15:
            index = rng.choice(["0", "", "99999999999999999999", "-1", "a"])
            pairs.append((f"{name}[{index}]", rng.choice([*_FIELDS, "1", "1e400"])))
    for name in (
        "record",
        "field",
        "event",
        "instrument",
        "repeat_instance",
        "doc_id",
        "folder_id",
        "name",
        "type",
        "overwriteBehavior",
        "returnContent",
        "dateRangeBegin",
        "override",
        "dag",
        "report_id",
        "forceAutoNumber",
    ):
        if rng.random() < 0.12:
            pairs.append((name, rng.choice(["1", "1e400", "-5", "", "eav", "x" * 200, "True"])))
    return pairs


def _request(rng: random.Random) -> bytes:
    pairs = _fields(rng)
    body = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode("utf-8")
    content_type = "application/x-www-form-urlencoded"
    style = rng.randrange(10)
    if style == 0:
        boundary = rng.choice(["b0undary", "", '"', "x" * 100])
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in pairs
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a\r.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\n{_payload(rng)}\r\n--{boundary}--\r\n"
        )
        body = "".join(parts).encode("utf-8", errors="replace")
        content_type = f"multipart/form-data; boundary={boundary}"
    elif style == 1:
        content_type = rng.choice(["text/plain", "multipart/form-data", "application/json", ""])
    elif style == 2:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
    length = str(len(body))
    if rng.random() < 0.15:
        length = rng.choice(["abc", "-5", "1e3", "", "99999999999999", str(len(body) + 10)])
    method = rng.choice(["POST"] * 8 + ["GET", "PUT", "FROB"])
    path = rng.choice(["/api/"] * 8 + ["/", "/api", "/x" * 500])
    version = rng.choice(["HTTP/1.1"] * 9 + ["HTTP/1.0"])
    head = f"{method} {path} {version}\r\nHost: fuzz\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if rng.random() > 0.05:
        head += f"Content-Length: {length}\r\n"
    head += "Connection: close\r\n\r\n"
    return head.encode("latin-1", errors="replace") + body


def _send(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        try:
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before reading everything: read its answer
        chunks = []
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_every_fuzzed_request_gets_an_answer_and_never_a_server_error(
    start_emulator: Start,
) -> None:
    server = start_emulator(simple_with_users())
    rng = random.Random(SEED)
    statuses: dict[int, int] = {}
    for case in range(CASES):
        request = _request(rng)
        answer = _send(server.port, request)
        assert answer.startswith(b"HTTP/1."), (case, request[:200], answer[:200])
        status = int(answer.split(b" ", 2)[1])
        statuses[status] = statuses.get(status, 0) + 1
        # 501 is REDCap's answer to any method but POST; a 500
        # would be the handler failing.
        assert status < 500 or status == 501, (case, request[:300], answer[:300])
    assert server.internal_errors == 0
    assert len(statuses) >= 4  # the fuzz reached several kinds of answer, not one path
    assert statuses.get(200, 0) > 0
    assert statuses.get(400, 0) > 0
    # The server still answers an ordinary client afterwards.
    assert redcap.Project(server.url, FULL_TOKEN).export_version()
