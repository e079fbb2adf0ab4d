"""The dbt example builds against a filled PostgreSQL warehouse, reading the marts as bi_reader."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from tests.conftest import ROOT
from tests.warehouse.test_mart_numbers import CLOCK, fill
from warehouse import access, db, marts

PROJECT = ROOT / "examples" / "dbt"
DBT = PROJECT / ".venv" / "bin" / "dbt"


def test_dbt_build_passes_reading_as_bi_reader(pg_url: str, tmp_path: Path) -> None:
    assert DBT.exists(), "the dbt environment is missing: run `make dbt-venv`"
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    suffix = uuid.uuid4().hex[:8]
    reader, analyst = f"bi_reader_{suffix}", f"bi_analyst_{suffix}"
    with engine.begin() as conn:
        fill(conn)
        marts.refresh_marts(conn, as_of=CLOCK)
        access.grant_bi_reader(conn, reader)
        # The dbt user reads only through its membership of the reader role and writes only
        # its own schema, where the KPI model goes.
        conn.execute(text(f"CREATE ROLE {analyst} LOGIN IN ROLE {reader}"))
        conn.execute(text(f"CREATE SCHEMA analytics AUTHORIZATION {analyst}"))
    url = make_url(pg_url)
    env = {
        **os.environ,
        "LEADFLOW_DBT_HOST": url.host or "127.0.0.1",
        "LEADFLOW_DBT_PORT": str(url.port or 5432),
        "LEADFLOW_DBT_USER": analyst,
        "LEADFLOW_DBT_DBNAME": url.database or "",
        "LEADFLOW_DBT_SCHEMA": "analytics",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    try:
        done = subprocess.run(
            [
                str(DBT),
                "build",
                "--project-dir", str(PROJECT),
                "--profiles-dir", str(PROJECT),
                "--target-path", str(tmp_path / "target"),
                "--log-path", str(tmp_path / "logs"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "ERROR=0" in done.stdout and "PASS=" in done.stdout
        with engine.connect() as conn:
            kpi = {
                r.week_start: r
                for r in conn.execute(text("select * from analytics.kpi_weekly order by 1"))
            }
        # O1 won and O2 lost in the week of 2 March; O4 and O5 won in the week of 9 March.
        first, second = kpi[date(2026, 3, 2)], kpi[date(2026, 3, 9)]
        assert (first.new_leads, first.won, first.lost, first.win_rate) == (
            4,
            1,
            1,
            Decimal("0.5000"),
        )
        assert (second.won, second.won_amount, second.reporting_currency) == (
            2,
            Decimal("1900.00"),
            "EUR",
        )
        as_analyst = create_engine(pg_url.replace("postgres@", f"{analyst}@"))
        with as_analyst.connect() as conn, pytest.raises(ProgrammingError):
            conn.execute(text("select email from public.leads"))
        as_analyst.dispose()
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA analytics CASCADE"))
            conn.execute(text(f"DROP ROLE {analyst}"))
            access.drop_bi_reader(conn, reader)
        engine.dispose()
