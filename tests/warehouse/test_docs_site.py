"""Data Docs offline: a run's site renders in headless Chromium with every request on loopback,
the newest `quality.docs_keep` sites are kept, and one index lists them."""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from flows import stages
from flows.settings import load_settings
from tests.conftest import EXAMPLES, ROOT
from tests.warehouse.conftest import land
from warehouse import db, docs_site

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@dataclass
class Sites:
    docs: Path
    runs: list[str]


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Sites:
    """Three runs on the samples into one docs folder that keeps two sites."""
    folder = tmp_path_factory.mktemp("docs-runs")
    shutil.copytree(EXAMPLES, folder / "sources")
    docs = folder / "leadflow_docs"
    body = (
        (ROOT / "leadflow.yaml").read_text(encoding="utf-8").replace("examples/sources", "sources")
    )
    body = body.replace("sqlite:///leadflow.db", f"sqlite:///{folder / 'w.db'}")
    body += f"quality:\n  docs_dir: {docs}\n  docs_keep: 2\n"
    (folder / "leadflow.yaml").write_text(body, encoding="utf-8")
    settings = load_settings(folder / "leadflow.yaml")
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    runs = ["run_docs_1", "run_docs_2", "run_docs_3"]
    for run_id in runs:
        land(engine, settings, run_id)
        stats = stages.process_pending(engine, settings, run_id)
        assert stats.data_docs == str(docs / run_id / "index.html")
    engine.dispose()
    return Sites(docs, runs)


def test_the_pages_load_nothing_from_outside(sites: Sites) -> None:
    site = sites.docs / sites.runs[-1]
    assert docs_site.outside_addresses(site) == []
    assert (site / "static" / "vendor" / "jquery-3.7.1.min.js").is_file()
    assert (site / "static" / "vendor" / "licenses" / "jquery.txt").is_file()


def test_the_newest_sites_are_kept_and_indexed(sites: Sites) -> None:
    kept = sorted(p.name for p in sites.docs.iterdir() if p.is_dir() and p.name.startswith("run"))
    assert kept == sites.runs[1:]  # docs_keep: 2, the oldest is gone
    index = (sites.docs / "index.html").read_text("utf-8")
    for run_id in sites.runs[1:]:
        assert f"href='{run_id}/index.html'" in index
    assert sites.runs[0] not in index
    manifest = json.loads((sites.docs / sites.runs[-1] / docs_site.MANIFEST).read_text())
    assert manifest["run_id"] == sites.runs[-1] and manifest["checks"] > 0
    # the static files of the kept sites are one copy, linked into both
    a = sites.docs / sites.runs[1] / "static" / "images" / "logo-long.png"
    b = sites.docs / sites.runs[2] / "static" / "images" / "logo-long.png"
    assert a.samefile(b)


@pytest.fixture(scope="module")
def server(sites: Sites) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(sites.docs))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromium-driver are not installed (make services installs them)")
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--window-size=1400,1000",
        # Any name but loopback fails to resolve, as on a machine without internet.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _requested(driver: WebDriver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_a_run_site_renders_offline_in_headless_chromium(
    sites: Sites, server: str, browser: WebDriver, tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    run_id = sites.runs[-1]
    driver.get(f"{server}/{run_id}/index.html")
    rows_css = "table.ge-index-page-validation-results-table tbody tr"
    # bootstrap-table draws its rows more than once while the page settles: an element found in
    # one drawing goes stale in the next, so rows are read (and clicked) inside a retrying wait.
    settle = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))

    def shown_rows(d: WebDriver) -> str | bool:
        rows = d.find_elements(By.CSS_SELECTOR, rows_css)
        return bool(rows) and all(r.is_displayed() for r in rows) and " ".join(r.text for r in rows)

    text = settle.until(shown_rows)
    assert isinstance(text, str)
    assert "published.leads" in text and run_id in text
    # Font Awesome's solid font drew the pass/fail icons
    family = driver.execute_script(
        "return getComputedStyle(document.querySelector('i.fas'), '::before').fontFamily"
    )
    assert "Font Awesome" in family
    shot = tmp_path / "run-index.png"
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000  # a rendered table, not a blank frame

    # one validation page, reached by clicking its row as a user would
    def click_first_row(d: WebDriver) -> bool:
        d.find_elements(By.CSS_SELECTOR, rows_css)[0].click()
        return True

    settle.until(click_first_row)
    WebDriverWait(driver, 30).until(
        lambda d: (
            "/validations/" in d.current_url
            and len(d.find_elements(By.CSS_SELECTOR, "table tbody tr")) > 0
        )
    )
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "Overview" in body or "Statistics" in body

    # the index across runs
    driver.get(f"{server}/index.html")
    links = driver.find_elements(By.CSS_SELECTOR, "#runs tbody a")
    assert [a.text for a in links] == [sites.runs[2], sites.runs[1]]

    requested = _requested(driver)
    assert requested, "the browser's network log is empty"
    outside = [u for u in requested if urlparse(u).hostname not in (None, "127.0.0.1")]
    assert outside == []
