"""REDCap's logic syntax: a parser and a vectorised evaluator.

REDCap writes branching logic, calculated fields and data-quality rules in one small language::

    [age] >= 18 and ([sex] = '1' or [sex] <> "2")
    round(([weight]*10000)/(([height])^(2)),1)
    sum([phq9_1], [phq9_2]) > 10
    datediff([consent_date], [baseline_arm_1][rand_date], "d", true) < 0
    [ae_ser_crit(3)] = '1'

:func:`parse_logic` turns an expression into a small syntax tree (or raises
:class:`~studyman.errors.ValidationError` naming the expression and the character position), and
:meth:`LogicExpression.evaluate` evaluates it over every row of a data frame of REDCap flat records
at once (numpy operations per syntax node, never a Python loop per row).

Notes
-----
Blank semantics follow REDCap's documented behaviour:

* a blank value (``""`` or missing) is neither a number nor a date; arithmetic with a blank gives a
  blank (so a calculated field is blank when one of its operands is blank);
* ``sum``, ``mean``, ``min``, ``max``, ``median`` and ``stdev`` ignore blank arguments; when every
  argument is blank the result is blank;
* ``[x] = ''`` is true exactly when ``[x]`` is blank, ``[x] <> ''`` when it is not;
* ``=`` and ``<>`` compare numerically when both sides are numbers (``'1' = 1.0`` is true), else as
  text; the ordered comparisons (``<``, ``<=``, ``>``, ``>=``) are false when either side is blank,
  numeric when both sides are numbers, textual when neither is (ISO dates order correctly as
  text, as in REDCap), and false for text against a number;
* ``datediff(d1, d2, unit[, format][, signed])`` is ``d2 - d1`` in the unit (``y`` = 365.2425 days,
  ``M`` = 30.44 days, ``d``, ``h``, ``m``, ``s``), its absolute value unless *signed* is true; a
  blank or unparseable date gives a blank; ``"today"`` and ``"now"`` are the context's reference
  date (the data cut-off, so results are reproducible);
* ``round``, ``roundup`` and ``rounddown`` take an optional number of decimals; ``round`` rounds
  half away from zero (PHP's rule);
* a condition that is blank counts as false (``if([x] > 1, 'a', 'b')`` gives ``'b'`` for a blank).

A field that is absent from the frame evaluates as blank; use :attr:`LogicExpression.fields` to
check references against a data dictionary first.

The evaluator lives in the protocol layer because branching logic and calculations are part of the
study definition; validation (edit checks) and sources (the emulator's ``filterLogic``) both use
it. ``studyman.validation.logic`` re-exports it unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from studyman.errors import ValidationError

# REDCap's checkbox export-name rule lives with the dictionary reader; re-exported here.
from studyman.protocol.redcap_project import checkbox_column

__all__ = [
    "MAX_LOGIC_DEPTH",
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
    "check_logic",
    "checkbox_column",
    "compile_logic",
    "parse_logic",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
ObjectArray: TypeAlias = npt.NDArray[np.object_]

# --------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True, slots=True)
class NumberLiteral:
    """A number written in the expression (``18``, ``2.5``)."""

    value: float
    position: int


@dataclass(frozen=True, slots=True)
class StringLiteral:
    """A quoted string (``'1'`` or ``"today"``)."""

    value: str
    position: int


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field reference: ``[field]``, ``[event][field]`` or ``[field(code)]`` for a checkbox."""

    name: str
    position: int
    event: str | None = None
    code: str | None = None

    @property
    def column(self) -> str:
        """The flat-export column that holds the value (``field___code`` for a checkbox)."""
        return self.name if self.code is None else checkbox_column(self.name, self.code)


@dataclass(frozen=True, slots=True)
class Call:
    """A function call such as ``sum([a], [b])``."""

    name: str
    args: tuple[Node, ...]
    position: int


