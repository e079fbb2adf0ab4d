"""A dry run: read each chosen source from its stored cursor and count what a real run would land.

It writes nothing anywhere: the warehouse is opened read-only (and not at all when it does not
exist yet: then every record would land), no migration runs, no run is logged, and the command
line runs it without Prefect, so no flow run is recorded either.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Engine

from connectors.base import SourceWarning, within_limits
from flows import logmask
from flows.settings import Settings, Source
from flows.sources import FileChecks, in_window, iter_source
from transforms.records import raw_id_for
from warehouse import db, landing


@dataclass
class DryRunCounts:
    """What a dry run counted for one source; `as_dict()` is the form the summary prints."""

    seen: int = 0
    would_land: int = 0
    already_landed: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    outside_window: int = 0
    warnings: list[SourceWarning] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "seen": self.seen,
            "would_land": self.would_land,
            "already_landed": self.already_landed,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "outside_window": self.outside_window,
        }
        if self.warnings:
            d["warnings"] = [w.as_dict() for w in self.warnings]
        return d


@dataclass
class DryRun:
    """A dry run's outcome: the counts per source, the sources that could not be read and why."""

    run_id: str
    sources: dict[str, DryRunCounts]
    failed_sources: dict[str, str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The run's summary, shaped as a real run's result."""
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "status": "counted, nothing written,",
            "dry_run": True,
            "sources": {n: c.as_dict() for n, c in self.sources.items()},
            "seconds": {"extract": self.seconds, "total": self.seconds},
        }
        if self.failed_sources:
            d["failed_sources"] = self.failed_sources
        return d


def count_source(
    source: Source, engine: Engine | None, start: date | None, end: date | None
) -> DryRunCounts:
    """Read `source` as a real run would (from its cursor; a window reads from the start) and
    count: would_land = new records, already_landed = read again but already in the warehouse.
    What the read noticed about the files is in `warnings`, as a real run has it."""
    backfill = start is not None or end is not None
    cursor = None
    if engine is not None and not backfill:
        with engine.connect() as conn:
            cursor = landing.read_cursor(conn, source.name)
    stats = DryRunCounts()
    checks = FileChecks(source)
    for batch in iter_source(source, cursor, start, end):
        batch = within_limits(batch, source.max_field_chars)
        checks.add(batch)
        records = [r for r in batch.records if in_window(r.received_at, start, end)]
        raw_ids = {raw_id_for(r.source, r.source_record_id) for r in records}
        present = 0
        if engine is not None and raw_ids:
            with engine.connect() as conn:
                present = landing.landed_count(conn, raw_ids)
        skipped = sum(batch.skipped.values())
        stats.seen += len(batch.records) + len(batch.rejects) + skipped
        stats.would_land += len(raw_ids) - present
        stats.already_landed += present
        stats.duplicates += len(records) - len(raw_ids)
        stats.rejected += len(batch.rejects)
        stats.skipped += skipped
        stats.outside_window += len(batch.records) - len(records)
    stats.warnings = checks.warnings()
    return stats


def count_sources(
    settings: Settings,
    names: list[str],
    start: date | None = None,
    end: date | None = None,
    run_id: str | None = None,
) -> DryRun:
    """Every named source at once (a thread each); a source that cannot be read is named in
    `failed_sources`, like a real run's, and the others are still counted."""
    t0 = time.perf_counter()
    engine = db.read_only_engine(settings.warehouse.url)
    try:
        if engine is not None and not db.has_schema(engine):
            engine.dispose()
            engine = None  # a database nothing was written to yet: every record would land
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            futures = {
                n: pool.submit(count_source, settings.source(n), engine, start, end) for n in names
            }
        done: dict[str, DryRunCounts] = {}
        failed: dict[str, str] = {}
        for n, f in futures.items():
            try:
                done[n] = f.result()
            except Exception as exc:
                text = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
                failed[n] = logmask.mask(text, settings.logging.mask_personal_data)
    finally:
        if engine is not None:
            engine.dispose()
    seconds = round(time.perf_counter() - t0, 3)
    return DryRun(run_id or "(dry run)", done, failed, seconds)
