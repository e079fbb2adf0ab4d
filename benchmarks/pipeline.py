"""End-to-end benchmark: N seeded raw contacts through the whole pipeline, against a bare COPY.

Prints one JSON line: seconds per stage, contacts/s, peak RSS, and, measured in the same run,
the seconds of a bare PostgreSQL COPY of the same raw rows (with the ratio between
landing+publishing and that COPY) and of Splink's own dedupe of the same contacts (with the
ratio of the whole pipeline to it).

    python benchmarks/pipeline.py --rows 1000000 [--warehouse URL] [--incremental 10000]
"""

from __future__ import annotations

import argparse
import csv
import json
import mailbox
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from multiprocessing import get_context
from pathlib import Path
from typing import Any

FIRST = [
    "İsmail",
    "Ayşe",
    "Jürgen",
    "Maria",
    "John",
    "Can",
    "Elif",
    "Hans",
    "Zeynep",
    "Emre",
    "Mehmet",
    "Fatma",
    "Klaus",
    "Sabine",
    "Peter",
    "Anna",
    "Ali",
    "Leyla",
    "Stefan",
    "Eva",
]
LAST = [
    "Işık",
    "Yılmaz",
    "Weiß",
    "Schneider",
    "Smith",
    "Öztürk",
    "Demir",
    "Müller",
    "Kaya",
    "Şahin",
    "Çelik",
    "Fischer",
    "Wagner",
    "Becker",
    "Arslan",
    "Koch",
    "Aydın",
    "Brown",
]
COMPANIES = [
    "Işık Tekstil A.Ş.",
    "Weiß Maschinenbau GmbH",
    "Acme Inc.",
    "Demir Lojistik Ltd. Şti.",
    "Schneider Logistik GmbH",
    "Öztürk İnşaat",
    "Globex LLC",
    "",
]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


_ASCII = str.maketrans("ıİşŞğĞüÜöÖçÇäÄß", "iIsSgGuUoOcCaAs")


def _person(rnd: random.Random, i: int) -> dict[str, Any]:
    f, last = rnd.choice(FIRST), rnd.choice(LAST)
    comp = rnd.choice(COMPANIES)
    domain = "gmail.com" if not comp else f"firm{i % 5000}.com.tr"
    return {
        "first": f,
        "last": last,
        "company": comp,
        "email": f"{f.translate(_ASCII).lower()}.{last.translate(_ASCII).lower()}.{i}@{domain}",
        "phone": f"+90 5{rnd.randint(30, 59)} {rnd.randint(100, 999)} {rnd.randint(1000, 9999)}",
        "budget": rnd.choice(["", "", "50.000 TL", "€20k", "$100,000"]),
        "timeline": rnd.choice(["", "", "3 months", "2 ay", "sofort"]),
        "message": rnd.choice(["", "Teklif istiyoruz", "Please send pricing", "Angebot bitte"]),
    }


def _variant(rnd: random.Random, p: dict[str, Any]) -> dict[str, Any]:
    v = dict(p)
    roll = rnd.random()
    if roll < 0.3:
        v["email"] = p["email"].upper()
    elif roll < 0.6:
        v["first"], v["last"] = p["first"].upper(), p["last"].upper()
    else:
        v["phone"] = p["phone"].replace("+90 ", "0")
    return v


SHEET_FIELDS = ("first", "last", "email", "phone", "company", "budget", "timeline", "message")


def _cells(p: dict[str, Any]) -> list[Any]:
    """One person as a sheet row, in the header's order."""
    return [p[k] for k in SHEET_FIELDS]


def generate(root: Path, n: int, seed: int = 42) -> dict[str, int]:
    """Write N raw contacts: ~85% CSV, 5% XLSX, 5% mbox, 5% JSON form exports; 30% duplicates."""
    rnd = random.Random(seed)
    uniques = int(n * 0.7)
    people = [_person(rnd, i) for i in range(uniques)]
    rows = people + [_variant(rnd, rnd.choice(people)) for _ in range(n - uniques)]
    rnd.shuffle(rows)
    counts = {"csv": 0, "xlsx": 0, "mbox": 0, "json": 0}
    base = datetime(2026, 10, 1, tzinfo=UTC)
    header = ["Vorname", "Nachname", "E-Mail", "Telefon", "Firma", "Budget", "Timeline", "Message"]
    csv_dir = root / "sheets"
    csv_dir.mkdir()
    per_file = 100_000
    cut = [int(n * 0.85), int(n * 0.90), int(n * 0.95)]
    for start in range(0, cut[0], per_file):
        with open(
            csv_dir / f"contacts_{start // per_file:03d}.csv", "w", newline="", encoding="utf-8"
        ) as fh:
            w = csv.writer(fh, delimiter=";")
            w.writerow(header)
            for p in rows[start : min(start + per_file, cut[0])]:
                w.writerow(_cells(p))
                counts["csv"] += 1
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Leads")
    ws.append(header)
    for p in rows[cut[0] : cut[1]]:
        ws.append(_cells(p))
        counts["xlsx"] += 1
    wb.save(csv_dir / "fair.xlsx")
    box = mailbox.mbox(str(root / "inbox.mbox"))
    box.lock()
    for k, p in enumerate(rows[cut[1] : cut[2]]):
        msg = EmailMessage()
        msg["From"] = formataddr((f"{p['first']} {p['last']}", p["email"]))
        msg["Subject"] = "Anfrage"
        msg["Date"] = format_datetime(base + timedelta(minutes=k))
        msg["Message-ID"] = f"<bench-{k}@example.com>"
        msg.set_content(f"{p['message']}\nTel: {p['phone']}")
        box.add(msg)
        counts["mbox"] += 1
    box.flush()
    box.unlock()
    box.close()
    subs = []
    for k, p in enumerate(rows[cut[2] :]):
        subs.append(
            {
                "id": f"wf-{k}",
                "submitted_at": (base + timedelta(seconds=k)).isoformat(),
                "fields": {
                    "first_name": p["first"],
                    "last_name": p["last"],
                    "email": p["email"],
                    "phone": p["phone"],
                    "company": p["company"],
                    "budget": p["budget"],
                    "timeline": p["timeline"],
                    "message": p["message"],
                },
            }
        )
        counts["json"] += 1
    (root / "forms.json").write_text(json.dumps({"submissions": subs}), encoding="utf-8")
    return counts


