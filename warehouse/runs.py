"""The run log, the locks that keep runs apart, what a rebuild empties and replays, the rules applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select

from warehouse import landing, matching
from warehouse import schema as t
from warehouse.load import upsert, utc


def start_run(
    conn: Connection, run_id: str, flow: str, params: dict[str, Any], holder: str | None = None
) -> None:
    """A run begins; `holder` (host:pid:start of its process) lets a later run tell it died."""
    upsert(
        conn,
        t.pipeline_runs,
        [
            {
                "run_id": run_id,
                "flow": flow,
                "status": "running",
                "started_at": datetime.now(UTC),
                "finished_at": None,
                "params": params,
                "stats": {"holder": holder} if holder else {},
                "error": None,
            }
        ],
    )


def running_runs(conn: Connection) -> list[tuple[str, str | None]]:
    """(run id, holder) of every run still marked running."""
    r = t.pipeline_runs
    rows = conn.execute(select(r.c.run_id, r.c.stats).where(r.c.status == "running"))
    return [(run_id, (stats or {}).get("holder")) for run_id, stats in rows]


def fail_run(conn: Connection, run_id: str, why: str) -> None:
    """Mark a run that is still marked running as failed (its process is known to be dead)."""
    r = t.pipeline_runs
    conn.execute(
        r.update()
        .where(and_(r.c.run_id == run_id, r.c.status == "running"))
        .values(status="failed", finished_at=datetime.now(UTC), error=why)
    )


def finish_run(
    conn: Connection, run_id: str, status: str, stats: dict[str, Any], error: str | None = None
) -> None:
    conn.execute(
        t.pipeline_runs.update()
        .where(t.pipeline_runs.c.run_id == run_id)
        .values(status=status, finished_at=datetime.now(UTC), stats=stats, error=error)
    )


def recent_runs(conn: Connection, limit: int = 10) -> list[dict[str, Any]]:
    r = t.pipeline_runs
    q = select(r).order_by(r.c.started_at.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(q)]


# ---- locks ---------------------------------------------------------------------------------


def try_lock(
    conn: Connection,
    name: str,
    run_id: str,
    now: datetime,
    ttl: timedelta,
    holder: str | None = None,
) -> dict[str, Any] | None:
    """Take the lock `name` for `run_id`; None when taken, else the holder's row.

    Call in a transaction of its own: the row is the lock, so it must be committed to be seen by
    other runs. An expired lock (its holder died) is taken over.
    """
    lk = t.pipeline_locks
    conn.execute(delete(lk).where(and_(lk.c.name == name, lk.c.expires_at < now)))
    mine = {"name": name, "run_id": run_id, "acquired_at": now, "expires_at": now + ttl}
    upsert(conn, lk, [{**mine, "holder": holder}], update=False)
    row = conn.execute(select(lk).where(lk.c.name == name)).first()
    if row is None:  # pragma: no cover - the row was just written in this transaction
        raise RuntimeError(f"lock {name!r} vanished")
    return None if row.run_id == run_id else dict(row._mapping)


def break_lock(conn: Connection, name: str, run_id: str, why: str) -> None:
    """Take the lock `name` away from `run_id`, whose process is known to be dead; its run,
    if still marked running, is marked failed with `why`."""
    lk, runs = t.pipeline_locks, t.pipeline_runs
    conn.execute(delete(lk).where(and_(lk.c.name == name, lk.c.run_id == run_id)))
    conn.execute(
        runs.update()
        .where(and_(runs.c.run_id == run_id, runs.c.status == "running"))
        .values(status="failed", finished_at=datetime.now(UTC), error=why)
    )


def refresh_lock(conn: Connection, name: str, run_id: str, now: datetime, ttl: timedelta) -> None:
    lk = t.pipeline_locks
    conn.execute(
        lk.update()
        .where(and_(lk.c.name == name, lk.c.run_id == run_id))
        .values(expires_at=now + ttl)
    )


def release_lock(conn: Connection, name: str, run_id: str) -> None:
    lk = t.pipeline_locks
    conn.execute(delete(lk).where(and_(lk.c.name == name, lk.c.run_id == run_id)))


def held_locks(conn: Connection) -> list[dict[str, Any]]:
    lk = t.pipeline_locks
    return [dict(r._mapping) for r in conn.execute(select(lk).order_by(lk.c.name))]


# ---- rebuild -------------------------------------------------------------------------------

# Everything derived from raw_contacts; a rebuild empties these and processes every raw record.
DERIVED_TABLES = (
    "contacts",
    "contact_features",
    "contact_blocks",
    "match_term_counts",
    "lead_links",
    "lead_merges",
    "lead_splits",
    "leads",
    "accounts",
    "opportunities",
)


def landing_runs(conn: Connection) -> list[str]:
    """The runs that first landed raw records, in the order they started."""
    r, pr = t.raw_contacts, t.pipeline_runs
    q = (
        select(r.c.run_id, func.min(pr.c.started_at))
        .join(pr, pr.c.run_id == r.c.run_id, isouter=True)
        .group_by(r.c.run_id)
    )
    earliest = datetime.min.replace(tzinfo=UTC)
    rows = [(utc(started) if started else earliest, run_id) for run_id, started in conn.execute(q)]
    return [run_id for _, run_id in sorted(rows)]


# Conversion is sticky: a rebuild recomputes the leads but never removes an opportunity (nor the
# account it belongs to); the leads re-find their opportunities by lead id (`prior_states`).
KEPT_BY_REBUILD = ("accounts", "opportunities")


def clear_derived(conn: Connection) -> None:
    """Forget every derived row so all landed raw records are pending again (same transaction);
    opportunities and their accounts stay."""
    for name in DERIVED_TABLES:
        if name not in KEPT_BY_REBUILD:
            conn.execute(delete(t.metadata.tables[name]))
    conn.execute(delete(t.rejects).where(t.rejects.c.stage != "extract"))
    landing.queue_all(conn)
    matching.mark_index_current(conn)  # the contacts published again bring their index along


# ---- applied rules -------------------------------------------------------------------------


def applied_rules(conn: Connection) -> list[dict[str, Any]]:
    """The rules `rebuild --rules --apply` applied, newest first."""
    ar = t.applied_rules
    q = select(ar).order_by(ar.c.applied_at.desc(), ar.c.rules_version)
    return [dict(r._mapping) for r in conn.execute(q)]


def record_applied_rules(
    conn: Connection,
    version: str,
    sha256: str,
    text: str,
    path: str | None,
    run_id: str,
    at: datetime,
) -> None:
    """Record (or re-date) the rules applied under `version`; the caller checked the hash."""
    upsert(
        conn,
        t.applied_rules,
        [
            {
                "rules_version": version,
                "sha256": sha256,
                "rules_text": text,
                "path": path,
                "applied_at": at,
                "run_id": run_id,
            }
        ],
    )
