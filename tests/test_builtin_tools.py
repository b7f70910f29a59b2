from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from laneway.tools import ToolArgumentsError, ToolRegistry
from laneway.tools.arithmetic import MAX_INT_BITS, MAX_LENGTH
from laneway.tools.builtin import calculator, current_time


def test_current_time_is_rfc3339_utc_and_now() -> None:
    text = current_time()
    assert text.endswith("Z")
    assert len(text) == len("2026-12-06T20:51:03Z")
    when = datetime.fromisoformat(text)
    assert when.utcoffset() == timedelta(0)
    # Generous, so that a slow machine does not fail it.
    assert abs(when - datetime.now(UTC)) < timedelta(seconds=60)


def test_current_time_as_a_tool_takes_no_arguments() -> None:
    tool = ToolRegistry.with_builtins().get("current_time")
    assert tool is not None
    assert tool.parameters["properties"] == {}
    datetime.fromisoformat(tool.call(""))
    with pytest.raises(ToolArgumentsError, match="unknown field `zone`"):
        tool.call('{"zone": "CET"}')


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2", 3),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 ** 3 ** 2", 512),
        ("-2 ** 2", -4),
        ("(-2) ** 2", 4),
        ("--3", 3),
        ("+4 - -1", 5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** -1", 0.5),
        ("10 - 4 - 3", 3),
        ("48 / 4 / 2", 6.0),
        ("0.1 + 0.2", 0.1 + 0.2),
        ("1.5e3 * 2", 3000.0),
        ("7.5 // 2", 3.0),
        ("2 ** 0.5", 2**0.5),
        ("1_000 * 3", 3000),
        (" 6 * 7 ", 42),
        ("2 ** 4000", 2**4000),
        ("-" * 400 + "1", 1),
    ],
)
def test_calculator_evaluates(expression: str, expected: float) -> None:
    result = calculator(expression)
    assert result == expected
    # Exact integer arithmetic stays int; anything with a float or / is a float.
    assert type(result) is type(expected)


def test_calculator_division_gives_a_float() -> None:
    assert calculator("6 / 3") == 2.0
    assert isinstance(calculator("6 / 3"), float)


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("x + 1", "the name 'x'"),
        ("abs(-1)", "function calls"),
        ("__import__('os').system('true')", "function calls"),
        ("(1).real", "attributes"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("None", "only numbers"),
        ("1j * 2", "only numbers"),
        ("~1", "the operator Invert"),
        ("not 1", "the operator Not"),
        ("1 << 10", "the operator LShift"),
        ("1 & 3", "the operator BitAnd"),
        ("1 < 2", "Compare"),
        ("[1, 2]", "List"),
        ("1 if 1 else 2", "IfExp"),
        ("lambda: 1", "Lambda"),
        ("1 +", "not an arithmetic expression"),
        ("1; 2", "not an arithmetic expression"),
        ("import os", "not an arithmetic expression"),
        ("", "not an arithmetic expression"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("1.0 / 0.0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("(-8) ** 0.5", "not a real number"),
        ("1e400", "too large"),
        ("1e308 * 10", "too large"),
        ("10.0 ** 400", "too large"),
        ("2 ** 5000 * 1.0", "too large"),
        ("-" * 600 + "1", "nested more than"),
    ],
)
def test_calculator_rejects(expression: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        calculator(expression)


@pytest.mark.parametrize(
    "expression",
    ["2 ** 10 ** 10", "9 ** 9 ** 9 ** 9", "(10 ** 1000) ** 1000", "2 ** 4097", "3 ** 4096"],
)
def test_calculator_refuses_huge_powers_at_once(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"limited to {MAX_INT_BITS} bits"):
        calculator(expression)
    # Computing any of these would take far longer (or exhaust memory).
    assert time.perf_counter() - started < 5


def test_calculator_refuses_huge_products() -> None:
    with pytest.raises(ValueError, match="too large"):
        calculator(" * ".join(["2 ** 4000"] * 3))


def test_calculator_bounds_expression_length() -> None:
    longest = "1" + " + 1" * ((MAX_LENGTH - 1) // 4)
    assert len(longest) <= MAX_LENGTH
    assert calculator(longest) == (MAX_LENGTH - 1) // 4 + 1
    with pytest.raises(ValueError, match=f"longer than {MAX_LENGTH}"):
        calculator("1" * (MAX_LENGTH + 1))


def test_calculator_as_a_tool() -> None:
    tool = ToolRegistry.with_builtins().get("calculator")
    assert tool is not None
    assert tool.parameters["required"] == ["expression"]
    expression = tool.parameters["properties"]["expression"]
    assert expression["type"] == "string"
    assert expression["maxLength"] == MAX_LENGTH
    assert "parentheses" in expression["description"]
    assert tool.description == "Evaluate an arithmetic expression and return the number."
    assert tool.call('{"expression": "(2 + 3) * 4"}') == 20
    with pytest.raises(ToolArgumentsError, match="Expected `str`, got `int`"):
        tool.call('{"expression": 20}')
    with pytest.raises(ToolArgumentsError, match="length <= 1000"):
        tool.call({"expression": "1" * 1001})
    with pytest.raises(ValueError, match="the name 'x'"):
        tool.call({"expression": "x"})
