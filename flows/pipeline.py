"""Prefect flows: wire extract → land → process (normalize, resolve, qualify, validate, publish)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from sqlalchemy import Engine

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
def process(
    settings: Settings, run_id: str, replay: bool = False, reason: str | None = None
) -> dict[str, Any]:
    """Pending records (or, with `replay`, quarantined ones) through the gate into the live tables.

    The run's checks become a markdown artifact whether the gate passed or not.
    """
    engine = db.make_engine(settings.warehouse.url)
    docs: str | None = None
    try:
        if replay:
            stats = stages.replay_rejects(engine, settings, run_id, reason)
        else:
            stats = stages.process_pending(engine, settings, run_id)
        docs = stats.get("data_docs")
        return stats
    except stages.QualityGateError as exc:
        docs = str(exc.docs) if exc.docs else None
        raise
    finally:
        _quality_artifact(engine, run_id, docs)
        engine.dispose()


def _quality_artifact(engine: Engine, run_id: str, docs: str | None) -> None:
    logger = get_run_logger()
    try:
        create_markdown_artifact(
            key=f"data-quality-{run_id}".lower().replace("_", "-"),
            markdown=stages.quality_markdown(engine, run_id, docs),
            description=f"Data-quality checks of run {run_id}",
        )
    except Exception:  # a report that cannot be written must not hide the run's own outcome
        logger.exception("could not publish the data-quality artifact of run %s", run_id)
    if docs:
        logger.info("Data Docs for run %s: %s", run_id, docs)


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


@flow(name="leadflow-replay", log_prints=False)
def replay(
    config: str | None = None, reason: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Re-process quarantined records (all, or those rejected for `reason`) after a fix."""
    settings = load_settings(config)
    run_id = run_id or f"run_{uuid.uuid4().hex[:20]}"
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    with engine.begin() as conn:
        store.start_run(conn, run_id, "replay", {"reason": reason})
    try:
        stats = process(settings, run_id, replay=True, reason=reason)
    except Exception as exc:
        with engine.begin() as conn:
            store.finish_run(conn, run_id, "failed", {}, error=f"{type(exc).__name__}: {exc}")
        engine.dispose()
        raise
    with engine.begin() as conn:
        store.finish_run(conn, run_id, "succeeded", {"process": stats})
    engine.dispose()
    return {"run_id": run_id, "process": stats}
