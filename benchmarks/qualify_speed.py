"""Prints how fast leads are scored and converted by the default rules (one JSON line), on seeded synthetic leads."""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime, timedelta

from flows.stages import collector_paused, load_rules
from transforms.qualify import qualify_leads
from transforms.records import Contact, Lead

MESSAGES = [
    "Bitte ein Angebot für 20 Stapler",
    "Fiyat teklifi bekliyoruz",
    "We want a demo and pricing",
    "Just browsing",
    "",
]
TITLES = ["CEO", "Genel Müdür", "Einkaufsleiter", "Engineer", "", "Satın Alma Uzmanı"]


def synthetic(n: int, seed: int = 7) -> tuple[list[Lead], dict[str, list[Contact]]]:
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    leads, members = [], {}
    for i in range(n):
        seen = start + timedelta(hours=rnd.randint(0, 7000))
        free = rnd.random() < 0.3
        email = f"p{i}@{'gmail.com' if free else f'firm{i % 997}.com'}"
        contacts = [
            Contact(
                contact_id=f"con_{i}_{k}",
                raw_id=f"raw_{i}_{k}",
                source=rnd.choice(["web", "mail", "fair"]),
                source_kind="webform",
                received_at=seen + timedelta(days=k),
                email=email,
                email_key=email,
                email_is_free=free,
                company=None if free else f"Firm {i % 997}",
                job_title=rnd.choice(TITLES) or None,
                message=rnd.choice(MESSAGES) or None,
                budget_amount=rnd.choice([None, 5_000.0, 80_000.0]),
                budget_currency="EUR",
                timeline_months=rnd.choice([None, 1, 3, 12]),
            )
            for k in range(rnd.randint(1, 3))
        ]
        lead = Lead(
            f"lead_{i}", None, None, None, email, None, contacts[0].company, None, None, None,
            None, None, None, contacts[0].source, contacts[0].received_at,
            contacts[-1].received_at, len(contacts), len({c.source for c in contacts}),
        )  # fmt: skip
        leads.append(lead)
        members[lead.lead_id] = contacts
    return leads, members


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--leads", type=int, default=50_000)
    args = ap.parse_args()
    leads, members = synthetic(args.leads)
    rules = load_rules(None)
    as_of = max(ld.last_seen_at for ld in leads)
    t0 = time.perf_counter()
    with collector_paused():  # as the pipeline scores a chunk
        res = qualify_leads(leads, members, rules, as_of)
    secs = time.perf_counter() - t0
    out = {
        "leads": len(leads),
        "seconds": round(secs, 3),
        "leads_per_s": round(len(leads) / secs),
        "qualified": sum(q.status == "Qualified" for q in res.qualifications),
        "opportunities": len(res.opportunities),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
