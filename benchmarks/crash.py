"""Crash benchmark: `leadflow run` (the real CLI and Prefect flow) killed with SIGKILL, many times.

Each kill lands at a random moment of the pipeline's own work: the parent waits until the run has
written its `pipeline_runs` row (Prefect and the temporary API are up), then kills the run's whole
process group after a random share of the pipeline time a clean run measured. After every kill
the warehouse must hold no cursor ahead of its landed records and nothing counted twice; after
each episode's final complete run every table must equal the clean run's.

    PYTHONPATH=. .venv/bin/python benchmarks/crash.py --kills 20 [--warehouse postgresql]

Prints one JSON line: kills, where they struck (inferred from the warehouse), seconds, ok.
The fast variant of this check (forked runs of the stage functions, killed on entering each
stage) runs in `make test`: tests/flows/test_crash.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.crashkit import accounted, check_consistent, snapshot, write_sample  # noqa: E402

LEADFLOW = str(Path(sys.executable).with_name("leadflow"))


def _start(config: Path, url: str, prefect_home: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LEADFLOW_WAREHOUSE_URL": url,
        "PREFECT_HOME": prefect_home,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    # A session of its own: the temporary Prefect API runs as a child process, and a kill must
    # take it down with the run (as a crash of the machine would).
    return subprocess.Popen(
        [LEADFLOW, "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _run_started(url: str) -> bool:
    from sqlalchemy import inspect, text

    from warehouse import db

    engine = db.make_engine(url)
    try:
        if not inspect(engine).has_table("pipeline_runs"):
            return False
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("select count(*) from pipeline_runs where status = 'running'")
                ).scalar_one()
            )
    except Exception:  # the schema is being created right now
        return False
    finally:
        engine.dispose()


def _pipeline_seconds(url: str) -> float:
    from sqlalchemy import select

    from warehouse import db, load
    from warehouse.schema import pipeline_runs as runs

    engine = db.make_engine(url)
    with engine.connect() as conn:
        row = conn.execute(select(runs.c.started_at, runs.c.finished_at)).one()
    engine.dispose()
    return (load.utc(row.finished_at) - load.utc(row.started_at)).total_seconds()


def _where(url: str, sources: int) -> str:
    """Where the run was, judged from what it left."""
    from sqlalchemy import text

    from warehouse import db

    engine = db.make_engine(url)
    with engine.connect() as conn:
        cursors = conn.execute(text("select count(*) from source_cursors")).scalar_one()
        raw, done = accounted(url)
        runs = conn.execute(text("select status from pipeline_runs")).scalars().all()
    engine.dispose()
    if runs and runs[-1] == "succeeded":
        return "finished"
    if done == raw and raw:
        return "after publish"
    if cursors < sources:
        return "extract/land"
    return "normalize..publish (rolled back)"


def complete(config: Path, url: str, home: str) -> None:
    proc = _start(config, url, home)
    _, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"a complete run failed ({proc.returncode}): {err.decode()[-2000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--per-episode", type=int, default=4)
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--warehouse", choices=["sqlite", "postgresql"], default="sqlite")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="leadflow-crash-"))
    home = str(work / "prefect")
    config = write_sample(work, rows=args.rows)
    sources = config.read_text().count("  - name:")
    t0 = time.monotonic()
    n = 0
    with ExitStack() as stack:

        def fresh() -> str:
            nonlocal n
            n += 1
            if args.warehouse == "sqlite":
                return f"sqlite:///{work / f'w{n}.db'}"
            from tests.conftest import pg_database

            return stack.enter_context(pg_database())

        clean = fresh()
        complete(config, clean, home)
        expected = snapshot(clean)
        span = _pipeline_seconds(clean)
        kills: list[dict[str, object]] = []
        while len(kills) < args.kills:
            url = fresh()
            for _ in range(min(args.per_episode, args.kills - len(kills))):
                proc = _start(config, url, home)
                while proc.poll() is None and not _run_started(url):
                    time.sleep(0.05)
                delay = rng.uniform(0, span * 1.1)
                time.sleep(delay)
                if proc.poll() is not None:
                    continue  # it finished first: not a kill
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                problems = check_consistent(config, url)
                kills.append({"delay": round(delay, 2), "where": _where(url, sources)})
                if problems:
                    print(json.dumps({"ok": False, "after": kills[-1], "problems": problems}))
                    return 1
            complete(config, url, home)
            raw, done = accounted(url)
            got = snapshot(url)
            bad = [t for t in expected if got[t] != expected[t]]
            if bad or raw != done or check_consistent(config, url):
                print(json.dumps({"ok": False, "differs": bad, "raw": raw, "processed": done}))
                return 1
    where = Counter(str(k["where"]) for k in kills)
    print(
        json.dumps(
            {
                "ok": True,
                "warehouse": args.warehouse,
                "kills": len(kills),
                "where": dict(where),
                "pipeline_seconds": round(span, 2),
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
