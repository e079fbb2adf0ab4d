"""The steward's reads of the warehouse: the review queue's order and pages, on both dialects."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from warehouse import schema as t
from warehouse import stewardship
from warehouse.db import make_engine, upgrade
from warehouse.load import upsert

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _lead(lead_id: str, contacts: int) -> dict[str, object]:
    return {
        "lead_id": lead_id,
        "full_name": lead_id,
        "lead_source": "fair",
        "first_seen_at": T0,
        "last_seen_at": T0,
        "contact_count": contacts,
        "source_count": 1,
        "survivorship": {},
        "status": "New",
        "score": 0,
        "grade": "D",
        "reasons": {},
        "rules_version": "test",
    }


def _pair(review_id: str, a: str, b: str, weight: float, decision: str = "open") -> dict:
    return {
        "review_id": review_id,
        "contact_a": a,
        "contact_b": b,
        "score": weight,
        "evidence": {},
        "decision": decision,
        "decided_by": None,
        "decided_at": None,
        "applied": False,
        "run_id": "run_1",
        "kind": "pair",
        "lead_id": None,
        "revoked_by": None,
        "revoked_at": None,
    }


def _fill(conn: Connection, leads: dict[str, int], pairs: list[dict]) -> None:
    """Leads of the given sizes (contacts `<lead>-1`, `<lead>-2` …) and review rows."""
    upsert(conn, t.leads, [_lead(lead, n) for lead, n in leads.items()])
    links = [
        {"contact_id": f"{lead}-{i}", "lead_id": lead, "rule": "t", "score": 1.0, "evidence": {}}
        for lead, n in leads.items()
        for i in range(1, n + 1)
    ]
    upsert(conn, t.lead_links, links)
    upsert(conn, t.match_review, pairs)


def test_the_queue_puts_the_decision_that_matters_most_first(warehouse_url: str) -> None:
    """Priority is how unsure the model is (weight nearest even odds, −prior_log2 = 10) times
    the contacts of both leads; decided pairs and pairs already in one lead are not queued."""
    engine = make_engine(warehouse_url)
    upgrade(engine)
    with engine.begin() as conn:
        _fill(
            conn,
            {"a": 1, "b": 1, "c": 5, "d": 5, "e": 2, "f": 2, "g": 3, "h": 1},
            [
                _pair("r_even_small", "a-1", "b-1", 10.0),  # unsure (1.0) × 2 contacts = 2
                _pair("r_big", "c-1", "d-1", 12.0),  # 1/3 × 10 contacts = 3.33
                _pair("r_sure", "e-1", "f-1", 19.0),  # 1/10 × 4 = 0.4
                _pair("r_decided", "g-1", "h-1", 10.0, decision="cannot_link"),
                _pair("r_same_lead", "g-1", "g-2", 10.0),  # already one lead
            ],
        )
    with engine.connect() as conn:
        order = stewardship.queue_order(conn, prior_log2=-10.0)
        assert order == ["r_big", "r_even_small", "r_sure"]
        first, total = stewardship.review_queue(conn, page=1, per_page=2)
        second, _ = stewardship.review_queue(conn, page=2, per_page=2)
    assert total == 3
    assert [r["review_id"] for r in first] == ["r_big", "r_even_small"]
    assert [(r["review_id"], r["size_a"], r["size_b"]) for r in second] == [("r_sure", 2, 2)]
    assert [round(r["priority"], 2) for r in (*first, *second)] == [3.33, 2.0, 0.4]
    engine.dispose()
