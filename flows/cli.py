"""The `leadflow` command line: run, backfill, rebuild, status, serve, forget, rejects, webhooks, console and db."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flows import models
from flows.settings import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
EXIT_PARTIAL = 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cat big | head`

# A command: (arguments, settings) → exit status. Adding one is a parser function and a handler.
Handler = Callable[[argparse.Namespace, Settings], int]
COMMANDS: dict[str, Handler] = {}


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadflow", description=__doc__)
    p.add_argument("--config", default=None, help="config file (default ./leadflow.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("--config", default=argparse.SUPPRESS)
        return cmd

    run = command("run", "run the pipeline once")
    run.add_argument("--source", action="append", dest="sources", help="only this source")
    run.add_argument("--dry-run", action="store_true", help="read and count, write nothing")
    bf = command("backfill", "re-extract a date window without moving cursors")
    bf.add_argument("--start", type=_date, required=True, help="first received date (inclusive)")
    bf.add_argument("--end", type=_date, required=True, help="last received date (exclusive)")
    bf.add_argument("--source", action="append", dest="sources", help="only this source")
    rb = command("rebuild", "recompute from the raw records, or re-score leads under --rules")
    rb.add_argument("--rules", metavar="FILE", help="re-score every lead under this rules file")
    rb.add_argument(
        "--model", metavar="VERSION", help="resolve every contact again with this match model"
    )
    rb.add_argument(
        "--apply", action="store_true", help="--rules, --model: write the changes (default: show)"
    )
    command("status", "recent runs, cursors and freshness per source, locks, table counts")
    command("check", "check the whole published state (runs check what they changed)")
    command("serve", "run the schedules on this machine (hourly ingestion, nightly rebuild)")
    fg = command("forget", "erase a person everywhere and suppress them from now on")
    fg.add_argument("who", help="an email address or a lead id (lead_…)")
    fg.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    dbp = command("db", "warehouse schema")
    dbp.add_argument("action", choices=["upgrade", "grant-bi-reader"])
    dbp.add_argument(
        "--role", default="bi_reader", help="grant-bi-reader: the role to create (PostgreSQL)"
    )
    rj = command("rejects", "the quarantine: list, replay or dismiss rejected records")
    rj.add_argument("action", choices=["list", "replay", "dismiss"])
    rj.add_argument("ids", nargs="*", default=[], help="dismiss: these reject ids")
    rj.add_argument("--reason", default=None, help="only records rejected with this code")
    rj.add_argument("--by", default=None, help="dismiss: who decides to drop them")
    rj.add_argument("--why", default=None, help="dismiss: why they are dropped")
    rj.add_argument(
        "--all", action="store_true", dest="include_replayed", help="list: also replayed ones"
    )
    so = command("sources", "look at source files before a run: what each column maps to")
    so.add_argument("action", choices=["inspect"])
    so.add_argument("path", help="a file, folder or glob of sheets (.csv, .xlsx) or JSON exports")
    so.add_argument(
        "--source", default=None, help="read as this source of the config would (its columns:)"
    )
    wh = command("webhooks", "receive pushed form submissions into spools")
    wh.add_argument("action", choices=["serve"])
    wh.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    wh.add_argument("--port", type=int, default=8787)
    wh.add_argument("--source", action="append", dest="sources", help="only this source")
    con = command("console", "the data steward console: review pairs, explore and split leads")
    con.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    con.add_argument("--port", type=int, default=8765)
    con.add_argument(
        "--token-block", default=None, help="a Prefect Secret block holding the console token"
    )
    models.add_arguments(sub, command)
    return p


def serve_webhooks(settings: Settings, host: str, port: int, names: list[str] | None) -> int:
    """POST /hooks/<source> for every webform source with a `webhook:` block, until Ctrl-C."""
    from connectors.webhook import Spool, make_server
    from flows.settings import WebformSource

    spools = {}
    for s in settings.sources:
        if not isinstance(s, WebformSource) or s.webhook is None or s.path is None:
            continue
        if names and s.name not in names:
            continue
        secret = os.environ.get(s.webhook.secret_env)
        if not secret:
            print(
                f"leadflow: sources.{s.name}.webhook.secret_env: "
                f"environment variable {s.webhook.secret_env} is not set",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        spools[s.name] = (Spool(s.path), secret)
    if not spools:
        print("leadflow: webhooks: no webform source has a webhook block", file=sys.stderr)
        return EXIT_CONFIG
    server = make_server(spools, host, port)
    print(
        f"listening on http://{host}:{server.server_port}/hooks/<source> for: {', '.join(spools)}"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _quiet_prefect_defaults() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # A busy machine can miss the temporary API's default start-up limit.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class _EngineErrorsOffConsole(logging.Filter):
    """Prefect's own report of a failed task or flow run (with its traceback) stays in the Prefect
    API and UI; on the console the command line says what failed, in one line. So does a lost
    warehouse: SQLAlchemy's pool logs, with a traceback, each cursor it then fails to close on
    the dead connection (a server-side cursor of the pending rows), after the run has said so."""

    def filter(self, record: logging.LogRecord) -> bool:
        engine = record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))
        if engine and record.levelno >= logging.ERROR:
            return False
        lost = record.exc_info and type(record.exc_info[1]).__name__ == "OperationalError"
        return not (record.name.startswith("sqlalchemy.pool") and lost)


def _quiet_engine_errors() -> None:
    """Call after Prefect is imported (importing it sets up its console handler)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _EngineErrorsOffConsole) for f in handler.filters
        ):
            handler.addFilter(_EngineErrorsOffConsole())


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join([line, "  ".join("-" * widths[c] for c in cols), *body])


