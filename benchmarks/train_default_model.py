"""Train the model leadflow ships (`transforms/match_model.json`) on generated contacts: CRM
contacts with names, mailboxes, phones, companies and addresses (`resolution_data`), and person
registers with names, addresses and birth dates only (`person_register`), half and half.

    PYTHONPATH=. .venv/bin/python benchmarks/train_default_model.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from person_register import iter_register  # noqa: E402
from resolution_data import generate  # noqa: E402

from transforms.match import match_table  # noqa: E402
from transforms.normalize import NormalizeOptions, normalize_batch  # noqa: E402
from transforms.records import Contact, RawRow  # noqa: E402
from transforms.scoring import train  # noqa: E402


def register_contacts(n: int, seed: int, prefix: str = "reg") -> list[Contact]:
    """Person-register rows through the pipeline's own normalizer, as a sheet would land."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        RawRow(f"raw_{prefix}{i}", "register", "spreadsheet", f"{prefix}{i}", at, dict(row))
        for i, (_, row) in enumerate(iter_register(n, seed))
    ]
    opts = NormalizeOptions(default_region="DE", internal_domains=frozenset(), columns={})
    contacts, _ = normalize_batch(rows, opts)
    return contacts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "transforms" / "match_model.json")
    ap.add_argument("--version", default="default-2026.12.06")
    args = ap.parse_args()
    t0 = time.perf_counter()
    crm, _ = generate(args.rows // 2, seed=args.seed)
    register = register_contacts(args.rows - len(crm), args.seed)
    table = pa.concat_tables([match_table(crm), match_table(register)])
    t1 = time.perf_counter()
    spec, stats = train(table, seed=args.seed)
    t2 = time.perf_counter()
    shipped = {
        "version": args.version,
        "trained_on": f"{table.num_rows} generated contacts (benchmarks/train_default_model.py "
        f"--rows {args.rows} --seed {args.seed})",
        "stats": stats.as_dict(),
        "model": spec,
    }
    args.out.write_text(json.dumps(shipped, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {
                "rows": table.num_rows,
                "data_s": round(t1 - t0, 1),
                "train_s": round(t2 - t1, 1),
                **stats.as_dict(),
            }
        )
    )


if __name__ == "__main__":
    main()
