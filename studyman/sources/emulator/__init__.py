"""A REDCap API emulator: a real HTTP server that answers as REDCap does, for tests and the demo.

Python API
----------
::

    from studyman.sources.emulator import EmulatorServer, FaultPlan

    with EmulatorServer("protocols/cbt-adjunct/redcap",      # a project directory, an ODM file
                        tokens={TOKEN: "coordinator"}) as server:   # or a Project
        project = redcap.Project(server.url, TOKEN)            # unchanged PyCap, real HTTP
        project.export_records()
        server.store.record_ids()                              # the data, in REDCap's order
        server.log                                             # every call (never a token)
        server.set_faults(FaultPlan(schedule=("500", "ok")))   # inject faults

* :class:`EmulatorServer` (``start()``, ``url``, ``stop()``, context manager) and
  :func:`serve_project` (starts one in a background thread and returns it).
* Tokens come from the project directory's ``api_tokens.csv`` (``username,token``) and from
  ``tokens=`` (``token → username``); a username not among the project's users has full rights.
  ``super_tokens=`` (64 hex characters) may create projects from ODM (``content=project``).
* :func:`load_project` reads a project directory (``docs/design.md``) or an ODM XML file;
  :func:`read_odm_file` / :func:`read_odm_text` read ODM; :func:`write_project_dir` writes the
  directory (``studyman emulator convert``).
* :class:`FaultPlan`: seeded rates of 500s, HTML 502/504 pages, 429 bans, time-outs and truncated
  bodies, an explicit ``schedule``, latency, ``contents`` to limit faults to some calls,
  ``ban_after``; or a JSON ``control_file`` (same keys) re-read when it changes.
* Other options: ``clock=`` (a callable giving "now", for ``dateRangeBegin/End`` and the log),
  ``check_values=True`` (refuse imported values REDCap would refuse; off by default so that
  planted data errors can be loaded).
* :class:`Emulator` answers decoded POST fields without HTTP; :class:`RecordStore` holds the rows.

Calls: ``content=record`` (export flat/EAV, JSON/CSV/XML, raw/label, filters ``records``,
``fields``, ``forms``, ``events`` as indexed keys or comma lists, ``filterLogic``,
``dateRangeBegin/End``, ``exportDataAccessGroups``, ``exportSurveyFields``,
``exportCheckboxLabel``, ``exportBlankForGrayFormStatus``, ``decimalCharacter``; import flat or
EAV, JSON or CSV, with ``overwriteBehavior``, ``returnContent`` count/ids/auto_ids,
``forceAutoNumber``, ``dateFormat``; ``action=delete`` whole or partial), ``metadata``,
``exportFieldNames``, ``instrument``, ``project`` (export, or creation from ``odm`` with a
super token), ``version``, ``arm``, ``event``, ``formEventMapping`` (400 for classic projects),
``repeatingFormsEvents``, ``dag``, ``user``, ``log``, ``generateNextRecordName``.

The calls and shapes follow ``redcap-api.md``; the module docstrings of
:mod:`~studyman.sources.emulator.api` and :mod:`~studyman.sources.emulator.odm` list the choices
made where REDCap's behaviour is not pinned down.
"""

from __future__ import annotations

from studyman.sources.emulator.api import Answer, Emulator, LogEntry
from studyman.sources.emulator.faults import FaultInjector, FaultPlan
from studyman.sources.emulator.loader import load_project
from studyman.sources.emulator.model import Project, User
from studyman.sources.emulator.odm import read_odm_file, read_odm_text
from studyman.sources.emulator.project_dir import (
    load_project_dir,
    read_dictionary,
    write_project_dir,
)
from studyman.sources.emulator.server import EmulatorServer, serve_project
from studyman.sources.emulator.store import RecordStore

__all__ = [
    "Answer",
    "Emulator",
    "EmulatorServer",
    "FaultInjector",
    "FaultPlan",
    "LogEntry",
    "Project",
    "RecordStore",
    "User",
    "load_project",
    "load_project_dir",
    "read_dictionary",
    "read_odm_file",
    "read_odm_text",
    "serve_project",
    "write_project_dir",
]
