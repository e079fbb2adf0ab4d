"""Backfills, locks, rebuilds and erasure on the stage functions, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from flows import locking, stages
from flows.cli import forget
from flows.settings import Settings, load_settings
from tests.conftest import write_config
from warehouse import db, runs
from warehouse.schema import DATA_TABLES, metadata

ISMAIL = "ismail.isik@isiktekstil.com.tr"


def _settings(cfg: Path, url: str) -> Settings:
    cfg.write_text(cfg.read_text().replace("sqlite:///leadflow.db", url))
    return load_settings(cfg)


def _engine(url: str) -> Engine:
    engine = db.make_engine(url)
    db.upgrade(engine)
    return engine


def _run(
    engine: Engine,
    settings: Settings,
    run_id: str,
    start: date | None = None,
    end: date | None = None,
    only: set[str] | None = None,
) -> dict[str, dict[str, int]]:
    out = {
        s.name: stages.extract_and_land(engine, s, run_id, start, end).as_dict()
        for s in settings.sources
        if only is None or s.name in only
    }
    stages.process_pending(engine, settings, run_id)
    return out


def snapshot(engine: Engine, tables: tuple[str, ...] = DATA_TABLES) -> dict[str, list[Any]]:
    """Every table's rows, sorted, without run ids (which name the run, not the data)."""
    out: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for name in tables:
            table = metadata.tables[name]
            cols = [c for c in table.columns if c.name != "run_id"]
            out[name] = sorted(tuple(map(repr, r)) for r in conn.execute(select(*cols)))
    return out


def cursors(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return sorted(
            (r.source, repr(r.cursor), r.run_id)
            for r in conn.execute(select(metadata.tables["source_cursors"]))
        )


def _set_mtime(path: Path, day: date) -> None:
    ts = datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()
    os.utime(path, (ts, ts))


def test_backfill_leaves_cursors_untouched_and_reconciles(
    sample_config: Path, warehouse_url: str
) -> None:
    # the fair's rows are dated by the config (March), the other samples are from October
    dated = sample_config.read_text().replace("received_at: 2026-10-14", "received_at: 2026-03-10")
    sample_config.write_text(dated)
    settings = _settings(sample_config, warehouse_url)
    engine = _engine(warehouse_url)
    csv = sample_config.parent / "sources" / "fair_istanbul_2026.csv"
    _set_mtime(csv, date(2025, 1, 1))  # the file's mtime dates nothing
    _run(engine, settings, "run_live")
    live = cursors(engine)
    assert len(live) == 4

    # The sheet changes; a backfill of its window re-reads it, lands the new row, keeps cursors.
    csv.write_text(csv.read_text() + "Deniz Ak;deniz@akdeniz-tur.com.tr;;;;;TR;;;;Evet\n")
    _set_mtime(csv, date(2026, 10, 20))
    stats = _run(engine, settings, "run_bf", date(2026, 3, 1), date(2026, 4, 1))
    assert cursors(engine) == live
    fair = stats["fair_istanbul"]
    assert fair["landed"] == 1 and fair["already_landed"] == 7 and fair["rejected"] == 1
    assert fair["reconciled"] == 1 and fair["missing"] == 0
    # Sources whose records fall outside the window land nothing and say so.
    forms = stats["website_forms"]
    assert forms["landed"] == 0 and forms["outside_window"] == 6 and forms["reconciled"] == 1
    for s in stats.values():
        accounted = sum(
            s[k]
            for k in ("landed", "already_landed", "duplicates", "rejected", "skipped")
            + ("outside_window", "missing")
        )
        assert accounted == s["seen"]
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("select count(*) from contacts where email = 'deniz@akdeniz-tur.com.tr'")
            ).scalar_one()
            == 1
        )
    engine.dispose()


def test_overlapping_and_repeated_backfills_create_no_duplicates(
    sample_config: Path, warehouse_url: str
) -> None:
    settings = _settings(sample_config, warehouse_url)
    engine = _engine(warehouse_url)
    _run(engine, settings, "run_a", date(2026, 1, 1), date(2027, 1, 1))
    first = snapshot(engine)
    assert len(first["raw_contacts"]) == 23 and first["source_cursors"] == []
    _run(engine, settings, "run_b", date(2026, 10, 1), date(2026, 12, 31))
    _run(engine, settings, "run_c", date(2026, 1, 1), date(2027, 1, 1))
    assert snapshot(engine) == first
    # A live run after the backfills finds nothing new either: only its cursors appear.
    _run(engine, settings, "run_live")
    after = snapshot(engine)
    assert len(after.pop("source_cursors")) == 4
    first.pop("source_cursors")
    assert after == first
    engine.dispose()


def _many_files(folder: Path, files: int, rows: int) -> None:
    folder.mkdir()
    for f in range(files):
        lines = ["Name;Email;Phone;Company"]
        lines += [f"Person {f}-{i};p{f}x{i}@firm{f}.com.tr;;Firm {f}" for i in range(rows)]
        (folder / f"sheet_{f:02d}.csv").write_text("\n".join(lines) + "\n")


