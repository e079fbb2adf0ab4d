"""Qualification and conversion: score leads with declarative rules, convert the qualified ones."""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from transforms.normalize import fold
from transforms.records import Account, Contact, Lead, Opportunity, Qualification, stable_id

STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Nurturing",
    "Qualified",
    "Unqualified",
)
STAGE_PROBABILITY = {
    "Prospecting": 10,
    "Qualification": 10,
    "Needs Analysis": 20,
    "Value Proposition": 50,
    "Id. Decision Makers": 60,
    "Perception Analysis": 70,
    "Proposal/Price Quote": 75,
    "Negotiation/Review": 90,
    "Closed Won": 100,
    "Closed Lost": 0,
}


@dataclass(frozen=True, slots=True)
class Rules:
    version: str
    qualified_min_score: int
    require_for_qualified: tuple[str, ...]
    grades: tuple[tuple[str, int], ...]
    timeline_max_months: int
    need_keywords: tuple[str, ...]
    authority_titles: tuple[str, ...]
    spam_keywords: tuple[str, ...]
    competitor_domains: frozenset[str]
    weights: Mapping[str, int]
    stages: Mapping[str, str]


def parse_rules(doc: Mapping[str, Any]) -> Rules:
    """Rules from their YAML document; an unknown stage or missing weight is a broken invariant."""
    stages = dict(doc["stages"])
    for stage in stages.values():
        if stage not in STAGE_PROBABILITY:
            raise ValueError(f"rules: unknown opportunity stage {stage!r}")
    return Rules(
        version=str(doc["rules_version"]),
        qualified_min_score=int(doc["qualified_min_score"]),
        require_for_qualified=tuple(doc.get("require_for_qualified", ())),
        grades=tuple(sorted(((k, int(v)) for k, v in doc["grades"].items()), key=lambda g: -g[1])),
        timeline_max_months=int(doc["timeline_max_months"]),
        need_keywords=tuple(fold(k) for k in doc.get("need_keywords", ())),
        authority_titles=tuple(fold(k) for k in doc.get("authority_titles", ())),
        spam_keywords=tuple(fold(k) for k in doc.get("spam_keywords", ())),
        competitor_domains=frozenset(d.lower() for d in doc.get("competitor_domains", ())),
        weights={k: int(v) for k, v in doc["weights"].items()},
        stages=stages,
    )


@dataclass(frozen=True, slots=True)
class QualifyResult:
    qualifications: list[Qualification]
    accounts: list[Account]
    opportunities: list[Opportunity]


def _text(contacts: Sequence[Contact]) -> str:
    return fold(" ".join(f"{c.interest or ''} {c.message or ''}" for c in contacts))


