"""The BI reader role reads every mart and no table (checked by logging in as it)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from flows.cli import main
from tests.conftest import write_config
from warehouse import access, db, marts
from warehouse.schema import metadata


def test_bi_reader_reads_every_mart_and_no_table(
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
        conn.execute(text("create view report_private as select * from raw_contacts"))
        # Granted once, elsewhere: a grant run again must take it back.
        conn.execute(text("create schema scratch"))
        conn.execute(text("create table scratch.notes as select 1 as x"))
    role = f"bi_reader_{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "leadflow.yaml", pg_url, "")
    try:
        assert main(["db", "grant-bi-reader", "--role", role, "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "schema marts" in out and all(m.name in out for m in marts.MARTS)
        with engine.begin() as conn:
            conn.execute(text(f"grant usage on schema scratch to {role}"))
            conn.execute(text(f"grant select on scratch.notes to {role}"))
        # Granting twice is harmless and leaves exactly the marts.
        assert main(["db", "grant-bi-reader", "--role", role, "--config", str(cfg)]) == 0
        as_reader = create_engine(pg_url.replace("postgres@", f"{role}@"))
        with as_reader.connect() as conn:
            # The marts schema is the role's search path: no qualifier needed, both work.
            assert conn.execute(text("select source, records from mart_source_quality")).all() == [
                ("fair", 1)
            ]
            for m in marts.MARTS:
                conn.execute(text(f"select * from marts.{m.name} limit 1")).all()  # noqa: S608
        forbidden = [f"select * from public.{t} limit 0" for t in metadata.tables]  # noqa: S608
        forbidden += [
            "select * from public.report_private",
            "select * from public.alembic_version",
            "select * from scratch.notes",
            "create table marts.stolen (x int)",
            "create table public.stolen (x int)",
        ]
        for sql in forbidden:
            with as_reader.connect() as conn, pytest.raises(ProgrammingError) as err:
                conn.execute(text(sql))
            assert "permission denied" in str(err.value), sql
        # A mart recreated after the grant (a changed definition) stays readable.
        with engine.begin() as conn:
            conn.execute(text("update marts.mart_catalog set definition = 'old'"))
            marts.refresh_marts(conn, as_of=None)
        with as_reader.connect() as conn:
            assert conn.execute(text("select count(*) from mart_pipeline")).scalar_one() == 0
        as_reader.dispose()
    finally:
        with engine.begin() as conn:
            access.drop_bi_reader(conn, role)
        engine.dispose()


def test_role_and_schema_names_are_not_sql(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    with engine.begin() as conn, pytest.raises(ValueError):
        access.grant_bi_reader(conn, 'x"; drop table leads; --')
    with engine.begin() as conn, pytest.raises(ValueError):
        access.grant_bi_reader(conn, "bi_reader", schema="marts; drop table leads")
    engine.dispose()


def test_a_configured_marts_schema_is_the_one_built_and_granted(
    pg_url: str, tmp_path: Path
) -> None:
    role = f"bi_reader_{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "leadflow.yaml", pg_url, "marts:\n  schema: sales_bi\n")
    engine = db.make_engine(pg_url)
    try:
        assert main(["db", "grant-bi-reader", "--role", role, "--config", str(cfg)]) == 0
        with engine.connect() as conn:
            built = access.schema_relations(conn, "sales_bi")
            default = access.schema_relations(conn, marts.DEFAULT_SCHEMA)
        assert built == sorted(marts.mart_names()) and default == []
        as_reader = create_engine(pg_url.replace("postgres@", f"{role}@"))
        with as_reader.connect() as conn:
            assert conn.execute(text("select count(*) from mart_catalog")).scalar_one() == len(
                marts.MARTS
            )
        as_reader.dispose()
    finally:
        with engine.begin() as conn:
            access.drop_bi_reader(conn, role)
        engine.dispose()
