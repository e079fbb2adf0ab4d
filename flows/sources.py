"""The connector factory: which connector reads a source of the config, with which client and
secrets, and what the read noticed about the source's files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from connectors.base import RawBatch, SourceWarning, TableShape, expand_paths
from connectors.email import MailOptions, iter_email_files
from connectors.http import HttpClient, RateLimit, RetryPolicy, TokenBucket
from connectors.imap import ImapConfig, ImapError, ImapSession, iter_imap
from connectors.imap import connect as imap_connect
from connectors.opportunity_updates import (
    HUBSPOT_API_URL,
    iter_hubspot_deals,
    iter_salesforce_opportunities,
)
from connectors.spreadsheet import SUFFIXES as SHEET_SUFFIXES
from connectors.spreadsheet import RowDating, iter_spreadsheet, iter_spreadsheet_url
from connectors.vcard import iter_vcard
from connectors.webform import (
    ApiSpec,
    api_spec,
    iter_webform_api,
    iter_webform_export,
    preset_rate_limit,
)
from flows.settings import (
    EmailSource,
    OpportunityUpdatesSource,
    Source,
    SpreadsheetSource,
    VcardSource,
    WebformSource,
)
from transforms.columns import check_file, submissions_shape
from transforms.fields import header_scorer, received_at_column
from transforms.normalize import parse_received
from transforms.outcomes import OpportunityUpdate, updates_from_hubspot, updates_from_salesforce
from transforms.records import Reject


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


def http_client(
    source: WebformSource | SpreadsheetSource | OpportunityUpdatesSource, token: str | None
) -> HttpClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rate = source.http.rate_limit
    preset = getattr(source, "preset", None) or getattr(source, "api", None)
    limit = RateLimit(rate.per_second, rate.burst) if rate else preset_rate_limit(preset)
    return HttpClient(
        headers=headers,
        timeout=(min(10.0, source.http.timeout_seconds), source.http.timeout_seconds),
        retry=RetryPolicy(
            attempts=source.http.max_attempts, backoff_base=source.http.backoff_seconds
        ),
        limiter=TokenBucket(limit) if limit else None,
    )


def _aware(d: date | None) -> datetime | None:
    return datetime.combine(d, datetime.min.time(), tzinfo=UTC) if d else None


def _iter_webform(
    source: WebformSource,
    cursor: dict[str, Any] | None,
    start: date | None,
    end: date | None,
    landed: dict[str, str] | None = None,
) -> Iterator[RawBatch]:
    if source.url is None:
        assert source.path is not None
        yield from iter_webform_export(
            source.name, source.path, cursor, now=datetime.now(UTC), landed=landed
        )
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
    source: EmailSource,
    cursor: dict[str, Any] | None,
    start: date | None,
    end: date | None,
    landed: dict[str, str] | None = None,
) -> Iterator[RawBatch]:
    opts = MailOptions(
        max_message_bytes=source.max_message_bytes,
        internal_domains=frozenset(d.lower() for d in source.internal_domains or []),
    )
    if source.imap is None:
        assert source.path is not None
        yield from iter_email_files(
            source.name, source.path, cursor, opts, now=datetime.now(UTC), landed=landed
        )
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


def row_dating(source: SpreadsheetSource) -> RowDating:
    """How a sheet source's rows are dated (see `connectors.spreadsheet.RowDating`): the row's
    own date column, else the config's `received_at:` (a date, or the column to read), else the
    time the file's content was first landed."""
    given = source.received_at
    fixed = parse_received(given) if given is not None else None
    named = given if isinstance(given, str) and fixed is None else None
    shape = json.dumps(
        {
            "columns": source.columns,
            "received_at": str(given) if given else None,
            "sheets": source.sheets,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    empty = not source.columns and given is None and source.sheets is None
    return RowDating(
        column=lambda header: received_at_column(header, source.columns, named),
        parse=parse_received,
        fixed=fixed,
        shape="" if empty else shape,
    )


def _iter_spreadsheet(
    source: SpreadsheetSource, cursor: dict[str, Any] | None, landed: dict[str, str] | None
) -> Iterator[RawBatch]:
    score = header_scorer(source.columns)
    dating = row_dating(source)
    now = datetime.now(UTC)
    if source.url is None:
        assert source.path is not None
        yield from iter_spreadsheet(
            source.name,
            source.path,
            cursor,
            source.sheets,
            score=score,
            max_file_bytes=source.max_file_bytes,
            dating=dating,
            now=now,
            landed=landed,
        )
        return
    client = http_client(source, None)
    try:
        yield from iter_spreadsheet_url(
            source.name, source.url, cursor, client.get_bytes, score=score, now=now, dating=dating
        )
    finally:
        client.close()


def iter_source(
    source: Source,
    cursor: dict[str, Any] | None,
    start: date | None = None,
    end: date | None = None,
    landed: dict[str, str] | None = None,
) -> Iterator[RawBatch]:
    """The connector for a source's kind and config; `start`/`end` narrow what sources can ask
    for; `landed` (a file source's first-landed times) dates a read without a cursor."""
    if isinstance(source, SpreadsheetSource):
        return _iter_spreadsheet(source, cursor, landed)
    if isinstance(source, EmailSource):
        return _iter_email(source, cursor, start, end, landed)
    if isinstance(source, VcardSource):
        return iter_vcard(
            source.name,
            source.path,
            cursor,
            max_file_bytes=source.max_file_bytes,
            now=datetime.now(UTC),
            landed=landed,
        )
    return _iter_webform(source, cursor, start, end, landed)


@dataclass
class FileChecks:
    """What a source's connector noticed about its files, checked once the read is done: the
    typed warnings a person must see (stderr, the run's summary, `pipeline_runs.stats`)."""

    source: Source
    found: list[SourceWarning] = field(default_factory=list)
    tables: dict[str, list[TableShape]] = field(default_factory=dict)

    def add(self, batch: RawBatch) -> None:
        self.found += batch.warnings
        for shape in batch.tables:
            self.tables.setdefault(shape.file, []).append(shape)
        src = self.source
        if isinstance(src, WebformSource) and src.path and batch.records:
            # an export's fields, flattened as normalize reads them, are its columns
            name = os.path.basename(src.path.rstrip("/"))
            payloads = [r.payload for r in batch.records]
            self.tables.setdefault(name, []).append(submissions_shape(src.name, name, payloads))

    def warnings(self) -> list[SourceWarning]:
        explicit = getattr(self.source, "columns", None) or {}
        return self.found + [w for t in self.tables.values() for w in check_file(t, explicit)]


@dataclass(frozen=True)
class FileReport:
    """One file as a source would read it: the tables found in it and the warnings."""

    file: str
    tables: list[TableShape]
    warnings: list[SourceWarning]


INSPECTED = (*SHEET_SUFFIXES, ".json")


def inspect_files(path: str, source: Source | None = None) -> list[FileReport]:
    """Every sheet or JSON export under `path` (a file, folder or glob), read as `source` would
    read it (its `columns:` and `sheets:`), or with the built-in aliases alone: nothing is
    landed and no cursor is read or written."""
    reports = []
    for fpath in expand_paths(path, INSPECTED):
        kind = "webform" if fpath.lower().endswith(".json") else "spreadsheet"
        base: dict[str, Any] = {"name": "inspect", "kind": kind, "path": fpath}
        if source is not None and source.kind == kind:
            base.update(source.model_dump(include={"columns", "sheets"}, exclude_none=True))
        src = (SpreadsheetSource if kind == "spreadsheet" else WebformSource).model_validate(base)
        # a name the fixes can show: the chosen source's, else a placeholder to fill in
        src = src.model_copy(update={"name": source.name if source else "<source>"})
        checks = FileChecks(src)
        for batch in iter_source(src, None):
            checks.add(batch)
        tables = [t for shapes in checks.tables.values() for t in shapes]
        reports.append(FileReport(os.path.basename(fpath), tables, checks.warnings()))
    return reports


def in_window(ts: datetime, start: date | None, end: date | None) -> bool:
    """Whether a record received at `ts` falls in the window [start, end) of days (UTC)."""
    d = ts.astimezone(UTC).date()
    return (start is None or d >= start) and (end is None or d < end)


def iter_crm_api(
    client: HttpClient, src: OpportunityUpdatesSource, since: datetime | None
) -> Iterator[tuple[list[OpportunityUpdate], list[Reject]]]:
    """An API source's opportunities changed since `since`, page by page, as updates and rejects
    (numbered on from line 1 as a file's rows would be)."""
    line = 1
    if src.api == "salesforce":
        assert src.url is not None  # the settings require it
        for records in iter_salesforce_opportunities(
            client,
            src.url,
            since,
            multi_currency=src.multi_currency,
            id_field=src.opportunity_id_field,
            max_pages=src.http.max_pages,
        ):
            yield updates_from_salesforce(records, src.name, src.opportunity_id_field, line)
            line += len(records)
        return
    for deals, emails in iter_hubspot_deals(
        client,
        src.url or HUBSPOT_API_URL,
        since,
        id_property=src.opportunity_id_field,
        page_size=src.page_size,
        max_pages=src.http.max_pages,
    ):
        yield updates_from_hubspot(deals, emails, src.name, src.opportunity_id_field, line)
        line += len(deals)
