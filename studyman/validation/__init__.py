"""Edit checks, the REDCap logic evaluator, the query log and the deviation log.

The public entry points: :func:`run_checks` (pure: flat records in, findings out),
:func:`validate_study` (a whole run with its files: snapshot in, query log and listings out),
:class:`QueryLog`, :func:`compile_logic` and the check :data:`CATALOGUE`.
"""

from __future__ import annotations

from studyman.validation.catalogue import CATALOGUE, CheckDefinition, catalogue_frame
from studyman.validation.engine import ValidationResult, run_checks
from studyman.validation.logic import LogicExpression, compile_logic
from studyman.validation.query_log import QueryLog, query_id
from studyman.validation.run import ValidationRunReport, validate_study

__all__ = [
    "CATALOGUE",
    "CheckDefinition",
    "LogicExpression",
    "QueryLog",
    "ValidationResult",
    "ValidationRunReport",
    "catalogue_frame",
    "compile_logic",
    "query_id",
    "run_checks",
    "validate_study",
]
