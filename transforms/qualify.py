"""Qualification and conversion: score leads with declarative rules, convert the qualified ones."""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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


Predicate = Callable[[_Facts, datetime], "str | None"]


def _predicate(cond: Condition) -> Predicate:
    """The condition as a function of a lead's facts: why it holds, or None. Built once per
    rules object, so scoring a lead runs only the checks its rules declare."""
    if cond.text_contains_any:
        return _contains("the request mentions", "text", cond.text_contains_any)
    if cond.title_contains_any:
        return _contains("the job title mentions", "title", cond.title_contains_any)
    if cond.has:
        has, said = cond.has, f"{cond.has.replace('_', ' ')} stated"
        return lambda f, _: said if has in f.has else None
    if cond.budget_between:
        lo, hi = cond.budget_between

        def budget(f: _Facts, _: datetime) -> str | None:
            b = f.budget
            if b is None or b.budget_amount is None or not lo <= b.budget_amount <= hi:
                return None
            return f"budget {b.budget_amount:,.0f} {b.budget_currency or ''}".rstrip()

        return budget
    if cond.timeline_within_months is not None:
        within = cond.timeline_within_months

        def timeline(f: _Facts, _: datetime) -> str | None:
            m = f.timeline_months
            if m is None or m > within:
                return None
            return f"buying within {m} month{'' if m == 1 else 's'}"

        return timeline
    if cond.touches_at_least:
        least = cond.touches_at_least
        return lambda f, _: f"{f.touches} touches" if f.touches >= least else None
    if cond.sources_at_least:
        fewest = cond.sources_at_least
        return lambda f, _: f"{f.sources} sources" if f.sources >= fewest else None
    if cond.seen_within_days is not None:
        window = cond.seen_within_days

        def seen(f: _Facts, as_of: datetime) -> str | None:
            days = (as_of - f.last_seen_at) // _DAY
            if not 0 <= days <= window:
                return None
            return f"last seen {days} days before {as_of:%Y-%m-%d}"

        return seen
    if cond.email_is:
        kind, flag = cond.email_is, f"email_is_{cond.email_is}"
        said = f"{kind} email address"

        def email_is(f: _Facts, _: datetime) -> str | None:
            flags = [getattr(c, flag) for c in f.emails]
            held = (any(flags) if kind == "disposable" else all(flags)) and bool(flags)
            return said if held else None

        return email_is
    if cond.email_domain_in:
        domains = frozenset(d.lower() for d in cond.email_domain_in)

        def domain_in(f: _Facts, _: datetime) -> str | None:
            found = sorted(
                {c.email_key.partition("@")[2] for c in f.emails if c.email_key} & domains
            )
            return f"email domain {found[0]}" if found else None

        return domain_in
    if cond.business_email:

        def business(f: _Facts, _: datetime) -> str | None:
            biz = [c.email_key for c in f.emails if not (c.email_is_free or c.email_is_disposable)]
            return f"business email domain {biz[0].partition('@')[2]}" if biz and biz[0] else None

        return business
    if cond.consent_declined:
        return lambda f, _: "declined consent" if f.consent_declined else None
    raise AssertionError("a validated condition always has one predicate")


_DAY = timedelta(days=1)


