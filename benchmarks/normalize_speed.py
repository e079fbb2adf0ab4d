"""Prints how fast raw records normalize into contacts (one JSON line), on seeded synthetic rows.

    python benchmarks/normalize_speed.py [--rows 100000] [--shape names|pipeline]

`names`: mostly distinct emails and phones, non-ASCII names (every email goes through
email_validator). `pipeline`: the rows benchmarks/pipeline.py writes into its sheets (70% people,
30% variants of them), as the sheet connector hands them over. Prints wall and CPU seconds of
normalize_batch and of the matching columns (match_table), and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime

from transforms.match import match_table
from transforms.normalize import NormalizeOptions, normalize_batch
from transforms.records import RawRow, raw_id_for

FIRST = ["İsmail", "Ayşe", "Jürgen", "Maria", "John", "Can", "Elif", "Hans", "Zeynep", "Emre"]
LAST = ["Işık", "Yılmaz", "Weiß", "Schneider", "Smith", "Öztürk", "Demir", "Müller", "Kaya"]


def synthetic_rows(n: int, seed: int = 7) -> list[RawRow]:
    rnd = random.Random(seed)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        f, last = rnd.choice(FIRST), rnd.choice(LAST)
        payload = {
            "Name": f"{f} {last}",
            "E-Mail": f"{f.lower()}.{last.lower()}{rnd.randint(1, n // 3 + 1)}@example.com",
            "Telefon": f"0532 {rnd.randint(100, 999)} {rnd.randint(10, 99)} {rnd.randint(10, 99)}",
            "Firma": rnd.choice(["Işık Tekstil A.Ş.", "Weiß GmbH", "Acme Inc.", ""]),
            "Land": rnd.choice(["Türkiye", "Deutschland", "USA"]),
        }
        sid = f"bench:{i}"
        rows.append(RawRow(raw_id_for("bench", sid), "bench", "spreadsheet", sid, now, payload))
    return rows


def pipeline_rows(n: int, seed: int = 42) -> list[RawRow]:
    """The sheet rows of benchmarks/pipeline.py's generator (its people and their variants)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pipeline import SHEET_FIELDS, _person, _variant

    header = ["Vorname", "Nachname", "E-Mail", "Telefon", "Firma", "Budget", "Timeline", "Message"]
    rnd = random.Random(seed)
    uniques = int(n * 0.7)
    people = [_person(rnd, i) for i in range(uniques)]
    people += [_variant(rnd, rnd.choice(people)) for _ in range(n - uniques)]
    rnd.shuffle(people)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for i, p in enumerate(people):
        sid = f"sheet:{i}"
        payload = dict(zip(header, (p[k] for k in SHEET_FIELDS), strict=True))
        rows.append(RawRow(raw_id_for("sheet", sid), "sheet", "spreadsheet", sid, now, payload))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--shape", choices=("names", "pipeline"), default="names")
    args = ap.parse_args()
    rows = synthetic_rows(args.rows) if args.shape == "names" else pipeline_rows(args.rows)
    t0, c0 = time.perf_counter(), time.process_time()
    contacts, rejects = normalize_batch(rows, NormalizeOptions(default_region="TR"))
    t1, c1 = time.perf_counter(), time.process_time()
    match_table(contacts)
    t2, c2 = time.perf_counter(), time.process_time()
    print(
        json.dumps(
            {
                "rows": len(rows),
                "shape": args.shape,
                "contacts": len(contacts),
                "rejects": len(rejects),
                "seconds": round(t1 - t0, 3),
                "cpu_s": round(c1 - c0, 3),
                "rows_per_s": round(len(rows) / (t1 - t0)),
                "match_table_s": round(t2 - t1, 3),
                "match_table_cpu_s": round(c2 - c1, 3),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