def _config(root: Path, url: str, chunk_size: int | None = None) -> Path:
    cfg = root / "leadflow.yaml"
    resolution = f"resolution:\n  chunk_size: {chunk_size}\n" if chunk_size else ""
    cfg.write_text(
        f"warehouse:\n  url: {url}\ndefault_region: TR\n{resolution}sources:\n"
        f"  - {{name: sheets, kind: spreadsheet, path: {root / 'sheets'}}}\n"
        f"  - {{name: inbox, kind: email, path: {root / 'inbox.mbox'}}}\n"
        f"  - {{name: forms, kind: webform, path: {root / 'forms.json'}}}\n",
        encoding="utf-8",
    )
    return cfg


def bare_copy_seconds(pg_url: str, folder: Path) -> float:
    """COPY the landed raw rows (same columns) into a fresh table: the floor a loader can reach.

    The rows are first copied out to a file in PostgreSQL's binary format (not timed); the timed
    part is that file streamed into `COPY … FROM STDIN`, so neither the driver's per-row
    encoding nor a list of a million rows held in this process (which would count in the peak
    RSS) is part of the floor."""
    import psycopg

    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    dump = folder / "raw_contacts.copy"
    cols = (
        "raw_id, source, source_kind, source_record_id, received_at, payload, content_hash, run_id"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur, open(dump, "wb") as fh:
            query = f"COPY (SELECT {cols} FROM raw_contacts) TO STDOUT (FORMAT binary)"  # noqa: S608
            with cur.copy(query) as cp:
                for block in cp:
                    fh.write(block)
        conn.execute("DROP TABLE IF EXISTS bench_bare_copy")
        conn.execute("CREATE TABLE bench_bare_copy (LIKE raw_contacts INCLUDING ALL)")
        t0 = time.perf_counter()
        with conn.cursor() as cur, open(dump, "rb") as fh:
            with cur.copy(f"COPY bench_bare_copy ({cols}) FROM STDIN (FORMAT binary)") as cp:
                while block := fh.read(1 << 20):
                    cp.write(block)
        secs = time.perf_counter() - t0
        conn.execute("DROP TABLE bench_bare_copy")
    dump.unlink()
    return secs


def splink_peer(url: str, folder: Path) -> dict[str, Any]:
    """Splink's own dedupe of the same contacts, in a process of its own: the matching columns
    the run stored (`contact_features`) exported to Parquet (not timed, in a child process too,
    so that the export does not count in the run's peak RSS), then Splink trains its usual
    model and predicts and clusters (`resolution_bench.run_splink`). Its seconds, peak RSS and
    how many clusters it found."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("fork")) as pool:
        contacts, leads = pool.submit(_export_features, url, folder / "features.parquet").result()
    bench = Path(__file__).with_name("resolution_bench.py")
    env = {**os.environ, "PYTHONPATH": str(bench.parents[1])}
    cmd = [sys.executable, str(bench), "--child", "splink", "--folder", str(folder)]
    out = subprocess.run(
        [*cmd, "--rows", str(contacts)], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"Splink failed:\n{out.stderr[-4000:]}")
    res = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    clusters = json.loads((folder / "splink_leads.json").read_text())
    res["contacts"] = contacts
    res["clusters"] = len(set(clusters.values()))
    res["leadflow_leads"] = leads
    return res


def _export_features(url: str, path: Path) -> tuple[int, int]:
    """The stored matching columns, ordered by contact id, to Parquet; (contacts, leads)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import create_engine, func, select

    from transforms.match import MATCH_SCHEMA
    from warehouse import schema as t

    eng = create_engine(url)
    f = t.contact_features
    with eng.connect() as conn:
        rows = conn.execute(select(*(f.c[n] for n in MATCH_SCHEMA.names)).order_by(f.c.contact_id))
        table = pa.Table.from_pylist([r._asdict() for r in rows], schema=MATCH_SCHEMA)
        leads = conn.execute(select(func.count()).select_from(t.leads)).scalar_one()
    eng.dispose()
    pq.write_table(table, path)
    return table.num_rows, leads


def _fresh_pg(admin_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    name = f"leadflow_bench_{uuid.uuid4().hex[:8]}"
    eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}", name


def _drop_pg(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def run_pipeline(cfg: Path) -> dict[str, Any]:
    from flows.pipeline import pipeline

    t0 = time.perf_counter()
    result = pipeline(config=str(cfg))
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument(
        "--warehouse", default=None, help="SQLAlchemy URL (default: a fresh PostgreSQL db)"
    )
    ap.add_argument("--incremental", type=int, default=0, help="then add this many new contacts")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and database")
    ap.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="resolution.chunk_size (default: the setting's)",
    )
    ap.add_argument(
        "--no-splink", action="store_true", help="skip Splink's dedupe of the same rows"
    )
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    root = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    dropname = None
    url = args.warehouse
    if url is None:
        url, dropname = _fresh_pg(DEFAULT_PG)
    try:
        t0 = time.perf_counter()
        # In a child process: the generator holds every row in memory, and the peak RSS reported
        # must be the pipeline's.
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("fork")) as pool:
            counts = pool.submit(generate, root, args.rows).result()
        gen_secs = time.perf_counter() - t0
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = run_pipeline(_config(root, url, args.chunk_size))
        after = resource.getrusage(resource.RUSAGE_SELF)
        proc = result.get("process", {})
        stages = dict(proc.get("timings", {}))
        extract = {
            k: round(v.get("extract_ms", 0) / 1000, 3)
            for k, v in result["sources"].items()
            if isinstance(v, dict)
        }
        out: dict[str, Any] = {
            "rows": args.rows,
            "by_kind": counts,
            "warehouse": url.split("://")[0],
            "generate_s": round(gen_secs, 2),
            "end_to_end_s": round(result["wall_seconds"], 2),
            # the run itself, as the flow timed it: without Prefect's engine and ephemeral API
            # starting in this process (a deployment's worker talks to a running server)
            "run_s": result.get("seconds", {}).get("total"),
            "contacts_per_s": round(args.rows / result["wall_seconds"]),
            "stages_s": stages,
            "extract_s": extract,
            "contacts": proc.get("contacts"),
            "chunks": proc.get("chunks"),
            "context_contacts": proc.get("context_contacts"),
            "rejects": proc.get("rejects"),
            "leads_touched": proc.get("leads_touched"),
            "opportunities": proc.get("opportunities_new"),
        }
        if url.startswith("postgresql"):
            copy_s = bare_copy_seconds(url, root)
            # Landing is timed together with reading the sources (extract_ms per source).
            land_publish = sum(extract.values()) + stages.get("publish", 0.0)
            out["bare_copy_s"] = round(copy_s, 2)
            out["extract_land_publish_over_copy"] = (
                round(land_publish / copy_s, 2) if copy_s else None
            )
        if not args.no_splink:
            peer = splink_peer(url, root)
            out["splink"] = peer
            e2e = result["wall_seconds"]
            out["end_to_end_over_splink_dedupe"] = round(e2e / peer["dedupe_s"], 2)
            out["end_to_end_over_splink_train_and_dedupe"] = round(
                e2e / (peer["train_s"] + peer["dedupe_s"]), 2
            )
        if args.incremental:
            inc = root / "sheets" / "zz_new.csv"
            rnd = random.Random(7)
            with open(inc, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, delimiter=";")
                w.writerow(["Vorname", "Nachname", "E-Mail", "Telefon"])
                for i in range(args.incremental):
                    p = _person(rnd, 10_000_000 + i)
                    w.writerow([p["first"], p["last"], p["email"], p["phone"]])
            inc_res = run_pipeline(root / "leadflow.yaml")
            out["incremental_rows"] = args.incremental
            out["incremental_s"] = round(inc_res["wall_seconds"], 2)
            out["incremental_run_s"] = inc_res.get("seconds", {}).get("total")
            out["incremental_stages_s"] = dict(inc_res.get("process", {}).get("timings", {}))
            out["incremental_over_full"] = round(
                inc_res["wall_seconds"] / result["wall_seconds"], 3
            )
        # The run's own peak, read when it ended: what this process does afterwards (the peers'
        # measurements, the incremental run) is reported beside it, not in it.
        out["peak_rss_mb"] = round(after.ru_maxrss / 1024)
        final = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_with_peers_mb"] = round(final / 1024)
        # CPU seconds of the full run in this process (PostgreSQL's own work not included): on a
        # shared machine the wall clock also counts the time spent waiting for a core.
        out["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
        out["load_avg_1m"] = round(os.getloadavg()[0], 1)
        print(json.dumps(out))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            if dropname:
                _drop_pg(DEFAULT_PG, dropname)


if __name__ == "__main__":
    main()
