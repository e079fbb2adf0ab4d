"""The stage functions a flow calls: each is a short composition of connectors, transforms and warehouse calls."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine

from connectors.base import READ_FAILURES, SourceWarning, gc_paused, within_limits
from connectors.fx_rates import read_rates_file
from connectors.http import (
    HttpError,
    PaginationError,
)
from connectors.opportunity_updates import (
    iter_export_files,
)
from connectors.spreadsheet import (
    first_landed,
)
from flows import locking
from flows.settings import (
    OpportunityUpdatesSource,
    Settings,
    Source,
    SpreadsheetSource,
    WebformSource,
)
from flows.sources import (
    FileChecks,
    http_client,
    in_window,
    iter_crm_api,
    iter_source,
    read_secret,
)
from transforms import scoring
from transforms.erasure import ERASED, contact_key_hashes, split_erased
from transforms.fx import parse_rates
from transforms.match import MatchSettings, block_table, match_table
from transforms.normalize import NormalizeOptions, normalize_batch, parse_received
from transforms.outcomes import (
    OpportunityUpdate,
    parse_updates,
    plan_updates,
)
from transforms.qualify import Rules, RulesError, qualify_leads, rules_from_yaml
from transforms.records import Contact, RawRow, Reject
from transforms.resolve import golden_leads, link_contacts
from warehouse import (
    docs_site,
    erasure,
    fx,
    landing,
    marts,
    matching,
    publish,
    quality,
    quarantine,
    resolution,
    runs,
)
from warehouse import outcomes as outcomes_store
from warehouse.landing import BatchSize
from warehouse.quality import CheckResult, QualityGate, Thresholds
from warehouse.schema import dq_results

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)
# Stage progress goes to this logger; the CLI shows it as progress bars (`extra["progress"]`).
progress = logging.getLogger("leadflow.progress")


class QualityGateError(RuntimeError):
    """A critical data-quality failure: nothing of the run was published."""

    def __init__(self, message: str, docs: Path | None = None) -> None:
        super().__init__(message)
        self.docs = docs


@dataclass
class LandingStats:
    """What landing a source counted. They reconcile:
    seen = landed + already_landed + duplicates + missing + rejected + skipped + outside_window,
    and `missing` (extracted, yet not in the warehouse after the landing) must be 0.
    `as_dict()` is the form the run log, the command line and the flows' results hold."""

    seen: int = 0
    landed: int = 0
    already_landed: int = 0  # counted in the warehouse after the landing committed
    duplicates: int = 0
    missing: int = 0
    rejected: int = 0
    skipped: int = 0
    outside_window: int = 0
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    rejects_closed: int | None = None  # None: no sheet was read again whole
    extract_ms: int = 0
    warnings: list[SourceWarning] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        accounted = (
            self.landed
            + self.already_landed
            + self.duplicates
            + self.missing
            + self.rejected
            + self.skipped
            + self.outside_window
        )
        return accounted == self.seen and self.missing == 0

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "seen": self.seen,
            "landed": self.landed,
            "already_landed": self.already_landed,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "outside_window": self.outside_window,
        }
        d.update({f"skipped_{reason}": n for reason, n in self.skipped_by_reason.items()})
        if self.rejects_closed is not None:
            d["rejects_closed"] = self.rejects_closed
        d["reconciled"] = int(self.reconciled)
        d["extract_ms"] = self.extract_ms
        if self.warnings:
            d["warnings"] = [w.as_dict() for w in self.warnings]
        return d


@dataclass
class StageSeconds:
    """Seconds each processing stage took, summed over a run's chunks (a chunk's normalizing
    counted even when it was done ahead, beside the chunk before)."""

    normalize: float = 0.0
    resolve: float = 0.0
    qualify: float = 0.0
    validate: float = 0.0
    publish: float = 0.0
    marts: float = 0.0
    docs: float = 0.0

    def add(self, other: StageSeconds) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, float]:
        return {f.name: round(getattr(self, f.name), 3) for f in fields(self)}


@dataclass
class ReplayCounts:
    """What a replay of the quarantine started from."""

    candidates: int = 0  # quarantined records asked for
    not_replayable: int = 0  # quarantined with no raw record to process again
    reread_sources: int = 0  # sheet sources read again for their extraction rejects
    extract_closed: int = 0  # extraction rejects that did not come back


@dataclass
class ProcessStats:
    """What processing counted and how long its stages took. `as_dict()` is the form the run
    log (`pipeline_runs.stats`), the command line and the flows' results hold."""

    raw_processed: int = 0
    chunks: int = 0
    context_contacts: int = 0  # existing contacts read as the chunks' contexts, summed
    contacts: int = 0
    rejects: int = 0
    leads_touched: int = 0
    lead_merges: int = 0
    review_pairs: int = 0
    opportunities_new: int = 0
    raw_settled: int = 0  # taken off the pending queue: became a contact or a reject
    rejects_released: int = 0  # quarantined records that landed as contacts
    contacts_indexed: int = 0  # contacts given matching columns the index lacked
    opportunity_updates: dict[str, int] = field(default_factory=dict)  # by what they did
    opportunity_update_failures: list[str] = field(default_factory=list)
    mart_warnings: list[str] = field(default_factory=list)
    dq_checks: int = 0
    dq_warnings: int = 0
    dq_warning_names: list[str] = field(default_factory=list)
    data_docs: str | None = None
    replay: ReplayCounts | None = None
    timings: StageSeconds = field(default_factory=StageSeconds)

    def count_chunk(self, raw: int, ps: publish.PublishSet) -> None:
        self.chunks += 1
        self.raw_processed += raw
        self.contacts += len(ps.contacts)
        self.rejects += len(ps.rejects)
        self.leads_touched += len(ps.leads)
        self.lead_merges += len(ps.merges)
        self.review_pairs += len(ps.reviews)
        self.opportunities_new += len(ps.opportunities)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("opportunity_updates", "replay", "timings")
        }
        d.update(self.opportunity_updates)
        if not self.opportunity_update_failures:
            del d["opportunity_update_failures"]
        if self.replay is not None:
            d.update({f"replay_{k}": v for k, v in asdict(self.replay).items()})
        d["timings"] = self.timings.as_dict()
        return d