def print_funnel(settings: Settings) -> None:
    from warehouse import db, reports

    engine = db.make_engine(settings.warehouse.url)
    with engine.connect() as conn:  # after a run: the marts it refreshed hold the same counts
        rows = reports.funnel_of_marts(conn, settings.marts.schema_name)
    engine.dispose()
    print_warehouse(settings)
    total = {
        k: sum(r[k] for r in rows) for k in ("contacts", "leads", "qualified", "opportunities")
    }
    print("\nFunnel (contacts → leads → qualified → opportunities), by the source leads came from:")
    print(
        _table(
            [*rows, {"source": "TOTAL", **total}],
            ["source", "contacts", "leads", "qualified", "opportunities"],
        )
    )


SUMMARY_COLS = [
    "source",
    "seen",
    "would_land",
    "landed",
    "already_landed",
    "duplicates",
    "rejected",
    "skipped",
    "outside_window",
    "reconciled",
    "extract_ms",
]


def print_summary(result: dict[str, Any]) -> None:
    """The run in one table per stage: what each source gave, then what processing made of it."""
    status = result.get("status", "succeeded")
    print(f"run {result['run_id']} {status} in {result['seconds'].get('total', 0):.1f} s")
    rows = [
        {**s, "source": name, "reconciled": "yes" if s.get("reconciled") else "NO"}
        if "reconciled" in s
        else {**s, "source": name}
        for name, s in sorted(result["sources"].items())
    ]
    rows += [
        {"source": name, "reconciled": "FAILED"}
        for name in sorted(result.get("failed_sources", {}))
    ]
    if rows:
        cols = [c for c in SUMMARY_COLS if any(c in r for r in rows)]
        print(_table(rows, cols))
    for line in source_warnings(result):
        print(f"warning: {line}")
    proc = result.get("process")
    if proc:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in proc.get("timings", {}).items())
        print(
            f"processed {proc.get('raw_processed', 0)} raw records: "
            f"{proc.get('contacts', 0)} contacts, {proc.get('rejects', 0)} rejects, "
            f"{proc.get('leads_touched', 0)} leads touched, "
            f"{proc.get('opportunities_new', 0)} new opportunities ({timings})"
        )
        for warning in proc.get("mart_warnings", []):
            print(f"marts: warning: {warning}")
        for failure in proc.get("opportunity_update_failures", []):
            print(f"opportunity updates: warning: read stopped short: {failure}")


class _ProgressHandler(logging.Handler):
    """Stage progress log records (`extra={"progress": (stage, what, done)}`) as live bars."""

    def __init__(self, progress: Any) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.bars: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "progress", None)
        if not event:
            return
        stage, what, done = event
        key = f"{stage} {what}"
        if key not in self.bars:
            self.bars[key] = self.progress.add_task(key, total=None)
        self.progress.update(self.bars[key], completed=done)


