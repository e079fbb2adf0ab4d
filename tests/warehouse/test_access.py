"""The BI reader role selects the mart views and nothing else (checked by logging in as it)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from flows.cli import main
from tests.conftest import write_config
from warehouse import access, db


def test_bi_reader_reads_marts_only(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into raw_contacts (raw_id, source, source_kind, source_record_id, "
                "received_at, payload, content_hash, run_id) values ('raw_1', 'fair', "
                "'spreadsheet', '1', now(), '{\"email\": \"a@b.co\"}', 'h', 'run_1')"
            )
        )
        # A stand-in mart: the real ones are views named mart_* over the same tables.
        conn.execute(
            text(
                "create view mart_test_sources as "
                "select source, count(*) as contacts from raw_contacts group by source"
            )
        )
        conn.execute(text("create view report_private as select * from raw_contacts"))
    role = f"bi_reader_{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "leadflow.yaml", pg_url, "")
    try:
        assert main(["db", "grant-bi-reader", "--role", role, "--config", str(cfg)]) == 0
        assert "mart_test_sources" in capsys.readouterr().out
        # Granting twice is harmless and leaves the same rights.
        assert main(["db", "grant-bi-reader", "--role", role, "--config", str(cfg)]) == 0
        as_reader = create_engine(pg_url.replace("postgres@", f"{role}@"))
        with as_reader.connect() as conn:
            assert conn.execute(text("select * from mart_test_sources")).all() == [("fair", 1)]
        for forbidden in (
            "select payload from raw_contacts",
            "select email from contacts",
            "select email from leads",
            "select raw from rejects",
            "select * from report_private",
            "create table stolen (x int)",
        ):
            with as_reader.connect() as conn, pytest.raises(ProgrammingError) as err:
                conn.execute(text(forbidden))
            assert "permission denied" in str(err.value), forbidden
        as_reader.dispose()
    finally:
        with engine.begin() as conn:
            access.drop_bi_reader(conn, role)
        engine.dispose()


def test_role_names_are_not_sql(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    with engine.begin() as conn, pytest.raises(ValueError):
        access.grant_bi_reader(conn, 'x"; drop table leads; --')
    engine.dispose()