class SourceReadError(RuntimeError):
    """The read of a source stopped short (retries used up mid-way): what came before it is
    landed with its cursor; `stats` are the counts of what was landed."""

    def __init__(self, message: str, stats: LandingStats) -> None:
        super().__init__(message)
        self.stats = stats

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (Dask workers)
        return (type(self), (str(self), self.stats))


class SourceRead(Protocol):
    """What a read of a source noticed about its files (a landing's or a dry run's counts)."""

    warnings: list[SourceWarning]


def lost_files(sources: Mapping[str, SourceRead]) -> list[dict[str, Any]]:
    """The warnings (as dicts) of files that had content and yielded no record, source by
    source: such a run is partial."""
    return [
        w.as_dict()
        for _, stats in sorted(sources.items(), key=lambda item: item[0])
        for w in stats.warnings
        if w.loses_data
    ]


def extract_and_land(
    engine: Engine,
    source: Source,
    run_id: str,
    start: date | None = None,
    end: date | None = None,
    *,
    raise_read_failures: bool = False,
    reread: bool = False,
) -> LandingStats:
    """Pull a source from its cursor and land each batch with the cursor, in one transaction.

    A window (backfill) re-reads the source from the beginning and leaves the live cursor alone.
    Two runs on the same source wait for each other (a warehouse lock). The counts reconcile
    (`LandingStats`).
    With `raise_read_failures`, a read that stopped short raises SourceReadError once what was
    read is landed (otherwise it is only an extract reject). With `reread`, a file source reads
    every file again whatever its fingerprint (a replay of its extraction rejects). A sheet read
    again whole closes its open extraction rejects that did not come back. What the read noticed
    about the source's files (one that is empty, not text, without a header we know, with
    columns that map to nothing) is in `warnings`.
    """
    backfill = start is not None or end is not None
    read_failures: list[str] = []
    t0 = time.perf_counter()
    stats = LandingStats()
    checks = FileChecks(source)
    with locking.hold(engine, locking.source_lock(source.name), run_id) as refresh:
        with engine.connect() as conn:
            live = landing.read_cursor(conn, source.name)
        cursor = None if backfill else live
        if reread and cursor is not None and isinstance(source, SpreadsheetSource):
            cursor = {**cursor, "files": {}}
        files_read = dict((cursor or {}).get("files", {}))
        produced: set[str] = set()
        # a backfill reads without the cursor, but dates undated rows as the live run did
        for batch in iter_source(source, cursor, start, end, first_landed(live)):
            batch = within_limits(batch, source.max_field_chars)
            checks.add(batch)
            produced.update(j.source_record_id for j in batch.rejects)
            finished = []
            if isinstance(source, SpreadsheetSource) and source.url is None:
                now_files = batch.cursor.get("files", {})
                finished = [p for p, fp in now_files.items() if files_read.get(p) != fp]
                files_read = dict(now_files)
            records = batch.records
            if backfill:
                records = [r for r in records if in_window(r.received_at, start, end)]
            with engine.begin() as conn:
                landed = landing.land_batch(
                    conn,
                    source=source.name,
                    records=records,
                    rejects=batch.rejects,
                    cursor=batch.cursor,
                    run_id=run_id,
                    move_cursor=not backfill,
                )
                for fpath in finished:
                    stats.rejects_closed = (stats.rejects_closed or 0) + (
                        quarantine.close_reread_rejects(
                            conn, source.name, os.path.basename(fpath), produced, run_id, _now()
                        )
                    )
            skipped = sum(batch.skipped.values())
            stats.seen += len(batch.records) + len(batch.rejects) + skipped
            stats.landed += landed.new
            stats.already_landed += landed.present - landed.new
            stats.duplicates += len(records) - landed.distinct
            stats.missing += landed.distinct - landed.present
            stats.rejected += len(batch.rejects)
            stats.skipped += skipped
            stats.outside_window += len(batch.records) - len(records)
            stats.skipped_by_reason.update(batch.skipped)
            read_failures += [
                f"{j.code}: {j.message}" for j in batch.rejects if j.code in READ_FAILURES
            ]
            refresh()
            progress.info(
                "%s: %d records read, %d new",
                source.name,
                stats.seen,
                stats.landed,
                extra={"progress": ("extract", source.name, stats.seen)},
            )
    stats.extract_ms = int((time.perf_counter() - t0) * 1000)
    stats.warnings = checks.warnings()
    if read_failures and raise_read_failures:
        raise SourceReadError(f"read stopped short: {read_failures[0]}", stats)
    return stats


def _now() -> datetime:
    return datetime.now(UTC)


def rules_text(path: str | None) -> tuple[str, str]:
    """(text, origin) of the rules file at `path`, or of the bundled defaults."""
    if path:
        return Path(path).read_text(encoding="utf-8"), path
    text = resources.files("transforms").joinpath("default_rules.yaml").read_text("utf-8")
    return text, "default_rules.yaml"


def load_rules(path: str | None) -> Rules:
    """The rules file at `path`, or the bundled defaults; RulesError names what is wrong."""
    return rules_from_yaml(*rules_text(path))


def rules_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_rules_version(conn: Connection, rules: Rules, text: str, origin: str) -> None:
    """Refuse rules whose content changed under a `rules_version` already applied (RulesError)."""
    for row in runs.applied_rules(conn):
        if row["rules_version"] == rules.version and row["sha256"] != rules_sha(text):
            raise RulesError(
                f"{origin}: rules_version {rules.version!r} was applied with other content "
                f"(sha256 {row['sha256'][:12]}…, run {row['run_id']}); "
                "give the changed rules a new rules_version"
            )


