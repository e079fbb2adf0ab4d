"""The `leadflow` command line: run, backfill, status, the quarantine and database upgrades."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
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
    rb = sub.add_parser("rebuild", help="re-score every lead under a rules file")
    rb.add_argument("--config", default=argparse.SUPPRESS)
    rb.add_argument("--rules", metavar="FILE", help="qualification rules to re-score with")
    rb.add_argument("--apply", action="store_true", help="write the changes (default: show them)")
    dbp = sub.add_parser("db", help="warehouse schema")
    dbp.add_argument("--config", default=argparse.SUPPRESS)
    dbp.add_argument("action", choices=["upgrade", "grant-bi-reader"])
    dbp.add_argument(
        "--role", default="bi_reader", help="grant-bi-reader: the role to create (PostgreSQL)"
    )
    rj = sub.add_parser("rejects", help="the quarantine: list or replay rejected records")
    rj.add_argument("--config", default=argparse.SUPPRESS)
    rj.add_argument("action", choices=["list", "replay"])
    rj.add_argument("--reason", default=None, help="only records rejected with this code")
    rj.add_argument(
        "--all", action="store_true", dest="include_replayed", help="list: also replayed ones"
    )
    return p


def _quiet_prefect_defaults() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # A busy machine can miss the temporary API's default start-up limit.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


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


def _rescore(settings: Settings, rules_path: str, apply: bool) -> int:
    """Re-score every lead under RULES: print what changes, write it only with --apply."""
    from flows.stages import QualityGateError, load_rules, rescore_leads
    from transforms.qualify import RulesError
    from warehouse import db, store

    try:
        rules = load_rules(rules_path)
    except (RulesError, OSError) as exc:
        msg = exc if isinstance(exc, RulesError) else f"{rules_path}: {exc.strerror}"
        print(f"leadflow: rebuild: {msg}", file=sys.stderr)
        return EXIT_CONFIG
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    run_id = f"run_{uuid.uuid4().hex[:20]}"
    try:
        with engine.connect() as conn:
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
            store.start_run(conn, run_id, "rescore", {"rules": rules_path})
            store.finish_run(conn, run_id, "succeeded", stats)
            txn.commit()
    finally:
        engine.dispose()
    print(f"Applied in one transaction (run {run_id}).")
    if os.path.abspath(rules_path) != os.path.abspath(settings.rules or ""):
        print(
            f"Note: later runs score with {settings.rules or 'the default rules'}; point "
            "`rules:` in the config at this file to keep these results."
        )
    return 0


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
    if args.command == "rebuild" and args.rules:
        return _rescore(settings, args.rules, args.apply)
    if args.command == "rebuild":
        print("leadflow: rebuild: --rules FILE is required", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "db":
        return _db(settings, args.action, args.role)
    _quiet_prefect_defaults()
    if args.command == "rejects":
        return _rejects(settings, args)
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
    _print_quality(result.get("process", {}))
    print_funnel(settings)
    return 0


def _print_quality(stats: dict[str, Any]) -> None:
    if stats.get("data_docs"):
        print(
            f"data quality: {stats.get('dq_checks', 0)} checks, "
            f"{stats.get('dq_warnings', 0)} warnings; Data Docs: {stats['data_docs']}"
        )


def _db(settings: Settings, action: str, role: str) -> int:
    from warehouse import access, db

    engine = db.make_engine(settings.warehouse.url)
    try:
        db.upgrade(engine)
        if action == "upgrade":
            print("warehouse schema is at", ", ".join(sorted(db.head_revisions())))
            return 0
        try:
            with engine.begin() as conn:
                views = access.grant_bi_reader(conn, role)
        except ValueError as exc:
            print(f"leadflow: db grant-bi-reader: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"role {role} may select: {', '.join(views) or '(no mart_* views yet)'}")
        return 0
    finally:
        engine.dispose()


def _rejects(settings: Settings, args: argparse.Namespace) -> int:
    from warehouse import db, store

    if args.action == "replay":
        from flows.pipeline import replay
        from flows.stages import QualityGateError

        try:
            result = replay(config=args.config, reason=args.reason)
        except QualityGateError as exc:
            print(f"leadflow: replay failed, nothing published: {exc}", file=sys.stderr)
            return 1
        p = result["process"]
        print(
            f"replay {result['run_id']}: {p.get('replay_candidates', 0)} quarantined records "
            f"re-processed, {p.get('rejects_released', 0)} landed and left the quarantine, "
            f"{p.get('replay_not_replayable', 0)} extraction rejects need a backfill of their source"
        )
        _print_quality(p)
        return 0
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    with engine.connect() as conn:
        rows = store.quarantine(conn, args.reason, args.include_replayed)
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


if __name__ == "__main__":
    sys.exit(main())
