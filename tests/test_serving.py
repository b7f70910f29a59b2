from __future__ import annotations

import signal

import httpx
import pytest

from tests.serverproc import running_server


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_health_and_stops_on_signal(backend: str, sig: int, tmp_path: object) -> None:
    with running_server(backend, ["--db", f"{tmp_path}/laneway.db"]) as server:
        response = httpx.get(server.base_url + "/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert httpx.get(server.base_url + "/ready").status_code == 200
        assert server.stop(sig) == 0
        out = server.output()
    assert "Traceback" not in out


def test_serve_rejects_bad_settings_with_exit_2() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "laneway", "serve", "--run-lane-size", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "run_lane_size" in result.stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_second_server_on_the_same_database_exits_with_a_clear_error(
    backend: str, tmp_path: object
) -> None:
    import subprocess
    import sys

    from tests.serverproc import free_port

    db = f"{tmp_path}/laneway.db"
    with running_server(backend, ["--db", db]) as first:
        cmd = [sys.executable, "-m", "laneway", "serve", "--backend", backend]
        cmd += ["--host", "127.0.0.1", "--port", str(free_port()), "--db", db]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 3
        assert "in use by another laneway process" in result.stdout + result.stderr
        # The first server is unharmed.
        assert httpx.get(first.base_url + "/ready").status_code == 200
