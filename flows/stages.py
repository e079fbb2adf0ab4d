"""The stage functions a flow calls: each is a short composition of connectors, transforms and warehouse calls."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sqlalchemy import Connection, Engine

from connectors.base import RawBatch
from connectors.email import iter_email_files
from connectors.spreadsheet import iter_spreadsheet
from connectors.webform import iter_webform_export
from flows import locking
from flows.settings import Settings, Source, SpreadsheetSource
from transforms.normalize import NormalizeOptions, normalize_batch
from transforms.qualify import Rules, parse_rules, qualify_leads
from transforms.records import Contact, RawRow, Reject, raw_id_for
from transforms.resolve import resolve_contacts
from warehouse import store
from warehouse.quality import QualityReport, check_frames
from warehouse.schema import dq_results

# Stage progress goes to this logger; the CLI shows it as progress bars (`extra["progress"]`).
progress = logging.getLogger("leadflow.progress")


class QualityGateError(RuntimeError):
    """A critical data-quality failure: nothing of the run was published."""


def iter_source(source: Source, cursor: dict[str, Any] | None) -> Iterator[RawBatch]:
    if source.kind == "spreadsheet":
        return iter_spreadsheet(source.name, source.path, cursor, source.sheets)
    if source.kind == "email":
        return iter_email_files(source.name, source.path, cursor)
    return iter_webform_export(source.name, source.path, cursor)


def _in_window(ts: datetime, start: date | None, end: date | None) -> bool:
    d = ts.astimezone(UTC).date()
    return (start is None or d >= start) and (end is None or d < end)


def extract_and_land(
    engine: Engine,
    source: Source,
    run_id: str,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, int]:
    """Pull a source from its cursor and land each batch with the cursor, in one transaction.

    A window (backfill) re-reads the source from the beginning and leaves the live cursor alone.
    Two runs on the same source wait for each other (a warehouse lock). The counts reconcile:
    seen = landed + already_landed + duplicates + rejected + skipped + outside_window + missing,
    where `missing` (records extracted but not found in the warehouse afterwards) must be 0.
    """
    backfill = start is not None or end is not None
    t0 = time.perf_counter()
    stats: dict[str, int] = defaultdict(int)
    with locking.hold(engine, locking.source_lock(source.name), run_id) as refresh:
        with engine.connect() as conn:
            cursor = None if backfill else store.read_cursor(conn, source.name)
        for batch in iter_source(source, cursor):
            records = batch.records
            if backfill:
                records = [r for r in records if _in_window(r.received_at, start, end)]
            raw_ids = {raw_id_for(r.source, r.source_record_id) for r in records}
            with engine.begin() as conn:
                new = store.land_batch(
                    conn,
                    source=source.name,
                    records=records,
                    rejects=batch.rejects,
                    cursor=batch.cursor,
                    run_id=run_id,
                    move_cursor=not backfill,
                )
                present = store.count_raw(conn, raw_ids)
            skipped = sum(batch.skipped.values())
            stats["seen"] += len(batch.records) + len(batch.rejects) + skipped
            stats["landed"] += new
            stats["already_landed"] += present - new
            stats["duplicates"] += len(records) - len(raw_ids)
            stats["missing"] += len(raw_ids) - present
            stats["rejected"] += len(batch.rejects)
            stats["skipped"] += skipped
            stats["outside_window"] += len(batch.records) - len(records)
            for reason, n in batch.skipped.items():
                stats[f"skipped_{reason}"] += n
            refresh()
            progress.info(
                "%s: %d records read, %d new",
                source.name,
                stats["seen"],
                stats["landed"],
                extra={"progress": ("extract", source.name, stats["seen"])},
            )
    accounted = sum(
        stats[k]
        for k in (
            "landed",
            "already_landed",
            "duplicates",
            "missing",
            "rejected",
            "skipped",
            "outside_window",
        )
    )
    stats["reconciled"] = int(accounted == stats["seen"] and stats["missing"] == 0)
    stats["extract_ms"] = int((time.perf_counter() - t0) * 1000)
    return dict(stats)


def count_source(source: Source, start: date | None, end: date | None) -> dict[str, int]:
    """A dry run: read the source as a backfill would (no cursor) and count, writing nothing."""
    stats: dict[str, int] = defaultdict(int)
    for batch in iter_source(source, None):
        inside = sum(1 for r in batch.records if _in_window(r.received_at, start, end))
        skipped = sum(batch.skipped.values())
        stats["seen"] += len(batch.records) + len(batch.rejects) + skipped
        stats["would_land"] += inside
        stats["rejected"] += len(batch.rejects)
        stats["skipped"] += skipped
        stats["outside_window"] += len(batch.records) - inside
    return dict(stats)


def load_rules(settings: Settings) -> Rules:
    if settings.rules:
        text = Path(settings.rules).read_text(encoding="utf-8")
    else:
        text = resources.files("transforms").joinpath("default_rules.yaml").read_text("utf-8")
    return parse_rules(yaml.safe_load(text))


def normalize_options(settings: Settings) -> NormalizeOptions:
    columns = {
        s.name: dict(s.columns)
        for s in settings.sources
        if isinstance(s, SpreadsheetSource) and s.columns
    }
    return NormalizeOptions(
        default_region=settings.default_region,
        internal_domains=frozenset(d.lower() for d in settings.internal_domains),
        columns=columns,
    )


def _frames(ps: store.PublishSet) -> dict[str, pd.DataFrame]:
    leads = pd.DataFrame(ps.lead_rows(), columns=["lead_id", "status", "score", "email", "phone"])
    opps = pd.DataFrame(
        [store._row(o) for o in ps.opportunities],
        columns=["opportunity_id", "lead_id", "stage", "probability", "amount", "close_date"],
    )
    return {"leads": leads, "opportunities": opps}


def process_chunk(
    conn: Connection, rows: list[Any], opts: NormalizeOptions, rules: Rules
) -> tuple[store.PublishSet, dict[str, float]]:
    """normalize → resolve → qualify for one chunk of pending raw rows, reading context from conn."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    contacts, rejects = normalize_batch(rows, opts)
    contacts, erased = suppress_erased(conn, contacts, rows)
    rejects = rejects + erased
    t1 = time.perf_counter()
    existing = store.lead_context(conn, contacts)
    resolution = resolve_contacts(contacts, existing)
    t2 = time.perf_counter()
    members: dict[str, list[Any]] = defaultdict(list)
    lead_of = {lk.contact_id: lk.lead_id for lk in resolution.links}
    for c, lead_id in existing:
        members[lead_of.get(c.contact_id, lead_id)].append(c)
    for c in contacts:
        members[lead_of[c.contact_id]].append(c)
    conversions = store.converted_leads(conn, {ld.lead_id for ld in resolution.leads})
    result = qualify_leads(resolution.leads, members, rules, frozenset(conversions))
    for o in result.opportunities:
        conversions[o.lead_id] = (o.opportunity_id, o.account_id, o.created_at)
    t3 = time.perf_counter()
    timings.update(normalize=t1 - t0, resolve=t2 - t1, qualify=t3 - t2)
    ps = store.PublishSet(
        contacts=contacts,
        rejects=rejects,
        links=resolution.links,
        leads=resolution.leads,
        qualifications=result.qualifications,
        merges=resolution.merges,
        accounts=result.accounts,
        opportunities=result.opportunities,
        conversions=conversions,
    )
    return ps, timings


