"""A small evaluator of REDCap's ``filterLogic`` for the emulator's record export.

It covers what filters usually hold: ``[field]`` (read on the row's own event),
``[event][field]`` (read on that event), string and number literals, ``= <> != < > <= >=``,
``and``, ``or``, ``not`` and parentheses. Comparisons are numeric when both sides read as
numbers, else textual, as REDCap does; a blank compares as ``""``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

__all__ = ["compile_filter"]

_TOKEN = re.compile(
    r"\s*(?:(?P<field>(\[[^\]]+\])+)|(?P<string>'[^']*'|\"[^\"]*\")|(?P<number>-?\d+(\.\d+)?)"
    r"|(?P<op><>|!=|<=|>=|=|<|>)|(?P<paren>[()])|(?P<word>[A-Za-z_]+))"
)

Predicate = Callable[[Mapping[str, str]], bool]
Operand = Callable[[Mapping[str, str]], str]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(left: str, op: str, right: str) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        pair: tuple[object, object] = (a, b)
    else:
        pair = (left, right)
    x, y = pair
    if op == "=":
        return x == y
    if op in ("<>", "!="):
        return x != y
    if left == "" or right == "":
        return False
    ordered = {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y}  # type: ignore[operator]
    return bool(ordered[op])


def compile_filter(text: str) -> Predicate:
    """Compile *text* into a predicate over a row's values (export column name → value).

    Raises
    ------
    ValueError
        When the expression does not parse.
    """
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot read {text[position : position + 20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind).strip()
        if kind == "field":
            parts = [part.rstrip("]") for part in value.split("[")[1:]]
            value = parts[-1]
            # A checkbox reads as [field(code)].
            if "(" in value and value.endswith(")"):
                base, code = value[:-1].split("(", 1)
                value = f"{base}___{code}"
            if len(parts) > 1:
                # [event][field] reads the field on that event (keys "event|field" in the view).
                value = f"{parts[0]}|{value}"
        tokens.append((kind, value))
        position = match.end()
    index = 0

    def peek() -> tuple[str, str]:
        return tokens[index] if index < len(tokens) else ("end", "")

    def take() -> tuple[str, str]:
        nonlocal index
        token = peek()
        index += 1
        return token

    def operand() -> Operand:
        kind, value = take()
        if kind == "field":
            return lambda row: row.get(value, "")
        if kind == "string":
            literal = value[1:-1]
            return lambda row: literal
        if kind == "number":
            return lambda row: value
        raise ValueError(f"expected a field or value, found {value or 'the end'!r}")

    def primary() -> Predicate:
        kind, value = peek()
        if kind == "paren" and value == "(":
            take()
            inner = disjunction()
            if take() != ("paren", ")"):
                raise ValueError("a parenthesis is not closed")
            return inner
        if kind == "word" and value.lower() == "not":
            take()
            inner_not = primary()
            return lambda row: not inner_not(row)
        left = operand()
        kind, op = peek()
        if kind != "op":
            return lambda row: left(row) not in ("", "0")
        take()
        right = operand()
        return lambda row: _compare(left(row), op, right(row))

    def conjunction() -> Predicate:
        parts = [primary()]
        while peek()[0] == "word" and peek()[1].lower() == "and":
            take()
            parts.append(primary())
        return lambda row: all(p(row) for p in parts)

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while peek()[0] == "word" and peek()[1].lower() == "or":
            take()
            parts.append(conjunction())
        return lambda row: any(p(row) for p in parts)

    predicate = disjunction()
    if index != len(tokens):
        raise ValueError(f"unexpected {tokens[index][1]!r}")
    return predicate
