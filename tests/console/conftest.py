"""A small warehouse built by real runs of the pipeline, and the console served over real HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from console.app import create_app
from console.server import running
from flows.cli import main
from flows.settings import load_settings
from tests.conftest import pg_database
from warehouse import db
from warehouse import schema as t

TOKEN = "console-test-token-0123456789abcdef"
HOSTILE_NAME = "<script>window.__pwned=1</script> Mallory"
FORMULA_COMPANY = '=HYPERLINK("http://evil.example/","click")'


def submission(n: int, day: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"wf-{n}",
        "submitted_at": f"2026-10-{day:02d}T09:00:00Z",
        "fields": {"consent": True, **fields},
    }


# Hans twice in the grey zone (name and postcode alike, nothing that ties them); Ayşe three times
# by one email (a lead to split); Mallory's name carries a script and her company a formula;
# Lena qualifies.
SUBMISSIONS = [
    submission(
        1,
        1,
        name="Hans Weber",
        city="Hannover",
        postal_code="30159",
        street="Gartenweg 3",
        phone="+49 511 1234567",
    ),
    submission(2, 2, name="Hans Weber", postal_code="30159", email="h.weber@gmx.de"),
    submission(3, 3, name="Ayşe Kaya", email="ayse@firma.com.tr", company="Firma A.Ş."),
    submission(4, 4, name="Ayse Kaya", email="AYSE@firma.com.tr", phone="+90 532 123 45 67"),
    submission(5, 5, name="Ayşe Kaya", email="ayse@firma.com.tr", message="Fiyat teklifi"),
    submission(6, 6, name=HOSTILE_NAME, email="mallory@evil.example", company=FORMULA_COMPANY),
    submission(7, 7, message="no name, no email, no phone: nobody"),
    # a buyer: need, budget, timeline and authority make her an opportunity
    submission(
        8,
        8,
        name="Lena Vogel",
        email="lena.vogel@vogel-bau.de",
        company="Vogel Bau GmbH",
        job_title="Geschäftsführerin",
        message="Bitte ein Angebot für drei Stapler",
        budget="25.000 EUR",
        timeline="within 2 months",
    ),
]


@dataclass
class Console:
    url: str  # warehouse
    cfg: Path
    base: str  # the console's http://127.0.0.1:port
    source: Path

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Steward": "api tester"}
        return requests.request(method, self.base + path, headers=headers, timeout=60, **kw)

    def login(self, steward: str = "Sam Steward") -> requests.Session:
        s = requests.Session()
        r = s.post(
            self.base + "/login",
            data={"token": TOKEN, "steward": steward, "next": "/"},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 303, r.text
        return s

    def wait_job(self, job_id: str, limit: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            job = self.api("GET", f"/api/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish")

    def links(self) -> dict[str, str]:
        engine = db.make_engine(self.url)
        with engine.connect() as conn:
            rows = conn.execute(select(t.lead_links.c.contact_id, t.lead_links.c.lead_id)).all()
        engine.dispose()
        return {str(a): str(b) for a, b in rows}

    def contact_of(self, record: str) -> str:
        engine = db.make_engine(self.url)
        with engine.connect() as conn:
            cid = conn.execute(
                select(t.contacts.c.contact_id)
                .join(t.raw_contacts, t.raw_contacts.c.raw_id == t.contacts.c.raw_id)
                .where(t.raw_contacts.c.source_record_id == record)
            ).scalar_one()
        engine.dispose()
        return str(cid)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def build(tmp: Path, url: str) -> tuple[Path, Path]:
    """Sources and a config in `tmp`, one real run of the pipeline into `url`."""
    tmp.mkdir(parents=True, exist_ok=True)
    source = tmp / "forms.json"
    source.write_text(json.dumps({"submissions": SUBMISSIONS}), encoding="utf-8")
    cfg = tmp / "leadflow.yaml"
    cfg.write_text(
        f"warehouse:\n  url: {url}\ndefault_region: DE\n"
        f"quality:\n  docs_dir: {tmp / 'docs'}\n"
        f"sources:\n  - name: forms\n    kind: webform\n    path: {source}\n",
        encoding="utf-8",
    )
    assert main(["run", "--config", str(cfg)]) == 0
    return cfg, source


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, prefect_api: None
) -> Iterator[Console]:
    """Per module and dialect: a warehouse built by one run, and the console serving it."""
    tmp = tmp_path_factory.mktemp(f"console-{request.param}")
    with _warehouse(request.param, tmp) as url:
        cfg, source = build(tmp, url)
        app = create_app(load_settings(cfg), TOKEN, config_path=str(cfg))
        with running(app) as base:
            yield Console(url, cfg, base, source)
        app.state.jobs.shutdown()
        app.state.engine.dispose()


@contextmanager
def _warehouse(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'warehouse.db'}"
    else:
        with pg_database() as url:
            yield url
