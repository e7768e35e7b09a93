"""The console's Patterns page (issue 14 item 4) in Debian's chromium against a real
``caisey-bridge serve`` whose endpoint files hold a 90-day history built by
``sim/fleet_history.py`` (real actors on real SQLite files; the host recomputes each fleet line
from them as it opens them). Writes ``docs/console-patterns.png`` when it is missing or when
``CAISEY_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api

from sim.fleet_history import DAYS, build
from tests import test_console
from tests.test_console import ARTIFACTS, Bridge, ConsoleLog, open_page, sign_in
from worker.sqlite_store import SqliteStore

expect = sync_api.expect
ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = ROOT / "docs" / "console-patterns.png"
ENDPOINTS = 30

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bridge, Any]]:
    data = tmp_path_factory.mktemp("patterns") / "data"
    (data / "endpoints").mkdir(parents=True)
    data.chmod(0o700)
    start_ms = int(time.time() * 1000) - DAYS * 86_400_000
    history = build(
        ENDPOINTS, seed=2, start_ms=start_ms, store_for=lambda e: SqliteStore(data / "endpoints" / f"{e}.sqlite3")
    )
    b = Bridge(data)
    b.start()
    yield b, history
    b.stop()


browser = test_console.browser  # one Chromium per module, launched as test_console.py does


def test_patterns_page_shows_findings_ranking_heat_map_and_trend(browser: Any, bridge: tuple[Bridge, Any]) -> None:
    server, history = bridge
    # The host opens every endpoint's file in the background and pushes its line.
    deadline = time.monotonic() + 60
    while server.ok("GET", "/api/patterns?limit=1000")["endpoints_with_history"] < ENDPOINTS:
        assert time.monotonic() < deadline, "the host did not push every endpoint's line"
        time.sleep(0.2)
    console = ConsoleLog()
    page = open_page(browser, console)
    token = server.technician("patterns-tech")
    sign_in(page, server, token, "#/patterns")
    expect(page.locator("#topnav a", has_text="Patterns")).to_be_visible()
    expect(page.locator("h1#patterns-page-h")).to_have_text("Patterns")

    # Findings in words, linked to their endpoints; none for the control group.
    kinds = {e.endpoint_id: e.kind for e in history.endpoints}
    findings = page.locator("li.finding")
    expect(findings.first).to_be_visible()
    texts = findings.all_inner_texts()
    assert any("between 12:00 and 13:00 local time" in t for t in texts), texts
    assert any("answers re-issued prompts" in t for t in texts), texts
    assert any("unreachable on Mondays" in t for t in texts), texts
    for item in findings.all():
        eid = item.locator("a").get_attribute("href").rsplit("/", 1)[1]
        assert kinds[eid] != "control", item.inner_text()

    # The table, sortable: by missed (default, descending), then by endpoint id.
    rows = page.locator("#patterns-table tbody tr")
    expect(rows).to_have_count(ENDPOINTS)
    missed = [int(t.replace(",", "")) for t in page.locator('#patterns-table td[data-col="missed"]').all_inner_texts()]
    assert missed == sorted(missed, reverse=True)
    page.click('button[data-sort="endpoint_id"]')
    expect(page.locator('th[aria-sort="ascending"] button[data-sort="endpoint_id"]')).to_be_visible()
    ids = [r.get_attribute("data-endpoint") for r in rows.all()]
    assert ids == sorted(ids)
    page.click('button[data-sort="answer_rate"]')
    rates = [t for t in page.locator('#patterns-table td[data-col="answer_rate"]').all_inner_texts()]
    values = [int(t.split()[0]) for t in rates]
    assert values == sorted(values, reverse=True)

    # Heat map: 168 cells, and the same numbers as a table.
    expect(page.locator(".heat-map rect")).to_have_count(7 * 24)
    page.click("text=Show the heat map as a table")
    expect(page.locator(".heat-table tbody tr").first).to_be_visible()
    assert page.locator(".heat-table tbody tr").count() > 24

    # p95 time to answer over time for the top-ranked endpoint, also as a table.
    expect(page.locator(".trend-chart rect.trend-bar").first).to_be_visible()
    page.click("text=Show the weeks as a table")
    expect(page.locator(".trend-table tbody tr")).to_have_count(13)

    # A filter by client: no line has one until clients land (issue 14 item 5).
    page.fill("#patterns-client", "acme")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#patterns-summary")).to_contain_text("client “acme”")

    page.fill("#patterns-client", "")
    page.click("form.filters button[type=submit]")
    expect(rows).to_have_count(ENDPOINTS)
    expect(page.locator("details.chart-table[open]")).to_have_count(0)  # re-rendered: tables folded
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "console-patterns.png"
    page.screenshot(path=str(path), full_page=True)
    if not DOCS_SCREENSHOT.exists() or os.environ.get("CAISEY_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, DOCS_SCREENSHOT)

    # The endpoint page's hour chart is in the endpoint's own zone.
    lunch = next(e for e in history.endpoints if e.kind == "lunch")
    page.goto(server.url + f"/#/endpoint/{lunch.endpoint_id}")
    expect(page.locator("#hours-zone")).to_contain_text(f"the endpoint's local time, {lunch.zone}")
    page.context.close()
    assert console.unexpected() == [], console.errors
