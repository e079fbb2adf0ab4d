"""The review queue as a steward works through it over HTTP: each decision shows the next pair,
pairs decided elsewhere drop out, a revoked pair comes back, a finished run re-orders the queue."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from console.app import create_app
from console.server import running
from flows.settings import Settings
from tests.console.conftest import TOKEN, csrf_of
from tests.warehouse.test_stewardship import _fill, _pair
from warehouse import schema as t
from warehouse.db import make_engine, upgrade

PAIRS = 30  # more than a page (25)


@pytest.fixture
def queue(warehouse_url: str) -> Iterator[tuple[Engine, str]]:
    """Lead i holds i contacts; pair i joins lead i to a lead of one contact, at an even-odds
    weight, so pair 30 matters most and pair 1 least."""
    engine = make_engine(warehouse_url)
    upgrade(engine)
    leads = {f"l{i:02d}": i for i in range(1, PAIRS + 1)} | {
        f"s{i:02d}": 1 for i in range(1, PAIRS + 1)
    }
    pairs = [_pair(f"r{i:02d}", f"l{i:02d}-1", f"s{i:02d}-1", 10.0) for i in range(1, PAIRS + 1)]
    with engine.begin() as conn:
        _fill(conn, leads, pairs)
    settings = Settings.model_validate({"warehouse": {"url": warehouse_url}})
    app = create_app(settings, TOKEN, engine=engine)
    with running(app) as base:
        yield engine, base
    app.state.jobs.shutdown()
    engine.dispose()


def _shown(html: str) -> tuple[str, int]:
    """The pair a queue page shows, and the queue's length it states."""
    rid = re.search(r'data-review="([^"]+)"', html)
    total = re.search(r"Pair \d+ of (\d+)", html)
    assert rid and total, html
    return rid.group(1), int(total.group(1))


def _api(base: str, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Steward": "api"}
    r = requests.request(method, base + path, headers=headers, timeout=60, **kw)
    r.raise_for_status()
    return r.json()


def test_a_steward_works_through_the_queue(queue: tuple[Engine, str]) -> None:
    engine, base = queue
    queued = _api(base, "GET", "/api/reviews?per_page=200")
    assert queued["total"] == PAIRS
    assert [r["review_id"] for r in queued["reviews"]] == [f"r{i:02d}" for i in range(30, 0, -1)]

    s = requests.Session()
    s.post(base + "/login", data={"token": TOKEN, "steward": "Sam"}, timeout=30)
    page = s.get(base + "/reviews", timeout=30).text
    assert _shown(page) == ("r30", 30)
    # "different people" on the first pair: the same place now holds the next one
    page = s.post(
        base + "/reviews/r30/decide",
        data={"decision": "different", "pos": "0", "csrf_token": csrf_of(page)},
        timeout=30,
    ).text
    assert _shown(page) == ("r29", 29)
    # a pair decided behind the console's back (SQL, another console) is not offered again
    with engine.begin() as conn:
        conn.execute(
            t.match_review.update()
            .where(t.match_review.c.review_id == "r28")
            .values(decision="must_link", decided_by="sql", decided_at=datetime.now(UTC))
        )
    assert _shown(s.get(base + "/reviews?pos=1", timeout=30).text) == ("r27", 28)
    # deep in the queue, past the first page
    assert _shown(s.get(base + "/reviews?pos=27", timeout=30).text) == ("r01", 28)
    # a revoked decision puts its pair back where it belongs
    assert _api(base, "POST", "/api/reviews/r30/revoke")["revoked"] == ["r30"]
    assert _shown(s.get(base + "/reviews", timeout=30).text) == ("r30", 29)
    # a finished run may change every lead's size: the queue is ordered again
    with engine.begin() as conn:
        conn.execute(t.leads.update().where(t.leads.c.lead_id == "l01").values(contact_count=99))
        conn.execute(
            t.pipeline_runs.insert().values(
                run_id="run_later",
                flow="pipeline",
                status="succeeded",
                started_at=datetime.now(UTC),
                finished_at=datetime.now(UTC),
                params={},
                stats={},
            )
        )
    assert _shown(s.get(base + "/reviews", timeout=30).text) == ("r01", 29)
