"""Qualification and conversion: score leads with declarative rules, convert the qualified ones."""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from transforms.normalize import fold
from transforms.records import Account, Contact, Lead, Opportunity, Qualification, stable_id

STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Nurturing",
    "Qualified",
    "Unqualified",
)
CRITERIA = ("need", "market", "timeline", "authority", "engagement", "negative")


@dataclass(frozen=True, slots=True)
class Stage:
    """One row of `opportunity_stages`: the CRM's stage picklist with its forecast semantics."""

    name: str
    sort_order: int
    probability: int
    forecast_category: str
    is_closed: bool
    is_won: bool


# The common CRM defaults; the warehouse seeds `opportunity_stages` with exactly these.
DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage("Prospecting", 1, 10, "Pipeline", False, False),
    Stage("Qualification", 2, 10, "Pipeline", False, False),
    Stage("Needs Analysis", 3, 20, "Pipeline", False, False),
    Stage("Value Proposition", 4, 50, "Pipeline", False, False),
    Stage("Id. Decision Makers", 5, 60, "Pipeline", False, False),
    Stage("Perception Analysis", 6, 70, "Pipeline", False, False),
    Stage("Proposal/Price Quote", 7, 75, "Pipeline", False, False),
    Stage("Negotiation/Review", 8, 90, "Pipeline", False, False),
    Stage("Closed Won", 9, 100, "Closed", True, True),
    Stage("Closed Lost", 10, 0, "Omitted", True, False),
)
STAGE_PROBABILITY = {s.name: s.probability for s in DEFAULT_STAGES}


class RulesError(ValueError):
    """A rules file that cannot be used, told in one line naming the key."""


# ---- the rules file ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Criterion = Literal["need", "market", "timeline", "authority", "engagement", "negative"]
Positive = Literal["need", "market", "timeline", "authority", "engagement"]
Keywords = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class Condition(_Strict):
    """Exactly one predicate over a lead and its contacts."""

    text_contains_any: Keywords | None = None  # interest + message, accent- and case-folded
    title_contains_any: Keywords | None = None
    has: Literal["interest", "company", "budget", "timeline", "job_title", "phone"] | None = None
    budget_between: tuple[float, float] | None = None
    timeline_within_months: Annotated[int, Field(ge=0)] | None = None
    touches_at_least: Annotated[int, Field(ge=1)] | None = None
    sources_at_least: Annotated[int, Field(ge=1)] | None = None
    seen_within_days: Annotated[int, Field(ge=0)] | None = None
    email_is: Literal["free", "disposable", "role"] | None = None
    email_domain_in: Keywords | None = None
    business_email: Literal[True] | None = None
    consent_declined: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [k for k, v in self if v is not None]
        if len(given) != 1:
            names = ", ".join(given) or "none"
            raise ValueError(f"give exactly one condition, got {len(given)} ({names})")
        if self.budget_between and self.budget_between[0] > self.budget_between[1]:
            raise ValueError("budget_between: the lower bound is above the upper bound")
        return self


