"""REDCap's logic syntax: re-exported from :mod:`studyman.protocol.logic`, where it lives.

Branching logic and calculations are part of the study definition, so the parser and evaluator
belong to the protocol layer (the emulator's ``filterLogic`` uses them too). This module keeps
``from studyman.validation.logic import ...`` working.
"""

from __future__ import annotations

from studyman.protocol.logic import (
    Binary,
    Call,
    EvaluationContext,
    FieldRef,
    LogicExpression,
    Node,
    NumberLiteral,
    StringLiteral,
    Unary,
    Values,
    checkbox_column,
    compile_logic,
    parse_logic,
)

__all__ = [
    "Binary",
    "Call",
    "EvaluationContext",
    "FieldRef",
    "LogicExpression",
    "Node",
    "NumberLiteral",
    "StringLiteral",
    "Unary",
    "Values",
    "checkbox_column",
    "compile_logic",
    "parse_logic",
]