@contextmanager
def progress_display() -> Iterator[None]:
    """Live progress bars on stderr while a run's long stages work (only on a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    console = Console(stderr=True)
    logger = logging.getLogger("leadflow.progress")
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        handler = _ProgressHandler(progress)
        logger.addHandler(handler)
        old_level, old_propagate = logger.level, logger.propagate
        # The bars replace the progress lines: they do not also go to the console log.
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate


def source_warnings(result: dict[str, Any]) -> list[str]:
    """What the run noticed about its sources' files, one line each, source by source."""
    from connectors.base import SourceWarning

    return [
        SourceWarning.from_dict(w).line()
        for _, stats in sorted(result.get("sources", {}).items())
        for w in stats.get("warnings", [])
    ]


def _print_source_warnings(result: dict[str, Any]) -> None:
    for line in source_warnings(result):
        print(f"leadflow: warning: {line}", file=sys.stderr)


def _print_lost(run_id: str, lost: list[dict[str, Any]]) -> None:
    if lost:
        files = ", ".join(f"{w['source']}: {w['file']}" for w in lost)
        print(
            f"leadflow: run {run_id} is partial: nothing could be read from {files} "
            "(see the warnings above); the rest was published",
            file=sys.stderr,
        )


def print_warehouse(settings: Settings, note: str = "") -> None:
    from warehouse import db

    print(f"warehouse: {db.masked(settings.warehouse.url)}{note}")


def _print_failed_sources(failed: dict[str, str]) -> None:
    for name, reason in sorted(failed.items()):
        print(f"leadflow: source {name} failed: {reason}", file=sys.stderr)


def _dry_run(settings: Settings, sources: list[str] | None) -> int:
    """Count what a run would land, from the stored cursors, without Prefect and writing nothing."""
    from flows import dryrun

    chosen = [s.name for s in settings.sources if s.enabled and (not sources or s.name in sources)]
    from flows.stages import lost_files

    dry = dryrun.count_sources(settings, chosen)
    result = dry.as_dict()
    print_summary(result)
    print_warehouse(settings, " (read only: nothing was written)")
    _print_source_warnings(result)
    failed = dry.failed_sources
    lost = lost_files(dry.sources)
    _print_failed_sources(failed)
    if lost:
        files = ", ".join(f"{w['source']}: {w['file']}" for w in lost)
        print(f"leadflow: a run would read nothing from {files}", file=sys.stderr)
    return EXIT_PARTIAL if failed or lost else 0


