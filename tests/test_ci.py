"""A test that cannot run here is skipped, except under CI=true, where it fails."""

from __future__ import annotations

import pytest

from tests.ci import missing


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_outside_ci_what_is_missing_skips(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        missing("no server")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_under_ci_what_is_missing_fails(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="no server"):
        missing("no server")