def suppress_erased(
    conn: Connection, contacts: list[Contact], rows: list[RawRow]
) -> tuple[list[Contact], list[Reject]]:
    """Contacts of erased people become 'erased' rejects holding no personal data.

    A contact that gives consent again lifts the tombstone and goes through.
    """
    keys = {c.contact_id: store.contact_key_hashes(c) for c in contacts}
    hit = store.tombstoned(conn, (h for hs in keys.values() for h in hs))
    if not hit:
        return contacts, []
    by_raw = {r.raw_id: r for r in rows}
    kept: list[Contact] = []
    erased: list[Reject] = []
    lifted: set[str] = set()
    for c in contacts:
        if not hit.intersection(keys[c.contact_id]):
            kept.append(c)
        elif c.consent is True:
            kept.append(c)
            lifted.update(keys[c.contact_id])
        else:
            row = by_raw[c.raw_id]
            erased.append(
                Reject(
                    row.source,
                    row.source_record_id,
                    "normalize",
                    store.ERASED,
                    "a person who asked to be erased; suppressed until they consent again",
                    "",
                    row.raw_id,
                )
            )
    store.lift_tombstones(conn, lifted)
    return kept, erased


def process_pending(
    engine: Engine, settings: Settings, run_id: str, rebuild: bool = False
) -> dict[str, Any]:
    """Everything landed but not yet processed goes through to the live tables in one transaction.

    With `rebuild`, every derived row is dropped first, in the same transaction, so all raw records
    are processed again from scratch. A critical data-quality failure rolls the whole transaction
    back and raises QualityGateError. Runs that publish wait for each other (a warehouse lock).
    """
    opts, rules = normalize_options(settings), load_rules(settings)
    stats: dict[str, Any] = defaultdict(int)
    timings: dict[str, float] = defaultdict(float)
    reports: list[QualityReport] = []
    try:
        # The publish transaction is long and, on SQLite, holds the write lock: the lock row cannot
        # be refreshed meanwhile, so it is taken for longer than a publish can take.
        with locking.hold(engine, locking.PUBLISH_LOCK, run_id, ttl=locking.PUBLISH_TTL):
            with engine.begin() as conn:
                chunks: Iterable[list[RawRow]]
                if rebuild:
                    store.clear_derived(conn)
                    # Replay the landing runs in order, so conversions happen when they first did.
                    chunks = (
                        chunk
                        for landed_by in store.landing_runs(conn)
                        for chunk in store.iter_pending_raw(conn, landed_by=landed_by)
                    )
                else:
                    chunks = store.iter_pending_raw(conn)
                _process_all(conn, chunks, opts, rules, run_id, stats, timings, reports)
    finally:
        with engine.begin() as conn:
            record_quality(conn, run_id, reports)
    stats["dq_checks"] = sum(len(r.results) for r in reports)
    stats["dq_warnings"] = sum(1 for r in reports for x in r.results if not x.success)
    stats["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return dict(stats)


def _process_all(
    conn: Connection,
    chunks: Iterable[list[RawRow]],
    opts: NormalizeOptions,
    rules: Rules,
    run_id: str,
    stats: dict[str, Any],
    timings: dict[str, float],
    reports: list[QualityReport],
) -> None:
    for rows in chunks:
        ps, t = process_chunk(conn, rows, opts, rules)
        for k, v in t.items():
            timings[k] += v
        t0 = time.perf_counter()
        report = check_frames(_frames(ps))
        timings["validate"] += time.perf_counter() - t0
        reports.append(report)
        if not report.passed:
            raise QualityGateError(report.summary())
        t0 = time.perf_counter()
        store.publish(conn, ps, run_id)
        store.scrub_raw(conn, [j.raw_id for j in ps.rejects if j.code == store.ERASED and j.raw_id])
        timings["publish"] += time.perf_counter() - t0
        stats["raw_processed"] += len(rows)
        stats["contacts"] += len(ps.contacts)
        stats["rejects"] += len(ps.rejects)
        stats["leads_touched"] += len(ps.leads)
        stats["lead_merges"] += len(ps.merges)
        stats["opportunities_new"] += len(ps.opportunities)
        progress.info(
            "processed %d raw records",
            stats["raw_processed"],
            extra={"progress": ("process", "pending", stats["raw_processed"])},
        )


def record_quality(conn: Connection, run_id: str, reports: list[QualityReport]) -> None:
    rows = [
        {
            "run_id": run_id,
            "suite": r.suite,
            "expectation": r.expectation,
            "column_name": r.column,
            "severity": r.severity,
            "success": r.success,
            "unexpected_count": r.unexpected_count,
            "sample_ids": r.sample_ids,
        }
        for rep in reports
        for r in rep.results
    ]
    if rows:
        conn.execute(dq_results.insert(), rows)
