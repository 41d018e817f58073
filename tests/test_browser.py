"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against
``twin up --simulate 5``: the fleet page lists the stations, and a station page shows an
EVSE whose energy direction changes, and the Feeds page says where twin ocpi's OCPI and
DATEX II feeds are. Screenshots go to docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.up import twin_up

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("TWIN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# as root, with no network beyond loopback: no sandbox, and no background connections to Google
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
STATIONS = [f"CS-{n:05d}" for n in range(1, 6)]
DIRECTIONS = ("discharging", "charging", "idle")


def test_the_live_fleet_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with twin_up(tmp_path, "--simulate", "5", "--speed", "120") as up, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(up.urls["dashboard"])
            sign_in(page, up.token, refused_first=True)
            page.get_by_role("heading", name="Fleet").wait_for(timeout=60_000)
            for station in STATIONS:  # the fleet table's cells (a canvas grid keeps them in the DOM)
                page.get_by_text(station, exact=True).first.wait_for(state="attached", timeout=90_000)
            # the worker archives as it folds: today's energy comes from the archive within seconds
            energy = page.locator('[data-testid="stMetric"]').filter(has_text="Energy in today")
            energy.locator('[data-testid="stMetricValue"]').filter(has_text="kWh").wait_for(timeout=90_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=SHOTS / "fleet.png", full_page=True)

            page.goto(f"{up.urls['dashboard']}/station?station=CS-00001")
            sign_in(page, up.token)  # a new page, a new session: signed in again, and on the page asked for
            evse = page.locator('[data-testid="stMetric"]').filter(has_text="EVSE 1")
            evse.first.wait_for(timeout=60_000)
            seen: list[str] = []
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                value = evse.first.locator('[data-testid="stMetricValue"]').inner_text().strip()
                direction = next(d for d in DIRECTIONS if d in value)
                if not seen or seen[-1] != direction:
                    seen.append(direction)
                    if direction != "idle":
                        page.screenshot(path=SHOTS / "station.png", full_page=True)
                if len(seen) >= 2:
                    break
                time.sleep(0.5)  # the page refreshes the twin on its own every 2 s
            assert len(seen) >= 2, f"EVSE 1's energy direction never changed: {seen}"

            with urllib.request.urlopen(up.urls["datex2"], timeout=30) as feed:  # a NAP reads the table
                assert feed.status == 200
            page.goto(f"{up.urls['dashboard']}/feeds")  # twin ocpi's feeds, from its /status
            sign_in(page, up.token)
            page.get_by_role("heading", name="Feeds: OCPI & DATEX II").wait_for(timeout=60_000)
            page.get_by_text(up.urls["ocpi"]).first.wait_for(state="attached", timeout=60_000)
            page.get_by_text(up.urls["datex2"], exact=True).first.wait_for(state="attached", timeout=60_000)
            page.get_by_text("XML", exact=True).first.wait_for(state="attached", timeout=60_000)  # when, what
            page.wait_for_timeout(1000)
            page.screenshot(path=SHOTS / "feeds.png", full_page=True)
        finally:
            browser.close()


def sign_in(page: Any, token: str, refused_first: bool = False) -> None:
    """The dashboard asks for a token before it shows anything (twin up always has a token
    store): nothing of the fleet before signing in, a wrong token refused, then in."""
    box = page.get_by_label("Token")
    box.wait_for(timeout=60_000)
    assert page.get_by_role("heading", name="Fleet").count() == 0
    assert page.get_by_text("CS-00001").count() == 0
    if refused_first:
        box.fill("twin_not-a-token")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Unknown or revoked token.").wait_for(timeout=30_000)
        assert page.get_by_role("heading", name="Fleet").count() == 0
    box.fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for(timeout=60_000)

