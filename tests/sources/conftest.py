"""Fixtures that start the REDCap emulator on a free loopback port and stop it afterwards."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from studyman.sources.emulator import EmulatorServer, Project, User, load_project
from studyman.sources.emulator.api import FULL_RIGHTS

PROJECTS = Path(__file__).resolve().parents[1] / "data" / "redcap-projects"

#: Tokens of the test users (made up; 32 hex characters as REDCap's).
FULL_TOKEN = "0123456789ABCDEF0123456789ABCDEF"
BLINDED_TOKEN = "B1B1B1B1B1B1B1B1B1B1B1B1B1B1B1B1"
SITE_TOKEN = "51751751751751751751751751751751"
NO_EXPORT_TOKEN = "DEADBEEFDEADBEEFDEADBEEFDEADBEEF"
SUPER_TOKEN = "5" * 64


def simple_with_users() -> Project:
    """The ``simple`` fixture project with a blinded user (no export of ``health``, standing in
    for the randomisation form), a site user in DAG ``dag_1`` and a user without API export."""
    project = load_project(PROJECTS / "simple" / "project.xml")
    users = (
        User("coordinator", rights=FULL_RIGHTS),
        User("blinded", rights=FULL_RIGHTS, forms_export={"health": 0}),
        User("site1", rights=FULL_RIGHTS, data_access_group="dag_1"),
        User("viewer", rights={**FULL_RIGHTS, "api_export": 0}),
    )
    tokens = {
        FULL_TOKEN: "coordinator",
        BLINDED_TOKEN: "blinded",
        SITE_TOKEN: "site1",
        NO_EXPORT_TOKEN: "viewer",
    }
    return dataclasses.replace(project, users=users, tokens=tokens)


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators (``start_emulator(project, **options)``); all stop at teardown."""
    servers: list[EmulatorServer] = []

    def start(project: Project | Path | str, **options: Any) -> EmulatorServer:
        server = EmulatorServer(project, host="127.0.0.1", port=0, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def simple_server(start_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """The ``simple`` project with users (see :func:`simple_with_users`), started."""
    return start_emulator(simple_with_users(), super_tokens=[SUPER_TOKEN])


@pytest.fixture
def longitudinal_server(start_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """The ``longitudinal`` fixture project (two arms) with a full-rights token."""
    return start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={FULL_TOKEN: "tester"})
