"""Prints what the published-state checks cost on a big PostgreSQL warehouse: whole tables (as
before scoped checks) against the scope of one incremental run.

The warehouse is made by bulk SQL (marts_speed's FILL: N leads, 1.2 contacts a lead, an
opportunity for every tenth lead), raw payloads of 400 characters, then a hundredth of new leads
(marts_speed's MORE) as one run's work. Timed, each the median of --repeat, inside one
transaction as a run does it: the frames of `warehouse.quality` as of --old (reads whole
tables), the new frames over the whole state (`leadflow check`) and over the run's scope, and
their parts: count(*) per volume table, the newest record per source by GROUP BY and by the
index walk (EXPLAIN of both printed). Run it from the checkout it measures.

    .venv/bin/python benchmarks/quality_speed.py --leads 1000000 [--keep]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from marts_speed import FILL, MORE
from sqlalchemy import Connection, create_engine, func, select, text

from warehouse import db, quality
from warehouse import schema as t
from warehouse.publish import Touched

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get(
    "LEADFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# The commit before the published-state checks were scoped: its quality module reads whole tables.
OLD = "f4571a1"


def _old_quality(rev: str) -> ModuleType:
    src = subprocess.check_output(["git", "show", f"{rev}:warehouse/quality.py"], cwd=ROOT)
    spec = importlib.util.spec_from_loader("quality_old", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["quality_old"] = mod
    exec(compile(src, "quality_old.py", "exec"), mod.__dict__)
    return mod


def _median(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    runs, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return round(statistics.median(runs), 3), out


def _read(
    conn: Connection,
    now: datetime,
    baseline: dict[str, int],
    thresholds: quality.Thresholds,
    touched: Touched,
) -> dict[str, int]:
    """The published frames, every part read (whole tables come lazily): rows per suite."""
    frames, _ = quality.published_frames(conn, now, baseline, thresholds, touched)
    return {name: sum(len(f) for f in parts) for name, parts in frames.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leads", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--old", default=OLD, help="git revision of the quality module to compare")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()
    old = _old_quality(args.old)
    name = f"leadflow_quality_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    out: dict[str, Any] = {"leads": args.leads, "load_avg_1m": os.getloadavg()[0]}
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        t0 = time.perf_counter()
        fill = FILL.replace("'{}', 'h', 'run_bench'", "repeat('x', 400), 'h', 'run_bench'")
        more = max(1, args.leads // 100)
        with engine.begin() as conn:
            for stmt in fill.split(";\n"):
                if stmt.strip():
                    conn.execute(text(stmt), {"n": args.leads})
            for stmt in MORE.split(";\n"):
                if stmt.strip():
                    conn.execute(text(stmt), {"k": more})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        out["fill_s"] = round(time.perf_counter() - t0, 1)
        with engine.connect() as conn:
            out["rows"] = quality.table_counts(conn)
            new_leads = list(
                conn.execute(
                    select(t.leads.c.lead_id).where(t.leads.c.lead_id.like("lead_new_%"))
                ).scalars()
            )
            new_contacts = list(
                conn.execute(
                    select(t.contacts.c.contact_id).where(t.contacts.c.contact_id.like("con_new_%"))
                ).scalars()
            )
        # One run's keys: its new leads and contacts, a hundred existing leads it changed (a
        # tenth of them converted), fifty lead ids it merged away.
        touched = Touched(
            leads={
                *new_leads,
                *(f"lead_{i}" for i in range(10, 1010, 10)),
                *(f"lead_gone_{i}" for i in range(50)),
            },
            contacts=set(new_contacts),
            opportunities={f"opp_{i}" for i in range(100, 1100, 100)},
        )
        now = datetime.now(UTC)
        thresholds = quality.Thresholds()
        timings: dict[str, Any] = {}
        with engine.connect() as conn:
            txn = conn.begin()  # rolled back: the index is dropped inside it
            baseline = out["rows"]
            timings["old_published_frames_s"], (old_frames, _) = _median(
                lambda: old.published_frames(conn, now, baseline, old.Thresholds()),
                args.repeat,
            )
            timings["new_whole_s"], whole = _median(
                lambda: _read(conn, now, baseline, thresholds, Touched(everything=True)),
                args.repeat,
            )
            timings["new_scoped_s"], scoped = _median(
                lambda: _read(conn, now, baseline, thresholds, touched), args.repeat
            )
            out["frame_rows"] = {
                "old": {k: len(v) for k, v in old_frames.items()},
                "whole": whole,
                "scoped": scoped,
            }
            counts = {}
            for table in quality.VOLUME_TABLES:
                count = select(func.count()).select_from(t.metadata.tables[table])
                counts[table], _ = _median(partial(conn.execute, count), args.repeat)
            timings["count_s"] = counts
            raw = t.raw_contacts
            group_by = select(raw.c.source, func.max(raw.c.received_at)).group_by(raw.c.source)
            timings["newest_group_by_s"], _ = _median(
                lambda: conn.execute(group_by).all(), args.repeat
            )
            timings["newest_index_walk_s"], _ = _median(
                lambda: quality.newest_per_source(conn), args.repeat
            )
            out["explain_index_walk"] = _explain(conn, quality.newest_per_source)
            # as before the migration: the same GROUP BY without the (source, received_at) index
            conn.exec_driver_sql("DROP INDEX ix_raw_contacts_source_received_at")
            timings["newest_group_by_without_index_s"], _ = _median(
                lambda: conn.execute(group_by).all(), args.repeat
            )
            txn.rollback()
        out["seconds"] = timings
        out["load_avg_1m_end"] = os.getloadavg()[0]
        out["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    finally:
        engine.dispose()
        if not args.keep:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(out, indent=1))


def _explain(conn: Connection, fn: Callable[[Connection], Any]) -> list[str]:
    """The plan of the one statement `fn` sends, as PostgreSQL would run it."""
    sent: list[str] = []

    class _Spy:
        def __init__(self, real: Connection) -> None:
            self.real = real

        def execute(self, stmt: Any, *a: Any, **k: Any) -> Any:
            sent.append(str(stmt.compile(self.real, compile_kwargs={"literal_binds": True})))
            return self.real.execute(stmt, *a, **k)

    fn(_Spy(conn))  # type: ignore[arg-type]
    return [r[0] for r in conn.exec_driver_sql("EXPLAIN " + sent[-1])]


if __name__ == "__main__":
    main()