def test_two_runs_on_one_source_are_serialized(tmp_path: Path, warehouse_url: str) -> None:
    _many_files(tmp_path / "sheets", files=6, rows=150)
    cfg = write_config(
        tmp_path / "lf.yaml",
        warehouse_url,
        "sources:\n  - name: sheets\n    kind: spreadsheet\n    path: sheets\n",
    )
    settings = load_settings(cfg)
    engine = _engine(warehouse_url)
    events: list[tuple[str, int]] = []

    class Recorder(stages.logging.Handler):
        def emit(self, record: stages.logging.LogRecord) -> None:
            if getattr(record, "progress", None):
                events.append((threading.current_thread().name, record.progress[2]))  # type: ignore[attr-defined]

    handler = Recorder()
    stages.progress.addHandler(handler)
    stages.progress.setLevel("INFO")
    results: dict[str, dict[str, int]] = {}

    def backfill(run_id: str) -> None:
        results[run_id] = stages.extract_and_land(
            engine, settings.source("sheets"), run_id, date(2000, 1, 1), date(2100, 1, 1)
        ).as_dict()

    threads = [threading.Thread(target=backfill, args=(f"run_{n}",), name=n) for n in "ab"]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
    finally:
        stages.progress.removeHandler(handler)
    assert len(events) == 12
    # Never interleaved: all batches of one run, then all batches of the other.
    order = [name for name, _ in events]
    assert order in (["a"] * 6 + ["b"] * 6, ["b"] * 6 + ["a"] * 6), order
    assert sorted(r["landed"] for r in results.values()) == [0, 900]
    assert all(r["reconciled"] == 1 for r in results.values())
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from raw_contacts")).scalar_one() == 900
        assert conn.execute(text("select count(*) from pipeline_locks")).scalar_one() == 0
    engine.dispose()


def test_a_held_lock_makes_the_other_run_wait_then_say_who_holds_it(warehouse_url: str) -> None:
    engine = _engine(warehouse_url)
    with locking.hold(engine, "source:x", "run_holder"):
        with pytest.raises(locking.LockTimeout, match="held by run run_holder"):
            with locking.hold(engine, "source:x", "run_other", wait=timedelta(seconds=0.5)):
                pass
        # Another source is not blocked.
        with locking.hold(engine, "source:y", "run_other", wait=timedelta(0)):
            pass
    # An expired lock (its holder died) is taken over.
    with engine.begin() as conn:
        now = datetime.now(UTC)
        assert runs.try_lock(conn, "source:x", "run_dead", now, timedelta(seconds=-1)) is None
    t0 = time.monotonic()
    with locking.hold(engine, "source:x", "run_next", wait=timedelta(seconds=5)):
        pass
    assert time.monotonic() - t0 < 4
    engine.dispose()


def test_rebuild_recomputes_the_same_tables(sample_config: Path, warehouse_url: str) -> None:
    settings = _settings(sample_config, warehouse_url)
    engine = _engine(warehouse_url)
    # Incrementally, in two runs that see the sources in a different order than a rebuild does.
    _run(engine, settings, "run_1", only={"website_forms", "sales_inbox"})
    _run(engine, settings, "run_2")
    incremental = snapshot(engine)
    stats = stages.process_pending(engine, settings, "run_rebuild", rebuild=True)
    assert stats.raw_processed == 23
    assert snapshot(engine) == incremental
    engine.dispose()


def _all_text(engine: Engine) -> list[str]:
    """Every value of every column of every table, as text."""
    out = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                out += [str(v) for v in row if v is not None]
    return out


def test_forget_erases_a_person_everywhere_and_suppresses_them(
    sample_config: Path, warehouse_url: str
) -> None:
    settings = _settings(sample_config, warehouse_url)
    engine = _engine(warehouse_url)
    _run(engine, settings, "run_1")
    with engine.connect() as conn:
        row = conn.execute(
            text("select lead_id, phone from leads where email = :e"), {"e": ISMAIL}
        ).one()
    traces = [ISMAIL, row.phone, "532 111 22 33", "ismail isik", "İSMAİL"]
    assert any(ISMAIL in v.lower() for v in _all_text(engine))

    counts = forget(settings, "Ismail.Isik@IsikTekstil.com.tr")
    assert counts is not None
    assert counts["leads"] == 1 and counts["contacts"] == 2 and counts["raw_contacts"] == 2

    def leftovers() -> list[str]:
        return [v for v in _all_text(engine) for tr in traces if tr.lower() in v.lower() or tr in v]

    assert leftovers() == []
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from erasure_tombstones")).scalar_one() == 2
        assert conn.execute(
            text("select count(*) from opportunities where lead_id = :l"), {"l": row.lead_id}
        ).scalar_one() in (0, 1)  # kept (without the person) if he had one
        assert conn.execute(
            text("select params from pipeline_runs where flow = 'forget'")
        ).scalar_one() in ({}, "{}")

    # Re-running, re-extracting and a new sighting without consent: suppressed, nothing stored.
    csv = sample_config.parent / "sources" / "fair_istanbul_2026.csv"
    csv.write_text(csv.read_text() + "Ismail Isik;ismail.isik@isiktekstil.com.tr;;;;;TR;;;;\n")
    _run(engine, settings, "run_2")
    _run(engine, settings, "run_3", date(2000, 1, 1), date(2100, 1, 1))
    assert leftovers() == []
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("select count(*) from rejects where code = 'erased' and raw = ''")
            ).scalar_one()
            == 3
        )

    # He consents again: the new sighting goes through and the tombstone is lifted.
    csv.write_text(csv.read_text() + "Ismail Isik;ismail.isik@isiktekstil.com.tr;;;;;TR;;;;Evet\n")
    _run(engine, settings, "run_4")
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("select count(*) from leads where email = :e"), {"e": ISMAIL}
            ).scalar_one()
            == 1
        )
        assert (
            conn.execute(
                text("select count(*) from erasure_tombstones where kind = 'person'")
            ).scalar_one()
            == 1
        )  # the phone's tombstone stays: that sighting had no phone
    engine.dispose()


def test_forget_by_unknown_lead_id_is_a_clear_error(sample_config: Path, sqlite_url: str) -> None:
    settings = _settings(sample_config, sqlite_url)
    with pytest.raises(LookupError, match="no lead lead_nobody"):
        forget(settings, "lead_nobody")
    with pytest.raises(ValueError, match="email address or a lead id"):
        forget(settings, "somebody")