def rules_for_run(engine: Engine, settings: Settings) -> Rules:
    """The rules a run scores with: the newest `rebuild --rules --apply` recorded in the
    warehouse, else the config's (or the bundled) rules, which must not have changed under a
    version already applied."""
    text, origin = rules_text(settings.rules)
    rules = rules_from_yaml(text, origin)
    with engine.connect() as conn:
        check_rules_version(conn, rules, text, origin)
        applied = runs.applied_rules(conn)
    if applied:
        newest = applied[0]
        return rules_from_yaml(newest["rules_text"], f"applied rules {newest['rules_version']}")
    return rules


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


def match_settings(settings: Settings) -> MatchSettings:
    r = settings.resolution
    return MatchSettings(
        link_probability=r.link_probability,
        review_probability=r.review_probability,
        max_block_size=r.max_block_size,
    )


def match_engine(settings: Settings) -> scoring.Engine:
    r = settings.resolution
    return scoring.Engine(
        memory_limit=r.memory_limit, threads=r.threads, temp_directory=r.temp_directory
    )


@dataclass(frozen=True, slots=True)
class Resolving:
    """How a run resolves: thresholds, the model (read from the warehouse once per run) and the
    engine it scores on."""

    settings: MatchSettings
    model: scoring.Model | None = None  # None: the warehouse's active model, read per chunk
    engine: scoring.Engine = field(default_factory=scoring.Engine)


