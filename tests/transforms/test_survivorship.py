"""Survivorship: every golden field comes from a contact that holds it, group by group."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from transforms.records import Contact
from transforms.resolve import GOLDEN_FIELDS, SURVIVORSHIP, golden_record

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def c(n: int, kind: str = "spreadsheet", **kw: Any) -> Contact:
    return Contact(
        contact_id=f"con_{n}",
        raw_id=f"raw_{n}",
        source=kind,
        source_kind=kind,
        received_at=T0 + timedelta(hours=n),
        **kw,
    )


# (group's fields, contacts, the golden values expected, who supplied them)
CASES: list[tuple[str, list[Contact], dict[str, Any], dict[str, str]]] = [
    (
        "name: a contact with only a full name still names the lead",
        [c(1, full_name="Hans Müller"), c(2, email="h@x.de")],
        {"full_name": "Hans Müller", "first_name": None},
        {"full_name": "con_1"},
    ),
    (
        "name: first/last from one contact, full name from another that agrees",
        [
            c(1, first_name="Hans", last_name="Müller"),
            c(2, first_name="Hans", last_name="Müller"),
            c(3, first_name="Hans", full_name="Hans Müller"),
        ],
        {"first_name": "Hans", "last_name": "Müller", "full_name": "Hans Müller"},
        {"first_name": "con_3", "last_name": "con_2", "full_name": "con_3"},
    ),
    (
        "email: the most recent person address, a role mailbox only if nothing else",
        [c(1, email="hans@x.de"), c(2, email="info@x.de", email_is_role=True)],
        {"email": "hans@x.de"},
        {"email": "con_1"},
    ),
    (
        "phone: the most frequent",
        [c(1, phone="+491711"), c(2, phone="+491711"), c(3, phone="+491722")],
        {"phone": "+491711"},
        {"phone": "con_2"},
    ),
    (
        "company: a domain only known from an email still survives with the company",
        [
            c(1, "webform", company_domain="mueller.de"),
            c(2, company="Müller KG", company_key="muller"),
        ],
        {"company": "Müller KG", "company_key": "muller", "company_domain": "mueller.de"},
        {"company": "con_2", "company_key": "con_2", "company_domain": "con_1"},
    ),
    (
        "job title: the most recent",
        [c(1, job_title="Inhaber"), c(2, job_title="CEO"), c(3)],
        {"job_title": "CEO"},
        {"job_title": "con_2"},
    ),
    (
        "address: two contacts agree on the country and neither names a city (Hans Müller)",
        [c(1, country="DE", phone="+491711"), c(2, country="DE", company="Müller & Söhne KG")],
        {"country": "DE", "city": None, "postal_code": None},
        {"country": "con_2"},
    ),
    (
        "address: a city from the best contact, the country from another that agrees",
        [c(1, "webform", city="Berlin"), c(2, city="Berlin", country="DE")],
        {"city": "Berlin", "country": "DE"},
        {"city": "con_1", "country": "con_2"},
    ),
    (
        "address: a contradicting contact supplies nothing (no Wien under Germany)",
        [
            c(1, "webform", country="DE"),
            c(2, city="Wien", postal_code="1010", country="AT"),
            c(3, "email", postal_code="10115", country="DE"),
        ],
        {"country": "DE", "city": None, "postal_code": "10115"},
        {"country": "con_1", "postal_code": "con_3"},
    ),
]


def test_every_group_is_covered() -> None:
    covered = {f for _, _, want, _ in CASES for f in want}
    assert covered == set(GOLDEN_FIELDS)
    assert {fields for fields, _ in SURVIVORSHIP} == {
        tuple(f for f in fields) for fields, _ in SURVIVORSHIP
    }


@pytest.mark.parametrize(("why", "members", "want", "suppliers"), CASES, ids=[x[0] for x in CASES])
def test_survivorship(
    why: str, members: list[Contact], want: dict[str, Any], suppliers: dict[str, str]
) -> None:
    lead = golden_record("lead_1", members)
    got = {f: getattr(lead, f, None) for f in want}
    assert got == want, why
    for f, who in suppliers.items():
        assert lead.survivorship[f] == who, f
    # every golden value is held by the contact named as its supplier
    by_id = {m.contact_id: m for m in members}
    for f, who in lead.survivorship.items():
        assert getattr(by_id[who], f) == getattr(lead, f)


def test_order_of_members_does_not_matter() -> None:
    members = CASES[-1][1]
    a = golden_record("lead_1", members)
    b = golden_record("lead_1", list(reversed(members)))
    assert replace(a, survivorship={}) == replace(b, survivorship={})
    assert a.survivorship == b.survivorship
