"""Agents: built-in ``echo`` and ``sim``, and third-party ones by import path.

A third-party agent is named ``"package.module:factory"``; the factory takes the
spec's ``config`` dict and returns an object with ``step`` and ``call_tool``.
"""

from __future__ import annotations

import importlib
from typing import cast

from laneway.agents.base import (
    Agent,
    AgentConfigError,
    AgentFactory,
    StepResult,
    ToolCall,
    ToolResult,
    Turn,
)
from laneway.agents.echo import make_echo
from laneway.agents.sim import make_sim
from laneway.models import AgentSpec

BUILTIN: dict[str, AgentFactory] = {"echo": make_echo, "sim": make_sim}

__all__ = [
    "BUILTIN",
    "Agent",
    "AgentConfigError",
    "AgentFactory",
    "StepResult",
    "ToolCall",
    "ToolResult",
    "Turn",
    "make_agent",
    "resolve_factory",
]


def resolve_factory(kind: str) -> AgentFactory:
    """Find the factory for a spec's ``kind``; raises :class:`AgentConfigError`."""
    builtin = BUILTIN.get(kind)
    if builtin is not None:
        return builtin
    module_name, sep, attr = kind.partition(":")
    if not sep or not module_name or not attr:
        raise AgentConfigError(
            f"unknown agent kind {kind!r}: use one of {sorted(BUILTIN)} "
            "or an import path 'package.module:factory'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentConfigError(f"cannot import agent module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise AgentConfigError(f"{module_name!r} has no callable {attr!r}")
    return cast(AgentFactory, factory)


def make_agent(spec: AgentSpec) -> Agent:
    """Build an agent for one run; config errors surface as :class:`AgentConfigError`."""
    factory = resolve_factory(spec.kind)
    try:
        return factory(dict(spec.config))
    except AgentConfigError:
        raise
    except Exception as exc:
        raise AgentConfigError(f"agent {spec.kind!r} rejected its config: {exc}") from exc