@dataclass
class ChunkSizer:
    """How many pending records the next chunk takes: `most` (the `chunk_size` setting), or
    fewer once a chunk and its context together passed `budget` contacts, in proportion to the
    contacts each new one brought along: the chunks shrink as the warehouse grows, so a chunk's
    resolution (which holds its context's matching columns, the candidate pairs and their
    scores at once) stays within about the same memory. Never below a tenth of `most`: a
    chunk's fixed costs (statements, checks) then count at most ten times as often.

    A chunk smaller than the last one brings fewer contexts' overlaps along, so the next context
    is estimated from the last one's ratio: the budget is a target, not a hard cap."""

    most: int
    budget: int
    current: int = 0

    def __post_init__(self) -> None:
        self.current = self.most

    @property
    def least(self) -> int:
        return max(1, self.most // 10)

    def size(self) -> int:
        return self.current

    def observe(self, new: int, context: int) -> None:
        """A chunk of `new` records was resolved against `context` existing contacts."""
        if new <= 0:
            return
        fits = self.budget * new // (new + context)
        self.current = max(self.least, min(self.most, fits))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a block that builds many records, on again after.

    A chunk builds several objects per contact and per lead, and no reference cycles: reference
    counting frees them, so a cyclic collection meanwhile finds nothing, yet each full one walks
    the whole heap again as the records pile up. Measured at 200k contacts (PostgreSQL): the run
    158 → 137 s, resolve 37 → 27 s; scoring 200k leads alone, about half its time. The chunk's
    checks and writes build a tuple or more per row too: at 1M contacts, with the collector on
    for them, the leads' rows for the gate alone took 36 s of the run's 91 s of validation.

    The collector is the process's: this pause is counted with the connectors' own
    (`connectors.base.gc_paused`), so flows sharing a process (a worker serving several
    deployments) neither turn it back on under one another nor leave it off when all are done."""
    with gc_paused():
        yield


_heap_lock = threading.Lock()
_heap_holders = 0
_heap_previous_pool: Any = None


@contextmanager
def bounded_heap() -> Iterator[None]:
    """Memory a chunk frees goes back to the system, for a block: Arrow's buffers come from the C
    library's allocator (the previous pool is put back after; a buffer is freed by the pool that
    made it), and on glibc every allocation of 128 kB or more is mapped on its own and unmapped
    when freed (`mallopt(M_MMAP_THRESHOLD)`, left so for the rest of the process).

    Both kept what a chunk freed for later allocations: Arrow's own pool (mimalloc) its freed
    columns, and glibc, whose threshold for mapping rises with each big block freed, big buffers
    carved from its heap, which it cannot shrink past the newest one still in use. As the context
    grows with the warehouse, each chunk's bigger buffers then took new memory and the process
    kept the old. Measured at 300k contacts (PostgreSQL, load 2–3), each step on the one before:
    Arrow on malloc, peak 1,484 → 1,387 MB; the fixed threshold, 1,387 → 1,328 MB, the growth
    between chunks ~50 → ~25 MB a chunk; run time unchanged within the noise (168–199 s).

    The pool is the process's: nested and concurrent blocks count, and the last one out puts
    back the pool the first one found."""
    import pyarrow as pa

    global _heap_holders, _heap_previous_pool
    with _heap_lock:
        if _heap_holders == 0:
            _map_big_allocations()
            _heap_previous_pool = pa.default_memory_pool()
            pa.set_memory_pool(pa.system_memory_pool())
        _heap_holders += 1
    try:
        yield
    finally:
        with _heap_lock:
            _heap_holders -= 1
            if _heap_holders == 0:
                pa.set_memory_pool(_heap_previous_pool)
                _heap_previous_pool = None


def _map_big_allocations() -> None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or "libc.so" not in name:  # not glibc: nothing to set
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return


@dataclass(frozen=True, slots=True)
class Normalized:
    """A chunk's records normalized, with their matching columns: work that reads nothing from
    the warehouse, so it can be done while the chunk before is being written."""

    contacts: list[Contact]
    rejects: list[Reject]
    features: pa.Table  # match_table of the contacts, in their order
    blocks: pa.Table  # block_table of the features: the context's look-ups and the index's rows
    seconds: float


def normalize_chunk(rows: Sequence[RawRow], opts: NormalizeOptions) -> Normalized:
    t0 = time.perf_counter()
    contacts, rejects = normalize_batch(rows, opts)
    features = match_table(contacts)
    blocks = block_table(features)
    return Normalized(contacts, rejects, features, blocks, time.perf_counter() - t0)


def process_chunk(
    conn: Connection,
    rows: list[Any],
    opts: NormalizeOptions,
    rules: Rules,
    resolving: Resolving | None = None,
    normalized: Normalized | None = None,
) -> tuple[publish.PublishSet, StageSeconds, int]:
    """normalize → resolve → qualify for one chunk of pending raw rows; with the publish set,
    the seconds each stage took and how many existing contacts the chunk's context held.

    `rows` must be raw rows that have no contact yet (pending, or a replay's quarantined ones):
    the PublishSet then says its contacts are new, and they are published by plain COPY.
    `normalized` is `normalize_chunk(rows, opts)` when it was done ahead.

    Reads first (erasure tombstones, the resolution context: the matching columns of the
    candidate leads' contacts), computes the links, then reads the whole contacts of only the
    leads that changed, for their golden records and qualification.
    """
    resolving = resolving or Resolving(MatchSettings())
    t0 = time.perf_counter()
    done = normalized or normalize_chunk(rows, opts)
    contacts, erased = suppress_erased(conn, done.contacts, rows)
    rejects = done.rejects + erased
    # the erased people's matching columns go with them (rare: only a chunk with one of them)
    features = match_table(contacts) if erased else done.features
    blocks = block_table(features) if erased else done.blocks
    t1 = time.perf_counter()
    model = resolving.model or matching.active_model(conn)
    pending = resolution.decision_leads(conn) if resolution.pending_decisions(conn) else set()
    max_block = resolving.settings.max_block_size
    context = matching.read_context(conn, features, max_block, pending, blocks)
    ids = context.members.column("contact_id").to_pylist() + [c.contact_id for c in contacts]
    decisions = resolution.review_decisions(conn, ids)
    linking = link_contacts(
        contacts, context, decisions, resolving.settings, model, resolving.engine, features
    )
    new_ids = {c.contact_id for c in contacts}
    everyone = resolution.contacts_by_id(
        conn, {cid for cids in linking.members.values() for cid in cids} - new_ids
    ) | {c.contact_id: c for c in contacts}
    leads = golden_leads(linking, everyone)
    t2 = time.perf_counter()
    members = {lead_id: [everyone[c] for c in cids] for lead_id, cids in linking.members.items()}
    merged = {a for a, _ in linking.merges}
    prior = resolution.prior_states(conn, {ld.lead_id for ld in leads} | merged)
    clock = resolution.data_clock(conn)
    newest_here = max((r.received_at for r in rows), default=clock)
    as_of = max(clock, newest_here) if clock and newest_here else newest_here or clock
    assert as_of is not None  # rows, or a warehouse with raw records (a decisions-only chunk)
    result = qualify_leads(
        leads,
        members,
        rules,
        as_of,
        prior,
        resolution.read_stages(conn),
        merges=linking.merges,
    )
    t3 = time.perf_counter()
    # normalize counts its own work even when it was done ahead, beside the chunk before
    ahead = done.seconds if normalized else 0.0
    timings = StageSeconds(normalize=t1 - t0 + ahead, resolve=t2 - t1, qualify=t3 - t2)
    ps = publish.PublishSet(
        contacts=contacts,
        rejects=rejects,
        links=linking.links,
        leads=leads,
        qualifications=result.qualifications,
        merges=linking.merges,
        accounts=result.accounts,
        opportunities=result.opportunities,
        conversions=result.conversions,
        status_history=result.status_history,
        stage_history=result.stage_history,
        reparented=result.reparented,
        reviews=linking.reviews,
        decisions=decisions,
        splits=linking.splits,
        features=features,
        blocks=blocks,
        model_version=model.version,
        new_contacts=True,
        # `prior_states` read every lead of the chunk: those without a `leads` row (an orphaned
        # opportunity gives a prior without a status) are new.
        new_leads=frozenset(
            ld.lead_id
            for ld in leads
            if ld.lead_id not in prior or prior[ld.lead_id].status is None
        ),
    )
    return ps, timings, context.members.num_rows


def suppress_erased(
    conn: Connection, contacts: list[Contact], rows: list[RawRow]
) -> tuple[list[Contact], list[Reject]]:
    """Contacts of erased people become 'erased' rejects holding no personal data.

    A contact that gives consent again lifts the tombstone and goes through.
    """
    if not erasure.any_tombstones(conn):
        return contacts, []  # nobody was ever erased: no contact's keys need hashing
    keys = {c.contact_id: contact_key_hashes(c) for c in contacts}
    hit = erasure.tombstoned(conn, (h for hs in keys.values() for h in hs))
    if not hit:
        return contacts, []
    kept, erased, lifted = split_erased(contacts, rows, keys, hit)
    erasure.lift_tombstones(conn, lifted)
    return kept, erased


def process_pending(
    engine: Engine, settings: Settings, run_id: str, rebuild: bool = False
) -> ProcessStats:
    """Everything landed but not yet processed goes through to the live tables in one transaction.

    With `rebuild`, every derived row is dropped first, in the same transaction, so all raw records
    are processed again from scratch. A critical data-quality failure rolls the whole transaction
    back and raises QualityGateError. Runs that publish wait for each other (a warehouse lock).
    """

    def pending(conn: Connection, size: BatchSize) -> Iterator[list[RawRow]]:
        some = False
        for batch in landing.iter_pending_raw(conn, size):
            some = True
            yield batch
        # Review decisions take effect on the next run even when nothing new arrived. Every chunk
        # resolves the leads they touch (`decision_leads`), so a run with raw rows has applied
        # them; one without them gets a chunk without raw rows that pulls those leads in, merges
        # or splits them, marks them applied.
        if not some and resolution.pending_decisions(conn):
            yield []

    def chunks(conn: Connection, size: BatchSize) -> Iterable[list[RawRow]]:
        if not rebuild:
            return pending(conn, size)
        runs.clear_derived(conn)
        resolution.mark_revocations_applied(
            conn
        )  # derived again from scratch: nothing revoked holds
        # Replay the landing runs in order, so conversions happen when they first did.
        return (
            chunk
            for landed_by in runs.landing_runs(conn)
            for chunk in landing.iter_pending_raw(conn, size, landed_by=landed_by)
        )

    return _gated_publish(engine, settings, run_id, chunks, rebuild=rebuild)


def replay_rejects(
    engine: Engine, settings: Settings, run_id: str, reason: str | None = None
) -> ProcessStats:
    """Re-process quarantined records (after a fix) through the same gate and publish.

    Records that land as contacts leave the quarantine in the same transaction; the others stay.
    Extraction rejects never became raw records: the sheet sources that have them read their
    files again first (`reread`), which lands the rows a fixed config now reads and closes the
    rejects that do not come back; those rows are processed here too. Extraction rejects of
    other kinds of source still need a backfill of their source.
    """
    with engine.connect() as conn:
        names = quarantine.extract_reject_sources(conn, reason)
    reread = [
        s
        for s in settings.sources
        if s.name in names and isinstance(s, SpreadsheetSource) and s.path is not None
    ]
    closed = 0
    for source in reread:
        closed += extract_and_land(engine, source, run_id, reread=True).rejects_closed or 0
    with engine.connect() as conn:
        raw_ids, not_replayable = quarantine.quarantined_raw_ids(conn, reason)

    def rows(conn: Connection, size: BatchSize) -> Iterator[list[RawRow]]:
        yield from landing.iter_raw(conn, raw_ids, size)
        if reread:  # the rows the re-read landed
            yield from landing.iter_pending_raw(conn, size)

    stats = _gated_publish(engine, settings, run_id, rows)
    stats.replay = ReplayCounts(len(raw_ids), not_replayable, len(reread), closed)
    return stats


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """How the leads change when every contact is resolved again with another match model."""

    model_version: str
    contacts: int
    leads_before: int
    leads_after: int
    merged: int  # leads under the model holding contacts of two or more of today's leads
    split: int  # today's leads whose contacts the model puts in two or more leads
    moved: int  # contacts not with the same companions as today


def _partition(conn: Connection) -> dict[str, frozenset[str]]:
    lk = resolution.lead_memberships(conn)
    groups: dict[str, set[str]] = defaultdict(set)
    for contact_id, lead_id in lk:
        groups[lead_id].add(contact_id)
    return {lead: frozenset(cs) for lead, cs in groups.items()}


def compare_partitions(
    before: dict[str, frozenset[str]], after: dict[str, frozenset[str]]
) -> tuple[int, int, int]:
    """(merged, split, moved) between two clusterings of the same contacts (pure)."""
    old_of = {c: lead for lead, cs in before.items() for c in cs}
    new_of = {c: lead for lead, cs in after.items() for c in cs}
    merged = sum(1 for cs in after.values() if len({old_of.get(c) for c in cs}) > 1)
    split = sum(1 for cs in before.values() if len({new_of.get(c) for c in cs}) > 1)
    moved = sum(1 for c in old_of if c in new_of and before[old_of[c]] != after[new_of[c]])
    return merged, split, moved


def remodel(
    engine: Engine, settings: Settings, model: scoring.Model, run_id: str, apply: bool
) -> ModelPlan:
    """Resolve every landed record again with `model` (a rebuild in one transaction) and compare
    the leads with today's; commit, and make the model the active one, only with `apply`."""
    opts, rules = normalize_options(settings), rules_for_run(engine, settings)
    resolving = Resolving(match_settings(settings), model, match_engine(settings))
    q = settings.quality
    gate = QualityGate(
        run_id, Thresholds(q.volume_max_change, q.freshness_hours, q.full_checks_every)
    )
    stats = ProcessStats()
    sizer = chunk_sizer(settings)
    with locking.hold(engine, locking.PUBLISH_LOCK, run_id, ttl=locking.PUBLISH_TTL):
        with engine.connect() as conn, bounded_heap():
            txn = conn.begin()
            try:
                before = _partition(conn)
                runs.clear_derived(conn)
                chunks = (
                    chunk
                    for landed_by in runs.landing_runs(conn)
                    for chunk in landing.iter_pending_raw(conn, sizer.size, landed_by=landed_by)
                )
                _process_all(
                    conn,
                    chunks,
                    opts,
                    rules,
                    resolving,
                    run_id,
                    gate,
                    stats,
                    sizer,
                    everything=True,
                )
                after = _partition(conn)
                merged, split, moved = compare_partitions(before, after)
                plan = ModelPlan(
                    model.version,
                    sum(len(cs) for cs in after.values()),
                    len(before),
                    len(after),
                    merged,
                    split,
                    moved,
                )
                if not apply:
                    txn.rollback()
                    return plan
                refreshed = refresh_marts(conn, settings, run_id)
                gate.results.extend(refreshed.checks())
                matching.activate_model(conn, model.version)
                runs.start_run(conn, run_id, "remodel", {"model": model.version})
                runs.finish_run(conn, run_id, "succeeded", stats.as_dict())
                txn.commit()
                return plan
            except BaseException:
                txn.rollback()
                raise


# The chunks of raw rows a publish processes, read through its connection, each of the size
# the function it is given answers when the chunk starts.
RowSource = Callable[[Connection, BatchSize], Iterable[list[RawRow]]]


def chunk_sizer(settings: Settings) -> ChunkSizer:
    r = settings.resolution
    return ChunkSizer(r.chunk_size, r.context_budget)


def _gated_publish(
    engine: Engine, settings: Settings, run_id: str, rows_of: RowSource, rebuild: bool = False
) -> ProcessStats:
    opts, rules = normalize_options(settings), rules_for_run(engine, settings)
    resolving = Resolving(match_settings(settings), engine=match_engine(settings))
    stats = ProcessStats()
    timings = stats.timings
    sizer = chunk_sizer(settings)
    q = settings.quality
    gate = QualityGate(
        run_id, Thresholds(q.volume_max_change, q.freshness_hours, q.full_checks_every)
    )
    failure: QualityGateError | None = None
    try:
        # The publish transaction is long and, on SQLite, holds the write lock: the lock row cannot
        # be refreshed meanwhile, so it is taken for longer than a publish can take.
        with locking.hold(engine, locking.PUBLISH_LOCK, run_id, ttl=locking.PUBLISH_TTL):
            # The CRM's APIs are read before the transaction opens: no HTTP while it holds locks.
            crm = read_crm_apis(engine, settings)
            with engine.begin() as conn, bounded_heap():
                t0 = time.perf_counter()
                stats.contacts_indexed += matching.ensure_index(conn)
                resolving = replace(resolving, model=matching.active_model(conn))
                timings.resolve += time.perf_counter() - t0
                touched = _process_all(
                    conn,
                    rows_of(conn, sizer.size),
                    opts,
                    rules,
                    resolving,
                    run_id,
                    gate,
                    stats,
                    sizer,
                    everything=rebuild,
                )
                t0 = time.perf_counter()
                stats.opportunity_updates = apply_opportunity_updates(
                    conn, settings, run_id, crm, touched
                )
                stats.opportunity_update_failures = [
                    f"{r.source.name}: {r.failure}" for r in crm if r.failure
                ]
                refreshed = refresh_marts(conn, settings, run_id, touched)
                gate.results.extend(refreshed.checks())
                stats.mart_warnings = refreshed.warnings()
                timings.marts += time.perf_counter() - t0
    except QualityGateError as exc:
        failure = exc
    finally:
        t0 = time.perf_counter()
        docs = _build_docs(gate, Path(q.docs_dir) / run_id, q.docs_keep)
        with engine.begin() as conn:
            record_quality(conn, run_id, gate.results)
        timings.docs = time.perf_counter() - t0
    if failure is not None:
        where = f" (Data Docs: {docs})" if docs else ""
        raise QualityGateError(f"{failure}{where}", docs) from None
    checks = [r for r in gate.results if r.expectation != "row_count"]
    stats.dq_checks = len(checks)
    stats.dq_warnings = sum(1 for x in checks if not x.success)
    stats.dq_warning_names = [quality.warning_line(x) for x in checks if not x.success]
    stats.data_docs = str(docs) if docs else None
    return stats


def refresh_marts(
    conn: Connection,
    settings: Settings,
    run_id: str = "marts",
    touched: publish.Touched | None = None,
) -> marts.MartRefresh:
    """Changed rates files loaded, then the marts brought up to date, all in the caller's
    transaction: for what `touched` names (a run), or rebuilt whole (without it)."""
    bad: list[str] = []
    for path in settings.fx.rates:
        bad += load_fx_file(conn, path, settings.fx.base_currency, run_id)
    refreshed = marts.refresh_marts(
        conn,
        schema=settings.marts.schema_name,
        as_of=resolution.data_clock(conn),
        reporting_currency=settings.marts.reporting_currency,
        base_currency=settings.fx.base_currency,
        touched=touched,
    )
    return dataclasses.replace(refreshed, bad_rate_rows=tuple(bad))


@dataclass(frozen=True)
class CrmRead:
    """What one CRM API gave since its cursor: its rows as updates and rejects, the cursor after
    them (None: unmoved), and why the read stopped short, if it did."""

    source: OpportunityUpdatesSource
    updates: tuple[OpportunityUpdate, ...]
    rejects: tuple[Reject, ...]
    cursor: dict[str, Any] | None
    failure: str | None = None


def read_crm_apis(engine: Engine, settings: Settings) -> list[CrmRead]:
    """Each API source's opportunities changed since its cursor, oldest change first.

    A read that fails part-way keeps what came before the failure (the pages are in time order,
    so the cursor stops at the last change read) and says why; the rest of the run goes on.
    """
    reads = []
    for src in settings.opportunity_updates:
        if src.api is None:
            continue
        with engine.connect() as conn:
            cursor = landing.read_cursor(conn, outcomes_store.api_cursor_name(src.name))
        since = parse_received((cursor or {}).get("modified_since"))
        token = read_secret(src.token_env, src.token_block, f"opportunity_updates.{src.name}.token")
        client = http_client(src, token)
        updates: list[OpportunityUpdate] = []
        rejects: list[Reject] = []
        failure = None
        try:
            for u, j in iter_crm_api(client, src, since):
                updates += u
                rejects += j
        except (HttpError, PaginationError) as exc:
            failure = str(exc)
            logger.warning("opportunity updates %s: %s", src.name, failure)
        finally:
            client.close()
        newest = max((u.changed_at for u in updates if u.changed_at), default=None)
        after = {"modified_since": newest.isoformat()} if newest else None
        reads.append(CrmRead(src, tuple(updates), tuple(rejects), after, failure))
    return reads


def apply_opportunity_updates(
    conn: Connection,
    settings: Settings,
    run_id: str,
    api_reads: Sequence[CrmRead] = (),
    touched: publish.Touched | None = None,
) -> dict[str, int]:
    """New or changed CRM export files, and what the CRM APIs gave, applied to the opportunities
    in the caller's transaction; the opportunities they moved are added to `touched`."""
    stats: dict[str, int] = defaultdict(int)
    if not settings.opportunity_updates:
        return stats
    stage_table = resolution.read_stages(conn)
    as_of = resolution.data_clock(conn) or datetime(1970, 1, 1, tzinfo=UTC)

    def apply(
        src: OpportunityUpdatesSource,
        updates: Sequence[OpportunityUpdate],
        rejects: Sequence[Reject],
        cursor: tuple[str, dict[str, Any]] | None,
    ) -> None:
        refs = [u.opportunity_ref for u in updates if u.opportunity_ref]
        keys = [u.email_key for u in updates if u.email_key]
        by_id, by_email = outcomes_store.opportunity_context(conn, refs, keys)
        plan = plan_updates(updates, by_id, by_email, stage_table, as_of, src.stage_map)
        plan = dataclasses.replace(plan, rejects=tuple(rejects) + plan.rejects)
        outcomes_store.write_plan(conn, plan, cursor, run_id)
        if touched is not None:
            touched.opportunities.update(s.opportunity_id for s in plan.states)
            touched.opportunities.update(h.opportunity_id for h in plan.history)
        stats["opportunity_updates_read"] += len(updates) + len(rejects)
        stats["opportunity_updates_applied"] += plan.applied
        stats["opportunity_updates_rejected"] += len(plan.rejects)
        stats["opportunity_stage_moves"] += len(plan.history)
        if plan.stale:
            stats["opportunity_updates_stale"] += plan.stale

    for src in settings.opportunity_updates:
        if src.path is None:
            continue
        for path, body, fingerprint in iter_export_files(src.path):
            if outcomes_store.already_applied(conn, src.name, path, fingerprint):
                continue
            updates, rejects = parse_updates(body, src.name, Path(path).name, src.layout)
            apply(src, updates, rejects, outcomes_store.file_cursor(src.name, path, fingerprint))
    for read in api_reads:
        if read.updates or read.rejects:
            name = outcomes_store.api_cursor_name(read.source.name)
            cursor = (name, read.cursor) if read.cursor else None
            apply(read.source, read.updates, read.rejects, cursor)
    return stats


def load_fx_file(conn: Connection, path: str, base: str, run_id: str) -> list[str]:
    """A rates file into `fx_rates` unless unchanged since its last load; its unreadable rows."""
    try:
        body, fingerprint = read_rates_file(path)
    except OSError as exc:
        return [f"{Path(path).name}: cannot read: {exc.strerror}"]
    if fx.already_loaded(conn, path, fingerprint):
        return []
    parsed = parse_rates(body, base)
    fx.load_rates(conn, path, fingerprint, parsed.rates, run_id)
    return [f"{Path(path).name}:{b.line}: {b.reason}" for b in parsed.bad]


def _build_docs(gate: QualityGate, folder: Path, keep: int) -> Path | None:
    try:
        index = gate.build_docs(folder)
        if index is not None:
            checks = [r for r in gate.results if r.expectation != "row_count"]
            docs_site.finish(
                index.parent,
                gate.run_id,
                checks=len(checks),
                failed=sum(1 for r in checks if not r.success),
                critical=sum(1 for r in checks if not r.success and r.severity == "critical"),
                keep=keep,
                now=datetime.now(UTC),
            )
        return index
    except (
        Exception
    ):  # the docs are a report: failing to write them must not hide the run's outcome
        logger.exception("could not build the Data Docs site in %s", folder)
        return None


def _process_all(
    conn: Connection,
    chunks: Iterable[list[RawRow]],
    opts: NormalizeOptions,
    rules: Rules,
    resolving: Resolving,
    run_id: str,
    gate: QualityGate,
    stats: ProcessStats,
    sizer: ChunkSizer,
    everything: bool = False,
) -> publish.Touched:
    """stage → validate → merge per chunk, then validate the merged state; one transaction.

    Returns the keys every chunk wrote or deleted, or `everything` (as given, for a rebuild, or
    once they are more than the checks would read by key: `quality.scope_limits`); `sizer`
    hears of each chunk's context before the next chunk is read (`chunks` asks it for their
    sizes)."""
    now = datetime.now(UTC)
    timings = stats.timings
    baseline = quality.previous_counts(conn)
    touched = publish.Touched(everything=everything, limits=quality.scope_limits(baseline))
    chunk_no = 0
    stale = False
    # The next chunk is read before this one is written and normalized on a thread of its own
    # meanwhile: writing is mostly waiting on the database, and normalizing reads nothing from
    # it. One chunk ahead at most.
    ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadflow-normalize")
    upcoming = iter(chunks)

    def read_ahead() -> tuple[list[RawRow], Future[Normalized]] | None:
        rows = next(upcoming, None)
        return None if rows is None else (rows, ahead.submit(normalize_chunk, rows, opts))

    try:
        nxt = read_ahead()
        while nxt is not None:
            rows, normalizing = nxt
            if stale:  # before the chunk that reads them, so the last chunk pays for no ANALYZE
                t0 = time.perf_counter()
                publish.refresh_statistics(conn)
                timings.publish += time.perf_counter() - t0
            # The whole chunk, checks and writes included: they build a tuple or more per row
            # while the chunk's records are alive, and each cyclic collection would walk them all.
            with collector_paused():
                ps, t, context = process_chunk(
                    conn, rows, opts, rules, resolving, normalizing.result()
                )
                del normalizing
                timings.add(t)
                stats.context_contacts += context
                sizer.observe(len(rows), context)  # before the next chunk is read
                t0 = time.perf_counter()
                report = gate.check(quality.staged_frames(ps, rows), quality.STAGED)
                timings.validate += time.perf_counter() - t0
                if not report.passed:
                    raise QualityGateError(report.summary())
                nxt = read_ahead()
                t0 = time.perf_counter()
                publish.publish(conn, ps, run_id)
                touched.add(ps)
                erasure.scrub_raw(
                    conn, [j.raw_id for j in ps.rejects if j.code == ERASED and j.raw_id]
                )
                chunk_no += 1
                # after chunks 1, 2, 4, 8…: the tables doubled
                stale = chunk_no & (chunk_no - 1) == 0
                timings.publish += time.perf_counter() - t0
                stats.count_chunk(len(rows), ps)
                progress.info(
                    "processed %d raw records",
                    stats.raw_processed,
                    extra={"progress": ("process", "pending", stats.raw_processed)},
                )
                del ps, report, rows
    finally:
        # an error leaves the chunk read ahead unprocessed: its normalizing is not waited for
        ahead.shutdown(wait=False, cancel_futures=True)
    stats.raw_settled += landing.settle_pending(conn)
    stats.rejects_released += quarantine.release_landed_rejects(conn, run_id, now)
    t0 = time.perf_counter()
    quality.fold_row_counts(conn)
    due = quality.full_check_due(conn, gate.thresholds.full_checks_every)
    scope = publish.Touched(everything=True) if due else touched
    frames, counts = quality.published_frames(conn, now, baseline, gate.thresholds, scope)
    report = gate.check_parts(frames, quality.PUBLISHED)
    if any(r.column == "count_drift" and not r.success for r in report.results):
        # rows written with the triggers off: the kept counts are put right, the warning stays
        drift = quality.repair_row_counts(conn)
        logger.warning("row counts kept by the triggers corrected (rows off): %s", drift)
    gate.record_counts(counts)
    timings.validate += time.perf_counter() - t0
    if not report.passed:
        raise QualityGateError(report.summary())
    return touched


def check_published(
    engine: Engine, settings: Settings, run_id: str
) -> tuple[quality.QualityReport, Path | None]:
    """The published-state checks over the whole warehouse, outside any run (`leadflow check`):
    finds what was changed behind the runs' backs. Results go to dq_results and Data Docs."""
    q = settings.quality
    gate = QualityGate(run_id, Thresholds(q.volume_max_change, q.freshness_hours))
    with engine.connect() as conn, conn.begin():  # read only; the temporary tables end with it
        baseline = quality.previous_counts(conn)
        frames, _ = quality.published_frames(
            conn, datetime.now(UTC), baseline, gate.thresholds, publish.Touched(everything=True)
        )
        report = gate.check_parts(frames, quality.PUBLISHED)
    docs = _build_docs(gate, Path(q.docs_dir) / run_id, q.docs_keep)
    with engine.begin() as conn:
        record_quality(conn, run_id, gate.results)
    return report, docs


def record_quality(conn: Connection, run_id: str, results: Sequence[CheckResult]) -> None:
    rows = quality.dq_rows(run_id, results)
    if rows:
        conn.execute(dq_results.insert(), rows)


def quality_markdown(engine: Engine, run_id: str, docs: str | None) -> str:
    """The run's dq_results as a markdown table (what the flow publishes as an artifact)."""
    with engine.connect() as conn:
        results = quality.results_of(conn, run_id)
    return quality.markdown(run_id, results, Path(docs) if docs else None)


@dataclass(frozen=True)
class RescorePlan:
    """What re-scoring every lead under a rules file changes."""

    rules_version: str
    as_of: datetime | None
    leads: int = 0
    status_changes: dict[tuple[str, str], int] = field(default_factory=dict)
    new_conversions: int = 0
    stage_advances: int = 0
    kept_opportunities: int = 0  # converted leads that are not Qualified under these rules

    @property
    def changed_leads(self) -> int:
        return sum(self.status_changes.values())


def rescore_leads(conn: Connection, rules: Rules) -> RescorePlan:
    """Re-score every lead under `rules` and write the outcome into `conn`'s transaction.

    Deterministic: recency is measured against the data's clock and every history row is dated
    by it. The caller commits to apply, or rolls back for a dry run. A critical data-quality
    failure raises QualityGateError.
    """
    as_of = resolution.data_clock(conn)
    plan = RescorePlan(rules.version, as_of)
    if as_of is None:
        return plan
    stage_table = resolution.read_stages(conn)
    gate = QualityGate(f"rescore-{rules.version}")
    changes: Counter[tuple[str, str]] = Counter()
    n = conversions = advances = kept = 0
    for leads in list(resolution.iter_leads(conn)):
        ids = {ld.lead_id for ld in leads}
        members: dict[str, list[Any]] = defaultdict(list)
        for c, lead_id in resolution.contacts_of_leads(conn, ids):
            members[lead_id].append(c)
        prior = resolution.prior_states(conn, ids)
        with collector_paused():
            res = qualify_leads(leads, members, rules, as_of, prior, stage_table, changed_at=as_of)
        ps = publish.PublishSet(
            contacts=[],
            rejects=[],
            links=[],
            leads=leads,
            qualifications=res.qualifications,
            merges=[],
            accounts=res.accounts,
            opportunities=res.opportunities,
            conversions=res.conversions,
            status_history=res.status_history,
            stage_history=res.stage_history,
        )
        report = gate.check(quality.staged_frames(ps, []), quality.STAGED)
        if not report.passed:
            raise QualityGateError(report.summary())
        publish.publish(conn, ps, run_id="rescore")
        n += len(leads)
        changes.update((h.from_status or "(none)", h.to_status) for h in res.status_history)
        conversions += len(res.opportunities)
        advances += sum(1 for h in res.stage_history if h.from_stage is not None)
        kept += sum(
            1
            for q in res.qualifications
            if q.lead_id in prior and prior[q.lead_id].opportunity_id and q.status != "Qualified"
        )
    return RescorePlan(rules.version, as_of, n, dict(changes), conversions, advances, kept)