@dataclass(frozen=True, slots=True)
class Unary:
    """``not x`` or ``-x``."""

    operator: Literal["not", "-", "+"]
    operand: Node
    position: int


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary operation (arithmetic, comparison or logical)."""

    operator: str
    left: Node
    right: Node
    position: int


Node: TypeAlias = NumberLiteral | StringLiteral | FieldRef | Call | Unary | Binary


# --------------------------------------------------------------------------------------------
# Tokenizer

_TokenKind = Literal["num", "str", "ref", "ident", "op", "lparen", "rparen", "comma", "end"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _TokenKind
    text: str
    position: int


_OPERATORS: Final = (
    "<>",
    "!=",
    "<=",
    ">=",
    "==",
    "&&",
    "||",
    "=",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "^",
    "!",
)
_NUMBER_PATTERN = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


#: Logic longer than this is quoted by its start only in an error message (one readable line).
_QUOTED_LENGTH: Final = 80


def _fail(expression: str, position: int, message: str) -> ValidationError:
    quoted = repr(expression)
    if len(expression) > _QUOTED_LENGTH:
        quoted = f"{expression[:_QUOTED_LENGTH]!r}... ({len(expression)} characters)"
    return ValidationError(
        f"cannot parse REDCap logic {quoted}: {message} at position {position + 1}"
    )


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    length = len(expression)
    while index < length:
        char = expression[index]
        if char.isspace():
            index += 1
            continue
        if char == "[":
            end = expression.find("]", index + 1)
            if end < 0:
                raise _fail(expression, index, "'[' without a closing ']'")
            tokens.append(_Token("ref", expression[index + 1 : end], index))
            index = end + 1
            continue
        if char in "'\"":
            end = expression.find(char, index + 1)
            if end < 0:
                raise _fail(expression, index, f"string opened with {char} is never closed")
            tokens.append(_Token("str", expression[index + 1 : end], index))
            index = end + 1
            continue
        if char.isdigit() or (
            char == "." and index + 1 < length and expression[index + 1].isdigit()
        ):
            match = _NUMBER.match(expression, index)
            if match is None:  # pragma: no cover - the guard above guarantees a match
                raise _fail(expression, index, "malformed number")
            tokens.append(_Token("num", match.group(0), index))
            index = match.end()
            continue
        if char.isalpha() or char == "_":
            match = _IDENT.match(expression, index)
            if match is None:  # pragma: no cover
                raise _fail(expression, index, "malformed name")
            tokens.append(_Token("ident", match.group(0), index))
            index = match.end()
            continue
        if char == "(":
            tokens.append(_Token("lparen", char, index))
            index += 1
            continue
        if char == ")":
            tokens.append(_Token("rparen", char, index))
            index += 1
            continue
        if char == ",":
            tokens.append(_Token("comma", char, index))
            index += 1
            continue
        for operator in _OPERATORS:
            if expression.startswith(operator, index):
                tokens.append(_Token("op", operator, index))
                index += len(operator)
                break
        else:
            raise _fail(expression, index, f"unexpected character {char!r}")
    tokens.append(_Token("end", "", length))
    return tokens


# --------------------------------------------------------------------------------------------
# Parser (precedence climbing; precedence from loosest to tightest:
# or, and, not, comparison, + -, * /, unary -, ^)

#: How deeply REDCap logic may nest: parentheses, function calls, signs, ``not`` and the right
#: operand of an operator each add a level; a chain of one operator (``[a] = '1' or [b] = '1' or
#: ...``) does not. Deeper logic is refused with a one-line error (by :func:`parse_logic`, hence
#: :func:`check_logic` for ``protocol check`` and validation alike) instead of exhausting
#: Python's stack; no hand-written rule comes near it.
MAX_LOGIC_DEPTH: Final = 100

_LOOSEST: Final = 0
_OR: Final = 1
_AND: Final = 2
_NOT: Final = 3
_COMPARISON: Final = 4
_ADDITIVE: Final = 5
_MULTIPLICATIVE: Final = 6
_UNARY: Final = 7
_POWER: Final = 8

_COMPARISONS: Final = {
    "=": "=",
    "==": "=",
    "<>": "<>",
    "!=": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}

_FUNCTION_ARITY: Final[dict[str, tuple[int, int | None]]] = {
    "if": (3, 3),
    "sum": (1, None),
    "mean": (1, None),
    "min": (1, None),
    "max": (1, None),
    "median": (1, None),
    "stdev": (1, None),
    "round": (1, 2),
    "roundup": (1, 2),
    "rounddown": (1, 2),
    "abs": (1, 1),
    "sqrt": (1, 1),
    "exponential": (1, 1),
    "log": (1, 2),
    "datediff": (3, 5),
    "isblankormissingcode": (1, 1),
    "isnumber": (1, 1),
    "isinteger": (1, 1),
    "contains": (2, 2),
    "not_contain": (2, 2),
    "starts_with": (2, 2),
    "ends_with": (2, 2),
    "left": (2, 2),
    "right": (2, 2),
    "mid": (3, 3),
    "length": (1, 1),
    "lower": (1, 1),
    "upper": (1, 1),
    "trim": (1, 1),
    "concat": (1, None),
    "year": (1, 1),
    "month": (1, 1),
    "day": (1, 1),
}

_REFERENCE = re.compile(r"^\s*([A-Za-z0-9_-]+?)\s*(?:\(\s*([^()]*?)\s*\))?\s*$")


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.index = 0
        self.depth = -1  # the whole expression is level 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_keyword(self, token: _Token, *words: str) -> bool:
        return token.kind == "ident" and token.text.lower() in words

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise _fail(self.expression, 0, "the expression is empty")
        node = self.parse_expression(_LOOSEST)
        token = self.peek()
        if token.kind != "end":
            raise _fail(self.expression, token.position, f"unexpected {token.text!r}")
        return node

    def infix(self, token: _Token) -> tuple[str, int] | None:
        """The binary operator *token* starts and its precedence, or ``None``."""
        if self.is_keyword(token, "or") or (token.kind == "op" and token.text == "||"):
            return "or", _OR
        if self.is_keyword(token, "and") or (token.kind == "op" and token.text == "&&"):
            return "and", _AND
        if token.kind != "op":
            return None
        if token.text in _COMPARISONS:
            return _COMPARISONS[token.text], _COMPARISON
        if token.text in ("+", "-"):
            return token.text, _ADDITIVE
        if token.text in ("*", "/"):
            return token.text, _MULTIPLICATIVE
        if token.text == "^":
            return "^", _POWER
        return None

    def parse_expression(self, loosest: int) -> Node:
        """An expression whose operators bind tighter than *loosest* (precedence climbing).

        Each level of nesting (parentheses, a function's argument, a sign or ``not``, the right
        operand of an operator) is one call here, so :data:`MAX_LOGIC_DEPTH` bounds both this
        parser's recursion and the evaluator's; a chain of one operator (``a or b or c ...``) is
        a loop, not nesting.
        """
        self.depth += 1
        if self.depth > MAX_LOGIC_DEPTH:
            raise _fail(
                self.expression,
                self.peek().position,
                f"nested more than {MAX_LOGIC_DEPTH} levels deep (parentheses, function calls, "
                "signs and operators); split it into calculated fields",
            )
        node = self.parse_prefix(loosest)
        while True:
            token = self.peek()
            operator = self.infix(token)
            if operator is None or operator[1] <= loosest:
                break
            name, precedence = operator
            self.advance()
            if name == "^":
                # right-associative; the exponent may carry its own sign (2^-1)
                right = self.parse_expression(_UNARY)
            else:
                right = self.parse_expression(precedence)
            node = Binary(name, node, right, token.position)
        self.depth -= 1
        return node

    def parse_prefix(self, loosest: int) -> Node:
        token = self.peek()
        # ``not`` applies to a whole comparison, so it may open only an and/or operand
        if loosest < _NOT and (
            self.is_keyword(token, "not") or (token.kind == "op" and token.text == "!")
        ):
            self.advance()
            return Unary("not", self.parse_expression(_AND), token.position)
        if token.kind == "op" and token.text in ("-", "+"):
            self.advance()
            operator: Literal["-", "+"] = "-" if token.text == "-" else "+"
            # a sign binds tighter than * and / but looser than ^ (-2^2 is -(2^2))
            return Unary(operator, self.parse_expression(_UNARY), token.position)
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.advance()
        if token.kind == "num":
            return NumberLiteral(float(token.text), token.position)
        if token.kind == "str":
            return StringLiteral(token.text, token.position)
        if token.kind == "ref":
            return self.parse_reference(token)
        if token.kind == "lparen":
            node = self.parse_expression(_LOOSEST)
            closing = self.advance()
            if closing.kind != "rparen":
                raise _fail(
                    self.expression,
                    closing.position,
                    f"expected ')' for '(' at {token.position + 1}",
                )
            return node
        if token.kind == "ident":
            name = token.text.lower()
            if name in ("true", "false") and self.peek().kind != "lparen":
                return NumberLiteral(1.0 if name == "true" else 0.0, token.position)
            if self.peek().kind != "lparen":
                raise _fail(self.expression, token.position, f"unexpected word {token.text!r}")
            if name not in _FUNCTION_ARITY:
                raise _fail(self.expression, token.position, f"unknown function {token.text!r}")
            self.advance()
            args: list[Node] = []
            if self.peek().kind != "rparen":
                while True:
                    args.append(self.parse_expression(_LOOSEST))
                    separator = self.advance()
                    if separator.kind == "rparen":
                        break
                    if separator.kind != "comma":
                        raise _fail(
                            self.expression,
                            separator.position,
                            f"expected ',' or ')' in the arguments of {token.text}()",
                        )
            else:
                self.advance()
            low, high = _FUNCTION_ARITY[name]
            if len(args) < low or (high is not None and len(args) > high):
                expected = str(low) if low == high else f"{low} to {high if high else 'any'}"
                raise _fail(
                    self.expression,
                    token.position,
                    f"{token.text}() takes {expected} arguments, got {len(args)}",
                )
            return Call(name, tuple(args), token.position)
        if token.kind == "end":
            raise _fail(self.expression, token.position, "the expression ends too early")
        raise _fail(self.expression, token.position, f"unexpected {token.text!r}")

    def parse_reference(self, token: _Token) -> FieldRef:
        parts = [self.parse_reference_text(token)]
        # [event][field]: a second bracket right after the first
        while (
            self.peek().kind == "ref"
            and self.peek().position == token.position + len(token.text) + 2
        ):
            following = self.advance()
            parts.append(self.parse_reference_text(following))
            token = following
        if len(parts) > 2:
            raise _fail(
                self.expression, token.position, "more than two [..][..] references in a row"
            )
        if len(parts) == 2:
            (event, event_code), (name, code) = parts
            if event_code is not None:
                raise _fail(self.expression, token.position, "an event name cannot take a (code)")
            return FieldRef(name, token.position, event=event, code=code)
        name, code = parts[0]
        return FieldRef(name, token.position, code=code)

    def parse_reference_text(self, token: _Token) -> tuple[str, str | None]:
        text = token.text.split(":", 1)[0]  # [field:value] / [field:label]: the raw value
        match = _REFERENCE.match(text)
        if match is None or not match.group(1):
            raise _fail(self.expression, token.position, f"malformed reference [{token.text}]")
        return match.group(1), match.group(2)


def parse_logic(expression: str) -> Node:
    """Parse a REDCap logic expression into its syntax tree.

    Parameters
    ----------
    expression
        Branching logic, a calculation or a data-quality rule in REDCap's syntax.

    Raises
    ------
    ValidationError
        When the expression does not parse; the message names the expression and the (1-based)
        character position of the problem.
    """
    return _Parser(expression).parse()


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class Values:
    """One value per row: its number (NaN when blank or not a number) and its text.

    ``text`` is ``None`` for computed numbers and booleans, whose text is derived on demand.
    """

    number: FloatArray
    text: ObjectArray | None = None

    @property
    def blank(self) -> BoolArray:
        """True where the value is blank."""
        if self.text is None:
            return np.isnan(self.number)
        return np.asarray(self.text == "", dtype=bool)

    def strings(self) -> ObjectArray:
        """The values as text (computed numbers without a trailing ``.0``)."""
        if self.text is not None:
            return self.text
        return _format_numbers(self.number)

    def truth(self) -> BoolArray:
        """The values as conditions: non-zero numbers are true, blanks and text false."""
        with np.errstate(invalid="ignore"):
            return np.asarray((self.number != 0) & ~np.isnan(self.number), dtype=bool)


def _format_numbers(numbers: FloatArray) -> ObjectArray:
    out = np.empty(len(numbers), dtype=object)
    for index, number in enumerate(numbers.tolist()):
        if math.isnan(number) or math.isinf(number):
            out[index] = ""
        elif number == int(number) and abs(number) < 1e15:
            out[index] = str(int(number))
        else:
            out[index] = repr(round(number, 10))
    return out


def _to_number(text: ObjectArray) -> FloatArray:
    if len(text) == 0:
        return np.zeros(0, dtype=np.float64)
    array = pa.array(text, type=pa.string(), from_pandas=True)
    numeric = pc.match_substring_regex(array, _NUMBER_PATTERN)
    cast = pc.cast(pc.if_else(numeric, array, pa.scalar(None, pa.string())), pa.float64())
    return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)


def _series_values(series: pd.Series) -> Values:
    """Values of a frame column, whatever its dtype (REDCap strings, numbers, dates)."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        numbers: FloatArray = np.asarray(
            series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64
        )
        return Values(numbers, _format_numbers(numbers))
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = pd.Series(series)
        has_time = bool(((stamps.dt.hour != 0) | (stamps.dt.minute != 0)).fillna(False).any())
        text = stamps.dt.strftime("%Y-%m-%d %H:%M" if has_time else "%Y-%m-%d")
        strings = text.astype(object).where(text.notna(), "").to_numpy(dtype=object)
        return Values(np.full(len(series), np.nan), strings)
    # studyman.validation.records flags frames whose object columns already hold plain strings.
    if series.dtype == object and series.attrs.get("studyman.validation.text"):
        plain = np.asarray(series.to_numpy(), dtype=object)
        return Values(_to_number(plain), plain)
    strings = series.astype(object).where(series.notna(), "").to_numpy(dtype=object)
    strings = np.asarray(
        [value if isinstance(value, str) else str(value) for value in strings], dtype=object
    )
    return Values(_to_number(strings), strings)


