"""Operations benchmark: live landing vs a repeated backfill, lock round trips, rebuild and forget.

Prints one JSON line. Runs the stage functions directly (no Prefect), on a fresh SQLite file or
the warehouse URL given.

    python benchmarks/operations.py --rows 100000 [--files 10] [--warehouse URL]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from flows import locking, stages
from flows.cli import forget
from flows.settings import load_settings
from warehouse import db


def generate(folder: Path, rows: int, files: int) -> None:
    folder.mkdir(parents=True)
    per = rows // files
    for f in range(files):
        lines = ["Name;Email;Phone;Company;Country"]
        lines += [
            f"Person{f}x{i} Test;p{f}x{i}@firm{i % 997}.com.tr;+90532{f:02d}{i:05d};Firm {i % 997};TR"
            for i in range(per)
        ]
        (folder / f"sheet_{f:03d}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--warehouse", default=None)
    ap.add_argument("--rebuild", action="store_true", help="also time process and rebuild")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="leadflow-ops-bench-"))
    try:
        generate(root / "sheets", args.rows, args.files)
        url = args.warehouse or f"sqlite:///{root / 'w.db'}"
        cfg = root / "leadflow.yaml"
        cfg.write_text(
            f"warehouse:\n  url: {url}\nsources:\n"
            "  - name: sheets\n    kind: spreadsheet\n    path: sheets\n",
            encoding="utf-8",
        )
        settings = load_settings(cfg)
        source = settings.source("sheets")
        engine = db.make_engine(url)
        db.upgrade(engine)
        live, live_s = timed(lambda: stages.extract_and_land(engine, source, "run_live"))
        window = (date(2000, 1, 1), date(2100, 1, 1))
        again, again_s = timed(lambda: stages.extract_and_land(engine, source, "run_bf", *window))
        t0 = time.perf_counter()
        n_locks = 200
        for i in range(n_locks):
            with locking.hold(engine, "source:bench", f"run_{i}"):
                pass
        lock_ms = round((time.perf_counter() - t0) / n_locks * 1000, 2)
        out: dict[str, Any] = {
            "rows": args.rows,
            "warehouse": url.split(":")[0],
            "land_live_s": live_s,
            "land_rows_per_s": round(live.landed / live_s) if live_s else None,
            "backfill_all_already_landed_s": again_s,
            "backfill_reconciled": again.reconciled,
            "lock_round_trip_ms": lock_ms,
        }
        if args.rebuild:
            _, out["process_s"] = timed(lambda: stages.process_pending(engine, settings, "run_p"))
            _, out["rebuild_s"] = timed(
                lambda: stages.process_pending(engine, settings, "run_rb", rebuild=True)
            )
            _, out["forget_one_s"] = timed(lambda: forget(settings, "p0x1@firm1.com.tr"))
        engine.dispose()
        print(json.dumps(out))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
