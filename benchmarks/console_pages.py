"""Console page times on a big warehouse: search, lead page and review queue, median of N requests.

The warehouse is filled by bulk SQL (PostgreSQL `generate_series`), not by running the pipeline:
N contacts with raw records, links, ~0.7 N leads and open review pairs, then `ANALYZE`. The
console is served by uvicorn on a free loopback port and timed over real HTTP with a signed-in
session, so each figure is the whole request: routing, SQL, template, transfer. The last figure
is a steward deciding pairs one after the other: the decision and the next queue page, whose
order is computed again because the decision changed the queue.

    python benchmarks/console_pages.py --contacts 1000000 [--warehouse URL] [--repeat 20]

Prints one JSON line: per page the median, p90 and max in ms, the targets, and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

TARGETS_MS = {"search": 200, "lead": 200, "reviews": 300}
ADMIN = os.environ.get("LEADFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# One statement per table; ids and values derive from the row number only (deterministic).
FILL = [
    """
    INSERT INTO raw_contacts (raw_id, source, source_kind, source_record_id, received_at, payload,
                              content_hash, run_id)
    SELECT 'raw_' || lpad(i::text, 8, '0'), 'bench_' || (i % 4), 'webform', i::text,
           timestamptz '2026-01-01' + (i || ' minutes')::interval,
           json_build_object('name', f.name || ' ' || l.name, 'email',
                             lower(f.name) || '.' || lower(l.name) || i || '@example' || (i % 997) || '.com',
                             'phone', '+49151' || lpad(i::text, 8, '0'))::text,
           md5(i::text), 'run_bench'
    FROM generate_series(1, :n) AS i
    JOIN bench_first f ON f.k = i % 200
    JOIN bench_last l ON l.k = (i / 200) % 500
    """,
    """
    INSERT INTO contacts (contact_id, raw_id, source, source_kind, received_at, first_name,
                          last_name, full_name, name_key, email, email_key, email_is_role,
                          email_is_free, email_is_disposable, phone, company, company_key, city,
                          country, issues)
    SELECT 'con_' || lpad(i::text, 8, '0'), 'raw_' || lpad(i::text, 8, '0'), 'bench_' || (i % 4),
           'webform', timestamptz '2026-01-01' + (i || ' minutes')::interval, f.name, l.name,
           f.name || ' ' || l.name, lower(f.name) || ' ' || lower(l.name),
           lower(f.name) || '.' || lower(l.name) || i || '@example' || (i % 997) || '.com',
           lower(f.name) || '.' || lower(l.name) || i || '@example' || (i % 997) || '.com',
           false, false, false, '+49151' || lpad(i::text, 8, '0'),
           'Company ' || (i % 50000) || ' GmbH', 'company ' || (i % 50000), 'Hannover', 'DE', '[]'
    FROM generate_series(1, :n) AS i
    JOIN bench_first f ON f.k = i % 200
    JOIN bench_last l ON l.k = (i / 200) % 500
    """,
    # ~0.7 leads per contact: contact i belongs to lead floor(0.7 i)
    """
    INSERT INTO lead_links (contact_id, lead_id, rule, score, evidence)
    SELECT 'con_' || lpad(i::text, 8, '0'), 'lead_' || lpad(floor(i * 0.7)::bigint::text, 8, '0'),
           CASE WHEN floor(i * 0.7) = floor((i - 1) * 0.7) THEN 'email_key' ELSE 'new_lead' END,
           1.0, '{"weight": 20.0, "fields": {"email": "email_same", "first": "first_same"}}'
    FROM generate_series(1, :n) AS i
    """,
    """
    INSERT INTO leads (lead_id, first_name, last_name, full_name, email, phone, company,
                       company_key, city, country, lead_source, first_seen_at, last_seen_at,
                       contact_count, source_count, survivorship, status, score, grade, reasons,
                       rules_version)
    SELECT k.lead_id, c.first_name, c.last_name, c.full_name, c.email, c.phone, c.company,
           c.company_key, c.city, c.country, c.source, k.first_seen, k.last_seen, k.n, 1,
           json_build_object('email', c.contact_id, 'full_name', c.contact_id),
           CASE WHEN k.n > 1 THEN 'Qualified' ELSE 'Nurturing' END, 40 + 10 * k.n, 'B',
           '{"need": ["need_stated (+20): asked for a quote"]}', '2026.1.0'
    FROM (SELECT lk.lead_id, min(lk.contact_id) AS first_contact, count(*) AS n,
                 min(c.received_at) AS first_seen, max(c.received_at) AS last_seen
          FROM lead_links lk JOIN contacts c ON c.contact_id = lk.contact_id
          GROUP BY lk.lead_id) k
    JOIN contacts c ON c.contact_id = k.first_contact
    """,
    # grey-zone pairs between neighbours in different leads: every 20th contact
    """
    INSERT INTO match_review (review_id, contact_a, contact_b, score, evidence, decision,
                              applied, run_id, kind)
    SELECT 'rev_' || lpad(i::text, 8, '0'), 'con_' || lpad(i::text, 8, '0'),
           'con_' || lpad((i + 3)::text, 8, '0'), 10 + (i % 97) / 10.0,
           '{"fields": {"first": "first_same", "last": "last_close"}, "probability": 0.5}',
           'open', false, 'run_bench', 'pair'
    FROM generate_series(1, :n - 3, 20) AS i
    """,
]


def fill(url: str, n: int) -> dict[str, float]:
    from warehouse import db

    engine = db.make_engine(url)
    db.upgrade(engine)
    rnd = random.Random(7)
    first = [f"First{k}" for k in range(200)]
    last = [f"Last{k}" for k in range(500)]
    rnd.shuffle(first)
    rnd.shuffle(last)
    timings: dict[str, float] = {}
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE bench_first (k int, name text) ON COMMIT DROP"))
        conn.execute(text("CREATE TEMP TABLE bench_last (k int, name text) ON COMMIT DROP"))
        conn.execute(
            text("INSERT INTO bench_first VALUES (:k, :name)"),
            [{"k": k, "name": v} for k, v in enumerate(first)],
        )
        conn.execute(
            text("INSERT INTO bench_last VALUES (:k, :name)"),
            [{"k": k, "name": v} for k, v in enumerate(last)],
        )
        for stmt in FILL:
            table = stmt.split("INSERT INTO ")[1].split()[0]
            t0 = time.perf_counter()
            conn.execute(text(stmt), {"n": n})
            timings[table] = round(time.perf_counter() - t0, 1)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    return timings


def measure(url: str, n: int, repeat: int) -> dict[str, Any]:
    from console.app import create_app
    from console.server import running
    from flows.settings import Settings

    token = uuid.uuid4().hex
    settings = Settings.model_validate({"warehouse": {"url": url}})
    app = create_app(settings, token)
    rnd = random.Random(11)
    out: dict[str, Any] = {}
    with running(app) as base:
        s = requests.Session()
        r = s.post(f"{base}/login", data={"token": token, "steward": "bench"}, timeout=60)
        r.raise_for_status()

        def timed(name: str, paths: list[str]) -> None:
            s.get(base + paths[0], timeout=60).raise_for_status()  # warm the pool and caches
            ms = []
            for p in paths:
                t0 = time.perf_counter()
                resp = s.get(base + p, timeout=60)
                ms.append((time.perf_counter() - t0) * 1000)
                resp.raise_for_status()
            ms.sort()
            out[name] = {
                "median_ms": round(statistics.median(ms), 1),
                "p90_ms": round(ms[int(len(ms) * 0.9) - 1], 1),
                "max_ms": round(ms[-1], 1),
                "target_ms": TARGETS_MS.get(name.split("_")[0]),
            }

        ids = [rnd.randint(1, n) for _ in range(repeat)]
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            emails = [
                conn.execute(
                    text("SELECT email FROM contacts WHERE contact_id = :c"),
                    {"c": f"con_{i:08d}"},
                ).scalar_one()
                for i in ids
            ]
            names = [
                conn.execute(
                    text("SELECT full_name FROM contacts WHERE contact_id = :c"),
                    {"c": f"con_{i:08d}"},
                ).scalar_one()
                for i in ids
            ]
        engine.dispose()
        timed("search_email", [f"/leads?q={e}" for e in emails])
        timed("search_phone", [f"/leads?q=%2B49151{i:08d}" for i in ids])
        timed("search_name", [f"/leads?q={nm.replace(' ', '+')}" for nm in names])
        timed("search_company", [f"/leads?q=Company+{i % 50000}+GmbH" for i in ids])
        timed("lead_page", [f"/leads/lead_{int(i * 0.7):08d}" for i in ids])
        timed("reviews_first_page", ["/reviews"] * repeat)
        timed("reviews_deep_page", [f"/reviews?pos={rnd.randint(0, n // 20 - 1)}" for _ in ids])
        out["reviews_decide_next"] = decide_next(s, base, repeat)
    app.state.engine.dispose()
    return out


def decide_next(s: requests.Session, base: str, repeat: int) -> dict[str, Any]:
    """A steward at work: press "different people" on the pair shown and wait for the next one.
    Each decision changes the queue, so each next page orders the queue again (no warm-up)."""
    ms = []
    page = s.get(f"{base}/reviews", timeout=120)
    for _ in range(repeat):
        page.raise_for_status()
        rid = re.search(r'data-review="([^"]+)"', page.text)
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert rid and csrf, "no pair on the review page"
        t0 = time.perf_counter()
        page = s.post(
            f"{base}/reviews/{rid.group(1)}/decide",
            data={"decision": "different", "pos": "0", "csrf_token": csrf.group(1)},
            timeout=120,
        )  # the redirect to the next pair is followed
        ms.append((time.perf_counter() - t0) * 1000)
    ms.sort()
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[int(len(ms) * 0.9) - 1], 1),
        "max_ms": round(ms[-1], 1),
        "target_ms": TARGETS_MS["reviews"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument(
        "--warehouse", default=None, help="an empty PostgreSQL database (default: a fresh one)"
    )
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="leadflow-bench-"))
    name = None
    admin = None
    url = args.warehouse
    if url is None:
        name = f"leadflow_console_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        t0 = time.perf_counter()
        fill_s = fill(url, args.contacts)
        fill_total = round(time.perf_counter() - t0, 1)
        pages = measure(url, args.contacts, args.repeat)
    finally:
        if admin is not None and name is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(
        json.dumps(
            {
                "contacts": args.contacts,
                "repeat": args.repeat,
                "fill_s": fill_total,
                "fill_per_table_s": fill_s,
                "pages": pages,
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "script": Path(__file__).name,
            }
        )
    )


if __name__ == "__main__":
    main()
