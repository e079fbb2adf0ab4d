"""Warehouse locks: two runs touching the same source, or publishing at once, wait for each other."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from warehouse import store

log = logging.getLogger("leadflow.locks")

# A holder refreshes its lock after every batch; one that died lets go after this long.
LOCK_TTL = timedelta(minutes=30)
LOCK_WAIT = timedelta(hours=1)
PUBLISH_TTL = timedelta(hours=6)


class LockTimeout(RuntimeError):
    """Another run held the lock longer than this run was willing to wait."""


def source_lock(name: str) -> str:
    return f"source:{name}"


PUBLISH_LOCK = "publish"


@contextmanager
def hold(
    engine: Engine,
    name: str,
    run_id: str,
    *,
    wait: timedelta = LOCK_WAIT,
    ttl: timedelta = LOCK_TTL,
    poll_seconds: float = 0.2,
) -> Iterator[Callable[[], None]]:
    """Hold the lock `name` for the block; yields a function that extends it (call per batch)."""
    deadline = time.monotonic() + wait.total_seconds()
    told = False
    while True:
        with engine.begin() as conn:
            holder = store.try_lock(conn, name, run_id, datetime.now(UTC), ttl)
        if holder is None:
            break
        if not told:
            log.info(
                "waiting for lock %s: held by run %s since %s",
                name,
                holder["run_id"],
                holder["acquired_at"],
            )
            told = True
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"lock {name!r} is held by run {holder['run_id']} since {holder['acquired_at']}; "
                f"gave up after {wait}. If that run is dead its lock expires at {holder['expires_at']}."
            )
        time.sleep(poll_seconds)

    def refresh() -> None:
        with engine.begin() as conn:
            store.refresh_lock(conn, name, run_id, datetime.now(UTC), ttl)

    try:
        yield refresh
    finally:
        with engine.begin() as conn:
            store.release_lock(conn, name, run_id)
