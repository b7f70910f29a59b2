"""The errors of tools: one for the server's operator, one for the model."""

from __future__ import annotations


class ToolLoadError(ValueError):
    """A tool that cannot be enabled: a bad import path, or a function whose
    signature cannot become a JSON schema. Raised at startup, never mid-run."""


class ToolArgumentsError(ValueError):
    """Arguments the model sent that do not fit the tool's schema. The message is
    written for the model, so that it can correct the call and try again."""


class UnknownToolError(KeyError):
    """A tool name that is not enabled on this server."""

    def __str__(self) -> str:
        # KeyError shows the repr of its argument; this message is a sentence.
        return str(self.args[0])
