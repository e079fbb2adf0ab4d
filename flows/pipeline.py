"""Prefect flows: wire extract → land → process (normalize, resolve, qualify, validate, publish)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task

from flows import stages
from flows.settings import Settings, load_settings
from warehouse import db, store


@task(retries=2, retry_delay_seconds=[2, 8], retry_jitter_factor=0.5)
def extract_source(
    settings: Settings, name: str, run_id: str, start: date | None, end: date | None
) -> dict[str, int]:
    engine = db.make_engine(settings.warehouse.url)
    try:
        return stages.extract_and_land(engine, settings.source(name), run_id, start, end)
    finally:
        engine.dispose()


@task
def process(settings: Settings, run_id: str) -> dict[str, Any]:
    engine = db.make_engine(settings.warehouse.url)
    try:
        return stages.process_pending(engine, settings, run_id)
    finally:
        engine.dispose()


@flow(name="leadflow-pipeline", log_prints=False)
def pipeline(
    config: str | None = None,
    start: date | None = None,
    end: date | None = None,
    sources: list[str] | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    """One run: every enabled source (or the named ones), then the pending records to publish.

    With `start`/`end` it is a backfill: sources are re-read for that window, cursors stay put.
    """
    logger = get_run_logger()
    settings = load_settings(config)
    run_id = run_id or f"run_{uuid.uuid4().hex[:20]}"
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    chosen = [s for s in settings.sources if s.enabled and (not sources or s.name in sources)]
    params = {
        "start": str(start) if start else None,
        "end": str(end) if end else None,
        "sources": [s.name for s in chosen],
        "dry_run": dry_run,
    }
    with engine.begin() as conn:
        store.start_run(conn, run_id, "backfill" if start or end else "pipeline", params)
    stats: dict[str, Any] = {"sources": {}}
    try:
        futures = {
            s.name: extract_source.submit(settings, s.name, run_id, start, end) for s in chosen
        }
        for name, fut in futures.items():
            stats["sources"][name] = fut.result()
        if not dry_run:
            stats["process"] = process(settings, run_id)
    except Exception as exc:
        with engine.begin() as conn:
            store.finish_run(conn, run_id, "failed", stats, error=f"{type(exc).__name__}: {exc}")
        engine.dispose()
        raise
    with engine.begin() as conn:
        store.finish_run(conn, run_id, "succeeded", stats)
    engine.dispose()
    logger.info("run %s finished: %s", run_id, stats.get("process", {}))
    return {"run_id": run_id, **stats}
