"""CRM opportunity exports: the three layouts parsed, then planned against the opportunities."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from transforms.outcomes import OpportunityState, parse_updates, plan_updates
from transforms.qualify import DEFAULT_STAGES

SALESFORCE = """Opportunity ID,Opportunity Name,Account Name,Stage,Amount,Opportunity Currency,Close Date,Won,Closed,Last Modified Date,Contact: Email
opp_a,Acme - 20 units,Acme,Closed Won,"12,500.00",EUR,3/9/2026,1,1,3/9/2026 2:30 PM,ayse@acme.example
006XX,Globex,Globex,Negotiation/Review,900,USD,4/30/2026,0,0,3/8/2026 9:00 AM,Bob <bob@globex.example>
"""
HUBSPOT = """Record ID,Deal Name,Deal Stage,Amount,Currency,Close Date,Last Modified Date,Associated Contact
1501,Initech,Contract sent,4000,EUR,2026-05-01,2026-03-07 10:00,Peter Gibbons (peter@initech.example)
1502,Umbrella,Closed lost,,,2026-03-06,2026-03-06 08:00,alice@umbrella.example
"""
PLAIN = """opportunity_id,email,stage,amount,currency,close_date,outcome
opp_c,,,300,try,2026-03-10,won
,,Prospecting,,,,
,carol@x.example,Moonshot,,,,
,dave@x.example,,abc,,,lost
"""  # noqa: E501


def test_salesforce_report_export() -> None:
    ups, bad = parse_updates(SALESFORCE, "sf", "report.csv")
    assert bad == []
    a, b = ups
    assert (a.opportunity_ref, a.outcome, a.amount, a.currency) == (
        "opp_a",
        "won",
        Decimal("12500.00"),
        "EUR",
    )
    assert a.close_date == date(2026, 3, 9) and a.changed_at == datetime(
        2026, 3, 9, 14, 30, tzinfo=UTC
    )
    assert (b.email_key, b.outcome, b.stage) == ("bob@globex.example", None, "Negotiation/Review")


def test_hubspot_deals_export() -> None:
    ups, bad = parse_updates(HUBSPOT, "hs", "deals.csv")
    assert bad == []
    assert [(u.record_id, u.email_key, u.stage, u.outcome) for u in ups] == [
        ("1501", "peter@initech.example", "Contract sent", None),
        ("1502", "alice@umbrella.example", "Closed lost", "lost"),
    ]


def test_plain_csv_and_its_bad_rows() -> None:
    ups, bad = parse_updates(PLAIN, "crm", "updates.csv")
    assert [(j.source_record_id, j.code) for j in bad] == [
        ("updates.csv:3", "no_opportunity_key"),
        ("updates.csv:5", "bad_amount"),
    ]
    assert [(u.opportunity_ref, u.email_key, u.outcome, u.currency) for u in ups] == [
        ("opp_c", None, "won", "TRY"),
        (None, "carol@x.example", None, None),
    ]


def state(oid: str, stage: str = "Prospecting", prob: int = 10) -> OpportunityState:
    return OpportunityState(
        oid, f"lead_{oid}", stage, prob, Decimal("100"), "EUR", date(2026, 4, 1)
    )


def test_plan_moves_stages_with_history_and_quarantines_the_rest() -> None:
    as_of = datetime(2026, 3, 10, tzinfo=UTC)
    hs, _ = parse_updates(HUBSPOT, "hs", "deals.csv")
    sf, _ = parse_updates(SALESFORCE, "sf", "report.csv")
    by_id = {o: state(o) for o in ("opp_a", "opp_i", "opp_u", "opp_g1", "opp_g2")}
    by_email = {
        "peter@initech.example": ("opp_i",),
        "alice@umbrella.example": ("opp_u",),
        "bob@globex.example": ("opp_g1", "opp_g2"),
    }
    plan = plan_updates([*hs, *sf], by_id, by_email, DEFAULT_STAGES, as_of)
    moved = {s.opportunity_id: (s.stage, s.probability, s.amount) for s in plan.states}
    assert moved == {
        "opp_a": ("Closed Won", 100, Decimal("12500.00")),
        "opp_i": ("Negotiation/Review", 90, Decimal("4000")),  # HubSpot's label, mapped
        "opp_u": ("Closed Lost", 0, Decimal("100")),
    }
    assert sorted((h.opportunity_id, h.from_stage, h.to_stage) for h in plan.history) == [
        ("opp_a", "Prospecting", "Closed Won"),
        ("opp_i", "Prospecting", "Negotiation/Review"),
        ("opp_u", "Prospecting", "Closed Lost"),
    ]
    assert [j.code for j in plan.rejects] == ["ambiguous_email"]
    # The same updates against the moved state change nothing and add no history.
    after = {**by_id, **{s.opportunity_id: s for s in plan.states}}
    again = plan_updates([*hs, *sf], after, by_email, DEFAULT_STAGES, as_of)
    assert again.states == () and again.history == ()
    ups, _ = parse_updates(PLAIN, "crm", "updates.csv")
    plain = plan_updates(ups, {"opp_c": state("opp_c")}, {}, DEFAULT_STAGES, as_of)
    assert [j.code for j in plain.rejects] == ["unmatched_opportunity"]
    mapped = plan_updates(
        ups, {"opp_c": state("opp_c")}, {"carol@x.example": ("opp_c",)}, DEFAULT_STAGES, as_of,
        {"Moonshot": "Perception Analysis"},
    )  # fmt: skip
    assert [h.to_stage for h in mapped.history] == ["Closed Won", "Perception Analysis"] or [
        h.to_stage for h in mapped.history
    ] == ["Perception Analysis", "Closed Won"]


def test_salesforce_report_footer_is_not_a_row() -> None:
    """A report exported from Salesforce ends with its totals, notice and copyright lines."""
    footer = (
        '\n"Grand Totals (2 records)"\n\n"Confidential Information - Do Not Distribute"\n'
        '"Copyright (c) 2000-2026 salesforce.com, inc. All rights reserved."\n'
        '"Generated By:  Ayse Yilmaz  3/10/2026 9:14 AM"\n"Acme A.S."\n'
    )
    ups, bad = parse_updates(SALESFORCE + footer, "sf", "report.csv")
    assert (len(ups), bad) == (2, [])
