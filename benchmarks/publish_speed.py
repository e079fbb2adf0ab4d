"""Prints how fast the publish path merges rows and how long the quality gate takes (JSON lines).

Per dialect: first load of N new contacts by the plain insert a publish uses for rows it proved
new (`load.insert_new`: COPY straight into the live table on PostgreSQL, one executemany INSERT on
SQLite), the same rows again through the merge (no change: unchanged rows are not rewritten), a
first load through the merge (COPY into a staging table + ON CONFLICT on PostgreSQL, executemany
upserts on SQLite), then (once) the staged GX suite over the N contacts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, text

from warehouse import db, quality
from warehouse.load import Rows, insert_new, upsert
from warehouse.schema import contacts

PG_ADMIN = os.environ.get(
    "LEADFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def contact_rows(n: int) -> list[dict[str, Any]]:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        {
            "contact_id": f"con_{i:012d}",
            "raw_id": f"raw_{i:012d}",
            "source": "bench",
            "source_kind": "spreadsheet",
            "received_at": at,
            "full_name": f"Person {i}",
            "email": f"person{i}@example.com",
            "email_key": f"person{i}@example.com",
            "email_is_role": False,
            "email_is_free": False,
            "email_is_disposable": False,
            "phone": f"+90532{i:07d}",
            "company": "Acme",
            "country": "TR",
            "issues": [],
        }
        for i in range(n)
    ]


@contextmanager
def warehouse(dialect: str) -> Iterator[str]:
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    name = f"leadflow_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bare_copy(url: str, rows: list[dict[str, Any]]) -> None:
    """The floor: the same rows COPYed into an index-free temp table, nothing merged."""
    import psycopg

    cols = list(rows[0])
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE bare (LIKE contacts)")
            with cur.copy(f"COPY bare ({', '.join(cols)}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row([json.dumps(r[c]) if c == "issues" else r[c] for c in cols])


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    rows = contact_rows(args.rows)
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    for dialect in dialects:
        with warehouse(dialect) as url:
            engine = db.make_engine(url)
            db.upgrade(engine)

            def load(engine: Engine = engine) -> None:
                with engine.begin() as conn:
                    upsert(conn, contacts, rows)

            def insert(engine: Engine = engine) -> None:
                with engine.begin() as conn:
                    insert_new(conn, contacts, Rows.of_dicts(contacts, rows))

            def empty(engine: Engine = engine) -> None:
                with engine.begin() as conn:
                    conn.execute(contacts.delete())

            first_new = timed(insert)
            again = timed(load)
            empty()
            first_merge = timed(load)
            result = {
                "dialect": dialect,
                "rows": args.rows,
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "first_load_insert_new_rows_per_s": round(args.rows / first_new),
                "first_load_merge_rows_per_s": round(args.rows / first_merge),
                "unchanged_reload_rows_per_s": round(args.rows / again),
            }
            if dialect == "postgresql":
                result["bare_copy_rows_per_s"] = round(
                    args.rows / timed(lambda: bare_copy(url, rows))
                )
            engine.dispose()
        print(json.dumps(result))
    frame = quality._of_rows(
        Rows.of_dicts(contacts, rows), quality._columns("contacts", quality.STAGED)
    )
    gate = quality.QualityGate("bench")
    gate._context()  # GX import and context: a fixed cost per run, measured apart
    validate = timed(lambda: gate.check({"contacts": frame}, quality.STAGED))
    print(json.dumps({"gx_staged_contacts_suite_s": round(validate, 2), "rows": args.rows}))


if __name__ == "__main__":
    main()
