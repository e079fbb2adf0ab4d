"""Prints how fast raw records normalize into contacts (one JSON line), on seeded synthetic rows."""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    rows = synthetic_rows(args.rows)
    t0 = time.perf_counter()
    contacts, rejects = normalize_batch(rows, NormalizeOptions(default_region="TR"))
    secs = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rows": len(rows),
                "contacts": len(contacts),
                "rejects": len(rejects),
                "seconds": round(secs, 3),
                "rows_per_s": round(len(rows) / secs),
            }
        )
    )


if __name__ == "__main__":
    main()
