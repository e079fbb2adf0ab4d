"""The dbt example builds against a filled PostgreSQL warehouse, reading the marts as bi_reader."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from tests.conftest import ROOT
from tests.warehouse.test_mart_numbers import CLOCK, fill
from warehouse import access, db, marts
from warehouse import schema as t

PROJECT = ROOT / "examples" / "dbt"
DBT = PROJECT / ".venv" / "bin" / "dbt"


def test_every_mart_is_a_declared_source() -> None:
    sources = yaml.safe_load((PROJECT / "models" / "sources.yml").read_text(encoding="utf-8"))
    (leadflow,) = sources["sources"]
    assert sorted(table["name"] for table in leadflow["tables"]) == sorted(marts.mart_names())


def _merge_a_converted_lead(conn: Connection) -> None:
    """L7 was converted, then merged into L1: its opportunity is closed lost and keeps its lead
    id, which is no live lead any more (erasure leaves opportunities the same way)."""
    conn.execute(
        t.opportunities.insert().values(
            opportunity_id="O7",
            lead_id="L7",
            account_id="acc_L7",
            name="Acme O7",
            primary_contact_id="c1",
            lead_source="web",
            stage="Closed Lost",
            probability=0,
            close_date=date(2026, 3, 4),
            created_at=CLOCK.replace(day=2),
        )
    )
    conn.execute(
        t.opportunity_stage_history.insert(),
        [
            {
                "history_id": f"h_O7_{i}",
                "opportunity_id": "O7",
                "lead_id": "L7",
                "from_stage": before,
                "to_stage": after,
                "changed_at": CLOCK.replace(day=day),
                "reason": "duplicate: lead L7 merged into L1",
                "rules_version": "r1",
            }
            for i, (before, after, day) in enumerate(
                [(None, "Prospecting", 2), ("Prospecting", "Closed Lost", 4)]
            )
        ],
    )
    conn.execute(t.lead_merges.insert().values(merged_lead_id="L7", into_lead_id="L1", run_id="r"))


def _erase_a_customer(conn: Connection) -> None:
    """L8 won O8 and was then erased: the opportunity stays for the sales figures, its lead and
    every row naming the lead (its stage history too) are gone, so its close time is unknown."""
    conn.execute(
        t.opportunities.insert().values(
            opportunity_id="O8",
            lead_id="L8",
            account_id="acc_L8",
            name="erased",
            primary_contact_id="erased",
            lead_source="web",
            stage="Closed Won",
            probability=100,
            amount=100,
            currency="EUR",
            close_date=date(2026, 3, 10),
            created_at=CLOCK.replace(day=3),
        )
    )


def test_dbt_build_passes_reading_as_bi_reader(pg_url: str, tmp_path: Path) -> None:
    assert DBT.exists(), "the dbt environment is missing: run `make dbt-venv`"
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    suffix = uuid.uuid4().hex[:8]
    reader, analyst = f"bi_reader_{suffix}", f"bi_analyst_{suffix}"
    with engine.begin() as conn:
        fill(conn)
        _merge_a_converted_lead(conn)
        _erase_a_customer(conn)
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
        # O1 won, O2 and O7 lost in the week of 2 March; O4 and O5 won in the week of 9 March,
        # and O8, whose close time went with its erased lead, by its close date (10 March).
        first, second = kpi[date(2026, 3, 2)], kpi[date(2026, 3, 9)]
        assert (first.new_leads, first.won, first.lost, first.win_rate) == (
            4,
            1,
            2,
            Decimal("0.3333"),
        )
        assert (second.won, second.won_amount, second.reporting_currency) == (
            3,
            Decimal("2000.00"),
            "EUR",
        )
        assert None not in kpi
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
