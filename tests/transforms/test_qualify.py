"""Qualification and conversion on worked examples: who becomes an opportunity, and why."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.stages import load_rules
from transforms.qualify import (
    DEFAULT_STAGES,
    Prior,
    Rules,
    RulesError,
    convert_lead,
    fold_merges,
    parse_rules,
    qualify_leads,
    rules_from_yaml,
    score_lead,
)
from transforms.records import Contact, Lead

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
SEEN = datetime(2026, 10, 20, 9, 0, tzinfo=UTC)
DEFAULTS = load_rules(None)


def contact(n: int = 1, **kw: Any) -> Contact:
    base: dict[str, Any] = {
        "contact_id": f"con_{n}",
        "raw_id": f"raw_{n}",
        "source": "web",
        "source_kind": "webform",
        "received_at": SEEN,
        "full_name": "Jane Roe",
        "email": "jane@roe-gmbh.de",
        "email_key": "jane@roe-gmbh.de",
        "company_domain": "roe-gmbh.de",
    }
    base.update(kw)
    return Contact(**base)


def lead_of(*contacts: Contact, **kw: Any) -> Lead:
    c = contacts[0]
    base: dict[str, Any] = {
        "lead_id": "lead_1",
        "first_name": None,
        "last_name": None,
        "full_name": c.full_name,
        "email": c.email,
        "phone": c.phone,
        "company": c.company,
        "company_key": c.company.casefold() if c.company else None,
        "company_domain": c.company_domain,
        "job_title": c.job_title,
        "city": None,
        "postal_code": None,
        "country": "DE",
        "lead_source": c.source,
        "first_seen_at": min(x.received_at for x in contacts),
        "last_seen_at": max(x.received_at for x in contacts),
        "contact_count": len(contacts),
        "source_count": len({x.source for x in contacts}),
    }
    base.update(kw)
    return Lead(**base)


def run(contacts: list[Contact], rules: Rules = DEFAULTS, **kw: Any) -> Any:
    lead = lead_of(*contacts)
    return qualify_leads([lead], {lead.lead_id: contacts}, rules, AS_OF, **kw)


READY: dict[str, Any] = {
    "company": "Roe GmbH",
    "message": "Bitte ein Angebot für 20 Stapler",
    "budget_amount": 40_000.0,
    "budget_currency": "EUR",
    "timeline_months": 2,
}


def test_need_market_and_timeline_make_an_opportunity() -> None:
    res = run([contact(**READY)])
    q = res.qualifications[0]
    assert q.status == "Qualified"
    assert {"need", "market", "timeline"} <= set(q.reasons)
    assert any("angebot" in r for r in q.reasons["need"])
    [opp] = res.opportunities
    assert (opp.amount, opp.currency) == (40_000.0, "EUR")
    assert opp.close_date == date(2026, 12, 20)  # converted 2026-10-20 + 2 months
    assert (opp.stage, opp.probability) == ("Prospecting", 10)
    assert opp.name == "Roe GmbH – Jane Roe" and opp.primary_contact_id == "con_1"
    assert opp.created_at == SEEN and opp.lead_source == "web"
    [acc] = res.accounts
    assert acc.kind == "business" and acc.account_id == opp.account_id
    assert res.conversions["lead_1"] == (opp.opportunity_id, acc.account_id, SEEN)
    assert [(h.from_status, h.to_status) for h in res.status_history] == [(None, "Qualified")]
    assert [(h.from_stage, h.to_stage) for h in res.stage_history] == [(None, "Prospecting")]
    # The id is a function of the lead alone: the same lead converts to the same opportunity.
    assert run([contact(**READY)]).opportunities[0].opportunity_id == opp.opportunity_id


def test_contact_details_alone_make_a_lead_but_no_opportunity() -> None:
    res = run([contact(phone="+4930123456")])
    q = res.qualifications[0]
    assert q.status == "Open - Not Contacted"
    assert res.opportunities == [] and res.accounts == []
    assert "need" not in q.reasons and q.grade == "D"


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"message": "Do you have a price list?"}, "Nurturing"),  # need, nothing else
        ({"timeline_months": 3}, "Nurturing"),  # a timeline alone is still a sign
        ({"budget_amount": 9e4, "timeline_months": 2}, "Nurturing"),  # no need stated
        ({"budget_amount": 3.0, "timeline_months": 9}, "Open - Not Contacted"),  # implausible
    ],
)
def test_partial_signals_nurture(extra: dict[str, Any], status: str) -> None:
    q = run([contact(**extra)]).qualifications[0]
    assert q.status == status
    budget_points = any("market_budget" in r for r in q.reasons.get("market", []))
    assert budget_points == (extra.get("budget_amount", 0) >= 500)


def test_two_touches_without_signals_are_working() -> None:
    res = run([contact(1), contact(2, received_at=SEEN.replace(day=21))])
    assert res.qualifications[0].status == "Working - Contacted"


@pytest.mark.parametrize(
    "title", ["CEO", "Head of Purchasing", "Genel Müdür", "Satın Alma Müdürü", "Geschäftsführer"]
)
def test_authority_raises_the_score(title: str) -> None:
    plain = run([contact(message="Angebot bitte")]).qualifications[0]
    boss = run([contact(message="Angebot bitte", job_title=title)]).qualifications[0]
    assert boss.score == plain.score + 10
    assert "authority" in boss.reasons and "authority" not in plain.reasons


def test_authority_and_budget_start_the_opportunity_further_along() -> None:
    res = run([contact(**READY, job_title="Einkaufsleiter")])
    assert (res.opportunities[0].stage, res.opportunities[0].probability) == (
        "Needs Analysis",
        20,
    )


@pytest.mark.parametrize(
    ("flags", "penalty"),
    [({"email_is_free": True}, 10), ({"email_is_disposable": True}, 40)],
)
def test_free_mail_and_disposable_addresses_lower_the_score(
    flags: dict[str, bool], penalty: int
) -> None:
    # A business address earns market_business_email (+5); these addresses cannot.
    biz = run([contact(**READY)]).qualifications[0]
    other = run([contact(**READY, **flags, company_domain=None)]).qualifications[0]
    assert other.score == biz.score - 5 - penalty
    assert "negative" in other.reasons


def test_free_mail_lead_converts_into_a_person_account() -> None:
    ready = {**READY, "company": None, "interest": "Forklift", "timeline_months": 1}
    res = run([contact(**ready, email_is_free=True, company_domain=None)])
    assert res.qualifications[0].status == "Qualified"
    assert res.accounts[0].kind == "person" and res.opportunities[0].name == "Jane Roe"


@pytest.mark.parametrize(
    ("extra", "rule"),
    [
        ({"message": "SEO services and backlinks, cheap"}, "spam"),
        ({"email_key": "jane@example-competitor.com"}, "competitor"),
    ],
)
def test_spam_and_competitors_are_unqualified(extra: dict[str, Any], rule: str) -> None:
    q = run([contact(**{**READY, **extra})]).qualifications[0]
    assert q.status == "Unqualified" and q.score < 50
    assert any(r.startswith(rule) for r in q.reasons["negative"])


def test_declined_consent_costs_points() -> None:
    ok = run([contact(**READY)]).qualifications[0]
    no = run([contact(**READY, consent=False)]).qualifications[0]
    assert no.score == ok.score - 20


def test_recency_is_measured_against_the_data_clock() -> None:
    lead = lead_of(contact(**READY))
    recent = score_lead(lead, [contact(**READY)], DEFAULTS, AS_OF)
    stale = score_lead(lead, [contact(**READY)], DEFAULTS, datetime(2027, 6, 1, tzinfo=UTC))
    assert recent.score - stale.score == 5
    assert any("engagement_recent" in r for r in recent.reasons["engagement"])


def _stricter(**changes: Any) -> Rules:
    doc = DEFAULTS.model_dump()
    doc.update(rules_version="2027.1.0", **changes)
    return parse_rules(doc)


def test_a_rule_change_rescoring_keeps_the_opportunity_and_records_it() -> None:
    first = run([contact(**READY)])
    opp = first.opportunities[0]
    prior = {
        "lead_1": Prior("Qualified", opp.opportunity_id, opp.account_id, SEEN, opp.stage),
    }
    strict = _stricter(qualified={"min_score": 95, "require": ["need", "authority"]})
    later = datetime(2026, 11, 5, tzinfo=UTC)
    res = run([contact(**READY)], strict, prior=prior, changed_at=later)
    assert res.qualifications[0].status == "Nurturing"
    assert res.qualifications[0].rules_version == "2027.1.0"
    assert res.opportunities == []  # no new one, and nothing says delete the old one
    assert res.conversions["lead_1"] == (opp.opportunity_id, opp.account_id, SEEN)
    [h] = res.status_history
    assert (h.from_status, h.to_status, h.changed_at) == ("Qualified", "Nurturing", later)
    assert f"opportunity {opp.opportunity_id} kept" in h.reason and h.rules_version == "2027.1.0"
    # Re-scoring again with nothing changed records nothing.
    prior["lead_1"] = dataclasses.replace(prior["lead_1"], status="Nurturing")
    again = run([contact(**READY)], strict, prior=prior, changed_at=later)
    assert again.status_history == [] and again.stage_history == []


def test_open_opportunity_stage_only_moves_forward() -> None:
    opp = run([contact(**READY)]).opportunities[0]
    prior = {"lead_1": Prior("Qualified", opp.opportunity_id, opp.account_id, SEEN, "Prospecting")}
    res = run([contact(**READY, job_title="CEO")], prior=prior)
    [h] = res.stage_history
    assert (h.from_stage, h.to_stage, h.probability) == ("Prospecting", "Needs Analysis", 20)
    later = {"lead_1": dataclasses.replace(prior["lead_1"], stage="Negotiation/Review")}
    assert run([contact(**READY, job_title="CEO")], prior=later).stage_history == []
    closed = {"lead_1": dataclasses.replace(prior["lead_1"], stage="Closed Lost")}
    assert run([contact(**READY, job_title="CEO")], prior=closed).stage_history == []


def test_the_default_stage_table_is_the_crm_default() -> None:
    assert [(s.name, s.probability) for s in DEFAULT_STAGES] == [
        ("Prospecting", 10),
        ("Qualification", 10),
        ("Needs Analysis", 20),
        ("Value Proposition", 50),
        ("Id. Decision Makers", 60),
        ("Perception Analysis", 70),
        ("Proposal/Price Quote", 75),
        ("Negotiation/Review", 90),
        ("Closed Won", 100),
        ("Closed Lost", 0),
    ]


BROKEN = [
    ("[1, 2]", "the top level must be a mapping"),
    ("rules_version: x\nqualified: {min_score: 50\n", "is not valid YAML"),
    ("rules_version: x\ngrades: {A: 0}\nrules: [{}]\n", "qualified: Field required"),
    ("rules_version: x\nsurprise: 1", "surprise: unknown key"),
]


def _doc(**changes: Any) -> str:
    doc = DEFAULTS.model_dump()
    doc.update(changes)
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        *BROKEN,
        (
            _doc(rules=[{"name": "x", "criterion": "need", "weight": 5, "when": {}}]),
            "rules[0].when: give exactly one condition, got 0",
        ),
        (
            _doc(
                rules=[
                    {
                        "name": "x",
                        "criterion": "need",
                        "weight": 5,
                        "when": {"has": "company", "touches_at_least": 2},
                    }
                ]
            ),
            "got 2 (has, touches_at_least)",
        ),
        (
            _doc(rules=[{"name": "x", "criterion": "need", "weight": 5, "when": {"vibes": 1}}]),
            "rules[0].when.vibes: unknown key",
        ),
        (
            _doc(
                rules=[{"name": "x", "criterion": "needs", "weight": 5, "when": {"has": "phone"}}]
            ),
            "rules[0].criterion: Input should be",
        ),
        (
            _doc(
                rules=[{"name": "x", "criterion": "need", "weight": -5, "when": {"has": "phone"}}]
            ),
            "a need rule must have weight >= 0",
        ),
        (
            _doc(
                rules=[
                    {"name": "x", "criterion": "need", "weight": "lots", "when": {"has": "phone"}}
                ]
            ),
            "rules[0].weight: Input should be a valid integer",
        ),
        (_doc(grades={"A": 50}), "one grade must start at 0"),
        (_doc(opportunity={"default_stage": "Won Already"}), "unknown stage 'Won Already'"),
        (_doc(rules=DEFAULTS.model_dump()["rules"] * 2), "rule names must be unique"),
    ],
)
def test_rule_files_are_validated_strictly(text: str, error: str) -> None:
    with pytest.raises(RulesError) as exc:
        rules_from_yaml(text, "custom.yaml")
    assert str(exc.value).startswith("custom.yaml")
    assert error in str(exc.value)


def test_the_default_rules_cover_every_criterion() -> None:
    assert {r.criterion for r in DEFAULTS.rules} == {
        "need",
        "market",
        "timeline",
        "authority",
        "engagement",
        "negative",
    }
    assert (
        rules_from_yaml(
            Path(__file__)
            .parents[2]
            .joinpath("transforms", "default_rules.yaml")
            .read_text("utf-8")
        )
        == DEFAULTS
    )


T_MERGE = datetime(2026, 5, 1, tzinfo=UTC)
STAGES_BY_NAME = {st.name: st for st in DEFAULT_STAGES}


def _converted(opp: str, day: int, stage: str = "Needs Analysis") -> Prior:
    return Prior("Qualified", opp, f"acc_{opp}", datetime(2026, 4, day, tzinfo=UTC), stage)


@pytest.mark.parametrize(
    ("prior", "kept", "reparented", "closed"),
    [
        # The survivor was never converted: the merged lead's opportunity moves over.
        ({"lead_b": _converted("opp_b", 2)}, "opp_b", {"opp_b": "lead_a"}, []),
        # Both converted: the survivor's own continues, the other is closed as a duplicate.
        (
            {"lead_a": _converted("opp_a", 3), "lead_b": _converted("opp_b", 2)},
            "opp_a",
            {},
            ["opp_b"],
        ),
        # Neither survivor nor merged lead converted: nothing to carry.
        ({"lead_a": Prior("Nurturing")}, None, {}, []),
        # A duplicate that is already closed stays as it is.
        (
            {"lead_a": _converted("opp_a", 3), "lead_b": _converted("opp_b", 2, "Closed Won")},
            "opp_a",
            {},
            [],
        ),
    ],
)
def test_merges_carry_conversions_to_the_surviving_lead(
    prior: dict[str, Prior], kept: str | None, reparented: dict[str, str], closed: list[str]
) -> None:
    folded, moved, closing = fold_merges(
        [("lead_b", "lead_a")], prior, STAGES_BY_NAME, {"lead_a": T_MERGE}, "2026.1"
    )
    assert folded.get("lead_a", Prior(None)).opportunity_id == kept
    assert moved == reparented
    assert [c.opportunity_id for c in closing] == closed
    for c in closing:
        assert (c.lead_id, c.to_stage, c.probability, c.changed_at) == (
            "lead_b",
            "Closed Lost",
            0,
            T_MERGE,
        )
        assert "merged into lead_a" in c.reason and "opp_a continues" in c.reason


EVERY_KIND = """
rules_version: "every.1"
qualified: {min_score: 30, require: [need, market]}
nurturing: {require_any: [timeline, authority]}
working: {touches_at_least: 3}
grades: {A: 70, B: 45, C: 20, D: 0}
opportunity:
  stages:
    - {when_met: [authority, market, timeline], stage: Value Proposition}
    - {when_met: [engagement], stage: Needs Analysis}