def _constant(value: float | str, rows: int) -> Values:
    if isinstance(value, str):
        stripped = value.strip()
        try:
            number = float(stripped) if stripped else math.nan
        except ValueError:
            number = math.nan
        return Values(np.full(rows, number), np.full(rows, value, dtype=object))
    return Values(np.full(rows, float(value)))


def _boolean(mask: BoolArray) -> Values:
    return Values(mask.astype(np.float64))


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class EvaluationContext:
    """What an expression may need besides the rows it is evaluated on.

    Attributes
    ----------
    records
        Every flat record of the project (for ``[event][field]`` references); ``None`` when only
        the rows themselves are used.
    record_id_field
        The record-ID column (``record_id`` unless the project names it otherwise).
    today
        The date ``"today"`` and ``"now"`` stand for (the data cut-off, for reproducible runs).
    missing_codes
        The project's missing-data codes (for ``isblankormissingcode``).
    comma_decimal_fields
        Fields validated as ``number_comma_decimal`` (``1,54`` is the number 1.54 there).
    """

    records: pd.DataFrame | None = None
    record_id_field: str = "record_id"
    today: datetime = field(default_factory=lambda: datetime(2000, 1, 1))
    missing_codes: frozenset[str] = frozenset()
    comma_decimal_fields: frozenset[str] = frozenset()


