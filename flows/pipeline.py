"""Prefect flows: wire extract → land → process (normalize, resolve, qualify, validate, publish)."""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from flows import dryrun, locking, logmask, stages
from flows.errors import RunFailed
from flows.settings import Settings, load_settings
from flows.sources import SourceError
from warehouse import db, reports, runs

EXTRACT_RETRIES = 3


@dataclass
class Seconds:
    """How long each phase of a run took; a phase a failure cut short is left out."""

    extract: float | None = None
    process: float | None = None
    total: float | None = None

    def as_dict(self) -> dict[str, float]:
        phases = (("extract", self.extract), ("process", self.process), ("total", self.total))
        return {name: s for name, s in phases if s is not None}


@dataclass
class RunStats:
    """What a run counted: per source, what processing made of it, how long each phase took.
    `as_dict()` is what `pipeline_runs.stats` keeps and the flows return."""

    sources: dict[str, stages.LandingStats] = field(default_factory=dict)
    seconds: Seconds = field(default_factory=Seconds)
    failed_sources: dict[str, str] = field(default_factory=dict)
    process: stages.ProcessStats | None = None  # the processing stage's counts and timings

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sources": {n: s.as_dict() for n, s in self.sources.items()},
            "seconds": self.seconds.as_dict(),
        }
        if self.failed_sources:
            d["failed_sources"] = self.failed_sources
        if self.process is not None:
            d["process"] = self.process.as_dict()
        return d


class PartialRunError(RuntimeError):
    """Some sources failed to extract, or some files yielded nothing; the rest was landed and
    processed.

    `result` is the run's summary (as a successful run returns it), `failed` maps each failed
    source to its reason, `lost` lists the warnings (as dicts) of files that had content and
    yielded no record.
    """

    def __init__(
        self,
        result: dict[str, Any],
        failed: dict[str, str],
        lost: list[dict[str, Any]] | None = None,
    ) -> None:
        self.result = result
        self.failed = failed
        self.lost = lost or []
        what = [f"failed source(s): {n} ({r})" for n, r in sorted(failed.items())]
        what += [f"{w['source']}: {w['file']} yielded nothing" for w in self.lost]
        super().__init__(f"run {result['run_id']} is partial: {'; '.join(what)}")


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """A source that is misconfigured (missing secret, refused login) fails at once."""
    try:
        state.result()
    except SourceError:
        return False
    except Exception:
        return True
    return True