rules:
  - {name: text, criterion: need, weight: 15, when: {text_contains_any: [angebot, Fiyat, demo]}}
  - {name: title, criterion: authority, weight: 10, when: {title_contains_any: [ceo, Müdür]}}
  - {name: has_interest, criterion: need, weight: 5, when: {has: interest}}
  - {name: has_company, criterion: market, weight: 5, when: {has: company}}
  - {name: has_budget, criterion: market, weight: 5, when: {has: budget}}
  - {name: has_timeline, criterion: timeline, weight: 5, when: {has: timeline}}
  - {name: has_job_title, criterion: authority, weight: 3, when: {has: job_title}}
  - {name: has_phone, criterion: engagement, weight: 2, when: {has: phone}}
  - {name: budget, criterion: market, weight: 10, when: {budget_between: [1000, 60000]}}
  - {name: timeline, criterion: timeline, weight: 10, when: {timeline_within_months: 3}}
  - {name: touches, criterion: engagement, weight: 4, when: {touches_at_least: 2}}
  - {name: sources, criterion: engagement, weight: 4, when: {sources_at_least: 2}}
  - {name: seen, criterion: engagement, weight: 3, when: {seen_within_days: 30}}
  - {name: free, criterion: negative, weight: -5, when: {email_is: free}}
  - {name: disposable, criterion: negative, weight: -30, when: {email_is: disposable}}
  - {name: role, criterion: negative, weight: -3, when: {email_is: role}}
  - {name: domain, criterion: negative, weight: -100, disqualify: true,
     when: {email_domain_in: [rival.example]}}
  - {name: business, criterion: market, weight: 6, when: {business_email: true}}
  - {name: consent, criterion: negative, weight: -20, when: {consent_declined: true}}