class _Evaluator:
    def __init__(self, frame: pd.DataFrame, context: EvaluationContext) -> None:
        self.frame = frame
        self.rows = len(frame)
        self.context = context
        self.cache: dict[tuple[str | None, str], Values] = {}

    def column(self, reference: FieldRef) -> Values:
        key = (reference.event, reference.column)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if reference.event is None:
            values = self.current_event_column(reference)
        else:
            values = self.other_event_column(reference.event, reference.column)
        self.cache[key] = values
        return values

    def current_event_column(self, reference: FieldRef) -> Values:
        name = reference.column
        if name in ("record-name", "record-id"):
            return _series_values(self.frame[self.context.record_id_field])
        if name == "event-name":
            if "redcap_event_name" in self.frame.columns:
                return _series_values(self.frame["redcap_event_name"])
            return _constant("", self.rows)
        if name not in self.frame.columns:
            return _constant("", self.rows)
        values = _series_values(self.frame[name])
        if name in self.context.comma_decimal_fields and values.text is not None:
            decimal = np.asarray([text.replace(",", ".") for text in values.text], dtype=object)
            return Values(_to_number(decimal), values.text)
        return values

    def other_event_column(self, event: str, name: str) -> Values:
        records = self.context.records if self.context.records is not None else self.frame
        id_field = self.context.record_id_field
        if (
            name not in records.columns
            or "redcap_event_name" not in records.columns
            or id_field not in self.frame.columns
        ):
            return _constant("", self.rows)
        rows = records["redcap_event_name"].astype(object) == event
        if "redcap_repeat_instrument" in records.columns:
            repeat = records["redcap_repeat_instrument"].astype(object)
            rows &= repeat.isna() | (repeat == "")
        # [event][record_id] reads the record ID itself (where the record has that event).
        source = records.loc[rows, list(dict.fromkeys([id_field, name]))].drop_duplicates(
            subset=[id_field], keep="first"
        )
        lookup = source.set_index(id_field, drop=False)[name]
        mapped = self.frame[id_field].map(lookup)
        return _series_values(pd.Series(mapped.to_numpy(dtype=object), dtype=object))

    def evaluate(self, node: Node) -> Values:
        if isinstance(node, NumberLiteral):
            return _constant(node.value, self.rows)
        if isinstance(node, StringLiteral):
            return _constant(node.value, self.rows)
        if isinstance(node, FieldRef):
            return self.column(node)
        if isinstance(node, Unary):
            operand = self.evaluate(node.operand)
            if node.operator == "not":
                return _boolean(~operand.truth())
            if node.operator == "-":
                return Values(-operand.number)
            return Values(operand.number)
        if isinstance(node, Binary):
            return self.binary(node)
        return self.call(node)

    def binary(self, node: Binary) -> Values:
        # A chain of operators (a or b or c ..., a + b + c ...) nests to the left: walk it with a
        # loop, so its length never reaches Python's recursion limit (only nesting counts,
        # bounded by MAX_LOGIC_DEPTH when parsing).
        spine: list[Binary] = []
        current: Node = node
        while isinstance(current, Binary):
            spine.append(current)
            current = current.left
        value = self.evaluate(current)
        for link in reversed(spine):
            value = self.combine(link.operator, value, self.evaluate(link.right))
        return value

    def combine(self, operator: str, left: Values, right: Values) -> Values:
        if operator == "and":
            return _boolean(left.truth() & right.truth())
        if operator == "or":
            return _boolean(left.truth() | right.truth())
        if operator in ("=", "<>"):
            equal = _equal(left, right)
            return _boolean(equal if operator == "=" else ~equal)
        if operator in ("<", "<=", ">", ">="):
            return _boolean(_ordered(left, right, operator))
        a, b = left.number, right.number
        with np.errstate(all="ignore"):
            if operator == "+":
                result = a + b
            elif operator == "-":
                result = a - b
            elif operator == "*":
                result = a * b
            elif operator == "/":
                result = np.where(b == 0, np.nan, a / np.where(b == 0, 1.0, b))
            else:
                result = np.power(a, b)
        result = np.where(np.isinf(result), np.nan, result)
        return Values(np.asarray(result, dtype=np.float64))

    def call(self, node: Call) -> Values:
        function = _FUNCTIONS[node.name]
        if node.name == "if":
            condition, when_true, when_false = (self.evaluate(arg) for arg in node.args)
            return _if(condition, when_true, when_false)
        args = [self.evaluate(arg) for arg in node.args]
        return function(args, self)