class Rule(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    criterion: Criterion
    weight: Annotated[int, Field(ge=-100, le=100)]
    when: Condition
    disqualify: bool = False

    @model_validator(mode="after")
    def _sign(self) -> Rule:
        if self.criterion == "negative" and self.weight > 0:
            raise ValueError("a negative rule's weight must be 0 or below")
        if self.criterion != "negative" and (self.weight < 0 or self.disqualify):
            raise ValueError(f"a {self.criterion} rule must have weight >= 0 and not disqualify")
        return self


class _Qualified(_Strict):
    min_score: Annotated[int, Field(ge=0, le=100)]
    require: list[Positive] = Field(default_factory=list)


class _Nurturing(_Strict):
    require_any: list[Positive] = Field(default_factory=list)


class _Working(_Strict):
    touches_at_least: Annotated[int, Field(ge=1)] = 2


class _StageWhen(_Strict):
    when_met: list[Positive]
    stage: str


class _Opportunity(_Strict):
    default_stage: str = "Prospecting"
    default_close_months: Annotated[int, Field(ge=0, le=120)] = 3
    default_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    stages: list[_StageWhen] = Field(default_factory=list)


class Rules(_Strict):
    """A validated rules file; see transforms/default_rules.yaml for the meaning of each key."""

    rules_version: Annotated[str, Field(min_length=1, max_length=32)]
    qualified: _Qualified
    nurturing: _Nurturing = _Nurturing()
    working: _Working = _Working()
    grades: Annotated[dict[Annotated[str, Field(pattern=r"^[A-Z]$")], int], Field(min_length=1)]
    opportunity: _Opportunity = _Opportunity()
    rules: Annotated[list[Rule], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Rules:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rules: rule names must be unique: {', '.join(dupes)}")
        if 0 not in self.grades.values():
            raise ValueError("grades: one grade must start at 0 so every score has a grade")
        known = {s.name for s in DEFAULT_STAGES}
        for st in [self.opportunity.default_stage, *(s.stage for s in self.opportunity.stages)]:
            if st not in known:
                raise ValueError(f"opportunity: unknown stage {st!r} (one of {sorted(known)})")
        return self

    @property
    def version(self) -> str:
        return self.rules_version


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "tuple[", "list[", "constrained-")):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse_rules(doc: Any, origin: str = "rules") -> Rules:
    """Validate a rules document strictly; a RulesError names the file, the key and the problem."""
    if not isinstance(doc, Mapping):
        raise RulesError(f"{origin}: the top level must be a mapping")
    try:
        return Rules.model_validate(doc)
    except ValidationError as exc:
        # Unknown keys first: a misspelt key is also why a required one looks missing.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        told = []
        for err in errors[:3]:
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            told.append(f"{_where(tuple(err['loc']))}: {msg.removeprefix('Value error, ')}")
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise RulesError(f"{origin}: {'; '.join(told)}{more}") from None


def rules_from_yaml(text: str, origin: str = "rules") -> Rules:
    """Parse and validate a rules file's text."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RulesError(f"{origin}:{where} is not valid YAML") from None
    return parse_rules(doc, origin)


# ---- scoring -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the conditions look at, computed once per lead."""

    text: str
    title: str
    touches: int
    sources: int
    last_seen_at: datetime
    budget: Contact | None
    timeline_months: int | None
    has: frozenset[str]
    emails: tuple[Contact, ...]
    consent_declined: bool


def _facts(lead: Lead, contacts: Sequence[Contact]) -> _Facts:
    budgets = [c for c in contacts if c.budget_amount]
    timelines = [c.timeline_months for c in contacts if c.timeline_months is not None]
    has = {
        name
        for name, present in (
            ("interest", any(c.interest for c in contacts)),
            ("company", bool(lead.company)),
            ("budget", bool(budgets)),
            ("timeline", bool(timelines)),
            ("job_title", any(c.job_title for c in contacts)),
            ("phone", bool(lead.phone)),
        )
        if present
    }
    return _Facts(
        text=fold(" ".join(f"{c.interest or ''} {c.message or ''}" for c in contacts)),
        title=fold(" ".join(c.job_title or "" for c in contacts)),
        touches=lead.contact_count,
        sources=lead.source_count,
        last_seen_at=lead.last_seen_at,
        budget=max(budgets, key=lambda c: (c.budget_amount or 0, c.contact_id))
        if budgets
        else None,
        timeline_months=min(timelines) if timelines else None,
        has=frozenset(has),
        emails=tuple(c for c in contacts if c.email_key),
        consent_declined=any(c.consent is False for c in contacts),
    )


_fold_keyword = lru_cache(maxsize=8192)(fold)  # keywords repeat for every lead: fold them once


def _first(words: Sequence[str], text: str) -> str | None:
    return next((w for w in words if _fold_keyword(w) in text), None)


