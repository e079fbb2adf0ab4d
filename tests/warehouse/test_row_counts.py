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


def _per_source(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """raw_contacts by source: kept (PostgreSQL's `table_row_deltas`) and counted."""
    kept = conn.execute(
        text(
            "select source, sum(delta) from table_row_deltas where table_name = 'raw_contacts' "
            "and source is not null group by source having sum(delta) <> 0"
        )
    ).all()
    counted = conn.execute(text("select source, count(*) from raw_contacts group by source")).all()
    return {s: int(n) for s, n in kept}, {s: int(n) for s, n in counted}


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
        sources = int(
            conn.execute(text("select count(distinct source) from raw_contacts")).scalar_one()
        )
        assert sorted(int(n) for _, n in per_table) == sorted(
            [1] * (len(quality.VOLUME_TABLES) - 1) + [sources]
        )
        # raw records are kept per source, and the source-quality mart's records are those
        kept, counted = _per_source(conn)
        assert kept == counted and len(counted) > 1
        extract_rejects: dict[str, int] = dict(
            conn.execute(
                text("select source, count(*) from rejects where stage = 'extract' group by source")
            ).all()
        )
        mart: dict[str, int] = dict(
            conn.execute(text("select source, records from marts.mart_source_quality")).all()
        )
        assert mart == {s: n + extract_rejects.get(s, 0) for s, n in counted.items()}
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
        assert _per_source(publishing)[0] == _per_source(publishing)[1]
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
    with engine.begin() as conn:  # moved between sources: the totals agree, the sources do not
        conn.execute(
            text(
                "update raw_contacts set source = 'moved' where raw_id = "
                "(select min(raw_id) from raw_contacts where raw_id <> 'raw_restored')"
            )
        )
    with engine.connect() as conn:
        kept, counted = quality.table_counts(conn), _counted(conn)
        assert kept["raw_contacts"] == counted["raw_contacts"] - 1
        assert _per_source(conn)[0] != _per_source(conn)[1]
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
        assert _per_source(conn)[0] == _per_source(conn)[1]
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
        for i, source in enumerate(("fair", "fair", "web")):
            conn.execute(
                text(
                    "insert into raw_contacts (raw_id, source, source_kind, source_record_id, "
                    "received_at, payload, content_hash, run_id) values "
                    "(:raw, :source, 'csv', :record, '2026-01-01', '{}', 'h', 'run_1')"
                ),
                {"raw": f"raw_{i}", "source": source, "record": f"r{i}"},
            )
    db.upgrade(engine, "0018")  # raw records counted per source from here on
    with engine.begin() as conn:
        if pg:
            assert _per_source(conn) == ({"fair": 2, "web": 1}, {"fair": 2, "web": 1})
        conn.execute(text("delete from raw_contacts where raw_id = 'raw_0'"))
        assert quality.table_counts(conn)["raw_contacts"] == 2
        if pg:
            assert _per_source(conn)[0] == {"fair": 1, "web": 1}
    cfg = db._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0017")
    with engine.begin() as conn:  # one row again, and 0017's function counts the table whole
        assert quality.table_counts(conn)["raw_contacts"] == 2
        conn.execute(text("delete from raw_contacts where raw_id = 'raw_1'"))
        assert quality.table_counts(conn)["raw_contacts"] == 1
        if pg:
            held = conn.execute(
                text("select count(*) from table_row_deltas where table_name = 'raw_contacts'")
            ).scalar_one()
            assert held == 2  # the folded row and the delete's
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0016")
    assert "table_row_deltas" not in inspect(engine).get_table_names()
    with engine.begin() as conn:  # no trigger is left to write into the table that went
        conn.execute(text("delete from accounts"))
    engine.dispose()
