"""What CI changes in the tests: a test that cannot run here (no PostgreSQL
server, no root for a network namespace) is skipped, saying why; under
``CI=true`` it fails instead, so CI cannot go green without it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    # "true" is what CI services set; "1" is how people write it by hand.
    return os.environ.get("CI", "").lower() in ("true", "1")


def missing(reason: str) -> NoReturn:
    """Stop the test for want of what ``reason`` names: a skip, or under CI a failure."""
    if in_ci():
        pytest.fail(f"{reason} (with CI=true a test that cannot run fails)", pytrace=False)
    pytest.skip(reason)
