"""The emulator's ``cut_at`` fault option: a cut at a chosen byte, as the pull tests need it."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests

from studyman.errors import StudymanError
from studyman.sources.emulator import EmulatorServer, FaultPlan
from tests.sources.conftest import FULL_TOKEN


def _export(server: EmulatorServer) -> requests.Response:
    return requests.post(
        server.url,
        data={"token": FULL_TOKEN, "content": "record", "format": "csv"},
        timeout=10,
    )


def test_cut_at_keeps_exactly_that_many_bytes_with_a_matching_content_length(
    simple_server: EmulatorServer,
) -> None:
    whole = _export(simple_server).content
    first_line_end = whole.index(b"\n") + 1
    for cut in (0, 1, first_line_end, len(whole) - 1):
        simple_server.set_faults(FaultPlan(schedule=("cut",), cut_at=cut))
        answer = _export(simple_server)
        assert answer.status_code == 200
        assert answer.content == whole[:cut]
        assert answer.headers["Content-Length"] == str(cut)


def test_cut_at_beyond_the_body_still_cuts_its_last_byte(simple_server: EmulatorServer) -> None:
    whole = _export(simple_server).content
    simple_server.set_faults(FaultPlan(schedule=("cut",), cut_at=10**9))
    assert _export(simple_server).content == whole[:-1]


def test_without_cut_at_a_cut_keeps_half_the_body(simple_server: EmulatorServer) -> None:
    whole = _export(simple_server).content
    simple_server.set_faults(FaultPlan(schedule=("cut",)))
    assert _export(simple_server).content == whole[: len(whole) // 2]


def test_truncate_with_cut_at_sends_that_many_bytes_under_the_whole_length(
    simple_server: EmulatorServer,
) -> None:
    whole = _export(simple_server).content
    simple_server.set_faults(FaultPlan(schedule=("truncate",), cut_at=7))
    parts = urlsplit(simple_server.url)
    body = f"token={FULL_TOKEN}&content=record&format=csv".encode()
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    assert parts.hostname is not None
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, sent = received.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(whole)}".encode() in head
    assert sent == whole[:7]


@pytest.mark.parametrize("value", [-1, True, "10", 1.5])
def test_a_cut_at_that_is_not_a_byte_count_is_refused_naming_the_control_file(
    value: object,
) -> None:
    with pytest.raises(StudymanError, match=r"^faults\.json: cut_at must be a non-negative"):
        FaultPlan.from_mapping({"cut_at": value}, "faults.json")
