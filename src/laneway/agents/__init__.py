"""Agents: built-in ``echo``, ``sim`` and ``openai``, and third-party ones by import path.

A third-party agent is named ``"package.module:factory"``; the factory takes the
spec's ``config`` dict and returns an object with ``step`` and ``call_tool``.
Naming one imports code, so a server takes only those it was started with.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from typing import cast

from laneway.agents.base import (
    Agent,
    AgentConfigError,
    AgentFactory,
    StepResult,
    ToolCall,
    ToolResult,
    Turn,
    Usage,
)
from laneway.agents.echo import make_echo
from laneway.agents.llm_provider import LLMProvider, ProviderClient
from laneway.agents.llm_stats import LLMStats
from laneway.agents.openai_agent import make_openai
from laneway.agents.sim import make_sim
from laneway.models import AgentSpec
from laneway.tools import ToolRegistry

__all__ = [
    "Agent",
    "AgentCatalog",
    "AgentConfigError",
    "AgentFactory",
    "LLMProvider",
    "StepResult",
    "ToolCall",
    "ToolResult",
    "Turn",
    "Usage",
]


class AgentCatalog:
    """The agents a server can make: the built-ins, set up with the server's
    provider and tools, and the third-party factories it allows."""

    def __init__(
        self,
        *,
        allowed: Sequence[str] = (),
        llm: LLMProvider | None = None,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.allowed = frozenset(allowed)
        self.tools = tools if tools is not None else ToolRegistry.with_builtins(())
        self.llm_stats = LLMStats()
        self.llm_client = ProviderClient(llm) if llm is not None else None
        openai = functools.partial(
            make_openai, client=self.llm_client, tools=self.tools, stats=self.llm_stats
        )
        self.builtin: dict[str, AgentFactory] = {
            "echo": make_echo,
            "sim": make_sim,
            "openai": openai,
        }

    def make(self, spec: AgentSpec) -> Agent:
        """Build an agent for one conversation; raises :class:`AgentConfigError`."""
        factory = self._factory(spec.kind)
        try:
            return factory(dict(spec.config))
        except AgentConfigError:
            raise
        except Exception as exc:
            raise AgentConfigError(f"agent {spec.kind!r} rejected its config: {exc}") from exc

    def close(self) -> None:
        if self.llm_client is not None:
            self.llm_client.close()

    def _factory(self, kind: str) -> AgentFactory:
        builtin = self.builtin.get(kind)
        if builtin is not None:
            return builtin
        module_name, sep, attr = kind.partition(":")
        if not sep or not module_name or not attr:
            raise AgentConfigError(
                f"unknown agent kind {kind!r}: use one of {sorted(self.builtin)} "
                "or an import path 'package.module:factory'"
            )
        if kind not in self.allowed:
            raise AgentConfigError(
                f"agent {kind!r} is not enabled on this server (start it with --agent)"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise AgentConfigError(f"cannot import agent module {module_name!r}: {exc}") from exc
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise AgentConfigError(f"{module_name!r} has no callable {attr!r}")
        return cast(AgentFactory, factory)