def failure_reason(exc: BaseException, personal: bool = True) -> str:
    """One line naming what went wrong, masked: it goes to pipeline_runs, logs and the console."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return logmask.mask(text[:500], personal)


# Connectors talk to the outside world, so only they retry: 2 s, 4 s, 8 s, each ±50 % jitter so
# sources failing together do not come back together. Landing is idempotent, so a retry is safe.
@task(
    retries=EXTRACT_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_worth_retrying,
    tags=["leadflow-connector"],
)
def extract_source(
    settings: Settings,
    name: str,
    run_id: str,
    start: date | None,
    end: date | None,
) -> stages.LandingStats:
    logmask.install(settings.logging.mask_personal_data)
    engine = db.make_engine(settings.warehouse.url)
    try:
        return stages.extract_and_land(
            engine, settings.source(name), run_id, start, end, raise_read_failures=True
        )
    finally:
        engine.dispose()


@task
def process(
    settings: Settings,
    run_id: str,
    rebuild: bool = False,
    replay: bool = False,
    reason: str | None = None,
) -> stages.ProcessStats:
    """Pending records (all raw records with `rebuild`, quarantined ones with `replay`) through
    the gate into the live tables. The run's checks become a markdown artifact either way.
    """
    engine = db.make_engine(settings.warehouse.url)
    docs: str | None = None
    try:
        if replay:
            stats = stages.replay_rejects(engine, settings, run_id, reason)
        else:
            stats = stages.process_pending(engine, settings, run_id, rebuild=rebuild)
        docs = stats.data_docs
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


def task_runner(settings: Settings, fan_out: int) -> TaskRunner[Any]:
    """Threads on one machine, or a Dask cluster (an existing scheduler, else a LocalCluster)."""
    if settings.runner == "dask":
        from prefect_dask import DaskTaskRunner

        # The cluster's own start/stop chatter is not the run's story.
        logging.getLogger("distributed").setLevel(logging.WARNING)

        if settings.dask.address:
            return DaskTaskRunner(address=settings.dask.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask.n_workers,
                "threads_per_worker": settings.dask.threads_per_worker,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=max(1, fan_out))


def extract_sources(
    settings: Settings,
    names: list[str],
    run_id: str,
    start: date | None,
    end: date | None,
) -> tuple[dict[str, stages.LandingStats], dict[str, str]]:
    """Every source at once, as tasks of the calling flow run on the task runner the config
    chose: (stats, failures) per source.

    One source failing (after its retries) does not stop the others: its reason is returned.
    The runner is entered here rather than given to a subflow: a subflow run cost 1.0–2.1 s of
    an incremental run of 10k into 100k (creating its run through the API, 0.55–0.72 s, and
    Prefect's wait for its heartbeat thread, which sleeps in one-second steps, 0.14–1.42 s).
    """
    done: dict[str, stages.LandingStats] = {}
    failed: dict[str, str] = {}
    logger = get_run_logger()
    with task_runner(settings, len(names)) as runner:
        futures = {
            n: runner.submit(
                extract_source,
                {"settings": settings, "name": n, "run_id": run_id, "start": start, "end": end},
            )
            for n in names
        }
        for n, f in futures.items():
            try:
                done[n] = f.result()
            except Exception as exc:
                if isinstance(exc, stages.SourceReadError):
                    done[n] = exc.stats  # what it read before it stopped is landed and counted
                failed[n] = failure_reason(exc, settings.logging.mask_personal_data)
                logger.error("source %s failed: %s", n, failed[n])
    return done, failed


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |\n" for r in rows)


def publish_artifacts(settings: Settings, run_id: str) -> None:
    """The funnel and this run's rejects by reason, as markdown tables on the flow run. The
    funnel is read from the marts the run refreshed, not counted again over the warehouse."""
    engine = db.make_engine(settings.warehouse.url)
    with engine.connect() as conn:
        funnel = reports.funnel_of_marts(conn, settings.marts.schema_name)
        rejects = reports.rejects_by_reason(conn, run_id)
    engine.dispose()
    cols = ["source", "contacts", "leads", "qualified", "opportunities"]
    create_markdown_artifact(
        key="leadflow-funnel",
        markdown="# Funnel by lead source\n\n" + _table(funnel, cols),
        description=f"contacts → leads → qualified → opportunities after run {run_id}",
    )
    create_markdown_artifact(
        key="leadflow-rejects",
        markdown=f"# Rejects of run {run_id} by reason\n\n"
        + (_table(rejects, ["source", "stage", "reason", "rejects"]) if rejects else "None.\n"),
        description="records kept aside with their reason (nothing is dropped silently)",
    )


def _import_quality_gate_early() -> None:
    """Import Great Expectations on a thread of its own while the sources are read.

    The quality gate imports it on first use, which costs a fresh process ~3 s of the critical
    path (an incremental run of 10k contacts into 1M takes ~20 s); reading the sources mostly
    waits on files, the warehouse and Prefect's API, so the import overlaps them. A failed
    import here is left for the gate's own import to report.

    SQLAlchemy's ORM is imported here first, on the caller's thread (~0.05 s). Great Expectations
    imports it, and the ORM's import registers an inspector for every object before the module
    that inspector needs has finished loading. The run's own SQLAlchemy calls consult that
    registry for each bound value, so on another thread they met the half-loaded module
    ("partially initialized module 'sqlalchemy.orm.exc'") and the run failed in its migrations.
    """
    importlib.import_module("sqlalchemy.orm")

    def load() -> None:
        try:
            importlib.import_module("great_expectations")
        except Exception as exc:  # reported where the gate imports it
            logging.getLogger(__name__).debug("early import of great_expectations: %s", exc)

    threading.Thread(target=load, name="leadflow-import-gx", daemon=True).start()


def run(
    settings: Settings,
    kind: str,
    *,
    start: date | None = None,
    end: date | None = None,
    sources: list[str] | None = None,
    dry_run: bool = False,
    rebuild: bool = False,
    replay: bool = False,
    reason: str | None = None,
    run_id: str | None = None,
    process_only: bool = False,
) -> dict[str, Any]:
    """One run of any kind, recorded in `pipeline_runs` with its parameters, timings and counts.

    A dry run only reads the sources from their cursors and counts what would land: it writes
    nothing, not even the run log (flows/dryrun.py).
    """
    logmask.install(settings.logging.mask_personal_data)
    logger = get_run_logger()
    run_id = run_id or f"run_{uuid.uuid4().hex[:20]}"
    chosen = [s.name for s in settings.sources if s.enabled and (not sources or s.name in sources)]
    if rebuild or replay or process_only:
        chosen = []
    if dry_run:
        dry = dryrun.count_sources(settings, chosen, start, end, run_id)
        result = dry.as_dict()
        lost = stages.lost_files(dry.sources)
        if dry.failed_sources or lost:
            raise PartialRunError(result, dry.failed_sources, lost)
        return result
    params = {
        "start": str(start) if start else None,
        "end": str(end) if end else None,
        "sources": chosen,
        "dry_run": dry_run,
        "runner": settings.runner,
        "reason": reason,
    }
    _import_quality_gate_early()
    stage = "prepare"  # which stage a failure names: prepare, extract, process, record
    engine = db.make_engine(settings.warehouse.url)
    stats = RunStats()
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        db.upgrade(engine)
        locking.sweep_dead_runs(engine)
        with engine.begin() as conn:
            runs.start_run(conn, run_id, kind, params, locking.this_holder())
    except DBAPIError as exc:
        engine.dispose()
        raise _warehouse_failed(settings, run_id, stage, exc) from None
    try:
        if chosen:
            stage = "extract"
            stats.sources, failed = extract_sources(settings, chosen, run_id, start, end)
            stats.failed_sources = failed
        stats.seconds.extract = round(time.perf_counter() - t0, 3)
        stage = "process"
        t1 = time.perf_counter()
        stats.process = process(settings, run_id, rebuild, replay, reason)
        stats.seconds.process = round(time.perf_counter() - t1, 3)
        stage = "record"
        stats.seconds.total = round(time.perf_counter() - t0, 3)
        # Partial: what the healthy sources gave is published; the run says which failed and why,
        # and which files had content of which nothing could be read.
        lost = stages.lost_files(stats.sources)
        status = "partial" if failed or lost else "succeeded"
        problems = [f"{n}: {r}" for n, r in sorted(failed.items())]
        problems += [f"{w['source']}: {w['file']}: {w['message']}" for w in lost]
        error = "; ".join(problems) or None
        with engine.begin() as conn:
            runs.finish_run(conn, run_id, status, stats.as_dict(), error=error)
    except Exception as exc:
        stats.seconds.total = round(time.perf_counter() - t0, 3)
        problem = failure_reason(exc, settings.logging.mask_personal_data)
        try:
            with engine.begin() as conn:
                runs.finish_run(
                    conn, run_id, "failed", stats.as_dict(), error=f"{stage}: {problem}"
                )
        except DBAPIError as again:
            # The warehouse is still away: the next run marks this one failed (its holder died).
            logger.info("could not record run %s as failed: %s", run_id, db.cause(again))
        finally:
            engine.dispose()
        if isinstance(exc, DBAPIError):
            raise _warehouse_failed(settings, run_id, stage, exc) from None
        raise
    try:
        publish_artifacts(settings, run_id)
    except Exception as exc:  # the run is done and published; a missing report must not fail it
        logger.warning("could not publish the run's artifacts: %s", exc)
    engine.dispose()
    logger.info("%s %s %s in %.1f s", kind, run_id, status, stats.seconds.total)
    result = {"run_id": run_id, "status": status, **stats.as_dict()}
    if failed or lost:
        raise PartialRunError(result, failed, lost)
    return result


def _warehouse_failed(settings: Settings, run_id: str, stage: str, exc: DBAPIError) -> RunFailed:
    where = db.describe(settings.warehouse.url)
    cause = logmask.mask(db.cause(exc), settings.logging.mask_personal_data)
    return RunFailed(run_id, stage, f"the warehouse ({where}) failed: {cause}")


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
    kind = "backfill" if start or end else "pipeline"
    return run(
        load_settings(config),
        kind,
        start=start,
        end=end,
        sources=sources,
        dry_run=dry_run,
        run_id=run_id,
    )


@flow(name="leadflow-backfill", log_prints=False)
def backfill(
    start: date,
    end: date,
    sources: list[str] | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """Re-extract [start, end) of received dates per source, land idempotently, leave cursors alone."""
    if start >= end:
        raise ValueError(f"backfill: start {start} must be before end {end}")
    return run(load_settings(config), "backfill", start=start, end=end, sources=sources)


@flow(name="leadflow-rebuild", log_prints=False)
def rebuild(config: str | None = None) -> dict[str, Any]:
    """Recompute contacts, leads, links, accounts and opportunities from the landed raw records."""
    return run(load_settings(config), "rebuild", rebuild=True)


@flow(name="leadflow-apply", log_prints=False)
def apply(config: str | None = None) -> dict[str, Any]:
    """Process what is pending without reading any source: landed records and the review
    decisions no run has applied yet (merges and splits, recorded in lead_merges / lead_splits)."""
    return run(load_settings(config), "apply", process_only=True)


@flow(name="leadflow-replay", log_prints=False)
def replay(
    config: str | None = None, reason: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Re-process quarantined records (all, or those rejected for `reason`) after a fix."""
    return run(load_settings(config), "replay", replay=True, reason=reason, run_id=run_id)