def _equal(left: Values, right: Values) -> BoolArray:
    both_numbers = ~np.isnan(left.number) & ~np.isnan(right.number)
    with np.errstate(invalid="ignore"):
        numeric = np.abs(left.number - right.number) <= 1e-9 * np.maximum(
            1.0, np.maximum(np.abs(left.number), np.abs(right.number))
        )
    textual = np.asarray(left.strings() == right.strings(), dtype=bool)
    return np.asarray(np.where(both_numbers, numeric, textual), dtype=bool)


def _ordered(left: Values, right: Values, operator: str) -> BoolArray:
    compare: Any = {
        "<": np.less,
        "<=": np.less_equal,
        ">": np.greater,
        ">=": np.greater_equal,
    }[operator]
    both_numbers = ~np.isnan(left.number) & ~np.isnan(right.number)
    with np.errstate(invalid="ignore"):
        numeric = np.asarray(compare(left.number, right.number), dtype=bool)
    either_blank = left.blank | right.blank
    result = numeric & both_numbers
    # text against a number is false (as in REDCap's JavaScript: "x" > 3 is false)
    textual_rows = np.isnan(left.number) & np.isnan(right.number) & ~either_blank
    if textual_rows.any():
        left_text = left.strings()[textual_rows].astype(str)
        right_text = right.strings()[textual_rows].astype(str)
        result[textual_rows] = np.asarray(compare(left_text, right_text), dtype=bool)
    return result