def _check(cond: Condition, f: _Facts, as_of: datetime) -> str | None:
    """Why the condition holds, or None when it does not."""
    if cond.text_contains_any:
        hit = _first(cond.text_contains_any, f.text)
        return f"the request mentions {hit!r}" if hit else None
    if cond.title_contains_any:
        hit = _first(cond.title_contains_any, f.title)
        return f"the job title mentions {hit!r}" if hit else None
    if cond.has:
        return f"{cond.has.replace('_', ' ')} stated" if cond.has in f.has else None
    if cond.budget_between:
        lo, hi = cond.budget_between
        b = f.budget
        if b is None or b.budget_amount is None or not lo <= b.budget_amount <= hi:
            return None
        return f"budget {b.budget_amount:,.0f} {b.budget_currency or ''}".rstrip()
    if cond.timeline_within_months is not None:
        m = f.timeline_months
        ok = m is not None and m <= cond.timeline_within_months
        return f"buying within {m} month{'' if m == 1 else 's'}" if ok else None
    if cond.touches_at_least:
        return f"{f.touches} touches" if f.touches >= cond.touches_at_least else None
    if cond.sources_at_least:
        return f"{f.sources} sources" if f.sources >= cond.sources_at_least else None
    if cond.seen_within_days is not None:
        days = (as_of - f.last_seen_at) // timedelta(days=1)
        return (
            f"last seen {days} days before {as_of:%Y-%m-%d}"
            if (0 <= days <= cond.seen_within_days)
            else None
        )
    if cond.email_is:
        flag = f"email_is_{cond.email_is}"
        flags = [getattr(c, flag) for c in f.emails]
        held = (any(flags) if cond.email_is == "disposable" else all(flags)) and bool(flags)
        return f"{cond.email_is} email address" if held else None
    if cond.email_domain_in:
        domains = {d.lower() for d in cond.email_domain_in}
        found = sorted({c.email_key.partition("@")[2] for c in f.emails if c.email_key} & domains)
        return f"email domain {found[0]}" if found else None
    if cond.business_email:
        biz = [c.email_key for c in f.emails if not (c.email_is_free or c.email_is_disposable)]
        return f"business email domain {biz[0].partition('@')[2]}" if biz and biz[0] else None
    if cond.consent_declined:
        return "declined consent" if f.consent_declined else None
    raise AssertionError("a validated condition always has one predicate")


def _grades(rules: Rules) -> list[tuple[str, int]]:
    return sorted(rules.grades.items(), key=lambda g: -g[1])


def _met(reasons: Mapping[str, Sequence[str]]) -> set[str]:
    return {c for c, why in reasons.items() if why and c != "negative"}


def score_lead(
    lead: Lead, contacts: Sequence[Contact], rules: Rules, as_of: datetime
) -> Qualification:
    """Score one lead; every point carries the name of the rule that gave it and why it held."""
    return _score(lead, _facts(lead, contacts), rules, as_of)


def _score(lead: Lead, facts: _Facts, rules: Rules, as_of: datetime) -> Qualification:
    reasons: dict[str, list[str]] = {c: [] for c in CRITERIA}
    score = 0
    disqualified = False
    for rule in rules.rules:
        why = _check(rule.when, facts, as_of)
        if why is None:
            continue
        score += rule.weight
        disqualified |= rule.disqualify
        reasons[rule.criterion].append(f"{rule.name} ({rule.weight:+d}): {why}")
    score = max(0, min(100, score))
    grade = next(
        g for g, floor in sorted(rules.grades.items(), key=lambda g: -g[1]) if score >= floor
    )
    met = _met(reasons)
    if disqualified:
        status = "Unqualified"
    elif set(rules.qualified.require) <= met and score >= rules.qualified.min_score:
        status = "Qualified"
    elif met & set(rules.nurturing.require_any):
        status = "Nurturing"
    elif lead.contact_count >= rules.working.touches_at_least:
        status = "Working - Contacted"
    else:
        status = "Open - Not Contacted"
    reasons = {c: why for c, why in reasons.items() if why}
    return Qualification(lead.lead_id, status, score, grade, reasons, rules.version)


# ---- conversion ----------------------------------------------------------------------------


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def account_for(lead: Lead) -> Account:
    """The company behind the lead, or a person account when there is no company (free-mail)."""
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


