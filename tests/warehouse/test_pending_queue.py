"""The pending queue: landing puts raw records on it, processing takes the settled ones off, and
what a run processes is exactly what is neither a contact nor rejected at normalize."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, and_, exists, func, not_, or_, select, text

from connectors.base import RawRecord
from flows import stages
from flows.settings import Settings
from transforms.records import raw_id_for
from warehouse import db, landing
from warehouse import schema as t


def _queued(conn: Connection) -> set[str]:
    return set(conn.execute(select(t.raw_pending.c.raw_id)).scalars())


def _unsettled(conn: Connection) -> set[str]:
    """Pending by the definition the queue stands for (a scan of raw_contacts)."""
    r = t.raw_contacts
    done = or_(
        exists().where(t.contacts.c.raw_id == r.c.raw_id),
        exists().where(and_(t.rejects.c.raw_id == r.c.raw_id, t.rejects.c.stage == "normalize")),
    )
    return set(conn.execute(select(r.c.raw_id).where(not_(done))).scalars())


def test_landing_queues_and_processing_settles(warehouse: tuple[Settings, Engine]) -> None:
    settings, engine = warehouse
    with engine.connect() as conn:
        waiting = _unsettled(conn)
        assert waiting  # the fair sheet's rows, landed by the second run
        assert waiting <= _queued(conn)
        contacts_before = conn.execute(select(func.count()).select_from(t.contacts)).scalar_one()
    stats = stages.process_pending(engine, settings, "run_third")
    assert stats.raw_processed == len(waiting)
    with engine.connect() as conn:
        assert _queued(conn) == set() and _unsettled(conn) == set()
        contacts = conn.execute(select(func.count()).select_from(t.contacts)).scalar_one()
    rejected = stats.rejects
    assert contacts - contacts_before == len(waiting) - rejected


def test_landing_again_processes_nothing_twice(warehouse: tuple[Settings, Engine]) -> None:
    settings, engine = warehouse
    stages.process_pending(engine, settings, "run_third")
    # Read every file again: the same records land again (nothing new) and are queued again.
    for source in settings.sources:
        stages.extract_and_land(engine, source, "run_fourth", reread=True)
    with engine.connect() as conn:
        assert _queued(conn)  # re-landed ids wait on the queue…
        assert _unsettled(conn) == set()  # …but nothing is pending
    stats = stages.process_pending(engine, settings, "run_fourth")
    assert stats.raw_processed == 0 and stats.raw_settled > 0
    with engine.connect() as conn:
        assert _queued(conn) == set()


def test_a_rebuild_queues_every_raw_record(warehouse: tuple[Settings, Engine]) -> None:
    settings, engine = warehouse
    with engine.connect() as conn:
        raw = conn.execute(select(func.count()).select_from(t.raw_contacts)).scalar_one()
    stats = stages.process_pending(engine, settings, "run_rebuild", rebuild=True)
    assert stats.raw_processed == raw
    with engine.connect() as conn:
        assert _queued(conn) == set()


def test_the_migration_queues_what_was_pending(warehouse_url: str) -> None:
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine, "0012")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for raw_id in ("raw_waiting", "raw_rejected"):
            conn.execute(
                text(
                    "insert into raw_contacts (raw_id, source, source_kind, source_record_id, "
                    "received_at, payload, content_hash, run_id) values "
                    "(:id, 'fair', 'spreadsheet', :record, :at, '{}', 'h', 'run_old')"
                ),
                {"id": raw_id, "record": raw_id, "at": at},
            )
        conn.execute(
            text(
                "insert into rejects (reject_id, raw_id, source, source_record_id, stage, code, "
                "message, raw, run_id, status) values ('rej_1', 'raw_rejected', 'fair', "
                "'raw_rejected', 'normalize', 'no_identity', 'nobody', '{}', 'run_old', 'open')"
            )
        )
    db.upgrade(engine)
    with engine.connect() as conn:
        assert _queued(conn) == {"raw_waiting"}
    engine.dispose()


def test_a_batch_lands_queues_and_reconciles_its_records_once(warehouse_url: str) -> None:
    """A batch with a record twice and one landed before: each distinct record is counted once,
    only the unseen ones are new, all of them are queued and present afterwards."""

    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    at = datetime(2026, 10, 1, tzinfo=UTC)

    def rec(i: int, name: str = "x") -> RawRecord:
        return RawRecord("fair", "spreadsheet", f"row-{i}", at, {"name": name})

    def land(records: list[RawRecord], run_id: str) -> landing.Landed:
        with engine.begin() as conn:
            return landing.land_batch(
                conn, source="fair", records=records, rejects=[], cursor=None, run_id=run_id
            )

    assert land([rec(1)], "run_a") == landing.Landed(distinct=1, new=1, present=1)
    with engine.begin() as conn:
        conn.execute(t.raw_pending.delete())  # row-1 settled meanwhile
    got = land([rec(1), rec(2), rec(3), rec(2, "y")], "run_b")
    assert got == landing.Landed(distinct=3, new=2, present=3)
    with engine.connect() as conn:
        assert _queued(conn) == {raw_id_for("fair", f"row-{i}") for i in (1, 2, 3)}
        payloads = dict(
            conn.execute(select(t.raw_contacts.c.source_record_id, t.raw_contacts.c.payload)).all()
        )
        runs = dict(
            conn.execute(select(t.raw_contacts.c.source_record_id, t.raw_contacts.c.run_id)).all()
        )
    # the last of a record's copies in a batch is the one landed; one landed before stays
    assert '"y"' in payloads["row-2"] and runs == {
        "row-1": "run_a",
        "row-2": "run_b",
        "row-3": "run_b",
    }
    assert land([], "run_c") == landing.Landed(distinct=0, new=0, present=0)
    engine.dispose()


def test_a_record_landed_by_another_run_meanwhile_fails_the_batch_whole(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL probes which ids are landed, then COPYs the others straight in. Should another
    run land one of them in between (its source's lock keeps it out; one whose lock expired),
    the COPY fails on the key: the batch's transaction lands nothing, queues nothing and moves
    no cursor, and the next attempt lands the rest beside the other run's record."""
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    at = datetime(2026, 10, 1, tzinfo=UTC)
    r = t.raw_contacts

    def rec(i: int, name: str) -> RawRecord:
        return RawRecord("fair", "spreadsheet", f"row-{i}", at, {"name": name})

    def land(records: list[RawRecord], run_id: str) -> landing.Landed:
        with engine.begin() as conn:
            return landing.land_batch(
                conn,
                source="fair",
                records=records,
                rejects=[],
                cursor={"files": {"a.csv": "sha"}},
                run_id=run_id,
            )

    straight = landing.insert_new

    def other_run_first(conn: Connection, table: Any, rows: Any) -> int:
        other = rec(2, "other")
        with engine.begin() as theirs:  # its own connection and transaction, committed
            theirs.execute(
                r.insert().values(
                    raw_id=raw_id_for("fair", "row-2"),
                    source="fair",
                    source_kind="spreadsheet",
                    source_record_id="row-2",
                    received_at=at,
                    payload=other.payload_json(),
                    content_hash=landing.content_hash(other.payload_json()),
                    run_id="run_other",
                )
            )
        return straight(conn, table, rows)

    monkeypatch.setattr(landing, "insert_new", other_run_first)
    batch = [rec(1, "a"), rec(2, "b"), rec(3, "c")]
    with pytest.raises(psycopg.errors.UniqueViolation):
        land(batch, "run_a")
    with engine.connect() as conn:
        assert dict(conn.execute(select(r.c.source_record_id, r.c.run_id)).all()) == {
            "row-2": "run_other"
        }
        assert _queued(conn) == set()
        assert landing.read_cursor(conn, "fair") is None
    monkeypatch.setattr(landing, "insert_new", straight)
    assert land(batch, "run_a") == landing.Landed(distinct=3, new=2, present=3)
    with engine.connect() as conn:
        assert dict(conn.execute(select(r.c.source_record_id, r.c.run_id)).all()) == {
            "row-1": "run_a",
            "row-2": "run_other",
            "row-3": "run_a",
        }
        assert _queued(conn) == {raw_id_for("fair", f"row-{i}") for i in (1, 2, 3)}
        assert landing.read_cursor(conn, "fair") == {"files": {"a.csv": "sha"}}
    engine.dispose()