def _if(condition: Values, when_true: Values, when_false: Values) -> Values:
    mask = condition.truth()
    number = np.where(mask, when_true.number, when_false.number)
    if when_true.text is None and when_false.text is None:
        return Values(number)
    text = np.where(mask, when_true.strings(), when_false.strings())
    return Values(number, np.asarray(text, dtype=object))


_FunctionImpl: TypeAlias = Callable[[list[Values], _Evaluator], Values]


def _stack(args: Sequence[Values]) -> FloatArray:
    return np.vstack([arg.number for arg in args])


def _aggregate(reducer: Callable[[FloatArray], FloatArray], minimum: int = 1) -> _FunctionImpl:
    def apply(args: list[Values], _: _Evaluator) -> Values:
        stacked = _stack(args)
        present = (~np.isnan(stacked)).sum(axis=0)
        with np.errstate(all="ignore"):
            result = reducer(stacked)
        return Values(np.where(present >= minimum, result, np.nan))

    return apply


def _nan_reducer(name: str) -> Callable[[FloatArray], FloatArray]:
    def reduce(stacked: FloatArray) -> FloatArray:
        filled = ~np.isnan(stacked)
        out = np.full(stacked.shape[1], np.nan)
        columns = filled.any(axis=0)
        if columns.any():
            subset = stacked[:, columns]
            if name == "sum":
                out[columns] = np.nansum(subset, axis=0)
            elif name == "mean":
                out[columns] = np.nanmean(subset, axis=0)
            elif name == "min":
                out[columns] = np.nanmin(subset, axis=0)
            elif name == "max":
                out[columns] = np.nanmax(subset, axis=0)
            elif name == "median":
                out[columns] = np.nanmedian(subset, axis=0)
            else:
                counts = (~np.isnan(subset)).sum(axis=0)
                spread = np.full(subset.shape[1], np.nan)
                several = counts >= 2
                if several.any():
                    spread[several] = np.nanstd(subset[:, several], axis=0, ddof=1)
                out[columns] = spread
        return out

    return reduce


def _decimals(args: list[Values]) -> FloatArray:
    if len(args) < 2:
        return np.zeros(len(args[0].number))
    return np.nan_to_num(args[1].number, nan=0.0)


def _round(args: list[Values], _: _Evaluator) -> Values:
    scale = np.power(10.0, _decimals(args))
    value = args[0].number
    return Values(np.sign(value) * np.floor(np.abs(value) * scale + 0.5 + 1e-9) / scale)


def _roundup(args: list[Values], _: _Evaluator) -> Values:
    scale = np.power(10.0, _decimals(args))
    value = args[0].number
    return Values(np.sign(value) * np.ceil(np.abs(value) * scale - 1e-9) / scale)


def _rounddown(args: list[Values], _: _Evaluator) -> Values:
    scale = np.power(10.0, _decimals(args))
    value = args[0].number
    return Values(np.sign(value) * np.floor(np.abs(value) * scale + 1e-9) / scale)


def _unary_math(function: Callable[[FloatArray], FloatArray]) -> _FunctionImpl:
    def apply(args: list[Values], _: _Evaluator) -> Values:
        with np.errstate(all="ignore"):
            result = function(args[0].number)
        return Values(np.where(np.isfinite(result), result, np.nan))

    return apply


