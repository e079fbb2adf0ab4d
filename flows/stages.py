"""The stage functions a flow calls: each is a short composition of connectors, transforms and warehouse calls."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
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
from flows.settings import Settings, Source, SpreadsheetSource
from transforms.match import MatchSettings
from transforms.normalize import NormalizeOptions, normalize_batch
from transforms.qualify import Rules, parse_rules, qualify_leads
from transforms.resolve import resolve_contacts
from warehouse import store
from warehouse.quality import QualityReport, check_frames
from warehouse.schema import dq_results


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
    """
    backfill = start is not None or end is not None
    with engine.connect() as conn:
        cursor = None if backfill else store.read_cursor(conn, source.name)
    stats: dict[str, int] = defaultdict(int)
    for batch in iter_source(source, cursor):
        records = batch.records
        if backfill:
            records = [r for r in records if _in_window(r.received_at, start, end)]
            stats["outside_window"] += len(batch.records) - len(records)
        with engine.begin() as conn:
            stats["landed"] += store.land_batch(
                conn,
                source=source.name,
                records=records,
                rejects=batch.rejects,
                cursor=batch.cursor,
                run_id=run_id,
                move_cursor=not backfill,
            )
        stats["seen"] += len(batch.records) + len(batch.rejects)
        stats["rejected"] += len(batch.rejects)
        for reason, n in batch.skipped.items():
            stats[f"skipped_{reason}"] += n
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


def match_settings(settings: Settings) -> MatchSettings:
    r = settings.resolution
    return MatchSettings(
        link_weight=r.link_weight,
        review_weight=r.review_weight,
        max_block_size=r.max_block_size,
        prior_log2=r.prior_log2,
    )


def process_chunk(
    conn: Connection,
    rows: list[Any],
    opts: NormalizeOptions,
    rules: Rules,
    matching: MatchSettings | None = None,
) -> tuple[store.PublishSet, dict[str, float]]:
    """normalize → resolve → qualify for one chunk of pending raw rows, reading context from conn."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    contacts, rejects = normalize_batch(rows, opts)
    t1 = time.perf_counter()
    existing, decisions = store.lead_context(conn, contacts)
    resolution = resolve_contacts(contacts, existing, decisions, matching)
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
        reviews=resolution.reviews,
        decisions=decisions,
    )
    return ps, timings


def process_pending(engine: Engine, settings: Settings, run_id: str) -> dict[str, Any]:
    """Everything landed but not yet processed goes through to the live tables in one transaction.

    A critical data-quality failure rolls the whole transaction back and raises QualityGateError.
    """
    opts, rules = normalize_options(settings), load_rules(settings)
    matching = match_settings(settings)
    stats: dict[str, Any] = defaultdict(int)
    timings: dict[str, float] = defaultdict(float)
    reports: list[QualityReport] = []
    try:
        _process_all(engine, opts, rules, matching, run_id, stats, timings, reports)
    finally:
        with engine.begin() as conn:
            record_quality(conn, run_id, reports)
    stats["dq_checks"] = sum(len(r.results) for r in reports)
    stats["dq_warnings"] = sum(1 for r in reports for x in r.results if not x.success)
    stats["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return dict(stats)


def _process_all(
    engine: Engine,
    opts: NormalizeOptions,
    rules: Rules,
    matching: MatchSettings,
    run_id: str,
    stats: dict[str, Any],
    timings: dict[str, float],
    reports: list[QualityReport],
) -> None:
    with engine.begin() as conn:
        for rows in store.iter_pending_raw(conn):
            ps, t = process_chunk(conn, rows, opts, rules, matching)
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
            timings["publish"] += time.perf_counter() - t0
            stats["raw_processed"] += len(rows)
            stats["contacts"] += len(ps.contacts)
            stats["rejects"] += len(ps.rejects)
            stats["leads_touched"] += len(ps.leads)
            stats["lead_merges"] += len(ps.merges)
            stats["review_pairs"] += len(ps.reviews)
            stats["opportunities_new"] += len(ps.opportunities)


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