def stage_for(q: Qualification, rules: Rules) -> str:
    met = _met(q.reasons)
    return next(
        (s.stage for s in rules.opportunity.stages if set(s.when_met) <= met),
        rules.opportunity.default_stage,
    )


def convert_lead(
    lead: Lead,
    contacts: Sequence[Contact],
    q: Qualification,
    rules: Rules,
    stages: Mapping[str, Stage],
    facts: _Facts | None = None,
) -> Opportunity:
    """A qualified lead's opportunity: stable id per lead, data-derived dates, stage from rules."""
    converted_at: datetime = lead.last_seen_at
    facts = facts or _facts(lead, contacts)
    best = facts.budget
    months = facts.timeline_months
    if months is None:
        months = rules.opportunity.default_close_months
    stage = stages[stage_for(q, rules)]
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
        stage=stage.name,
        probability=stage.probability,
        amount=best.budget_amount if best else None,
        currency=(best.budget_currency or rules.opportunity.default_currency) if best else None,
        close_date=_add_months(converted_at.date(), max(0, months)),
        created_at=converted_at,
    )


# ---- history and the result of a qualification pass ----------------------------------------


@dataclass(frozen=True, slots=True)
class Prior:
    """What the warehouse already holds for a lead: its status and, once converted, its opportunity."""

    status: str | None
    opportunity_id: str | None = None
    account_id: str | None = None
    converted_at: datetime | None = None
    stage: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    lead_id: str
    from_status: str | None
    to_status: str
    changed_at: datetime
    reason: str
    rules_version: str
    score: int

    @property
    def history_id(self) -> str:
        at = self.changed_at.isoformat()
        return stable_id(
            "lsh", self.lead_id, self.from_status, self.to_status, at, self.rules_version
        )


@dataclass(frozen=True, slots=True)
class StageChange:
    opportunity_id: str
    lead_id: str
    from_stage: str | None
    to_stage: str
    probability: int
    changed_at: datetime
    reason: str
    rules_version: str

    @property
    def history_id(self) -> str:
        at = self.changed_at.isoformat()
        return stable_id(
            "osh", self.opportunity_id, self.from_stage, self.to_stage, at, self.rules_version
        )


@dataclass(frozen=True, slots=True)
class QualifyResult:
    qualifications: list[Qualification]
    accounts: list[Account]
    opportunities: list[Opportunity]  # new conversions only: existing ones are never rewritten
    conversions: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    status_history: list[StatusChange] = field(default_factory=list)
    stage_history: list[StageChange] = field(default_factory=list)


def carry_opportunities(
    prior: Mapping[str, Prior],
    merges: Sequence[tuple[str, str]],
    stages: Sequence[Stage],
    at: datetime,
    rules_version: str,
) -> tuple[dict[str, Prior], list[tuple[str, str]], list[StageChange]]:
    """Merged leads hand their opportunities to the lead they merged into.

    Returns the priors with each survivor that had no opportunity taking the earliest one of
    the leads merged into it, the (opportunity, survivor) moves, and a close to Closed Lost for
    every other open opportunity that now belongs to a lead that already has one.
    """
    out = dict(prior)
    by_name = {s.name: s for s in stages}
    lost = next((s for s in stages if s.is_closed and not s.is_won), None)
    moves: list[tuple[str, str]] = []
    closes: list[StageChange] = []
    into: dict[str, list[str]] = {}
    for merged, survivor in merges:
        into.setdefault(survivor, []).append(merged)
    for survivor in sorted(into):
        donors = sorted(
            (out[m] for m in into[survivor] if m in out and out[m].opportunity_id),
            key=lambda p: (p.converted_at or at, p.opportunity_id or ""),
        )
        for p in donors:
            assert p.opportunity_id is not None
            moves.append((p.opportunity_id, survivor))
            mine = out.get(survivor, Prior(None))
            if mine.opportunity_id is None:
                out[survivor] = Prior(
                    mine.status, p.opportunity_id, p.account_id, p.converted_at, p.stage
                )
                continue
            stage = by_name.get(p.stage or "")
            if lost is not None and stage is not None and not stage.is_closed:
                closes.append(
                    StageChange(
                        p.opportunity_id,
                        survivor,
                        stage.name,
                        lost.name,
                        lost.probability,
                        at,
                        f"its lead merged into {survivor}, whose opportunity is "
                        f"{mine.opportunity_id}",
                        rules_version,
                    )
                )
    return out, moves, closes