def _log(args: list[Values], _: _Evaluator) -> Values:
    with np.errstate(all="ignore"):
        result = np.log(args[0].number)
        if len(args) == 2:
            result = result / np.log(args[1].number)
    return Values(np.where(np.isfinite(result), result, np.nan))


_UNIT_SECONDS: Final = {
    "y": 365.2425 * 86400.0,
    "M": 30.44 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
}
_DATE_FORMATS: Final = frozenset({"ymd", "mdy", "dmy"})


def _to_seconds(values: Values, evaluator: _Evaluator) -> FloatArray:
    """Seconds since the epoch for each date or datetime text (NaN when blank or invalid)."""
    text = values.strings()
    series = pd.Series(text, dtype=object)
    lowered = series.str.lower()
    today = pd.Timestamp(evaluator.context.today)
    special = lowered.isin(["today", "now"])
    parsed = pd.to_datetime(
        series.where(~special & (series != ""), None), format="ISO8601", errors="coerce"
    )
    stamps = parsed.where(~special, today.normalize())
    stamps = stamps.where(~(lowered == "now"), today)
    nanoseconds = stamps.to_numpy(dtype="datetime64[ns]").astype("int64").astype(np.float64)
    nanoseconds[pd.isna(stamps).to_numpy()] = np.nan
    return nanoseconds / 1e9


def _datediff(args: list[Values], evaluator: _Evaluator) -> Values:
    first = _to_seconds(args[0], evaluator)
    second = _to_seconds(args[1], evaluator)
    units = args[2].strings()
    signed = np.zeros(len(first), dtype=bool)
    for extra in args[3:]:
        text = extra.strings()
        is_format = np.isin(np.char.lower(text.astype(str)), list(_DATE_FORMATS))
        signed |= ~is_format & extra.truth()
        signed |= ~is_format & np.isin(np.char.lower(text.astype(str)), ["true"])
    unit_seconds = np.array(
        [_UNIT_SECONDS.get(str(unit), np.nan) for unit in units], dtype=np.float64
    )
    difference = (second - first) / unit_seconds
    return Values(np.where(signed, difference, np.abs(difference)))


def _is_blank_or_missing(args: list[Values], evaluator: _Evaluator) -> Values:
    value = args[0]
    mask = value.blank
    if evaluator.context.missing_codes:
        mask = mask | np.isin(value.strings().astype(str), list(evaluator.context.missing_codes))
    return _boolean(mask)


def _is_number(args: list[Values], _: _Evaluator) -> Values:
    return _boolean(~np.isnan(args[0].number))


def _is_integer(args: list[Values], _: _Evaluator) -> Values:
    number = args[0].number
    with np.errstate(invalid="ignore"):
        return _boolean(~np.isnan(number) & (np.floor(number) == number))


def _text_predicate(test: Callable[[str, str], bool]) -> _FunctionImpl:
    def apply(args: list[Values], _: _Evaluator) -> Values:
        haystack = args[0].strings()
        needle = args[1].strings()
        result = np.fromiter(
            (test(str(h).lower(), str(n).lower()) for h, n in zip(haystack, needle, strict=True)),
            dtype=bool,
            count=len(haystack),
        )
        return _boolean(result)

    return apply


def _text_function(function: Callable[..., str]) -> _FunctionImpl:
    def apply(args: list[Values], _: _Evaluator) -> Values:
        columns = [arg.strings() for arg in args[:1]] + [arg.number for arg in args[1:]]
        out = np.empty(len(columns[0]), dtype=object)
        for index in range(len(out)):
            try:
                out[index] = function(*(column[index] for column in columns))
            except (ValueError, TypeError, OverflowError):
                out[index] = ""
        return Values(_to_number(out), out)

    return apply


def _concat(args: list[Values], _: _Evaluator) -> Values:
    parts = [arg.strings().astype(str) for arg in args]
    joined = parts[0]
    for part in parts[1:]:
        joined = np.char.add(joined, part)
    out = joined.astype(object)
    return Values(_to_number(out), out)


def _date_part(attribute: str) -> _FunctionImpl:
    def apply(args: list[Values], _: _Evaluator) -> Values:
        parsed = pd.to_datetime(
            pd.Series(args[0].strings(), dtype=object).replace("", None),
            format="ISO8601",
            errors="coerce",
        )
        numbers = (
            getattr(parsed.dt, attribute)
            .astype("float64")
            .to_numpy(dtype=np.float64, na_value=np.nan)
        )
        return Values(numbers)

    return apply


def _length(args: list[Values], _: _Evaluator) -> Values:
    return Values(np.array([float(len(str(text))) for text in args[0].strings()], dtype=np.float64))


