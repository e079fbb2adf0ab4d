"""Warehouse locks: two runs touching the same source, or publishing at once, wait for each other."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from warehouse import runs

log = logging.getLogger("leadflow.locks")

# A holder refreshes its lock after every batch; one that died lets go after this long.
LOCK_TTL = timedelta(minutes=30)
LOCK_WAIT = timedelta(hours=1)
PUBLISH_TTL = timedelta(hours=6)


def _start_ticks(pid: int) -> str | None:
    """When the process started (clock ticks since boot), so a reused pid is not mistaken for
    it; None when the process does not exist or is a zombie, "" where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # after the command: state, ppid, … starttime is the 22nd field of the line, 20th here
    return None if fields[0] in ("Z", "X") else fields[19]


def this_holder() -> str:
    """host:pid:start of this process, as stored with every lock it takes."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or ''}"


def holder_is_dead(holder: str | None) -> bool:
    """True only when we can tell: the holder ran on this host and its process is gone.

    A holder on another machine (or an old row without a holder) is waited for until its lock
    expires.
    """
    if not holder:
        return False
    parts = holder.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, pid_text, started = parts
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    now = _start_ticks(pid)
    if now == "":  # no /proc: ask the kernel whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return now is None or (bool(started) and now != started)


def sweep_dead_runs(engine: Engine) -> list[str]:
    """Runs still marked running whose process is gone (killed before it took or after it let
    go of every lock) are marked failed; returns their ids."""
    with engine.connect() as conn:
        running = runs.running_runs(conn)
    dead = [run_id for run_id, holder in running if holder_is_dead(holder)]
    for run_id, holder in running:
        if run_id in dead:
            log.warning("run %s died before it finished (process %s is gone)", run_id, holder)
            with engine.begin() as conn:
                runs.fail_run(conn, run_id, f"its process ({holder}) died before the run finished")
    return dead


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
    me = this_holder()
    while True:
        with engine.begin() as conn:
            holder = runs.try_lock(conn, name, run_id, datetime.now(UTC), ttl, me)
        if holder is None:
            break
        if holder_is_dead(holder.get("holder")):
            # Killed (SIGKILL, OOM, power cut) without letting go: everything it committed is
            # consistent (each batch lands with its cursor, a publish is one transaction).
            log.warning(
                "lock %s: run %s died holding it (process %s is gone); taking it over",
                name,
                holder["run_id"],
                holder["holder"],
            )
            with engine.begin() as conn:
                why = f"its process ({holder['holder']}) died; lock {name} taken over by {run_id}"
                runs.break_lock(conn, name, holder["run_id"], why)
            continue
        if not told:
            # a warning: the console shows it, so whoever started this run knows why it waits
            log.warning(
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
            runs.refresh_lock(conn, name, run_id, datetime.now(UTC), ttl)

    try:
        yield refresh
    finally:
        with engine.begin() as conn:
            runs.release_lock(conn, name, run_id)
