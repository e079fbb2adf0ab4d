"""The console in a real headless Chromium: sign in, decide a pair with the keyboard, search,
split a contact; a name carrying a script shows as text and runs nothing. A screenshot per page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.console.conftest import HOSTILE_NAME, TOKEN, Console
from warehouse import db
from warehouse import schema as t

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
        reason="Debian's chromium and chromium-driver are not installed (make services installs them)",
    ),
    pytest.mark.parametrize("console", ["sqlite"], indirect=True),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def _wait(driver: Any, condition: Any, seconds: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def test_steward_signs_in_decides_searches_and_splits(
    console: Console, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    d = browser
    d.get(console.base + "/reviews")
    _wait(d, ec.url_contains("/login"))
    _shot(d, tmp_path, "login")
    d.find_element(By.ID, "steward").send_keys("Browser Steward")
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "signin").click()
    _wait(d, ec.presence_of_element_located((By.ID, "pair")))
    assert "Browser Steward" in d.page_source
    _shot(d, tmp_path, "reviews")

    # "d" on the page: different people.
    rid = d.find_element(By.ID, "pair").get_attribute("data-review")
    _wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, 'html[data-keys="on"]')))
    # typed on the page itself (focus on the body, as after a click on the page), not into
    # whatever field the browser left focused
    d.find_element(By.TAG_NAME, "body").send_keys("d")
    _wait(d, lambda drv: rid not in drv.page_source.split("Recent decisions")[0])
    row = _review(console, str(rid))
    assert row.decision == "cannot_link" and row.decided_by == "Browser Steward"

    d.get(console.base + "/")
    _wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, "svg.funnel")))
    _shot(d, tmp_path, "overview")
    for page in ("rejects", "runs"):
        d.get(f"{console.base}/{page}")
        _wait(d, ec.presence_of_element_located((By.TAG_NAME, "h1")))
        _shot(d, tmp_path, page)

    # Search from the header box, open the lead.
    box = d.find_element(By.CSS_SELECTOR, "form.search input")
    box.send_keys("ayse@firma.com.tr", Keys.ENTER)
    _wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, "table.results a")))
    _shot(d, tmp_path, "search")
    d.find_element(By.CSS_SELECTOR, "table.results a").click()
    _wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, "h1.lead-name")))
    _shot(d, tmp_path, "lead")

    # Not this person: the wf-5 contact of Ayşe's lead.
    contact = console.contact_of("wf-5")
    d.find_element(By.CSS_SELECTOR, f'button.split-button[data-contact="{contact}"]').click()
    _wait(d, ec.url_contains("split=1"))
    _shot(d, tmp_path, "split")
    engine = db.make_engine(console.url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.match_review.c.decision, t.match_review.c.decided_by).where(
                t.match_review.c.kind == "split", t.match_review.c.contact_a == contact
            )
        ).all()
    engine.dispose()
    assert rows and all(r == ("cannot_link", "Browser Steward") for r in rows)

    # Mallory's name holds a script: it is shown as text and never runs.
    d.get(console.base + "/leads?q=mallory@evil.example")
    _wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, "table.results a")))
    d.find_element(By.CSS_SELECTOR, "table.results a").click()
    heading = _wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, "h1.lead-name")))
    assert HOSTILE_NAME in heading.text
    assert d.execute_script("return window.__pwned === undefined")
    _shot(d, tmp_path, "hostile")
    assert len(list(tmp_path.glob("*.png"))) == 9


def _review(console: Console, rid: str) -> Any:
    engine = db.make_engine(console.url)
    with engine.connect() as conn:
        row = conn.execute(select(t.match_review).where(t.match_review.c.review_id == rid)).one()
    engine.dispose()
    return row
