"""The `leadflow` command line: run, backfill, status, database upgrades and the webhook receiver."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from typing import Any

from flows.settings import ConfigError, Settings, load_settings

EXIT_CONFIG = 2


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadflow", description=__doc__)
    p.add_argument("--config", default=None, help="config file (default ./leadflow.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline once")
    run.add_argument("--config", default=argparse.SUPPRESS)
    run.add_argument("--source", action="append", dest="sources", help="only this source")
    run.add_argument("--dry-run", action="store_true", help="extract and count, write nothing")
    bf = sub.add_parser("backfill", help="re-extract a date window without moving cursors")
    bf.add_argument("--config", default=argparse.SUPPRESS)
    bf.add_argument("--start", type=_date, required=True)
    bf.add_argument("--end", type=_date, required=True)
    bf.add_argument("--source", action="append", dest="sources")
    st = sub.add_parser("status", help="last runs and table counts")
    st.add_argument("--config", default=argparse.SUPPRESS)
    dbp = sub.add_parser("db", help="warehouse schema")
    dbp.add_argument("--config", default=argparse.SUPPRESS)
    dbp.add_argument("action", choices=["upgrade"])
    wh = sub.add_parser("webhooks", help="receive pushed form submissions into spools")
    wh.add_argument("--config", default=argparse.SUPPRESS)
    wh.add_argument("action", choices=["serve"])
    wh.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    wh.add_argument("--port", type=int, default=8787)
    wh.add_argument("--source", action="append", dest="sources", help="only this source")
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


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join([line, "  ".join("-" * widths[c] for c in cols), *body])


def print_funnel(settings: Settings) -> None:
    from warehouse import db, store

    engine = db.make_engine(settings.warehouse.url)
    with engine.connect() as conn:
        rows = store.funnel(conn)
    engine.dispose()
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


def _status(settings: Settings) -> None:
    from warehouse import db, store

    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    with engine.connect() as conn:
        runs = store.recent_runs(conn)
        counts = store.table_counts(conn)
    engine.dispose()
    print("Recent runs:")
    if runs:
        print(_table(runs, ["run_id", "flow", "status", "started_at", "finished_at", "error"]))
    else:
        print("  (none yet)")
    print("\nTables:")
    print(_table([{"table": k, "rows": v} for k, v in counts.items()], ["table", "rows"]))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"leadflow: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "status":
        _status(settings)
        return 0
    if args.command == "webhooks":
        return serve_webhooks(settings, args.host, args.port, args.sources)
    if args.command == "db":
        from warehouse import db

        engine = db.make_engine(settings.warehouse.url)
        db.upgrade(engine)
        engine.dispose()
        print("warehouse schema is at", ", ".join(sorted(db.head_revisions())))
        return 0
    _quiet_prefect_defaults()
    from flows.pipeline import pipeline
    from flows.stages import QualityGateError

    start = getattr(args, "start", None)
    end = getattr(args, "end", None)
    if start and end and start >= end:
        print("leadflow: backfill: --start must be before --end", file=sys.stderr)
        return EXIT_CONFIG
    unknown = sorted(set(args.sources or []) - {s.name for s in settings.sources})
    if unknown:
        print(f"leadflow: --source: no source named {unknown[0]!r}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result = pipeline(
            config=args.config,
            start=start,
            end=end,
            sources=args.sources,
            dry_run=getattr(args, "dry_run", False),
        )
    except QualityGateError as exc:
        print(f"leadflow: run failed, nothing published: {exc}", file=sys.stderr)
        return 1
    print(f"run {result['run_id']} succeeded")
    for name, s in result["sources"].items():
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(s.items())))
    print_funnel(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
