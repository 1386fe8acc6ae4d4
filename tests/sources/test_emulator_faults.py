"""Fault injection: the emulator fails the way REDCap and its proxies do, reproducibly."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redcap
import requests

from studyman.errors import StudymanError
from studyman.sources.emulator import EmulatorServer, FaultInjector, FaultPlan
from tests.sources.conftest import FULL_TOKEN

Start = Callable[..., EmulatorServer]


def export(server: EmulatorServer, fmt: str = "json", timeout: float = 10) -> requests.Response:
    return requests.post(
        server.url,
        data={"token": FULL_TOKEN, "content": "record", "format": fmt},
        timeout=timeout,
    )


def test_server_error_is_500_with_redcaps_message_and_pycap_raises(
    simple_server: EmulatorServer,
) -> None:
    simple_server.set_faults(FaultPlan(schedule=("500",)))
    with pytest.raises(redcap.RedcapError, match="error processing your request"):
        redcap.Project(simple_server.url, FULL_TOKEN).export_records()
    simple_server.set_faults(FaultPlan(schedule=("500",)))
    answer = export(simple_server)
    assert answer.status_code == 500
    assert answer.json() == {"error": "The server encountered an error processing your request."}


def test_bad_gateway_is_an_html_page_pycap_cannot_parse(simple_server: EmulatorServer) -> None:
    simple_server.set_faults(FaultPlan(schedule=("502", "ok")))
    with pytest.raises(requests.exceptions.JSONDecodeError):
        redcap.Project(simple_server.url, FULL_TOKEN).export_project_info()
    simple_server.set_faults(FaultPlan(schedule=("504",)))
    answer = export(simple_server)
    assert answer.status_code == 504
    assert answer.headers["Content-Type"] == "text/html"
    assert "<h1>504 Gateway Time-out</h1>" in answer.text


def test_html_500_page_comes_back_silently_as_csv_data_through_pycap(
    simple_server: EmulatorServer,
) -> None:
    # redcap-api.md: PyCap only raises on csv bodies starting with "error:".
    simple_server.set_faults(FaultPlan(contents=("record",), schedule=("500html",)))
    text = redcap.Project(simple_server.url, FULL_TOKEN).export_records(format_type="csv")
    assert text.startswith("<html>")


def test_ban_is_429_with_redcaps_plain_text(simple_server: EmulatorServer) -> None:
    simple_server.set_faults(FaultPlan(ban_after=2))
    assert export(simple_server).status_code == 200
    assert export(simple_server).status_code == 200
    banned = export(simple_server)
    assert banned.status_code == 429
    assert banned.text == "Your IP address (127.0.0.1) has been banned due to suspected abuse."
    assert banned.headers["Content-Type"].startswith("text/plain")


def test_truncated_body_breaks_the_client_read(simple_server: EmulatorServer) -> None:
    simple_server.set_faults(FaultPlan(schedule=("truncate",)))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        export(simple_server)
    assert export(simple_server).status_code == 200  # the next call is whole


def test_cut_body_is_200_with_broken_json_and_a_short_csv(simple_server: EmulatorServer) -> None:
    whole = export(simple_server, "csv").text
    simple_server.set_faults(FaultPlan(schedule=("cut", "cut")))
    with pytest.raises(requests.exceptions.JSONDecodeError):
        redcap.Project(simple_server.url, FULL_TOKEN).export_project_info()
    cut = export(simple_server, "csv")
    assert cut.status_code == 200
    assert whole.startswith(cut.text)
    assert len(cut.text) < len(whole)


def test_timeout_hangs_longer_than_the_client_waits(simple_server: EmulatorServer) -> None:
    simple_server.set_faults(FaultPlan(schedule=("timeout",), hang_seconds=5))
    began = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        export(simple_server, timeout=0.3)
    assert time.monotonic() - began < 4  # the client gave up, long before the 5 s hang ended
    assert export(simple_server).status_code == 200  # other calls are served meanwhile


def test_latency_delays_every_answer(simple_server: EmulatorServer) -> None:
    simple_server.set_faults(FaultPlan(latency=0.2))
    began = time.monotonic()
    assert export(simple_server).status_code == 200
    assert time.monotonic() - began >= 0.2


def test_rates_draw_the_same_faults_for_the_same_seed() -> None:
    plan = FaultPlan(seed=7, error_rate=0.2, bad_gateway_rate=0.1, ban_rate=0.1, truncate_rate=0.1)
    first = [FaultInjector(plan).draw("record")[0] for _ in range(1)]
    injector_a, injector_b = FaultInjector(plan), FaultInjector(plan)
    draws_a = [injector_a.draw("record")[0] for _ in range(200)]
    draws_b = [injector_b.draw("record")[0] for _ in range(200)]
    assert draws_a == draws_b
    assert first == draws_a[:1]
    counts = {name: draws_a.count(name) for name in set(draws_a)}
    assert {"ok", "500", "502", "429", "truncate"} <= set(counts)
    assert 20 <= counts["500"] <= 60  # about 20% of 200
    other = FaultInjector(FaultPlan(seed=8, error_rate=0.2, bad_gateway_rate=0.1))
    assert [other.draw("record")[0] for _ in range(200)] != draws_a


def test_faults_limited_to_some_contents_leave_others_alone(simple_server: EmulatorServer) -> None:
    simple_server.set_faults(FaultPlan(contents=("record",), error_rate=1.0))
    project = redcap.Project(simple_server.url, FULL_TOKEN)
    assert project.export_project_info()["project_title"] == "REDCapR: simple"
    assert export(simple_server).status_code == 500


def test_control_file_replaces_the_plan_when_it_changes(
    start_emulator: Start, tmp_path: Path
) -> None:
    control = tmp_path / "faults.json"
    server = start_emulator(
        Path(__file__).resolve().parents[1] / "data" / "redcap-projects" / "simple" / "project.xml",
        tokens={FULL_TOKEN: "a"},
        control_file=control,
    )
    assert export(server).status_code == 200  # no file: no faults
    control.write_text(json.dumps({"schedule": ["502", "429"]}))
    assert export(server).status_code == 502
    assert export(server).status_code == 429
    assert export(server).status_code == 200
    control.write_text("")
    assert export(server).status_code == 200


def test_a_control_file_wrong_from_the_start_is_refused_naming_it(tmp_path: Path) -> None:
    control = tmp_path / "faults.json"
    control.write_text(json.dumps({"error_rate": 2}))
    with pytest.raises(StudymanError, match=f"{control}: fault rates .* sum to at most 1"):
        FaultInjector(control_file=control)
    control.write_text(json.dumps({"error_rat": 0.5}))
    with pytest.raises(StudymanError, match=f"{control}: unknown key"):
        FaultInjector(control_file=control)


def test_a_control_file_edited_wrongly_keeps_the_plan_in_force(
    start_emulator: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    control = tmp_path / "faults.json"
    control.write_text(json.dumps({"schedule": ["502"]}))
    server = start_emulator(
        Path(__file__).resolve().parents[1] / "data" / "redcap-projects" / "simple" / "project.xml",
        tokens={FULL_TOKEN: "a"},
        control_file=control,
    )
    control.write_text(json.dumps({"schedule": ["502"], "error_rate": 2.0}))
    assert export(server).status_code == 502  # the plan in force, not a crashed handler
    assert export(server).status_code == 200
    assert "fault plan not changed" in caplog.text
    assert "sum to at most 1" in caplog.text


def test_unknown_fault_names_and_keys_are_refused() -> None:
    with pytest.raises(StudymanError, match="unknown fault 'boom'"):
        FaultPlan(schedule=("boom",))
    with pytest.raises(StudymanError, match="unknown key"):
        FaultPlan.from_mapping({"error_rat": 0.5})
    with pytest.raises(StudymanError, match="sum to at most 1"):
        FaultPlan(error_rate=0.8, ban_rate=0.5)


def test_stop_releases_a_hanging_answer_at_once(start_emulator: Start) -> None:
    server = start_emulator(
        Path(__file__).resolve().parents[1] / "data" / "redcap-projects" / "simple" / "project.xml",
        tokens={FULL_TOKEN: "a"},
        faults=FaultPlan(schedule=("timeout",), hang_seconds=30),
    )
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    body = f"token={FULL_TOKEN}&content=record&format=json".encode()
    connection.sendall(
        b"POST /api/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    time.sleep(0.1)
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 3
    connection.close()
