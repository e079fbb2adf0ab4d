"""Prints how fast the connectors read (one JSON line per measurement).

    python benchmarks/read_speed.py csv  [--rows 1000000]
    python benchmarks/read_speed.py imap [--messages 10000] [--batch-size 50 200 1000]

`csv`: a generated CSV (10 columns, UTF-8, comma) read through the spreadsheet connector,
the way a run reads it (header detection, row ids, raw records). `imap`: messages appended
to a local dovecot (started and stopped here), then read through the IMAP connector in
batches from an empty cursor: messages/s, batches and round trips per batch size, for the
connector (which parses each message) and for the wire alone (`imap_fetch_raw`).
"""

from __future__ import annotations

import argparse
import csv
import imaplib
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.email import MailOptions  # noqa: E402
from connectors.imap import ImapConfig, ImapSession, connect, iter_imap  # noqa: E402
from connectors.spreadsheet import iter_spreadsheet  # noqa: E402
from transforms.fields import header_scorer  # noqa: E402

FIRST = ["İsmail", "Ayşe", "Jürgen", "Maria", "John", "Can", "Elif", "Hans", "Zeynep", "Emre"]
LAST = ["Işık", "Yılmaz", "Weiß", "Schneider", "Smith", "Öztürk", "Demir", "Müller", "Kaya"]
HEADER = [
    "Ad Soyad",
    "E-posta",
    "Telefon",
    "Firma",
    "Unvan",
    "Şehir",
    "Ülke",
    "Kaynak",
    "Not",
    "Tarih",
]


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(rows):
            f, last = rnd.choice(FIRST), rnd.choice(LAST)
            w.writerow(
                [
                    f"{f} {last}",
                    f"{f.lower()}.{last.lower()}{i}@example.com",
                    f"0532 {rnd.randint(100, 999)} {rnd.randint(10, 99)} {rnd.randint(10, 99)}",
                    rnd.choice(["Işık Tekstil A.Ş.", "Weiß GmbH", "Acme, Inc.", ""]),
                    rnd.choice(["Satın Alma Müdürü", "CEO", "Einkauf", ""]),
                    rnd.choice(["İstanbul", "İzmir", "Berlin", "London"]),
                    rnd.choice(["Türkiye", "Deutschland", "UK"]),
                    "fuar 2026",
                    rnd.choice(["", "katalog istiyor", 'said "call me"\nnext week']),
                    f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                ]
            )


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def bench_csv(rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="leadflow-read-") as tmp:
        path = Path(tmp) / "contacts.csv"
        t0 = time.perf_counter()
        write_csv(path, rows)
        gen = time.perf_counter() - t0
        # A scheduled run finds files written long before; one written a moment ago would first
        # wait out the connector's settle time (a file still being written is not read).
        settled = time.time() - 60
        os.utime(path, (settled, settled))
        t0, c0 = time.perf_counter(), time.process_time()
        records = rejects = 0
        for batch in iter_spreadsheet("bench", str(path), None, score=header_scorer({})):
            records += len(batch.records)
            rejects += len(batch.rejects)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = path.stat().st_size
    return {
        "measure": "csv_read",
        "rows": rows,
        "records": records,
        "rejects": rejects,
        "file_mb": round(size / 1e6, 1),
        "seconds": round(secs, 3),
        "rows_per_s": round(records / secs),
        "cpu_seconds": round(cpu, 3),  # the machine is shared: CPU time is the steadier number
        "rows_per_cpu_s": round(records / cpu),
        "target_rows_per_s": 200_000,
        "load_1min": round(os.getloadavg()[0], 2),
        "generate_seconds": round(gen, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def message(n: int) -> bytes:
    rnd = random.Random(n)
    f, last = rnd.choice(FIRST), rnd.choice(LAST)
    body = (
        f"Merhaba,\r\n\r\n{rnd.randint(2, 90)} adet sensör için fiyat teklifi rica ediyoruz.\r\n\r\n"
        f"Saygılarımla,\r\n{f} {last}\r\nSatın Alma Müdürü\r\n{last} Makina A.Ş.\r\n"
        f"Tel: 0532 {rnd.randint(100, 999)} {rnd.randint(10, 99)} {rnd.randint(10, 99)}\r\n"
    )
    return (
        f"From: {f} {last} <buyer{n}@example.com.tr>\r\nTo: sales@ourcompany.com\r\n"
        f"Subject: Teklif {n}\r\nDate: Tue, 10 Mar 2026 10:00:00 +0000\r\n"
        f"Message-ID: <bench-{n}@example.com.tr>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{body}"
    ).encode()


def bench_imap(messages: int, batch_sizes: list[int]) -> list[dict[str, Any]]:
    from tests.connectors.dovecot import PASSWORD, running_dovecot

    out: list[dict[str, Any]] = []
    with running_dovecot() as server:
        user = server.new_user()
        conn = server.login(user)
        t0 = time.perf_counter()
        for n in range(messages):
            typ, data = conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), message(n))
            assert typ == "OK", data
        conn.logout()
        append_secs = time.perf_counter() - t0
        out.append(
            {
                "measure": "imap_append",
                "messages": messages,
                "seconds": round(append_secs, 3),
                "messages_per_s": round(messages / append_secs),
            }
        )
        cfg = ImapConfig("127.0.0.1", server.port, "none", user, PASSWORD)
        # the wire alone: SEARCH, then FETCH of sizes and bodies per batch, nothing parsed
        for size in batch_sizes:
            t0 = time.perf_counter()
            session = ImapSession(lambda: connect(cfg), "INBOX")
            uids = session.search("UID", "1:*")
            fetched = 0
            for i in range(0, len(uids), size):
                chunk = uids[i : i + size]
                session.sizes(chunk)
                fetched += len(session.fetch(chunk))
            session.close()
            secs = time.perf_counter() - t0
            out.append(
                {
                    "measure": "imap_fetch_raw",
                    "messages": fetched,
                    "batch_size": size,
                    "round_trips": session.round_trips,
                    "seconds": round(secs, 3),
                    "messages_per_s": round(fetched / secs),
                }
            )
        for size in batch_sizes:
            sessions: list[ImapSession] = []

            def open_session(sessions: list[ImapSession] = sessions) -> ImapSession:
                sessions.append(ImapSession(lambda: connect(cfg), "INBOX"))
                return sessions[-1]

            t0 = time.perf_counter()
            records = batches = 0
            for batch in iter_imap("bench", open_session, None, MailOptions(), batch_size=size):
                records += len(batch.records)
                batches += 1
            secs = time.perf_counter() - t0
            out.append(
                {
                    "measure": "imap_fetch",
                    "messages": messages,
                    "records": records,
                    "batch_size": size,
                    "batches": batches,
                    "round_trips": sessions[0].round_trips,
                    "reconnects": sessions[0].reconnects,
                    "seconds": round(secs, 3),
                    "messages_per_s": round(records / secs),
                    "peak_rss_mb": peak_rss_mb(),
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("csv")
    c.add_argument("--rows", type=int, default=1_000_000)
    i = sub.add_parser("imap")
    i.add_argument("--messages", type=int, default=10_000)
    i.add_argument("--batch-size", type=int, nargs="+", default=[50, 200, 1000])
    args = ap.parse_args()
    results = (
        [bench_csv(args.rows)] if args.what == "csv" else bench_imap(args.messages, args.batch_size)
    )
    for line in results:
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