def _why(q: Qualification) -> str:
    met = sorted(_met(q.reasons))
    neg = [r.split(" ", 1)[0] for r in q.reasons.get("negative", [])]
    text = f"score {q.score}; met: {', '.join(met) or 'none'}"
    return text + (f"; negative: {', '.join(neg)}" if neg else "")


def qualify_leads(
    leads: Sequence[Lead],
    contacts_by_lead: Mapping[str, Sequence[Contact]],
    rules: Rules,
    as_of: datetime,
    prior: Mapping[str, Prior] | None = None,
    stages: Sequence[Stage] = DEFAULT_STAGES,
    changed_at: datetime | None = None,
) -> QualifyResult:
    """Score every lead and convert the newly qualified; conversion is sticky.

    `as_of` is the data's clock (recency is measured against it, never the wall clock).
    `prior` holds what the warehouse has: a converted lead keeps its opportunity whatever the
    rules say now, and an open opportunity's stage only moves forward. History rows carry
    `changed_at` when given (a re-scoring), else the lead's newest contact time (new evidence).
    """
    prior = prior or {}
    by_name = {s.name: s for s in stages}
    missing = sorted(_stage_names(rules) - set(by_name))
    if missing:
        raise RulesError(f"rules: stages not in opportunity_stages: {', '.join(missing)}")
    quals: list[Qualification] = []
    accounts: dict[str, Account] = {}
    opps: list[Opportunity] = []
    conversions: dict[str, tuple[str, str, datetime]] = {}
    status_history: list[StatusChange] = []
    stage_history: list[StageChange] = []
    for lead in sorted(leads, key=lambda ld: ld.lead_id):
        members = contacts_by_lead[lead.lead_id]
        facts = _facts(lead, members)
        q = _score(lead, facts, rules, as_of)
        quals.append(q)
        before = prior.get(lead.lead_id, Prior(None))
        at = changed_at or lead.last_seen_at
        if before.opportunity_id and before.account_id and before.converted_at:
            conversions[lead.lead_id] = (
                before.opportunity_id,
                before.account_id,
                before.converted_at,
            )
        if q.status != before.status:
            reason = _why(q)
            if before.opportunity_id and q.status != "Qualified":
                reason += f"; converted lead, opportunity {before.opportunity_id} kept"
            status_history.append(
                StatusChange(
                    lead.lead_id, before.status, q.status, at, reason, rules.version, q.score
                )
            )
        if q.status != "Qualified":
            continue
        if before.opportunity_id is None:
            opp = convert_lead(lead, members, q, rules, by_name, facts)
            acc = account_for(lead)
            accounts[acc.account_id] = acc
            opps.append(opp)
            conversions[lead.lead_id] = (opp.opportunity_id, opp.account_id, opp.created_at)
            stage_history.append(
                StageChange(
                    opp.opportunity_id,
                    lead.lead_id,
                    None,
                    opp.stage,
                    opp.probability,
                    opp.created_at,
                    f"converted from lead; {_why(q)}",
                    rules.version,
                )
            )
            continue
        current = by_name.get(before.stage or "")
        target = by_name[stage_for(q, rules)]
        if current and not current.is_closed and target.sort_order > current.sort_order:
            stage_history.append(
                StageChange(
                    before.opportunity_id,
                    lead.lead_id,
                    current.name,
                    target.name,
                    target.probability,
                    at,
                    f"advanced by new evidence; {_why(q)}",
                    rules.version,
                )
            )
    return QualifyResult(
        quals,
        sorted(accounts.values(), key=lambda a: a.account_id),
        opps,
        conversions,
        status_history,
        stage_history,
    )


def _stage_names(rules: Rules) -> set[str]:
    return {rules.opportunity.default_stage, *(s.stage for s in rules.opportunity.stages)}
