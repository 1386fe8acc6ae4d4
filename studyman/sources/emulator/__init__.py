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
  ``tokens=`` (``token → username``). A token calls with its user's rights (a role's, when the
  user has one); a token whose user is not in the project is refused (403), except that a
  ``tokens=`` username the project does not list is added as a full-rights user (``--token``).
  ``super_tokens=`` (64 hex characters) create projects (``content=project``: settings as XML,
  JSON or CSV, optionally an ODM file; the creator is the one user, with full rights; the
  creation is logged under Manage/Design; ``version`` answers the emulator's own version).
* :func:`load_project` reads a project directory (``docs/design.md``) or an ODM XML file;
  :func:`read_odm_file` / :func:`read_odm_text` read ODM; :func:`write_project_dir` writes the
  directory (``studyman emulator convert``).
* :class:`FaultPlan`: seeded rates of 500s, HTML 502/504 pages, 429 bans, time-outs and truncated
  bodies, an explicit ``schedule``, latency, ``contents`` to limit faults to some calls,
  ``ban_after``; or a JSON ``control_file`` (same keys) re-read when it changes.
* Other options: ``clock=`` (a callable giving "now", for ``dateRangeBegin/End`` and the log),
  ``check_values=True`` (refuse imported values REDCap would refuse; off by default so that
  planted data errors can be loaded), ``storage=`` (where uploaded documents are kept; by default
  a private temporary directory removed at ``stop()``).
* :class:`Emulator` answers decoded POST fields without HTTP; :class:`RecordStore` holds the rows.

Calls: ``content=record`` (export flat/EAV, JSON/CSV/XML, raw/label, filters ``records``,
``fields``, ``forms``, ``events`` as indexed keys or comma lists, ``filterLogic``,
``dateRangeBegin/End``, ``exportDataAccessGroups``, ``exportSurveyFields``,
``exportCheckboxLabel``, ``exportBlankForGrayFormStatus``, ``decimalCharacter``; import flat or
EAV, JSON, CSV or XML, with ``overwriteBehavior``, ``returnContent`` count/ids/auto_ids,
``forceAutoNumber``, ``dateFormat``; ``action=delete`` whole or partial), ``metadata``
(export, import), ``exportFieldNames``, ``instrument``, ``project``, ``version``, ``arm`` and
``event`` (export, import with ``override``, delete), ``formEventMapping`` and
``repeatingFormsEvents`` (export, import), ``dag`` (export, import, delete), ``userDagMapping``,
``user``, ``userRole``, ``userRoleMapping`` (export, import; users and roles delete), ``log``,
``generateNextRecordName``, ``file`` (import, export, delete of a file-upload field),
``fileRepository`` (createFolder, list, import, export, delete), ``pdf``, ``surveyLink``,
``surveyQueueLink``, ``surveyAccessCode``, ``surveyReturnCode``, ``participantList``. Design
writes change the served project and follow REDCap's cascades (an arm takes its events, an event
its data; :mod:`~studyman.sources.emulator.design`). Any other content or action is answered 400
naming it, never with another call's answer.

Rights are checked on every call as REDCap checks them (:mod:`~studyman.sources.emulator.api`
and :mod:`~studyman.sources.emulator.calls` list the rules): form export rights apply to
``fields``, ``forms`` and ``filterLogic``, form edit rights to imports, data access groups to
everything; malformed requests are answered 400 with REDCap's error body. The module docstrings
of :mod:`~studyman.sources.emulator.api` and :mod:`~studyman.sources.emulator.odm` list the
choices made where REDCap's behaviour is not pinned down, and which recorded answers of live
REDCap servers (``tests/data/redcap-projects``) pin the rest.
"""

from __future__ import annotations

from studyman.sources.emulator.api import Answer, Emulator, LogEntry
from studyman.sources.emulator.faults import FaultInjector, FaultPlan
from studyman.sources.emulator.loader import load_project
from studyman.sources.emulator.model import Project, User, UserRole
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
    "UserRole",
    "load_project",
    "load_project_dir",
    "read_dictionary",
    "read_odm_file",
    "read_odm_text",
    "serve_project",
    "write_project_dir",
]