def _contains(said: str, field_: str, words: Sequence[str]) -> Predicate:
    folded = tuple((w, fold(w)) for w in words)

    def contains(f: _Facts, _: datetime) -> str | None:
        text = f.text if field_ == "text" else f.title
        for word, key in folded:
            if key in text:
                return f"{said} {word!r}"
        return None

    return contains


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rules object prepared for scoring many leads: predicates, sorted grades, status sets."""

    version: str
    checks: tuple[tuple[str, str, int, bool, Predicate], ...]  # name, criterion, weight, dq, pred
    grades: tuple[tuple[str, int], ...]  # highest floor first
    qualified_require: frozenset[str]
    qualified_min: int
    nurturing_any: frozenset[str]
    working_touches: int


def _compile(rules: Rules) -> _Compiled:
    return _Compiled(
        rules.version,
        tuple(
            (r.name, r.criterion, r.weight, r.disqualify, _predicate(r.when)) for r in rules.rules
        ),
        tuple(sorted(rules.grades.items(), key=lambda g: -g[1])),
        frozenset(rules.qualified.require),
        rules.qualified.min_score,
        frozenset(rules.nurturing.require_any),
        rules.working.touches_at_least,
    )


def _met(reasons: Mapping[str, Sequence[str]]) -> set[str]:
    return {c for c, why in reasons.items() if why and c != "negative"}


def score_lead(
    lead: Lead, contacts: Sequence[Contact], rules: Rules, as_of: datetime
) -> Qualification:
    """Score one lead; every point carries the name of the rule that gave it and why it held."""
    return _score(lead, _facts(lead, contacts), _compile(rules), as_of)


def _score(lead: Lead, facts: _Facts, rules: _Compiled, as_of: datetime) -> Qualification:
    reasons: dict[str, list[str]] = {}
    score = 0
    disqualified = False
    for name, criterion, weight, disqualify, predicate in rules.checks:
        why = predicate(facts, as_of)
        if why is None:
            continue
        score += weight
        disqualified |= disqualify
        reasons.setdefault(criterion, []).append(f"{name} ({weight:+d}): {why}")
    score = max(0, min(100, score))
    grade = next(g for g, floor in rules.grades if score >= floor)
    met = {c for c in reasons if c != "negative"}
    if disqualified:
        status = "Unqualified"
    elif rules.qualified_require <= met and score >= rules.qualified_min:
        status = "Qualified"
    elif met & rules.nurturing_any:
        status = "Nurturing"
    elif lead.contact_count >= rules.working_touches:
        status = "Working - Contacted"
    else:
        status = "Open - Not Contacted"
    ordered = {c: reasons[c] for c in CRITERIA if c in reasons}
    return Qualification(lead.lead_id, status, score, grade, ordered, rules.version)


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
    # opportunity → the lead it now belongs to, for opportunities of leads merged into another
    reparented: dict[str, str] = field(default_factory=dict)


def fold_merges(
    merges: Sequence[tuple[str, str]],
    prior: Mapping[str, Prior],
    stages: Mapping[str, Stage],
    at: Mapping[str, datetime],
    rules_version: str,
) -> tuple[dict[str, Prior], dict[str, str], list[StageChange]]:
    """Carry the conversions of merged leads over to the lead they were merged into.

    Conversion is sticky, so a merge never deletes an opportunity. The surviving lead keeps its
    own opportunity, or else the earliest one among the leads merged into it, which then moves
    to the survivor. Every other open opportunity of the person is a duplicate: it is closed as
    lost, with the reason in its stage history, and stays attached to its merged lead id, which
    `lead_merges` maps to the survivor (a lead has one opportunity). `at` gives the time of each
    survivor's merge (its newest evidence).
    """
    lost = next((s for s in stages.values() if s.is_closed and not s.is_won), None)
    folded = dict(prior)
    reparented: dict[str, str] = {}
    closing: list[StageChange] = []
    groups: dict[str, list[str]] = {}
    for merged, into in merges:
        groups.setdefault(into, []).append(merged)
    for into in sorted(groups):
        converted = [
            (lead_id, p)
            for lead_id in sorted(groups[into])
            if (p := prior.get(lead_id)) is not None and p.opportunity_id and p.converted_at
        ]
        if not converted:
            continue
        own = prior.get(into, Prior(None))
        if own.opportunity_id and own.converted_at:
            keep = own
        else:
            keep = min((p for _, p in converted), key=lambda p: (p.converted_at, p.opportunity_id))
            folded[into] = Prior(
                own.status, keep.opportunity_id, keep.account_id, keep.converted_at, keep.stage
            )
        for merged, p in converted:
            assert p.opportunity_id is not None
            if p.opportunity_id == keep.opportunity_id:
                reparented[p.opportunity_id] = into
                continue
            current = stages.get(p.stage or "")
            if lost is None or current is None or current.is_closed:
                continue
            closing.append(
                StageChange(
                    p.opportunity_id,
                    merged,
                    current.name,
                    lost.name,
                    lost.probability,
                    at[into],
                    f"duplicate: lead {merged} merged into {into}, "
                    f"whose opportunity {keep.opportunity_id} continues",
                    rules_version,
                )
            )
    return folded, reparented, closing


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
    merges: Sequence[tuple[str, str]] = (),
) -> QualifyResult:
    """Score every lead and convert the newly qualified; conversion is sticky.

    `as_of` is the data's clock (recency is measured against it, never the wall clock).
    `prior` holds what the warehouse has: a converted lead keeps its opportunity whatever the
    rules say now, and an open opportunity's stage only moves forward. History rows carry
    `changed_at` when given (a re-scoring), else the lead's newest contact time (new evidence).
    `merges` are (merged lead, surviving lead) pairs; `prior` should hold both sides, so that
    the merged leads' opportunities move to the survivor (see `fold_merges`).
    """
    by_name = {s.name: s for s in stages}
    missing = sorted(_stage_names(rules) - set(by_name))
    if missing:
        raise RulesError(f"rules: stages not in opportunity_stages: {', '.join(missing)}")
    when = {ld.lead_id: changed_at or ld.last_seen_at for ld in leads}
    prior, reparented, closing = fold_merges(
        [m for m in merges if m[1] in when], prior or {}, by_name, when, rules.version
    )
    quals: list[Qualification] = []
    accounts: dict[str, Account] = {}
    opps: list[Opportunity] = []
    conversions: dict[str, tuple[str, str, datetime]] = {}
    status_history: list[StatusChange] = []
    stage_history: list[StageChange] = list(closing)
    compiled = _compile(rules)
    for lead in sorted(leads, key=lambda ld: ld.lead_id):
        members = contacts_by_lead[lead.lead_id]
        facts = _facts(lead, members)
        q = _score(lead, facts, compiled, as_of)
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
        reparented,
    )


def _stage_names(rules: Rules) -> set[str]:
    return {rules.opportunity.default_stage, *(s.stage for s in rules.opportunity.stages)}