_FUNCTIONS: Final[Mapping[str, _FunctionImpl]] = {
    "if": lambda args, _: _if(args[0], args[1], args[2]),
    "sum": _aggregate(_nan_reducer("sum")),
    "mean": _aggregate(_nan_reducer("mean")),
    "min": _aggregate(_nan_reducer("min")),
    "max": _aggregate(_nan_reducer("max")),
    "median": _aggregate(_nan_reducer("median")),
    "stdev": _aggregate(_nan_reducer("stdev"), minimum=2),
    "round": _round,
    "roundup": _roundup,
    "rounddown": _rounddown,
    "abs": _unary_math(np.abs),
    "sqrt": _unary_math(np.sqrt),
    "exponential": _unary_math(np.exp),
    "log": _log,
    "datediff": _datediff,
    "isblankormissingcode": _is_blank_or_missing,
    "isnumber": _is_number,
    "isinteger": _is_integer,
    "contains": _text_predicate(lambda h, n: n in h),
    "not_contain": _text_predicate(lambda h, n: n not in h),
    "starts_with": _text_predicate(lambda h, n: h.startswith(n)),
    "ends_with": _text_predicate(lambda h, n: h.endswith(n)),
    "left": _text_function(lambda text, count: str(text)[: int(count)]),
    "right": _text_function(lambda text, count: str(text)[-int(count) :] if int(count) > 0 else ""),
    "mid": _text_function(
        lambda text, start, count: str(text)[int(start) - 1 : int(start) - 1 + int(count)]
    ),
    "length": _length,
    "lower": _text_function(lambda text: str(text).lower()),
    "upper": _text_function(lambda text: str(text).upper()),
    "trim": _text_function(lambda text: str(text).strip()),
    "concat": _concat,
    "year": _date_part("year"),
    "month": _date_part("month"),
    "day": _date_part("day"),
}


def _walk(node: Node) -> list[Node]:
    """Every node of the tree in source order (a loop: a long chain is no deep recursion)."""
    nodes: list[Node] = []
    pending: list[Node] = [node]
    while pending:
        current = pending.pop()
        nodes.append(current)
        if isinstance(current, Unary):
            pending.append(current.operand)
        elif isinstance(current, Binary):
            pending += [current.right, current.left]
        elif isinstance(current, Call):
            pending += reversed(current.args)
    return nodes


_SMART_VARIABLES: Final = frozenset({"record-name", "record-id", "event-name"})


@dataclass(frozen=True, eq=False, repr=False)
class LogicExpression:
    """A parsed REDCap logic expression, ready to evaluate over frames of flat records.

    Build it with :func:`compile_logic`. Two expressions are equal when their text is; the
    tree is never compared, hashed or printed whole (a long chain would recurse too deeply).
    """

    source: str
    tree: Node

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogicExpression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"LogicExpression({self.source[:_QUOTED_LENGTH]!r})"

    @property
    def fields(self) -> tuple[FieldRef, ...]:
        """Every field reference, in order of appearance (smart variables excluded)."""
        return tuple(
            node
            for node in _walk(self.tree)
            if isinstance(node, FieldRef) and node.name not in _SMART_VARIABLES
        )

    @property
    def uses_today(self) -> bool:
        """Whether the expression depends on the date it is evaluated (``"today"``/``"now"``)."""
        return any(
            isinstance(node, StringLiteral) and node.value.strip().lower() in ("today", "now")
            for node in _walk(self.tree)
        )

    def evaluate(self, frame: pd.DataFrame, context: EvaluationContext | None = None) -> Values:
        """Evaluate the expression on every row of *frame*.

        Parameters
        ----------
        frame
            REDCap flat records (one row per record, event and instance); columns as exported.
        context
            Cross-event records, reference date and missing-data codes.
        """
        return _Evaluator(frame, context or EvaluationContext()).evaluate(self.tree)

    def mask(self, frame: pd.DataFrame, context: EvaluationContext | None = None) -> BoolArray:
        """Evaluate as a condition: a boolean per row (blank counts as false)."""
        return self.evaluate(frame, context).truth()


@lru_cache(maxsize=8192)
def compile_logic(expression: str) -> LogicExpression:
    """Parse *expression* once (cached) and return it as an evaluable :class:`LogicExpression`.

    Raises
    ------
    ValidationError
        When the expression does not parse (message: the expression and the position).
    """
    return LogicExpression(expression, parse_logic(expression))


def check_logic(expression: str) -> str | None:
    """Why REDCap logic cannot be evaluated, in one line, or ``None`` when it can.

    The one check that ``protocol check`` (:func:`studyman.protocol.check_dictionary`) and
    validation (:func:`studyman.validation.dictionary.dictionary_from_frame`) apply to a
    dictionary's branching logic and calculations, so a dictionary one accepts the other runs:
    the expression must parse and nest at most :data:`MAX_LOGIC_DEPTH` levels deep.

    Parameters
    ----------
    expression
        Branching logic, a calculation or a data-quality rule in REDCap's syntax.

    Returns
    -------
    str or None
        The problem (the expression's start and the position), or ``None``.
    """
    try:
        compile_logic(expression)
    except ValidationError as error:
        return str(error)
    return None
