"""The volume check's row counts: on PostgreSQL kept by the database's own triggers
(`table_row_deltas`), they equal `count(*)` whatever wrote the rows, under the same snapshot."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Connection, func, inspect, select, text

from flows.settings import load_settings
from flows.stages import check_published, process_pending
from tests import crashkit
from warehouse import db, quality
from warehouse import schema as t


def _counted(conn: Connection) -> dict[str, int]:
    return {
        name: int(
            conn.execute(select(func.count()).select_from(t.metadata.tables[name])).scalar_one()
        )
        for name in quality.VOLUME_TABLES
    }


def test_the_counts_follow_every_write_and_equal_count_star(pg_url: str, tmp_path: Path) -> None:
    config = crashkit.write_sample(tmp_path, rows=300)
    crashkit.run_pipeline(str(config), pg_url)
    engine = db.make_engine(pg_url)
    with engine.connect() as conn:
        counts = quality.table_counts(conn)
        assert counts == _counted(conn) and counts["contacts"] > 0 and counts["leads"] > 0
        # the publish folded the deltas: one row per table
        per_table = conn.execute(
            text("select table_name, count(*) from table_row_deltas group by table_name")
        ).all()
        assert sorted(n for _, n in per_table) == [1] * len(quality.VOLUME_TABLES)
    # a rebuild deletes every derived row and publishes them again
    process_pending(engine, load_settings(str(config)), "run_rebuild", rebuild=True)
    with engine.connect() as conn:
        assert quality.table_counts(conn) == _counted(conn)
    # Inside a transaction its own writes count; a rollback takes them back with the rows.
    with engine.connect() as conn:
        before = quality.table_counts(conn)
        conn.rollback()
        txn = conn.begin()
        conn.execute(
            text(
                "delete from lead_links where contact_id in "
                "(select contact_id from lead_links order by 1 limit 3)"
            )
        )
        conn.execute(text("truncate accounts"))
        now = quality.table_counts(conn)
        assert now == _counted(conn) and now["lead_links"] == before["lead_links"] - 3
        assert now["accounts"] == 0 and before["accounts"] > 0
        txn.rollback()
        assert quality.table_counts(conn) == before == _counted(conn)
    # A landing not yet committed while the publish folds is counted once, when it commits.
    with engine.connect() as landing, engine.connect() as publishing:
        with landing.begin():
            landing.execute(
                text(
                    "insert into raw_contacts (raw_id, source, source_kind, source_record_id, "
                    "received_at, payload, content_hash, run_id) values ('raw_late', 'fair', "
                    "'csv', 'late-1', now(), '{}', 'h', 'run_late')"
                )
            )
            with publishing.begin():
                quality.fold_row_counts(publishing)
        assert quality.table_counts(publishing) == _counted(publishing)
        assert quality.table_counts(publishing)["raw_contacts"] == before["raw_contacts"] + 1
    engine.dispose()


def test_counts_written_past_the_triggers_are_found_by_a_whole_check_and_corrected(
    pg_url: str, tmp_path: Path
) -> None:
    config = crashkit.write_sample(tmp_path, rows=120)
    crashkit.run_pipeline(str(config), pg_url)
    engine = db.make_engine(pg_url)
    with engine.begin() as conn:  # a data-only restore with --disable-triggers writes like this
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text(
                "insert into raw_contacts (raw_id, source, source_kind, source_record_id, "
                "received_at, payload, content_hash, run_id) values ('raw_restored', 'fair', "
                "'csv', 'restored-1', now(), '{}', 'h', 'run_restore')"
            )
        )
    with engine.connect() as conn:
        kept, counted = quality.table_counts(conn), _counted(conn)
        assert kept["raw_contacts"] == counted["raw_contacts"] - 1
    settings = load_settings(str(config))
    # `leadflow check` reads only: it warns, names the table, and corrects nothing
    report, _ = check_published(engine, settings, "run_check")
    (drift,) = [r for r in report.results if r.column == "count_drift"]
    assert not drift.success and drift.severity == quality.WARNING and report.passed
    assert drift.sample_ids == ["raw_contacts"]
    with engine.connect() as conn:
        assert quality.table_counts(conn)["raw_contacts"] == counted["raw_contacts"] - 1
    # A run that checks the whole state warns the same way and puts the count right.
    every_run = settings.model_copy(
        update={"quality": settings.quality.model_copy(update={"full_checks_every": 1})}
    )
    stats = process_pending(engine, every_run, "run_whole")
    with engine.connect() as conn:
        assert quality.table_counts(conn) == _counted(conn)
        rows = conn.execute(
            text(
                "select observed_value, success from dq_results where run_id = 'run_whole' "
                "and expectation = 'row_count' and column_name = 'raw_contacts'"
            )
        ).one()
        assert rows == (counted["raw_contacts"], True)  # the baseline is count(*)
        warned = conn.execute(
            text(
                "select success, sample_ids from dq_results where run_id = 'run_whole' "
                "and column_name = 'count_drift'"
            )
        ).one()
        assert warned[0] is False and "raw_contacts" in str(warned[1])
    assert stats.raw_processed == 0  # the restored row was not queued: nothing else moved
    # the next whole check finds nothing to correct
    report, _ = check_published(engine, settings, "run_check_again")
    (drift,) = [r for r in report.results if r.column == "count_drift"]
    assert drift.success
    engine.dispose()


def test_the_migration_counts_what_is_there_and_goes_back(warehouse_url: str) -> None:
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine, "0016")
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into accounts (account_id, name, kind) values "
                "('acc_1', 'Acme', 'company'), ('acc_2', 'Beta', 'company')"
            )
        )
    db.upgrade(engine, "0017")
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        assert quality.table_counts(conn)["accounts"] == 2
        rows = conn.execute(text("select table_name, delta from table_row_deltas")).all()
        deltas: dict[str, int] = {name: n for name, n in rows}
        assert deltas == (
            {name: 0 for name in quality.VOLUME_TABLES} | {"accounts": 2} if pg else {}
        )
        conn.execute(text("delete from accounts where account_id = 'acc_1'"))
        assert quality.table_counts(conn)["accounts"] == 1
    cfg = db._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0016")
    assert "table_row_deltas" not in inspect(engine).get_table_names()
    with engine.begin() as conn:  # no trigger is left to write into the table that went
        conn.execute(text("delete from accounts"))
    engine.dispose()
