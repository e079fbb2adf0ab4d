"""A warehouse made by the first release upgrades cleanly, data and all, to today's schema."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from warehouse import db
from warehouse.schema import dq_results, metadata, rejects


def test_upgrade_from_the_first_migration_keeps_the_data(warehouse_url: str) -> None:
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine, "0001")
    assert db.current_revisions(engine) == {"0001"}
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into rejects (reject_id, raw_id, source, source_record_id, stage, code, "
                "message, raw, run_id) values ('rej_1', 'raw_1', 'fair', '7', 'normalize', "
                "'no_identity', 'nobody', '{}', 'run_old')"
            )
        )
        conn.execute(
            text(
                "insert into dq_results (run_id, suite, expectation, column_name, severity, "
                "success, unexpected_count, sample_ids) values ('run_old', 'leads', "
                "'ExpectColumnValuesToBeUnique', 'lead_id', 'critical', :ok, 0, '[]')"
            ),
            {"ok": True},
        )
        conn.execute(
            text(
                "insert into pipeline_runs (run_id, flow, status, started_at, params, stats) "
                "values ('run_old', 'pipeline', 'succeeded', :at, '{}', '{}')"
            ),
            {"at": datetime(2026, 1, 1, tzinfo=UTC)},
        )

    db.upgrade(engine)
    assert db.current_revisions(engine) == db.head_revisions()
    with engine.connect() as conn:
        old_reject = conn.execute(select(rejects)).one()
        old_check = conn.execute(select(dq_results)).one()
        # The live schema is exactly the one the MetaData describes.
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert old_reject.status == "open" and old_reject.replayed_at is None
    assert old_check.suite == "leads" and old_check.success
    assert old_check.scope is None and old_check.observed_value is None
    assert diffs == [], diffs
    columns = {c["name"] for c in inspect(engine).get_columns("rejects")}
    assert {"status", "replayed_at", "replay_run_id"} <= columns
    # Upgrading again is a no-op.
    db.upgrade(engine)
    assert db.current_revisions(engine) == db.head_revisions()
    engine.dispose()


def test_the_schema_has_one_head() -> None:
    # Two heads made `db upgrade` print "0003, 0006"; every migration now chains on one head.
    assert len(db.head_revisions()) == 1, db.head_revisions()


def test_an_upgrade_cut_short_leaves_nothing_and_the_next_one_completes(
    warehouse_url: str,
) -> None:
    """A run killed mid-upgrade (the crash tests once caught one between two CREATE TABLEs on
    SQLite, whose driver runs DDL outside any transaction of its own) must leave the warehouse
    as it was, so the next upgrade starts from there."""
    from sqlalchemy import event

    engine = db.make_engine(warehouse_url)
    created: list[str] = []

    def cut_short(_conn: object, _cur: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE"):
            created.append(statement)
            if len(created) == 3:
                raise KeyboardInterrupt("killed mid-upgrade")  # as a signal would, not an error

    event.listen(engine, "before_cursor_execute", cut_short)
    try:
        db.upgrade(engine)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the upgrade was not cut short")
    event.remove(engine, "before_cursor_execute", cut_short)
    assert inspect(engine).get_table_names() == []
    db.upgrade(engine)
    assert db.current_revisions(engine) == db.head_revisions()
    engine.dispose()


def test_blocking_keys_stored_as_text_are_dropped_for_the_next_run_to_build_as_hashes(
    warehouse_url: str,
) -> None:
    """0016 empties the derived `contact_blocks` into its hashed form and forgets the index's
    version, so the next run builds the whole index again (`matching.ensure_index`); a
    downgrade gives the text form back, empty too."""
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine, "0015")
    with engine.begin() as conn:
        conn.execute(text("insert into contact_blocks values ('fl:ali\x1fkaya', 'con_1')"))
        conn.execute(text("insert into warehouse_state values ('matching_index', 'old')"))
    db.upgrade(engine, "0016")
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from contact_blocks")).scalar() == 0
        assert conn.execute(text("select count(*) from warehouse_state")).scalar() == 0
    columns = {c["name"]: c for c in inspect(engine).get_columns("contact_blocks")}
    assert set(columns) == {"block_hash", "contact_id"}
    assert inspect(engine).get_pk_constraint("contact_blocks")["constrained_columns"] == []
    indexed = [i["column_names"] for i in inspect(engine).get_indexes("contact_blocks")]
    assert indexed == [["block_hash"]]
    with engine.begin() as conn:  # a hash above 2^32 goes in whole
        conn.execute(text("insert into contact_blocks values (:h, 'con_1')"), {"h": 2**60 + 7})
        assert conn.execute(text("select block_hash from contact_blocks")).scalar() == 2**60 + 7
    cfg = db._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0015")
    columns = {c["name"]: c for c in inspect(engine).get_columns("contact_blocks")}
    assert set(columns) == {"block_key", "contact_id"}
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from contact_blocks")).scalar() == 0
    engine.dispose()
