"""The built-in tools, always enabled: harmless, for demos and tests.

Their docstrings are what the model reads about them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from laneway.tools.arithmetic import MAX_LENGTH, evaluate


def current_time() -> str:
    """The current date and time in UTC, in RFC 3339 form such as 2026-12-06T20:51:03Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def calculator(expression: Annotated[str, msgspec.Meta(max_length=MAX_LENGTH)]) -> float | int:
    """Evaluate an arithmetic expression and return the number.

    Args:
        expression: Numbers combined with + - * / // % ** and parentheses, such
            as (2 + 3) * 4 / 7. Python's rules: ** binds tightest, / always gives
            a decimal number, // divides rounding down. No names or functions.
    """
    return evaluate(expression)


BUILTIN_FUNCTIONS = (current_time, calculator)
