"""Runs at once and runs that died: they wait for each other, say why, and corrupt nothing."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from flows import locking, stages
from flows.settings import load_settings
from tests.conftest import pg_database
from tests.crashkit import ROOT, snapshot
from warehouse import db, runs
from warehouse.schema import pipeline_runs


def _engine(url: str) -> Engine:
    engine = db.make_engine(url)
    db.upgrade(engine)
    return engine


HOLD_AND_HANG = """
import sys, time
from flows import locking
from warehouse import db, runs
engine = db.make_engine(sys.argv[1])
with engine.begin() as conn:
    runs.start_run(conn, "run_doomed", "pipeline", {})
with locking.hold(engine, "publish", "run_doomed"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_runs_lock_is_taken_over_at_once(warehouse_url: str) -> None:
    engine = _engine(warehouse_url)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_HANG, warehouse_url],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        # Alive, it is waited for; the message names the holder.
        with pytest.raises(locking.LockTimeout, match="held by run run_doomed"):
            with locking.hold(engine, "publish", "run_next", wait=timedelta(seconds=0.5)):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Dead, its lock (taken for hours) is taken over without waiting, and its run says it died.
    with locking.hold(engine, "publish", "run_next", wait=timedelta(0)):
        with engine.connect() as conn:
            (holder,) = runs.held_locks(conn)
            doomed = conn.execute(
                select(pipeline_runs).where(pipeline_runs.c.run_id == "run_doomed")
            ).one()
        assert holder["run_id"] == "run_next"
    assert doomed.status == "failed" and "died" in doomed.error
    engine.dispose()


def test_a_holder_on_another_machine_is_waited_for_until_its_lock_expires(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    with engine.begin() as conn:
        now = datetime.now(UTC)
        assert (
            runs.try_lock(conn, "source:x", "run_far", now, timedelta(hours=1), "elsewhere:1:1")
            is None
        )
    with pytest.raises(locking.LockTimeout, match="held by run run_far"):
        with locking.hold(engine, "source:x", "run_here", wait=timedelta(seconds=0.3)):
            pass
    engine.dispose()


def test_two_runs_started_at_once_wait_for_each_other_and_match_a_single_run(
    sample_config: Path,
    warehouse_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample_config.write_text(
        sample_config.read_text().replace("sqlite:///leadflow.db", warehouse_url)
    )
    settings = load_settings(sample_config)
    engine = _engine(warehouse_url)
    errors: list[BaseException] = []
    go = threading.Barrier(2)
    # Started at once, one run could still finish before the other's first try (SQLite's busy
    # wait backs off for up to 100 ms, a sample run is shorter): the first lock taken is kept until
    # the other run has been turned away once, so the two always overlap.
    real_try_lock, real_hold = runs.try_lock, locking.hold
    turned_away, first = threading.Event(), threading.Lock()

    def try_lock(*args: Any, **kwargs: Any) -> Any:
        holder = real_try_lock(*args, **kwargs)
        if holder is not None:
            turned_away.set()
        return holder

    @contextmanager
    def hold(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real_hold(*args, **kwargs) as refresh:
            if first.acquire(blocking=False):
                assert turned_away.wait(timeout=60), "the other run never tried the lock"
            yield refresh

    monkeypatch.setattr(runs, "try_lock", try_lock)
    monkeypatch.setattr(locking, "hold", hold)

    def run(run_id: str) -> None:
        try:
            go.wait()
            for source in settings.sources:
                stages.extract_and_land(engine, source, run_id)
            stages.process_pending(engine, settings, run_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="leadflow.locks"):
        threads = [threading.Thread(target=run, args=(f"run_{n}",)) for n in "ab"]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300)
    monkeypatch.undo()
    assert errors == []
    # One waited, and said for whom.
    assert "waiting for lock" in caplog.text and "held by run run_" in caplog.text

    # The same tables as one run alone on a fresh warehouse of the same kind.
    with ExitStack() as stack:
        if warehouse_url.startswith("sqlite"):
            alone = f"sqlite:///{tmp_path / 'alone.db'}"
        else:
            alone = stack.enter_context(pg_database())
        solo = _engine(alone)
        for source in settings.sources:
            stages.extract_and_land(solo, source, "run_solo")
        stages.process_pending(solo, settings, "run_solo")
        solo.dispose()
        assert snapshot(warehouse_url) == snapshot(alone)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from pipeline_locks")).scalar_one() == 0
    engine.dispose()


START_AND_HANG = """
import sys, time
from flows import locking
from warehouse import db, runs
engine = db.make_engine(sys.argv[1])
with engine.begin() as conn:
    runs.start_run(conn, "run_lockless", "pipeline", {}, locking.this_holder())
print("started", flush=True)
time.sleep(600)
"""


def test_a_run_killed_before_taking_any_lock_is_marked_failed_by_the_next(
    warehouse_url: str,
) -> None:
    engine = _engine(warehouse_url)
    with engine.begin() as conn:  # a live run of this very process: never swept
        runs.start_run(conn, "run_alive", "pipeline", {}, locking.this_holder())
    proc = subprocess.Popen(
        [sys.executable, "-c", START_AND_HANG, warehouse_url],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        assert locking.sweep_dead_runs(engine) == []  # alive: left alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert locking.sweep_dead_runs(engine) == ["run_lockless"]
    with engine.connect() as conn:
        rows = {
            r.run_id: r
            for r in conn.execute(
                select(pipeline_runs.c.run_id, pipeline_runs.c.status, pipeline_runs.c.error)
            )
        }
    assert rows["run_lockless"].status == "failed"
    assert "died before the run finished" in rows["run_lockless"].error
    assert rows["run_alive"].status == "running" and rows["run_alive"].error is None
    engine.dispose()