def score_lead(lead: Lead, contacts: Sequence[Contact], rules: Rules) -> Qualification:
    """Score one lead; every point carries the name of the rule that gave it."""
    w = rules.weights
    reasons: dict[str, list[str]] = {}
    met: set[str] = set()
    score = 0

    def hit(criterion: str, rule: str, why: str) -> None:
        nonlocal score
        score += w[rule]
        met.add(criterion)
        reasons.setdefault(criterion, []).append(f"{rule} ({w[rule]:+d}): {why}")

    text = _text(contacts)
    need = next((k for k in rules.need_keywords if k in text), None)
    if need or any(c.interest for c in contacts):
        hit("need", "need", f"asked about {need!r}" if need else "stated a product interest")
    budgets = [c.budget_amount for c in contacts if c.budget_amount]
    if budgets:
        hit("market", "market_budget", f"budget stated: {max(budgets):,.0f}")
    if lead.company:
        hit("market", "market_company", f"company {lead.company}")
    timelines = [c.timeline_months for c in contacts if c.timeline_months is not None]
    if timelines and min(timelines) <= rules.timeline_max_months:
        hit("timeline", "timeline", f"buying within {min(timelines)} months")
    title = fold(" ".join(c.job_title or "" for c in contacts))
    auth = next((t for t in rules.authority_titles if t and t in title), None)
    if auth:
        hit("authority", "authority", f"job title mentions {auth!r}")
    if lead.contact_count >= 2:
        hit("engagement", "engagement_multi_touch", f"{lead.contact_count} touches")
    if lead.source_count >= 2:
        hit("engagement", "engagement_multi_source", f"{lead.source_count} sources")
    negative: set[str] = set()
    if any(c.email_is_disposable for c in contacts):
        hit("negative", "disposable_email", "disposable email address")
        negative.add("disposable_email")
    elif contacts and all(c.email_is_free or not c.email_key for c in contacts) and lead.email:
        hit("negative", "free_mail", "only a free-mail address")
    domains = {c.email_key.partition("@")[2] for c in contacts if c.email_key}
    if domains & rules.competitor_domains:
        hit("negative", "competitor", "competitor domain")
        negative.add("competitor")
    spam = next((k for k in rules.spam_keywords if k in text), None)
    if spam:
        hit("negative", "spam", f"spam signal {spam!r}")
        negative.add("spam")
    if any(c.consent is False for c in contacts):
        hit("negative", "no_consent", "declined consent")
    score = max(0, min(100, score))
    grade = next(g for g, floor in rules.grades if score >= floor)
    required = set(rules.require_for_qualified)
    if negative:
        status = "Unqualified"
    elif required <= met and score >= rules.qualified_min_score:
        status = "Qualified"
    elif "need" in met:
        status = "Nurturing"
    elif lead.contact_count >= 2:
        status = "Working - Contacted"
    else:
        status = "Open - Not Contacted"
    return Qualification(lead.lead_id, status, score, grade, reasons, rules.version)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def account_for(lead: Lead) -> Account:
    if lead.company_key or lead.company_domain:
        key = lead.company_key or lead.company_domain
        name = lead.company or lead.company_domain or str(key)
        return Account(
            stable_id("acc", "business", key),
            name,
            "business",
            lead.company_domain,
            lead.company_key,
            lead.country,
        )
    name = lead.full_name or lead.email or lead.lead_id
    return Account(
        stable_id("acc", "person", lead.lead_id), name, "person", None, None, lead.country
    )


def convert_lead(lead: Lead, contacts: Sequence[Contact], rules: Rules) -> Opportunity:
    """A qualified lead's opportunity: stable id per lead, data-derived dates, stage from rules."""
    converted_at: datetime = lead.last_seen_at
    budgets = [c for c in contacts if c.budget_amount]
    best = max(budgets, key=lambda c: (c.budget_amount or 0, c.contact_id)) if budgets else None
    timelines = [c.timeline_months for c in contacts if c.timeline_months is not None]
    months = max(1, min(timelines)) if timelines else 3
    title = fold(" ".join(c.job_title or "" for c in contacts))
    has_authority = any(t in title for t in rules.authority_titles)
    stage = rules.stages["with_authority_and_budget" if has_authority and best else "default"]
    primary = max(contacts, key=lambda c: (c.received_at.isoformat(), c.contact_id))
    account = account_for(lead)
    who = lead.full_name or lead.email or lead.lead_id
    return Opportunity(
        opportunity_id=stable_id("opp", lead.lead_id),
        lead_id=lead.lead_id,
        account_id=account.account_id,
        name=f"{account.name} – {who}" if account.kind == "business" else who,
        primary_contact_id=primary.contact_id,
        lead_source=lead.lead_source,
        stage=stage,
        probability=STAGE_PROBABILITY[stage],
        amount=best.budget_amount if best else None,
        currency=(best.budget_currency or "EUR") if best else None,
        close_date=_add_months(converted_at.date(), months),
        created_at=converted_at,
    )


def qualify_leads(
    leads: Sequence[Lead],
    contacts_by_lead: Mapping[str, Sequence[Contact]],
    rules: Rules,
    converted: frozenset[str] = frozenset(),
) -> QualifyResult:
    """Score every lead; convert the newly qualified. Leads in `converted` stay converted."""
    quals: list[Qualification] = []
    accounts: dict[str, Account] = {}
    opps: list[Opportunity] = []
    for lead in sorted(leads, key=lambda ld: ld.lead_id):
        members = contacts_by_lead[lead.lead_id]
        q = score_lead(lead, members, rules)
        quals.append(q)
        if q.status == "Qualified" and lead.lead_id not in converted:
            opp = convert_lead(lead, members, rules)
            acc = account_for(lead)
            accounts[acc.account_id] = acc
            opps.append(opp)
    return QualifyResult(quals, sorted(accounts.values(), key=lambda a: a.account_id), opps)
