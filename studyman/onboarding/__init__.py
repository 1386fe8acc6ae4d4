"""Onboarding a REDCap study: a draft protocol and project files from a live or exported project.

``studyman protocol init`` writes a study folder (``protocol.yaml`` + ``redcap/``) whose draft
protocol holds every name and code the REDCap design states, what could be recognised from
labels (rating scales by their items, the allocation field, the safety forms), and a
``TODO(decide): ...`` value for every decision left to a person; ``studyman protocol check``
lists those decisions in plain words. An answers file (key path -> value) records decisions so
that ``init`` can be run again when the REDCap design changes.
"""

from __future__ import annotations

from studyman.onboarding.decisions import (
    TODO_PREFIX,
    Decision,
    DraftStatus,
    apply_answers,
    draft_decisions,
    find_decisions,
    load_draft,
    read_answers,
)
from studyman.onboarding.draft import DraftProtocol, draft_protocol
from studyman.onboarding.init import InitResult, init_protocol
from studyman.onboarding.project_files import fetch_project_dir, write_exported_project_dir
from studyman.onboarding.scales import KNOWN_SCALES, recognise_scale

__all__ = [
    "KNOWN_SCALES",
    "TODO_PREFIX",
    "Decision",
    "DraftProtocol",
    "DraftStatus",
    "InitResult",
    "apply_answers",
    "draft_decisions",
    "draft_protocol",
    "fetch_project_dir",
    "find_decisions",
    "init_protocol",
    "load_draft",
    "read_answers",
    "recognise_scale",
    "write_exported_project_dir",
]
