"""The stage functions a flow calls: each is a short composition of connectors, transforms and warehouse calls."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sqlalchemy import Connection, Engine

from connectors.base import RawBatch
from connectors.email import MailOptions, iter_email_files
from connectors.http import HttpClient, RetryPolicy
from connectors.imap import ImapConfig, ImapError, ImapSession, iter_imap
from connectors.imap import connect as imap_connect
from connectors.spreadsheet import iter_spreadsheet, iter_spreadsheet_url
from connectors.webform import ApiSpec, api_spec, iter_webform_api, iter_webform_export
from flows.settings import (
    EmailSource,
    Settings,
    Source,
    SpreadsheetSource,
    WebformSource,
)
from transforms.fields import header_scorer
from transforms.normalize import NormalizeOptions, normalize_batch
from transforms.qualify import Rules, parse_rules, qualify_leads
from transforms.resolve import resolve_contacts
from warehouse import store
from warehouse.quality import QualityReport, check_frames
from warehouse.schema import dq_results


class QualityGateError(RuntimeError):
    """A critical data-quality failure: nothing of the run was published."""


def read_secret(env_name: str | None, block_name: str | None, what: str) -> str | None:
    """A secret from the environment variable or the Prefect Secret block the config names."""
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise SourceError(f"{what}: environment variable {env_name} is not set")
        return value
    if block_name:
        from prefect.blocks.system import Secret

        try:
            block: Any = Secret.load(block_name)  # sync in a sync context
            return str(block.get())
        except ValueError as exc:
            raise SourceError(f"{what}: Prefect Secret block {block_name!r}: {exc}") from None
    return None


class SourceError(RuntimeError):
    """A source that cannot be read as configured (a missing secret, a refused login)."""


def http_client(source: WebformSource | SpreadsheetSource, token: str | None) -> HttpClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return HttpClient(
        headers=headers,
        timeout=(min(10.0, source.http.timeout_seconds), source.http.timeout_seconds),
        retry=RetryPolicy(
            attempts=source.http.max_attempts, backoff_base=source.http.backoff_seconds
        ),
    )


def _aware(d: date | None) -> datetime | None:
    return datetime.combine(d, datetime.min.time(), tzinfo=UTC) if d else None


def _iter_webform(
    source: WebformSource, cursor: dict[str, Any] | None, start: date | None, end: date | None
) -> Iterator[RawBatch]:
    if source.url is None:
        assert source.path is not None
        yield from iter_webform_export(source.name, source.path, cursor)
        return
    token = read_secret(source.token_env, source.token_block, f"sources.{source.name}.token")
    client = http_client(source, token)
    url, preset = source.url, source.preset or "generic"

    def spec_for(since: datetime | None, until: datetime | None) -> ApiSpec:
        return api_spec(
            preset,
            url,
            since=since,
            until=until,
            page_size=source.page_size,
            records_path=source.records_path,
            id_field=source.id_field,
            time_field=source.time_field,
            since_param=source.since_param,
            next_token_path=source.next_token_path,
            next_token_param=source.next_token_param,
            next_link_path=source.next_link_path,
            page_param=source.page_param,
            params=source.params,
        )

    try:
        yield from iter_webform_api(
            source.name,
            client,
            spec_for,
            cursor,
            lag=timedelta(minutes=source.lag_minutes),
            start=_aware(start),
            end=_aware(end),
            max_pages=source.http.max_pages,
        )
    finally:
        client.close()


def _iter_email(
    source: EmailSource, cursor: dict[str, Any] | None, start: date | None, end: date | None
) -> Iterator[RawBatch]:
    opts = MailOptions(
        max_message_bytes=source.max_message_bytes,
        internal_domains=frozenset(d.lower() for d in source.internal_domains or []),
    )
    if source.imap is None:
        assert source.path is not None
        yield from iter_email_files(source.name, source.path, cursor, opts)
        return
    im = source.imap
    password = read_secret(
        im.password_env, im.password_block, f"sources.{source.name}.imap.password"
    )
    cfg = ImapConfig(
        im.host,
        im.effective_port,
        im.security,
        im.user,
        password or "",
        im.folder,
        im.timeout_seconds,
    )
    try:
        yield from iter_imap(
            source.name,
            lambda: ImapSession(lambda: imap_connect(cfg), im.folder, im.max_reconnects),
            cursor,
            opts,
            batch_size=im.batch_size,
            since=start,
            before=end,
        )
    except ImapError as exc:
        raise SourceError(f"sources.{source.name}: {exc}") from None


def _iter_spreadsheet(
    source: SpreadsheetSource, cursor: dict[str, Any] | None
) -> Iterator[RawBatch]:
    score = header_scorer(source.columns)
    if source.url is None:
        assert source.path is not None
        yield from iter_spreadsheet(
            source.name,
            source.path,
            cursor,
            source.sheets,
            score=score,
            max_file_bytes=source.max_file_bytes,
        )
        return
    client = http_client(source, None)
    try:
        yield from iter_spreadsheet_url(
            source.name, source.url, cursor, client.get_bytes, score=score, now=datetime.now(UTC)
        )
    finally:
        client.close()


def iter_source(
    source: Source,
    cursor: dict[str, Any] | None,
    start: date | None = None,
    end: date | None = None,
) -> Iterator[RawBatch]:
    """The connector for a source's kind and config; `start`/`end` narrow what sources can ask for."""
    if isinstance(source, SpreadsheetSource):
        return _iter_spreadsheet(source, cursor)
    if isinstance(source, EmailSource):
        return _iter_email(source, cursor, start, end)
    return _iter_webform(source, cursor, start, end)


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
    for batch in iter_source(source, cursor, start, end):
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
        if isinstance(s, SpreadsheetSource | WebformSource) and s.columns
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


def process_pending(engine: Engine, settings: Settings, run_id: str) -> dict[str, Any]:
    """Everything landed but not yet processed goes through to the live tables in one transaction.

    A critical data-quality failure rolls the whole transaction back and raises QualityGateError.
    """
    opts, rules = normalize_options(settings), load_rules(settings)
    stats: dict[str, Any] = defaultdict(int)
    timings: dict[str, float] = defaultdict(float)
    reports: list[QualityReport] = []
    try:
        _process_all(engine, opts, rules, run_id, stats, timings, reports)
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
    run_id: str,
    stats: dict[str, Any],
    timings: dict[str, float],
    reports: list[QualityReport],
) -> None:
    with engine.begin() as conn:
        for rows in store.iter_pending_raw(conn):
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
            timings["publish"] += time.perf_counter() - t0
            stats["raw_processed"] += len(rows)
            stats["contacts"] += len(ps.contacts)
            stats["rejects"] += len(ps.rejects)
            stats["leads_touched"] += len(ps.leads)
            stats["lead_merges"] += len(ps.merges)
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