def _run_flow(args: argparse.Namespace, settings: Settings) -> int:
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start and end and start >= end:
        print("leadflow: backfill: --start must be before --end", file=sys.stderr)
        return EXIT_CONFIG
    sources = getattr(args, "sources", None)
    unknown = sorted(set(sources or []) - {s.name for s in settings.sources})
    if unknown:
        print(f"leadflow: --source: no source named {unknown[0]!r}", file=sys.stderr)
        return EXIT_CONFIG
    if getattr(args, "dry_run", False):
        return _dry_run(settings, sources)
    _quiet_prefect_defaults()
    from flows import pipeline
    from flows.pipeline import PartialRunError
    from flows.stages import QualityGateError

    _quiet_engine_errors()
    if args.command == "rebuild" and args.rules and args.model:
        print("leadflow: rebuild: --rules and --model go one at a time", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "rebuild" and args.rules:
        return _rescore(settings, args.rules, args.apply)
    if args.command == "rebuild" and args.model:
        return models.remodel_command(settings, args.model, args.apply)
    refused = _refused_rules(settings)
    if refused:
        print(f"leadflow: {args.command}: {refused}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        with progress_display():
            if args.command == "rebuild":
                result = pipeline.rebuild(config=args.config)
            elif args.command == "backfill":
                assert start is not None and end is not None  # required by the parser
                result = pipeline.backfill(
                    start=start, end=end, sources=sources, config=args.config
                )
            else:
                result = pipeline.pipeline(config=args.config, sources=sources)
    except QualityGateError as exc:
        print(f"leadflow: run failed, nothing published: {exc}", file=sys.stderr)
        return 1
    except PartialRunError as exc:
        # The healthy sources were published; say loudly which did not, and exit non-zero so a
        # scheduler or a shell script sees it.
        result = exc.result
        print_summary(result)
        _print_quality(result.get("process", {}))
        print_funnel(settings)
        _print_source_warnings(result)
        _print_failed_sources(exc.failed)
        if exc.failed:
            print(
                f"leadflow: run {result['run_id']} is partial: the other sources were "
                "published; failed sources keep their cursors and are read again by the next run",
                file=sys.stderr,
            )
        _print_lost(result["run_id"], exc.lost)
        return EXIT_PARTIAL
    print_summary(result)
    _print_quality(result.get("process", {}))
    print_funnel(settings)
    _print_source_warnings(result)
    return 0


for _name in ("run", "backfill", "rebuild"):
    COMMANDS[_name] = _run_flow


def _age(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return ""
    secs = int((now - ts).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _cursor_text(cursor: Any) -> str:
    if isinstance(cursor, dict) and set(cursor) == {"files"}:
        return f"{len(cursor['files'])} file(s) fingerprinted"
    text = json.dumps(cursor, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from warehouse import db, load, reports, runs

    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    with engine.connect() as conn:
        recent = runs.recent_runs(conn)
        fresh = {r["source"]: r for r in reports.source_freshness(conn)}
        locks = runs.held_locks(conn)
        counts = reports.table_counts(conn)
    engine.dispose()
    now = datetime.now(UTC)
    print("Recent runs:")
    if recent:
        for r in recent:
            r["seconds"] = (r.get("stats") or {}).get("seconds", {}).get("total", "")
            r["started_at"] = load.utc(r["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
            r["error"] = r["error"] or ""
        print(_table(recent, ["run_id", "flow", "status", "started_at", "seconds", "error"]))
    else:
        print("  (none yet)")
    stale = timedelta(hours=settings.quality.freshness_hours)
    print(
        "\nSources (fresh = age of the newest record received, stale after "
        f"quality.freshness_hours = {settings.quality.freshness_hours:g}; "
        "cursor = where runs resume):"
    )
    rows = []
    for s in settings.sources:
        f = fresh.pop(s.name, {})
        rows.append(_source_row(s.name, s.kind, f, now, stale))
    rows += [
        _source_row(name, "(not in config)", f, now, stale) for name, f in sorted(fresh.items())
    ]
    print(_table(rows, ["source", "kind", "raw", "newest", "fresh", "cursor", "cursor_moved"]))
    if locks:
        print("\nLocks held:")
        print(_table(locks, ["name", "run_id", "acquired_at", "expires_at"]))
    print("\nTables:")
    print(_table([{"table": k, "rows": v} for k, v in counts.items()], ["table", "rows"]))
    return 0


def _source_row(
    name: str, kind: str, f: dict[str, Any], now: datetime, stale: timedelta
) -> dict[str, Any]:
    newest, moved = f.get("newest_received_at"), f.get("cursor_moved_at")
    return {
        "source": name,
        "kind": kind,
        "raw": f.get("raw", 0),
        "newest": newest.strftime("%Y-%m-%d %H:%M") if newest else "never",
        "fresh": _age(newest, now) + (" STALE" if newest and now - newest > stale else ""),
        "cursor": _cursor_text(f["cursor"]) if "cursor" in f else "(start)",
        "cursor_moved": f"{_age(moved, now)} ago" if moved else "",
    }


COMMANDS["status"] = _status


def _check(args: argparse.Namespace, settings: Settings) -> int:
    """The published-state checks over every row, e.g. after someone edited a table by hand."""
    from flows import stages
    from warehouse import db, quality

    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    run_id = f"check-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    try:
        report, docs = stages.check_published(engine, settings, run_id)
    finally:
        engine.dispose()
    for r in report.warnings:
        print(f"warning: {quality.warning_line(r)}")
    if docs is not None:
        print(f"Data Docs: {docs}")
    if not report.passed:
        print(f"leadflow: check {run_id}: {report.summary()}", file=sys.stderr)
        return 1
    print(f"check {run_id}: {report.summary()}")
    return 0


COMMANDS["check"] = _check


def _db(args: argparse.Namespace, settings: Settings) -> int:
    action, role = args.action, args.role
    from flows.stages import refresh_marts
    from warehouse import access, db

    engine = db.make_engine(settings.warehouse.url)
    try:
        db.upgrade(engine)
        with engine.begin() as conn:
            refresh_marts(conn, settings)  # a new or changed mart exists (and is filled) at once
        if action == "upgrade":
            print("warehouse schema is at", ", ".join(sorted(db.head_revisions())))
            return 0
        try:
            with engine.begin() as conn:
                marts = access.grant_bi_reader(conn, role, settings.marts.schema_name)
        except ValueError as exc:
            print(f"leadflow: db grant-bi-reader: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        schema = settings.marts.schema_name
        print(f"role {role} may select in schema {schema}: {', '.join(marts)}")
        return 0
    finally:
        engine.dispose()


COMMANDS["db"] = _db


Confirm = Callable[[str, dict[str, int]], bool]


def forget(settings: Settings, who: str, confirm: Confirm | None = None) -> dict[str, int] | None:
    """Erase one person (email or lead id) in one transaction; returns what was erased.

    With `confirm`, what the erasure would remove is worked out first (and rolled back) and
    `confirm(who, counts)` decides; None when it says no (nothing written).
    """
    import uuid

    from flows import locking
    from flows.stages import refresh_marts
    from transforms.normalize import normalize_email
    from warehouse import db, erasure, runs

    email = email_key = lead_id = None
    if "@" in who:
        email, email_key, _ = normalize_email(who)
        if not email_key:
            raise ValueError("forget: not a valid email address")
    elif who.startswith("lead_"):
        lead_id = who
    else:
        raise ValueError("forget: give an email address or a lead id (lead_…)")
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)

    def erase(conn: Any) -> dict[str, int]:
        leads = erasure.find_person(conn, email_key=email_key, lead_id=lead_id)
        if lead_id and not leads:
            raise LookupError(f"forget: no lead {lead_id}")
        return erasure.erase_person(
            conn, leads, email=email, email_key=email_key, now=datetime.now(UTC)
        )

    run_id = f"run_{uuid.uuid4().hex[:20]}"
    try:
        if confirm is not None:
            # The same erasure, rolled back: what it would remove, before anyone is asked.
            with engine.connect() as conn:
                with conn.begin() as txn:
                    counts = erase(conn)
                    txn.rollback()
            if not confirm(who, counts):
                return None
        with locking.hold(engine, locking.PUBLISH_LOCK, run_id):
            with engine.begin() as conn:
                # The run log never holds who was erased: only that an erasure happened.
                runs.start_run(conn, run_id, "forget", {})
                counts = erase(conn)
                refresh_marts(conn, settings)  # no mart keeps a row of the erased person
                runs.finish_run(conn, run_id, "succeeded", {"erased": counts})
    finally:
        engine.dispose()
    return counts


def _ask(yes: bool) -> Confirm:
    def confirm(who: str, counts: dict[str, int]) -> bool:
        found = {k: v for k, v in counts.items() if v and k != "tombstones"}
        if found:
            what = ", ".join(f"{k}={v}" for k, v in found.items())
            print(f"forget {who}: will erase {what} and keep a hashed tombstone")
        else:
            print(
                f"forget {who}: nothing in the warehouse matches; will only keep a hashed "
                "tombstone, so later sightings of this address are rejected as erased"
            )
        if yes:
            return True
        if not sys.stdin.isatty():
            print(
                "leadflow: forget: not confirmed (no terminal to ask on): give --yes to erase; "
                "nothing was written",
                file=sys.stderr,
            )
            return False
        answer = input("Proceed? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("leadflow: forget: cancelled; nothing was written", file=sys.stderr)
            return False
        return True

    return confirm


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    try:
        counts = forget(settings, args.who, _ask(args.yes))
    except (ValueError, LookupError) as exc:
        print(f"leadflow: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if counts is None:
        return EXIT_CONFIG
    print("erased: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print("a hashed tombstone suppresses this person in later runs unless they consent again")
    return 0


COMMANDS["forget"] = _forget


PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def serve_deployments(settings_path: str, prefect_yaml: Path = PREFECT_YAML) -> None:
    """The deployments of prefect.yaml with their schedules, served from this process.

    No work pool and no worker: the schedules and parameters come from the same prefect.yaml that
    `prefect deploy --all` reads, so the two ways of running leadflow cannot drift apart.
    """
    import yaml
    from prefect import serve
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron

    from flows import pipeline

    spec = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8"))
    deployments = []
    for d in spec["deployments"]:
        flow = getattr(pipeline, d["entrypoint"].rsplit(":", 1)[1])
        deployments.append(
            flow.to_deployment(
                name=d["name"],
                description=d.get("description"),
                schedules=[
                    Cron(s["cron"], timezone=s.get("timezone")) for s in d.get("schedules") or []
                ],
                parameters={**d.get("parameters", {}), "config": settings_path},
            )
        )
    # Called from sync code, to_deployment returns the deployment itself (never a coroutine).
    serve(*[d for d in deployments if isinstance(d, RunnerDeployment)])


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_prefect_defaults()
    serve_deployments(os.path.abspath(args.config or "leadflow.yaml"))
    return 0


COMMANDS["serve"] = _serve


def _refused_rules(settings: Settings) -> str | None:
    """Why the config's rules cannot be used (changed under a version already applied), or None."""
    from sqlalchemy.exc import SQLAlchemyError

    from flows.stages import check_rules_version, rules_text
    from transforms.qualify import RulesError, rules_from_yaml
    from warehouse import db

    if settings.warehouse.url.startswith("sqlite") and not os.path.exists(
        settings.warehouse.url.split("///", 1)[-1]
    ):
        return None  # a new warehouse has applied nothing
    engine = db.make_engine(settings.warehouse.url)
    try:
        text, origin = rules_text(settings.rules)
        with engine.connect() as conn:
            check_rules_version(conn, rules_from_yaml(text, origin), text, origin)
    except RulesError as exc:
        return str(exc)
    except (SQLAlchemyError, OSError):  # unreachable, not upgraded, unreadable: the run says
        return None
    finally:
        engine.dispose()
    return None


def _rescore(settings: Settings, rules_path: str, apply: bool) -> int:
    """Re-score every lead under RULES: print what changes, write it only with --apply."""
    from flows.stages import (
        QualityGateError,
        check_rules_version,
        refresh_marts,
        rescore_leads,
        rules_sha,
        rules_text,
    )
    from transforms.qualify import RulesError, rules_from_yaml
    from warehouse import db, runs

    try:
        text, origin = rules_text(rules_path)
        rules = rules_from_yaml(text, origin)
    except (RulesError, OSError) as exc:
        msg = exc if isinstance(exc, RulesError) else f"{rules_path}: {exc.strerror}"
        print(f"leadflow: rebuild: {msg}", file=sys.stderr)
        return EXIT_CONFIG
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    run_id = f"run_{uuid.uuid4().hex[:20]}"
    try:
        with engine.connect() as conn:
            try:
                check_rules_version(conn, rules, text, origin)
            except RulesError as exc:
                print(f"leadflow: rebuild: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            conn.rollback()
            txn = conn.begin()
            try:
                plan = rescore_leads(conn, rules)
            except QualityGateError as exc:
                txn.rollback()
                print(f"leadflow: rebuild failed, nothing written: {exc}", file=sys.stderr)
                return 1
            clock = f"{plan.as_of:%Y-%m-%d %H:%M:%S} UTC" if plan.as_of else "no data yet"
            print(f"Re-scoring {plan.leads} leads with rules {plan.rules_version} as of {clock}:")
            print(f"  leads changing status: {plan.changed_leads}")
            for (old, new), n in sorted(plan.status_changes.items()):
                print(f"    {old} → {new}: {n}")
            print(f"  new conversions (opportunities): {plan.new_conversions}")
            print(f"  opportunity stages advanced: {plan.stage_advances}")
            print(
                f"  converted leads no longer Qualified (opportunity kept): "
                f"{plan.kept_opportunities}"
            )
            if not apply:
                txn.rollback()
                print("Nothing written; run again with --apply to apply these changes.")
                return 0
            stats = {
                "rules": rules_path,
                "rules_version": plan.rules_version,
                "leads": plan.leads,
                "status_changes": plan.changed_leads,
                "new_conversions": plan.new_conversions,
            }
            refresh_marts(conn, settings)
            runs.start_run(conn, run_id, "rescore", {"rules": rules_path})
            runs.record_applied_rules(
                conn,
                rules.version,
                rules_sha(text),
                text,
                os.path.abspath(rules_path),
                run_id,
                datetime.now(UTC),
            )
            runs.finish_run(conn, run_id, "succeeded", stats)
            txn.commit()
    finally:
        engine.dispose()
    print(f"Applied in one transaction (run {run_id}).")
    print(
        f"Rules {rules.version} are recorded in the warehouse: later runs and rebuilds score "
        "with them until another `rebuild --rules FILE --apply`."
    )
    return 0


def _print_quality(stats: dict[str, Any]) -> None:
    if stats.get("data_docs"):
        n = stats.get("dq_warnings", 0)
        print(
            f"data quality: {stats.get('dq_checks', 0)} checks, "
            f"{n} warning{'' if n == 1 else 's'}; Data Docs: {stats['data_docs']}"
        )
        for line in stats.get("dq_warning_names", []):
            print(f"  warning: {line}")


def _quarantine_state(settings: Settings, reason: str | None) -> tuple[list[str], int]:
    """Every reason a record was ever rejected for, and how many are quarantined for `reason`."""
    from warehouse import db, quarantine

    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    with engine.connect() as conn:
        codes = quarantine.reject_codes(conn)
        ids, not_replayable = quarantine.quarantined_raw_ids(conn, reason)
    engine.dispose()
    return codes, len(ids) + not_replayable


def _rejects(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_prefect_defaults()
    from warehouse import db, quarantine

    codes, quarantined = _quarantine_state(settings, args.reason)
    if args.reason and args.reason not in codes:
        print(
            f"leadflow: --reason {args.reason}: no record was ever rejected for this reason "
            f"(reasons seen: {', '.join(codes) or 'none yet'})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.action == "replay" and not quarantined:
        which = f" with reason {args.reason}" if args.reason else ""
        print(f"nothing to replay: no quarantined records{which}")
        return 0
    if args.action == "replay":
        from flows.pipeline import replay
        from flows.stages import QualityGateError

        _quiet_engine_errors()

        try:
            result = replay(config=args.config, reason=args.reason)
        except QualityGateError as exc:
            print(f"leadflow: replay failed, nothing published: {exc}", file=sys.stderr)
            return 1
        p = result["process"]
        print(
            f"replay {result['run_id']}: {p.get('replay_candidates', 0)} quarantined records "
            f"re-processed, {p.get('rejects_released', 0)} landed and left the quarantine; "
            f"{p.get('replay_reread_sources', 0)} sheet source(s) read again, "
            f"{p.get('replay_extract_closed', 0)} extraction rejects closed, "
            f"{p.get('replay_not_replayable', 0)} still open"
        )
        _print_quality(p)
        return 0
    if args.action == "dismiss":
        return _dismiss(args, settings)
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    with engine.connect() as conn:
        rows = quarantine.rejects(conn, args.reason, args.include_replayed)
    engine.dispose()
    if not rows:
        print("quarantine is empty" if not args.reason else f"no rejects with reason {args.reason}")
        return 0
    for r in rows:
        r["message"] = str(r["message"])[:80]
    cols = ["status", "code", "stage", "source", "source_record_id", "run_id", "message"]
    print(_table(rows, cols))
    print(f"{len(rows)} record(s)")
    return 0


COMMANDS["rejects"] = _rejects


def _dismiss(args: argparse.Namespace, settings: Settings) -> int:
    """Close the open rejects a person decides to drop, with who and why."""
    from warehouse import db, quarantine

    if not args.reason and not args.ids:
        print("leadflow: rejects dismiss: give --reason CODE or reject ids", file=sys.stderr)
        return EXIT_CONFIG
    if not (args.by or "").strip() or not (args.why or "").strip():
        print("leadflow: rejects dismiss: --by NAME and --why TEXT are required", file=sys.stderr)
        return EXIT_CONFIG
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    try:
        with engine.begin() as conn:
            n = quarantine.dismiss_rejects(
                conn,
                reason=args.reason,
                reject_ids=args.ids,
                by=args.by.strip(),
                why=args.why.strip(),
                now=datetime.now(UTC),
            )
    finally:
        engine.dispose()
    if n == 0:
        print("leadflow: rejects dismiss: no open reject matches", file=sys.stderr)
        return EXIT_CONFIG
    print(f"dismissed {n} reject(s) by {args.by.strip()}: {args.why.strip()}")
    return 0


def _sources(args: argparse.Namespace, settings: Settings) -> int:
    """What each file under PATH holds as a source reads it: per table the header row found,
    what each column maps to (and why), five sample values, and the warnings. Writes nothing."""
    import glob

    from flows.sources import inspect_files
    from transforms.columns import map_columns

    source = None
    if args.source:
        if args.source not in {s.name for s in settings.sources}:
            print(f"leadflow: --source: no source named {args.source!r}", file=sys.stderr)
            return EXIT_CONFIG
        source = settings.source(args.source)
    if not (os.path.exists(args.path) or glob.glob(args.path)):
        print(f"leadflow: sources inspect: no such file or folder: {args.path}", file=sys.stderr)
        return EXIT_CONFIG
    reports = inspect_files(args.path, source)
    if not reports:
        print(
            f"leadflow: sources inspect: no .csv, .xlsx or .json file in {args.path}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    explicit = dict(getattr(source, "columns", None) or {})
    blocks = []
    for report in reports:
        lines = [] if report.tables else [f"{report.file}: no table"]
        for shape in report.tables:
            rows = "1 row" if shape.data_rows == 1 else f"{shape.data_rows} rows"
            if not shape.header_row:  # a JSON export: its submissions' fields are the columns
                n = shape.data_rows
                lines.append(f"{shape.where}: {n} submission{'' if n == 1 else 's'}, fields:")
            elif shape.found:
                lines.append(f"{shape.where}: header row {shape.header_row}, {rows} under it")
            else:
                lines.append(
                    f"{shape.where}: no header row names a column leadflow knows; the likeliest, "
                    f"row {shape.header_row}, has {rows} under it"
                )
            cols = [
                {
                    "column": c.header,
                    "maps to": (
                        f"{c.field} ({'columns:' if c.by == 'columns' else c.by})"
                        if c.field
                        else f"- (seems {c.suggested})"
                        if c.suggested
                        else "-"
                    ),
                    "samples": " | ".join(v if len(v) <= 40 else v[:39] + "…" for v in c.samples),
                }
                for c in map_columns(shape.header, shape.samples, explicit)
            ]
            if cols:
                table = _table(cols, ["column", "maps to", "samples"])
                lines += [ln.rstrip() for ln in table.splitlines()]
        lines += [f"warning: {w.line()}" for w in report.warnings]
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


COMMANDS["sources"] = _sources


def _webhooks(args: argparse.Namespace, settings: Settings) -> int:
    return serve_webhooks(settings, args.host, args.port, args.sources)


COMMANDS["webhooks"] = _webhooks


def _console(args: argparse.Namespace, settings: Settings) -> int:
    """The steward console until Ctrl-C; refuses to start without a token."""
    _quiet_prefect_defaults()
    from console.auth import TokenError, read_token

    try:
        token = read_token(args.token_block)
    except TokenError as exc:
        print(f"leadflow: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from console.app import create_app
    from console.server import serve

    serve(create_app(settings, token, config_path=args.config), args.host, args.port)
    return 0


COMMANDS["console"] = _console


# Commands that open the warehouse: a URL that cannot be used is one line and exit 2 before they
# start (a dry run opens it read-only itself, and creates nothing).
WAREHOUSE_COMMANDS = {
    "run",
    "backfill",
    "rebuild",
    "status",
    "check",
    "forget",
    "db",
    "rejects",
    "model",
}
COMMANDS["model"] = models.model_command


def default_prefect_home(config: str | None) -> None:
    """Prefect's database and settings go beside the config file unless PREFECT_HOME is set.

    Prefect reads PREFECT_HOME when it is first imported, so this runs before any import of it.
    """
    folder = Path(config or "leadflow.yaml").resolve().parent
    os.environ.setdefault("PREFECT_HOME", str(folder / ".prefect"))


def _no_default_config() -> bool:
    from flows.settings import DEFAULT_CONFIG

    return not Path(DEFAULT_CONFIG).is_file()


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`leadflow status | head`): stop quietly, as cat or grep do. Later
        # writes (the interpreter's final flush) go nowhere instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    default_prefect_home(args.config)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        if not (args.command == "sources" and args.config is None and _no_default_config()):
            print(f"leadflow: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        settings = Settings()  # looking at files needs no config: the built-in aliases

    from flows import logmask
    from flows.errors import RunFailed
    from warehouse import db

    logmask.install(settings.logging.mask_personal_data)
    url = settings.warehouse.url
    try:
        if args.command in WAREHOUSE_COMMANDS and not getattr(args, "dry_run", False):
            db.check(url)
        return COMMANDS[args.command](args, settings)
    except db.WarehouseUnavailable as exc:
        print(f"leadflow: {logmask.mask(str(exc), False)}", file=sys.stderr)
        return EXIT_CONFIG
    except RunFailed as exc:
        print(f"leadflow: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        # The warehouse went away after the command started (a restart, a dropped connection).
        reason = logmask.mask(db.cause(exc), settings.logging.mask_personal_data)
        print(
            f"leadflow: {args.command} failed: the warehouse ({db.describe(url)}) failed: "
            f"{reason}; run it again once the warehouse is back",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
