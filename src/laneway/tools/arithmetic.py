"""Arithmetic on numbers, evaluated from Python's syntax tree without ``eval``.

Only numeric literals, unary ``+``/``-``, the binary operators ``+ - * / // % **``
and parentheses are allowed. The bounds keep a model from making the server
spin or run out of memory: an expression of 1,000 characters can otherwise ask
for ``9**9**9**9``, a number with more digits than there are atoms.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

Number = int | float

MAX_LENGTH = 1_000
# Integer results stay exact up to this size (about 1,200 decimal digits).
MAX_INT_BITS = 4_096
# "1+1+...+1" within MAX_LENGTH nests this deep; only long runs of signs, such
# as "------1", nest deeper, and the bound keeps them from exhausting the stack.
MAX_DEPTH = MAX_LENGTH // 2
_TOO_LARGE_INT = f"result is too large: integers are limited to {MAX_INT_BITS} bits"

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def evaluate(expression: str) -> Number:
    """The value of ``expression``; anything else raises ValueError saying why."""
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    return _value(tree.body, 0)


def _value(node: ast.expr, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise ValueError(f"expression is nested more than {MAX_DEPTH} deep")
    if isinstance(node, ast.Constant):
        # bool is an int subclass, and True + 1 is not arithmetic a model means.
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"only numbers are allowed, not {value!r}")
        return _checked(value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand, depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _value(node.left, depth + 1)
        right = _value(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("result is too large") from None
        return _checked(result)
    raise ValueError(f"not allowed in arithmetic: {_describe(node)}")


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse an integer power too large to compute before computing it: its
    size is known from the operands, and computing it could take hours."""
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0:
        return
    # |base| >= 2**(bits - 1), so the result has at least this many bits.
    if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
        raise ValueError(_TOO_LARGE_INT)


def _checked(value: Number | complex) -> Number:
    # A negative number to a fractional power is complex in Python.
    if isinstance(value, complex):
        raise ValueError("result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is too large")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(_TOO_LARGE_INT)
    return value


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "function calls"
    if isinstance(node, ast.Attribute):
        return "attributes"
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"the operator {type(node.op).__name__}"
    return type(node).__name__
