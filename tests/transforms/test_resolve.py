"""Resolution rules, survivorship, incremental stability, merges and review decisions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from transforms.normalize import company_key, email_flags, name_key, normalize_email, split_name
from transforms.records import Contact
from transforms.resolve import (
    CANNOT_LINK,
    MUST_LINK,
    Context,
    Resolution,
    ReviewDecision,
    context_of,
    link_contacts,
    resolve_contacts,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def contact(n: int, name: str = "", **kw: Any) -> Contact:
    first, last, full = split_name(name, kw.get("country"))
    email = kw.pop("email", None)
    ekey = None
    if email:
        email, ekey, _ = normalize_email(email)
    role, free, disp = email_flags(ekey)
    company = kw.get("company")
    return Contact(
        contact_id=f"con_{n:03d}",
        raw_id=f"raw_{n:03d}",
        source=kw.pop("source", "fair"),
        source_kind=kw.pop("source_kind", "spreadsheet"),
        received_at=T0 + timedelta(hours=n),
        first_name=first,
        last_name=last,
        full_name=full,
        name_key=name_key(first, last),
        email=email,
        email_key=ekey,
        email_is_role=role,
        email_is_free=free,
        email_is_disposable=disp,
        company_key=company_key(company) if company else None,
        **kw,
    )


def groups(res: Resolution) -> set[frozenset[str]]:
    by_lead: dict[str, set[str]] = {}
    for lk in res.links:
        by_lead.setdefault(lk.lead_id, set()).add(lk.contact_id)
    return {frozenset(v) for v in by_lead.values()}


def rule_of(res: Resolution, contact_id: str) -> str:
    return next(lk.rule for lk in res.links if lk.contact_id == contact_id)


SAME_PERSON = [
    (
        "email key (Gmail dots, +tag, googlemail)",
        contact(1, "Ayşe Kaya", email="ayse.kaya@gmail.com"),
        contact(2, "A. Kaya", email="AyseKaya+fair@googlemail.com"),
        "model",
    ),
    (
        "phone with a compatible name",
        contact(1, "İsmail Işık", phone="+905321234567"),
        contact(2, "ISIK Ismail", phone="+905321234567"),
        "model",
    ),
    (
        "name and postal address only (paper form)",
        contact(1, "Jürgen Weiß", street="Hauptstraße 5", postal_code="10115", city="Berlin"),
        contact(2, "Juergen Weiss", street="Hauptstr. 5", postal_code="10115", city="Berlin"),
        "model",
    ),
    (
        "nickname, company and city",
        contact(1, "Robert Smith", company="Acme Inc.", city="London", email="rs@acme.com"),
        contact(2, "Bob Smith", company="ACME LLC", city="London", email="bob.smith@acme.com"),
        "model",
    ),
    (
        "swapped order, typo, birth date and postal code",
        contact(1, "Mehmet Yılmaz", birth_date=date(1980, 5, 1), postal_code="34710"),
        contact(2, "Yilmz Mehmet", birth_date=date(1980, 5, 1), postal_code="34710"),
        "model",
    ),
]


@pytest.mark.parametrize(("label", "a", "b", "rule"), SAME_PERSON, ids=[s[0] for s in SAME_PERSON])
def test_rules_link_the_same_person(label: str, a: Contact, b: Contact, rule: str) -> None:
    res = resolve_contacts([a, b], [])
    assert groups(res) == {frozenset({a.contact_id, b.contact_id})}, label
    assert rule_of(res, b.contact_id) == rule
    link = next(lk for lk in res.links if lk.contact_id == b.contact_id)
    assert link.evidence["matched_contact_id"] == a.contact_id
    assert 0.85 <= link.score <= 1
    # the evidence: the model, the total weight and per comparison the level hit and its weight
    assert link.evidence["model_version"] and link.evidence["match_weight"] > 0
    assert {c["name"] for c in link.evidence["comparisons"]} >= {"first", "last"}
    assert all(c["log2_bayes_factor"] is not None for c in link.evidence["comparisons"])


DIFFERENT_PEOPLE = [
    (
        "shared office phone, different people",
        contact(1, "Ayşe Kaya", phone="+902125551212"),
        contact(2, "Mehmet Demir", phone="+902125551212"),
    ),
    (
        "same common name, different towns",
        contact(1, "Mehmet Yılmaz", postal_code="34710", city="İstanbul"),
        contact(2, "Mehmet Yılmaz", postal_code="06100", city="Ankara"),
    ),
    (
        "role mailbox does not identify a person",
        contact(1, "Ayşe Kaya", email="info@acme.de"),
        contact(2, "Hans Weber", email="info@acme.de"),
    ),
    (
        "same name and address, different birth dates (father and son)",
        contact(
            1, "Hans Weber", street="Gartenweg 3", postal_code="30159", birth_date=date(1950, 1, 2)
        ),
        contact(
            2, "Hans Weber", street="Gartenweg 3", postal_code="30159", birth_date=date(1980, 3, 4)
        ),
    ),
]


@pytest.mark.parametrize(
    ("label", "a", "b"), DIFFERENT_PEOPLE, ids=[s[0] for s in DIFFERENT_PEOPLE]
)
def test_rules_keep_different_people_apart(label: str, a: Contact, b: Contact) -> None:
    res = resolve_contacts([a, b], [])
    assert len(groups(res)) == 2, label


def test_two_person_emails_are_not_chained_by_a_weak_name() -> None:
    # c2 shares a phone with c1 and an email with c3; c1 and c3 have different person emails
    # and only compatible (not strong) names: they must not end up in one lead.
    c1 = contact(1, "A. Kaya", email="ali.kaya@firma.com", phone="+905321111111")
    c2 = contact(2, "Ayşe Kaya", phone="+905321111111", email="ayse.kaya@firma.com")
    c3 = contact(3, "Ayşe Kaya", email="ayse.kaya@firma.com")
    res = resolve_contacts([c1, c2, c3], [])
    lead = {lk.contact_id: lk.lead_id for lk in res.links}
    assert lead["con_002"] == lead["con_003"]
    assert lead["con_001"] != lead["con_003"]


def test_survivorship_per_field_keeps_its_supplier() -> None:
    a = contact(
        1,
        "Ayşe Kaya",
        email="ayse@firma.com",
        company="Firma A.Ş.",
        city="İzmir",
        source_kind="webform",
    )
    b = contact(
        2,
        "Ayşe Kaya",
        email="ayse@firma.com",
        phone="+905321234567",
        city="Ankara",
        source_kind="email",
    )
    c = contact(3, "AYSE KAYA", email="ayse@firma.com", job_title="CEO", source_kind="email")
    res = resolve_contacts([a, b, c], [])
    (lead,) = res.leads
    assert lead.full_name == "Ayşe Kaya"  # the most frequent spelling, not the latest
    assert lead.city == "İzmir" and lead.survivorship["city"] == "con_001"  # source priority
    assert lead.phone == "+905321234567" and lead.survivorship["phone"] == "con_002"
    assert lead.job_title == "CEO" and lead.survivorship["job_title"] == "con_003"
    assert lead.contact_count == 3


def _full(res: Resolution) -> dict[str, str]:
    return {lk.contact_id: lk.lead_id for lk in res.links}


def test_incremental_runs_keep_lead_ids() -> None:
    batch1 = [
        contact(1, "Ayşe Kaya", email="ayse@firma.com"),
        contact(2, "Hans Weber", phone="+4930123456"),
    ]
    first = _full(resolve_contacts(batch1, []))
    # The same contacts again (a re-run) resolve to the same ids.
    assert _full(resolve_contacts(batch1, [])) == first
    # Unrelated new contacts leave the existing leads alone.
    existing = [(c, first[c.contact_id]) for c in batch1]
    more = [
        contact(3, "John Smith", email="john@acme.com"),
        contact(4, "Zeynep Ak", phone="+905329999999"),
    ]
    res = resolve_contacts(more, existing)
    assert {lk.contact_id for lk in res.links} == {"con_003", "con_004"}
    assert not res.merges and set(_full(res).values()).isdisjoint(first.values())
    # A new sighting of an existing person joins that person's lead.
    again = resolve_contacts([contact(5, "Ayse Kaya", email="AYSE@firma.com")], existing)
    assert _full(again) == {"con_005": first["con_001"]}


def test_bridging_contact_merges_leads_deterministically() -> None:
    a = contact(1, "Ayşe Kaya", email="ayse@firma.com")
    b = contact(2, "Ayşe Kaya", phone="+905321234567")
    first = _full(resolve_contacts([a, b], []))
    assert first["con_001"] != first["con_002"]
    existing = [(a, first["con_001"]), (b, first["con_002"])]
    bridge = contact(3, "Ayşe Kaya", email="ayse@firma.com", phone="+905321234567")
    res = resolve_contacts([bridge], existing)
    # The older lead survives; the younger one is recorded as merged into it.
    assert res.merges == [(first["con_002"], first["con_001"])]
    assert _full(res) == {"con_002": first["con_001"], "con_003": first["con_001"]}
    assert rule_of(res, "con_002") == "merge"
    # The same input in another order gives the same answer.
    res2 = resolve_contacts([bridge], list(reversed(existing)))
    assert res2.merges == res.merges and _full(res2) == _full(res)


def test_only_changed_leads_are_rebuilt_with_all_their_members_in_time_order() -> None:
    """A new contact bridging two leads, and a must-link between two others: each merged lead
    lists every member, also one no pair touched, in the order first seen; untouched leads,
    one of them with two members, are not listed."""
    kaya, kaya_too, kaya_phone = (
        contact(1, "Ayşe Kaya", email="ayse@firma.com"),
        contact(4, "A. Kaya", city="Ankara"),
        contact(2, "Ayşe Kaya", phone="+905321234567"),
    )
    weber, schulz = contact(3, "Hans Weber", city="Hannover"), contact(8, "Peter Schulz")
    brandt = [contact(5, "Jan Brandt", city="Kiel"), contact(6, "Jan Brandt", city="Kiel")]
    existing = [
        (schulz, "lead_s"),
        (kaya_too, "lead_k"),
        (brandt[1], "lead_b"),
        (weber, "lead_w"),
        (kaya_phone, "lead_p"),
        (brandt[0], "lead_b"),
        (kaya, "lead_k"),
    ]
    bridge = contact(7, "Ayşe Kaya", email="ayse@firma.com", phone="+905321234567")
    res = link_contacts(
        [bridge],
        Context(members=context_of(existing)),
        [ReviewDecision("con_008", "con_003", MUST_LINK)],
    )
    assert list(res.members.items()) == [
        ("lead_k", ["con_001", "con_002", "con_004", "con_007"]),
        ("lead_w", ["con_003", "con_008"]),
    ]
    assert res.merges == [("lead_p", "lead_k"), ("lead_s", "lead_w")]
    assert [(lk.contact_id, lk.lead_id, lk.rule) for lk in res.links] == [
        ("con_002", "lead_k", "merge"),
        ("con_007", "lead_k", "model"),
        ("con_008", "lead_w", "merge"),
    ]


def _grey_pair() -> tuple[Contact, Contact]:
    # Same name and postcode, nothing else: not enough to link, enough to ask a person.
    a = contact(1, "Hans Weber", postal_code="30159", company="Weber Bau GmbH")
    b = contact(2, "Hans Weber", postal_code="30159", email="h.weber@gmx.de")
    return a, b


def test_grey_zone_pairs_go_to_review() -> None:
    a, b = _grey_pair()
    res = resolve_contacts([a, b], [])
    assert len(groups(res)) == 2
    (rev,) = res.reviews
    assert (rev.contact_a, rev.contact_b) == ("con_001", "con_002")
    levels = {c["name"]: c["level"] for c in rev.evidence["comparisons"]}
    assert levels["first"] == levels["last"] == "exact"
    assert 0.5 <= rev.score < 0.85


def test_must_link_decision_is_honoured_in_later_runs() -> None:
    a, b = _grey_pair()
    first = _full(resolve_contacts([a], []))
    decision = ReviewDecision("con_001", "con_002", MUST_LINK)
    res = resolve_contacts([b], [(a, first["con_001"])], [decision])
    assert _full(res) == {"con_002": first["con_001"]}
    assert rule_of(res, "con_002") == MUST_LINK and not res.reviews


def test_cannot_link_decision_is_honoured_against_strong_evidence() -> None:
    a = contact(1, "Ayşe Kaya", email="ayse@firma.com")
    b = contact(2, "Ayşe Kaya", email="ayse@firma.com")
    decision = ReviewDecision("con_001", "con_002", CANNOT_LINK)
    assert len(groups(resolve_contacts([a, b], [], [decision]))) == 2
    c = contact(3, "Ayşe Kaya", email="ayse@firma.com")
    # A third sighting may join one of them, never both.
    res = resolve_contacts([a, b, c], [], [decision])
    lead = _full(res)
    assert lead["con_001"] != lead["con_002"]


def test_candidate_pairs_are_every_pair_sharing_a_usable_key_with_a_new_contact() -> None:
    """Against a brute force over every pair: blocks of existing and new contacts, one block too
    big, one key listed as common, and an email shared by many (a star around its first)."""
    import random

    import numpy as np
    import pyarrow as pa

    from transforms.match import MATCH_SCHEMA, block_keys, candidate_pairs, rule_of
    from transforms.scoring import Engine

    rnd = random.Random(3)
    n_old, n = 60, 90
    rows = []
    for i in range(n):
        row: dict[str, Any] = {f.name: None for f in MATCH_SCHEMA}
        row["contact_id"] = f"c{i:03d}"
        row["last"] = rnd.choice(["kaya", "weiss", "smith", "ak", "big"])
        row["postcode"] = rnd.choice(["34000", "10115", None])
        row["first"] = rnd.choice(["ali", "anna", None])
        row["birth"] = rnd.choice(["1980-01-02", None, None])
        row["email_key"] = rnd.choice(["shared@x.com", None, f"p{i}@x.com"])
        rows.append(row)
    for row in rows[:30]:  # one block of thirty: over the limit below
        row["city"], row["last"] = "ankara", "big"
    table = pa.Table.from_pylist(rows, schema=MATCH_SCHEMA)
    position = np.arange(n)
    table = table.append_column("is_new", pa.array(position >= n_old))
    table = table.append_column("ord", pa.array(position))
    common = {"fl:ali\x1fkaya"}
    max_block = 20

    keys_of = [set(block_keys(r)) for r in rows]
    members: dict[str, list[int]] = {}
    for i, keys in enumerate(keys_of):
        for k in keys:
            members.setdefault(k, []).append(i)
    want: set[tuple[str, str]] = set()
    for k, ids in members.items():
        exact = rule_of(k) in ("e", "p")
        if not exact and (len(ids) > max_block or k in common):
            continue
        for x in ids:
            for y in ids:
                if x < y and (x >= n_old or y >= n_old) and (not exact or x == ids[0]):
                    want.add((rows[x]["contact_id"], rows[y]["contact_id"]))

    con = Engine().connect()
    try:
        got = candidate_pairs(table, common, max_block, con)
    finally:
        con.close()
    left, right = got.column("contact_id_l").to_pylist(), got.column("contact_id_r").to_pylist()
    pairs = list(zip(left, right, strict=True))
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == want
    assert not any(x < "c060" and y < "c060" for x, y in want)  # none between two old ones
    assert len(want) > 50


def test_block_table_holds_each_rows_keys_once_in_key_order() -> None:
    """The chunk's blocking keys, computed once in DuckDB for both its context and its index
    rows: the keys `block_keys` gives each row (names in either order meet), each pair once,
    sorted by key then contact."""
    import random

    import pyarrow as pa

    from transforms.match import (
        MATCH_SCHEMA,
        block_hash,
        block_keys,
        block_table,
        hash_rule,
        rule_of,
    )

    rnd = random.Random(3)
    rows = []
    for i in range(200):
        row: dict[str, Any] = {f.name: None for f in MATCH_SCHEMA}
        row["contact_id"] = f"c{i:03d}"
        row["first"], row["last"] = rnd.sample(["ali", "kaya", "anna", "weiss", None], 2)
        row["postcode"] = rnd.choice(["34000", "10115", None])
        row["city"] = rnd.choice(["ankara", None])
        row["email_key"] = rnd.choice(["shared@x.com", None, f"p{i}@x.com"])
        row["phone"] = rnd.choice(["+905321234567", None])
        row["street_name"], row["house"] = rnd.choice([("ataturk cad", "5"), (None, None)])
        rows.append(row)
    want = sorted({(k, r["contact_id"]) for r in rows for k in block_keys(r)})
    got = block_table(pa.Table.from_pylist(rows, schema=MATCH_SCHEMA))
    assert got.column_names == ["block_key", "block_hash", "contact_id"]
    keys = got.column("block_key").to_pylist()
    pairs = list(zip(keys, got.column("contact_id").to_pylist(), strict=True))
    assert pairs == want
    assert any(k.startswith("n") and "ali|kaya" in k for k, _ in want)  # both orders met
    # the stored form DuckDB computed is the one Python computes, and it keeps the rule
    hashes = got.column("block_hash").to_pylist()
    assert hashes == [block_hash(k) for k in keys]
    assert [hash_rule(h) for h in hashes] == [rule_of(k) for k in keys]
    assert len(set(hashes)) == len(set(keys))
