"""The operator page (/ui) in a real chromium against the real server (uvicorn):
lanes live, a run seen queued then running then finished, events as they
come, a message sent, pause and interrupt clicked, markup shown as text, and
the API key asked for. Chromium missing is a failure, not a skip."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from laneway.histogram import HistogramSnapshot
from tests.browser import PageWatch, chromium
from tests.serverproc import ServerProcess, running_server

pytestmark = pytest.mark.browser

C = "/api/conversations"
KEY = "ui-key"
SHORT_S = 10_000  # ms: playwright's expect() waits this long at most
LONG_STEP_MS = 30_000
# What the console shows when a request is refused: expected while no key is given.
REFUSED = re.compile(r"status of 401")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        with chromium() as launched:
            yield launched
    except RuntimeError as exc:
        pytest.fail(str(exc))


def start_server(tmp_path: Path, *args: str) -> Any:
    base = ["--db", str(tmp_path / "ui.db"), "--run-lane-size", "1", "--shutdown-grace-s", "1"]
    return running_server("asyncio", [*base, *args])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with start_server(tmp_path) as proc:
        yield proc


@pytest.fixture
def watch(browser: Browser) -> Iterator[PageWatch]:
    watched = PageWatch(browser)
    try:
        yield watched
    finally:
        watched.close()  # before the server stops, so that no reconnect is logged


def open_page(watch: PageWatch, server: ServerProcess) -> Page:
    page = watch.page
    page.goto(server.base_url + "/ui")
    expect(page.locator("#connection")).to_have_text("live", timeout=SHORT_S)
    return page


def create(server: ServerProcess, body: dict[str, Any], key: str | None = None) -> str:
    headers = {} if key is None else {"X-Session-API-Key": key}
    response = httpx.post(server.base_url + C, json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def sim(steps: int, think_ms: int, **more: Any) -> dict[str, Any]:
    return {"kind": "sim", "config": {"steps": steps, "think_ms": think_ms, **more}}


def status_of(server: ServerProcess, cid: str) -> str:
    return str(httpx.get(f"{server.base_url}{C}/{cid}", timeout=10).json()["status"])


def row_of(page: Page, cid: str) -> Any:
    return page.locator(f'#conversations tr[data-id="{cid}"]')


def test_the_lanes_show_live_and_the_p99_is_the_servers(
    server: ServerProcess, watch: PageWatch
) -> None:
    page = open_page(watch, server)
    rows = page.locator("#lanes tbody tr")
    expect(rows).to_have_count(3)
    assert [rows.nth(i).get_attribute("data-lane") for i in range(3)] == ["run", "tool", "io"]
    expect(page.locator('tr[data-lane="io"] .size')).to_have_text("8")
    httpx.put(server.base_url + "/api/lanes/io", json={"size": 5}, timeout=10)
    expect(page.locator('tr[data-lane="io"] .size')).to_have_text("5", timeout=SHORT_S)
    expect(page.locator('tr[data-lane="io"] .chart path')).to_have_attribute("d", re.compile("M"))
    # The page's p99 of a histogram is the server's own estimate.
    histogram = HistogramSnapshot(bounds=[0.01, 0.1, 1.0], counts=[90, 97, 100], count=101, sum=9)
    in_page = page.evaluate(
        "async (h) => (await import('/ui/lanes.js')).quantile(h, 0.99)",
        {"bounds": histogram.bounds, "counts": histogram.counts, "count": 101, "sum": 9},
    )
    assert in_page == pytest.approx(histogram.quantile(0.99))
    assert watch.problems == []


def test_a_queued_run_goes_running_then_finished(
    server: ServerProcess, watch: PageWatch, tmp_path: Path
) -> None:
    blocker = create(server, {"agent": sim(1, LONG_STEP_MS), "initial_message": "block"})
    queued = create(server, {"agent": sim(3, 600), "initial_message": "go", "title": "second"})
    page = open_page(watch, server)
    row = row_of(page, queued)
    expect(row.locator(".status")).to_have_text("queued")
    expect(row.locator("td").nth(4)).to_have_text("1")
    row.click()
    status = page.locator("#conversation-status")
    expect(status).to_have_text("queued")
    httpx.post(f"{server.base_url}{C}/{blocker}/interrupt", timeout=10)
    expect(status).to_have_text("running", timeout=SHORT_S)
    expect(status).to_have_text("finished", timeout=SHORT_S)
    expect(row.locator(".status")).to_have_text("finished", timeout=SHORT_S)
    statuses = page.locator("#events .kind-status .text").all_text_contents()
    seen = [text.split()[0] for text in statuses]
    assert seen[-3:] == ["queued", "running", "finished"], statuses
    page.select_option("#status-filter", "paused")
    expect(page.locator("#conversations tbody tr")).to_have_count(1)
    expect(row_of(page, blocker).locator(".status")).to_have_text("paused")
    shot = page.screenshot(path=tmp_path / "ui.png")
    assert shot.startswith(b"\x89PNG")
    assert watch.problems == []


def test_events_arrive_and_a_message_sent_from_the_page_shows_as_text(
    server: ServerProcess, watch: PageWatch
) -> None:
    cid = create(server, {"initial_message": "hello", "title": "<b>not bold</b>"})
    page = open_page(watch, server)
    row = row_of(page, cid)
    expect(row.locator(".name")).to_have_text("<b>not bold</b>")
    row.click()
    events = page.locator("#events .event .text")
    expect(events.filter(has_text="hello")).to_have_count(2)  # the message and its echo
    markup = '<img src=x onerror="window.pwned = true">'
    page.fill("#message-input", markup)
    page.click("#message-form button")
    expect(events.filter(has_text=markup)).to_have_count(2, timeout=SHORT_S)
    expect(page.locator("#message-input")).to_have_value("")
    assert page.locator("#events img, #conversations img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert watch.problems == []


def test_streamed_text_shows_while_the_step_runs(server: ServerProcess, watch: PageWatch) -> None:
    cid = create(server, {"agent": sim(1, 2000, deltas=40), "initial_message": "go"})
    page = open_page(watch, server)
    row_of(page, cid).click()
    streaming = page.locator("#events .streaming .text")
    # Deltas are not replayed: the page shows what streams after it opened.
    expect(streaming).to_have_text(re.compile(r"\S"), timeout=SHORT_S)
    # The stored message ends the step, with the whole text, in its place.
    expect(streaming).to_have_count(0, timeout=SHORT_S)
    text = "step 1 of 1 (read 1 new message(s))"
    expect(page.locator("#events .source-agent .text")).to_have_text(text)
    assert watch.problems == []


def test_pause_then_interrupt_a_running_run(server: ServerProcess, watch: PageWatch) -> None:
    cid = create(server, {"agent": sim(3, LONG_STEP_MS), "initial_message": "go"})
    page = open_page(watch, server)
    row_of(page, cid).click()
    expect(page.locator("#conversation-status")).to_have_text("running", timeout=SHORT_S)
    page.click("#pause")
    # A pause waits for the step to end: half a minute here.
    expect(page.locator("#conversation-detail")).to_contain_text("pause requested")
    assert status_of(server, cid) == "running"
    page.click("#interrupt")
    expect(page.locator("#conversation-status")).to_have_text("paused", timeout=SHORT_S)
    expect(page.locator("#events .kind-status .text").last).to_have_text("paused (interrupted)")
    assert status_of(server, cid) == "paused"
    assert watch.problems == []


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_out_of_urls(
    tmp_path: Path, watch: PageWatch
) -> None:
    with start_server(tmp_path, "--api-key", KEY) as server:
        cid = create(server, {"initial_message": "secret-free"}, key=KEY)
        page = watch.page
        page.goto(server.base_url + "/ui")
        form = page.locator("#key-form")
        expect(form).to_be_visible(timeout=SHORT_S)
        page.fill("#key-input", "wrong")
        page.click("#key-form button")
        expect(page.locator("#key-problem")).to_have_text("that key was refused", timeout=SHORT_S)
        page.fill("#key-input", KEY)
        page.click("#key-form button")
        expect(page.locator("#connection")).to_have_text("live", timeout=SHORT_S)
        expect(form).to_be_hidden()
        expect(page.locator("#lanes tbody tr")).to_have_count(3)
        row_of(page, cid).click()
        expect(page.locator("#events .event .text").first).to_have_text("idle (created)")
        watch.close()
    assert not [url for url in watch.requested if KEY in url or "wrong" in url]
    assert [p for p in watch.problems if not REFUSED.search(p)] == []