"""


def _generated(n: int, seed: int = 5) -> tuple[list[Lead], dict[str, list[Contact]]]:
    """Leads whose contacts vary every field some condition reads, one to three contacts each."""
    rnd = random.Random(seed)
    leads, members = [], {}
    for i in range(n):
        domain = rnd.choice(["roe-gmbh.de", "gmail.com", "rival.example", "acme.com.tr"])
        cs = [
            contact(
                10 * i + k,
                source=rnd.choice(["web", "mail"]),
                received_at=SEEN - timedelta(days=rnd.choice([0, 3, 40]), minutes=k),
                email_key=rnd.choice([f"p{i}@{domain}", None]),
                email_is_free=domain == "gmail.com",
                email_is_disposable=rnd.random() < 0.1,
                email_is_role=rnd.random() < 0.2,
                company=rnd.choice([None, "Roe GmbH"]),
                phone=rnd.choice([None, "+4930123456"]),
                job_title=rnd.choice([None, "CEO", "Genel Müdür", "Engineer"]),
                interest=rnd.choice([None, "Forklift"]),
                message=rnd.choice([None, "Bitte ein Angebot", "fiyat teklifi", "hello"]),
                budget_amount=rnd.choice([None, 500.0, 5_000.0, 80_000.0]),
                budget_currency=rnd.choice([None, "EUR"]),
                timeline_months=rnd.choice([None, 1, 3, 12]),
                consent=rnd.choice([None, True, False]),
            )
            for k in range(rnd.randint(1, 3))
        ]
        lead = lead_of(*cs, lead_id=f"lead_{i:03d}")
        leads.append(lead)
        members[lead.lead_id] = cs
    return leads, members


def test_a_batch_scores_every_lead_as_if_scored_alone() -> None:
    # qualify_leads evaluates each rule once over the whole batch, sharing work between leads
    # that share a value; scoring a lead alone must give the very same qualification.
    rules = rules_from_yaml(EVERY_KIND)
    leads, members = _generated(300)
    res = qualify_leads(leads, members, rules, AS_OF)
    alone = [score_lead(ld, members[ld.lead_id], rules, AS_OF) for ld in leads]
    assert res.qualifications == alone
    assert [list(q.reasons) for q in res.qualifications] == [list(q.reasons) for q in alone]
    fired = Counter(r.split(" ", 1)[0] for q in alone for why in q.reasons.values() for r in why)
    assert set(fired) == {r.name for r in rules.rules}  # every condition kind held somewhere
    assert max(fired.values()) < len(leads)  # and none held everywhere
    weights = {r.name: r.weight for r in rules.rules}
    for q in alone:  # the score is the clamped sum of the rules its reasons name
        named = [r.split(" ", 1)[0] for why in q.reasons.values() for r in why]
        assert q.score == max(0, min(100, sum(weights[n] for n in named)))
    by_name = {s.name: s for s in DEFAULT_STAGES}
    opps = {o.lead_id: o for o in res.opportunities}
    assert opps and set(opps) == {q.lead_id for q in alone if q.status == "Qualified"}
    for q in alone:
        if q.lead_id in opps:
            lead = next(ld for ld in leads if ld.lead_id == q.lead_id)
            assert opps[q.lead_id] == convert_lead(lead, members[q.lead_id], q, rules, by_name)
