"""The OpenAI-compatible server the ``openai`` agent talks to: server config,
never conversation config, so that no client can point a run at another host or
read the key.

One SDK client is shared by every conversation: it is thread-safe, and its
connection pool lets steps reuse connections to the provider.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openai


@dataclass(frozen=True, kw_only=True)
class LLMProvider:
    base_url: str
    # Kept out of repr, so that no log line or error message can carry it.
    api_key: str = field(default="", repr=False)
    models: tuple[str, ...] = ()
    timeout_s: float = 60.0
    max_retries: int = 2

    def default_model(self) -> str | None:
        return self.models[0] if self.models else None


class ProviderClient:
    """The SDK client of a provider, made on first use: importing the SDK takes
    a noticeable part of a second, which a server with no LLM run never pays."""

    def __init__(self, provider: LLMProvider) -> None:
        self.provider = provider
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()

    def get(self) -> openai.OpenAI:
        with self._lock:
            if self._client is None:
                import openai

                p = self.provider
                self._client = openai.OpenAI(
                    base_url=p.base_url,
                    # The SDK refuses an empty key; local servers take any.
                    api_key=p.api_key or "unused",
                    timeout=p.timeout_s,
                    max_retries=p.max_retries,
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
