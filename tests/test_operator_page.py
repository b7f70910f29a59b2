"""The operator page's files, in-process: served at /ui without a key even when
keys are configured, with a policy that lets the page load nothing from
elsewhere; and every file the page loads is one laneway ships."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from tests.apiclient import api_client

pytestmark = pytest.mark.anyio

UI = resources.files("laneway") / "ui"


async def test_the_page_and_its_files_need_no_key() -> None:
    async with api_client(api_keys=["k1"]) as client:
        for path in ("/ui", "/ui/"):
            page = await client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.text == (UI / "index.html").read_text()
        script = await client.get("/ui/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert (await client.get("/ui/style.css")).headers["content-type"].startswith("text/css")
        assert (await client.get("/ui/nothing.js")).status_code == 404
        assert (await client.get("/api/lanes")).status_code == 401


async def test_the_page_may_load_nothing_from_elsewhere() -> None:
    async with api_client() as client:
        for path in ("/ui", "/ui/app.js"):
            headers = (await client.get(path)).headers
            policy = headers["content-security-policy"]
            assert "default-src 'none'" in policy
            assert "script-src 'self'" in policy
            assert "connect-src 'self'" in policy
            assert "frame-ancestors 'none'" in policy
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"


def test_every_file_the_page_loads_is_shipped_and_none_is_elsewhere() -> None:
    shipped = {entry.name for entry in UI.iterdir()}
    assert {"index.html", "app.js", "style.css"} <= shipped
    index = (UI / "index.html").read_text()
    loaded = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', index))
    for name in shipped:
        text = (UI / name).read_text()
        loaded |= set(re.findall(r'from "\./([^"]+)"', text))
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
    assert loaded <= shipped
    assert {"app.js", "style.css", "icon.svg"} <= loaded


def test_no_server_value_goes_in_as_markup() -> None:
    for name in ("app.js", "api.js", "lanes.js", "conversations.js", "conversation.js"):
        text = (UI / name).read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text), name
