"""Qualification and conversion: score leads with declarative rules, convert the qualified ones."""

from __future__ import annotations

import calendar
from collections.abc import Callable, Hashable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property, lru_cache
from itertools import compress, count
from operator import attrgetter
from typing import Annotated, Any, Literal, TypeVar

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


K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


def _each_distinct(values: Sequence[K], said: Callable[[K], R]) -> list[R]:
    """`said` of each value, computed once per distinct value: leads share texts, days, budgets."""
    memo = {v: said(v) for v in set(values)}
    return [memo[v] for v in values]


def _budget_rank(c: Contact) -> tuple[float, str]:
    return (c.budget_amount or 0, c.contact_id)


def _primary_rank(c: Contact) -> tuple[str, str]:
    return (c.received_at.isoformat(), c.contact_id)


class _Facts:
    """What the conditions look at, one list per fact with an entry per lead. Each list is built
    the first time a rule asks for it, so a batch computes only the facts its rules use."""

    def __init__(self, leads: Sequence[Lead], members: Sequence[Sequence[Contact]]) -> None:
        self.leads = leads
        self.members = members

    @cached_property
    def text(self) -> list[str]:
        """Interest and message of every contact, accent- and case-folded."""
        raw = [" ".join(f"{c.interest or ''} {c.message or ''}" for c in cs) for cs in self.members]
        return _each_distinct(raw, fold)

    @cached_property
    def title(self) -> list[str]:
        raw = [" ".join(c.job_title or "" for c in cs) for cs in self.members]
        return _each_distinct(raw, fold)

    @cached_property
    def budget(self) -> list[Contact | None]:
        """The contact stating the highest budget."""
        return [
            max(stated, key=_budget_rank)
            if (stated := [c for c in cs if c.budget_amount])
            else None
            for cs in self.members
        ]

    @cached_property
    def timeline_months(self) -> list[int | None]:
        """The shortest stated timeline."""
        return [
            min(stated)
            if (stated := [c.timeline_months for c in cs if c.timeline_months is not None])
            else None
            for cs in self.members
        ]

    @cached_property
    def emails(self) -> list[list[Contact]]:
        return [[c for c in cs if c.email_key] for cs in self.members]

    def has(self, what: str) -> list[bool]:
        """Whether the lead (company, phone) or any of its contacts states `what`."""
        if what in ("company", "phone"):
            return [bool(getattr(ld, what)) for ld in self.leads]
        if what == "budget":
            return [b is not None for b in self.budget]
        if what == "timeline":
            return [m is not None for m in self.timeline_months]
        stated = attrgetter(what)
        return [any(map(stated, cs)) for cs in self.members]


Column = Callable[[_Facts, datetime], list["str | None"]]


def _column(cond: Condition) -> Column:
    """The condition over a batch of leads: for each lead, why it holds, or None. Built once per
    rules object, so scoring runs only the checks its rules declare, each over all leads."""
    if cond.text_contains_any:
        return _contains("the request mentions", "text", cond.text_contains_any)
    if cond.title_contains_any:
        return _contains("the job title mentions", "title", cond.title_contains_any)
    if cond.has:
        has, said = cond.has, f"{cond.has.replace('_', ' ')} stated"
        return lambda f, _: [said if held else None for held in f.has(has)]
    if cond.budget_between:
        lo, hi = cond.budget_between

        def budget(stated: tuple[float | None, str | None] | None) -> str | None:
            if stated is None or stated[0] is None or not lo <= stated[0] <= hi:
                return None
            return f"budget {stated[0]:,.0f} {stated[1] or ''}".rstrip()

        return lambda f, _: _each_distinct(
            [None if b is None else (b.budget_amount, b.budget_currency) for b in f.budget], budget
        )
    if cond.timeline_within_months is not None:
        within = cond.timeline_within_months

        def timeline(m: int | None) -> str | None:
            if m is None or m > within:
                return None
            return f"buying within {m} month{'' if m == 1 else 's'}"

        return lambda f, _: _each_distinct(f.timeline_months, timeline)
    if cond.touches_at_least:
        least = cond.touches_at_least
        return lambda f, _: _each_distinct(
            [ld.contact_count for ld in f.leads], lambda n: f"{n} touches" if n >= least else None
        )
    if cond.sources_at_least:
        fewest = cond.sources_at_least
        return lambda f, _: _each_distinct(
            [ld.source_count for ld in f.leads], lambda n: f"{n} sources" if n >= fewest else None
        )
    if cond.seen_within_days is not None:
        window = cond.seen_within_days

        def seen(f: _Facts, as_of: datetime) -> list[str | None]:
            def said(days: int) -> str | None:
                if not 0 <= days <= window:
                    return None
                return f"last seen {days} days before {as_of:%Y-%m-%d}"

            return _each_distinct([(as_of - ld.last_seen_at) // _DAY for ld in f.leads], said)

        return seen
    if cond.email_is:
        flag, anyone = attrgetter(f"email_is_{cond.email_is}"), cond.email_is == "disposable"
        said = f"{cond.email_is} email address"

        if anyone:
            return lambda f, _: [said if any(map(flag, es)) else None for es in f.emails]
        return lambda f, _: [said if es and all(map(flag, es)) else None for es in f.emails]
    if cond.email_domain_in:
        domains = frozenset(d.lower() for d in cond.email_domain_in)

        def domain_in(emails: list[Contact]) -> str | None:
            found = sorted({c.email_key.partition("@")[2] for c in emails if c.email_key} & domains)
            return f"email domain {found[0]}" if found else None

        return lambda f, _: [domain_in(es) for es in f.emails]
    if cond.business_email:

        def business(emails: list[Contact]) -> str | None:
            biz = [c.email_key for c in emails if not (c.email_is_free or c.email_is_disposable)]
            return f"business email domain {biz[0].partition('@')[2]}" if biz and biz[0] else None

        return lambda f, _: [business(es) for es in f.emails]
    if cond.consent_declined:
        return lambda f, _: [
            "declined consent" if any(c.consent is False for c in cs) else None for cs in f.members
        ]
    raise AssertionError("a validated condition always has one predicate")


_DAY = timedelta(days=1)


def _contains(said: str, field_: str, words: Sequence[str]) -> Column:
    folded = tuple((w, fold(w)) for w in words)

    def first(text: str) -> str | None:
        for word, key in folded:
            if key in text:
                return f"{said} {word!r}"
        return None

    return lambda f, _: _each_distinct(f.text if field_ == "text" else f.title, first)


@dataclass(frozen=True, slots=True)
class _Check:
    name: str
    criterion: str
    weight: int
    disqualify: bool
    column: Column


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rules object prepared for scoring many leads: columns, sorted grades, status sets."""

    version: str
    checks: tuple[_Check, ...]
    grades: tuple[tuple[str, int], ...]  # highest floor first
    qualified_require: frozenset[str]
    qualified_min: int
    nurturing_any: frozenset[str]
    working_touches: int
    opportunity: _Opportunity


def _compile(rules: Rules) -> _Compiled:
    return _Compiled(
        rules.version,
        tuple(
            _Check(r.name, r.criterion, r.weight, r.disqualify, _column(r.when))
            for r in rules.rules
        ),
        tuple(sorted(rules.grades.items(), key=lambda g: -g[1])),
        frozenset(rules.qualified.require),
        rules.qualified.min_score,
        frozenset(rules.nurturing.require_any),
        rules.working.touches_at_least,
        rules.opportunity,
    )


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What holding exactly one set of rules decides; the same for every lead that holds it."""

    score: int
    grade: str
    layout: tuple[tuple[str, tuple[int, ...]], ...]  # criterion → its held checks, CRITERIA order
    status: str | None  # None: Working or Open, by the lead's touches
    stage: str  # for an opportunity opened or advanced by it
    why: str


def _verdict(held: int, rules: _Compiled) -> _Verdict:
    """The verdict of the checks whose bits are set in `held`."""
    on = [i for i in range(len(rules.checks)) if held >> i & 1]
    score = max(0, min(100, sum(rules.checks[i].weight for i in on)))
    layout = tuple(
        (c, idx)
        for c in CRITERIA
        if (idx := tuple(i for i in on if rules.checks[i].criterion == c))
    )
    met = {c for c, _ in layout if c != "negative"}
    if any(rules.checks[i].disqualify for i in on):
        status: str | None = "Unqualified"
    elif rules.qualified_require <= met and score >= rules.qualified_min:
        status = "Qualified"
    elif met & rules.nurturing_any:
        status = "Nurturing"
    else:
        status = None
    negative = [rules.checks[i].name for i in on if rules.checks[i].criterion == "negative"]
    return _Verdict(
        score,
        next(g for g, floor in rules.grades if score >= floor),
        layout,
        status,
        _stage(met, rules.opportunity),
        _why(score, met, negative),
    )


def _met(reasons: Mapping[str, Sequence[str]]) -> set[str]:
    return {c for c, why in reasons.items() if why and c != "negative"}


def score_lead(
    lead: Lead, contacts: Sequence[Contact], rules: Rules, as_of: datetime
) -> Qualification:
    """Score one lead; every point carries the name of the rule that gave it and why it held."""
    return _score(_Facts([lead], [contacts]), _compile(rules), as_of)[0][0]


def _score(
    facts: _Facts, rules: _Compiled, as_of: datetime
) -> tuple[list[Qualification], list[_Verdict]]:
    """Each rule once over all leads as a column of reasons, then each lead's qualification from
    the verdict of the rules it holds, decided once per distinct set of held rules."""
    n = len(facts.leads)
    columns: dict[str, list[list[str | None]]] = {}
    held = [0] * n
    for bit, check in enumerate(rules.checks):
        whys = check.column(facts, as_of)
        said: dict[str | None, str] = {
            w: f"{check.name} ({check.weight:+d}): {w}" for w in set(whys) if w is not None
        }
        column = list(map(said.get, whys))
        for i in compress(range(n), column):
            held[i] |= 1 << bit
        columns.setdefault(check.criterion, []).append(column)
    # Per criterion, each lead's reasons in rule order, or None when none held.
    criteria = [c for c in CRITERIA if c in columns]
    reasons = [
        [[s] if s else None for s in cols[0]]
        if len(cols) == 1
        else [list(filter(None, row)) or None for row in zip(*cols, strict=True)]
        for cols in (columns[c] for c in criteria)
    ]
    verdicts: dict[int, _Verdict] = {}
    quals, decided = [], []
    for lead, lists, h in zip(facts.leads, zip(*reasons, strict=True), held, strict=True):
        v = verdicts.get(h) or verdicts.setdefault(h, _verdict(h, rules))
        status = v.status or (
            "Working - Contacted"
            if lead.contact_count >= rules.working_touches
            else "Open - Not Contacted"
        )
        given = dict(compress(zip(criteria, lists, strict=True), lists))
        quals.append(Qualification(lead.lead_id, status, v.score, v.grade, given, rules.version))
        decided.append(v)
    return quals, decided


# ---- conversion ----------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def account_for(lead: Lead) -> Account:
    """The company behind the lead, or a person account when there is no company (free-mail)."""
    if lead.company_key or lead.company_domain:
        return _business(lead.company_key, lead.company_domain, lead.company, lead.country)
    name = lead.full_name or lead.email or lead.lead_id
    return Account(
        stable_id("acc", "person", lead.lead_id), name, "person", None, None, lead.country
    )


def _stage(met: AbstractSet[str], opportunity: _Opportunity) -> str:
    return next(
        (s.stage for s in opportunity.stages if set(s.when_met) <= met),
        opportunity.default_stage,
    )


@lru_cache(maxsize=4096)
def _business(
    company_key: str | None, domain: str | None, company: str | None, country: str | None
) -> Account:
    """Cached: many leads work for one company."""
    key = company_key or domain
    name = company or domain or str(key)
    return Account(
        stable_id("acc", "business", key), name, "business", domain, company_key, country
    )


def stage_for(q: Qualification, rules: Rules) -> str:
    return _stage(_met(q.reasons), rules.opportunity)


def convert_lead(
    lead: Lead,
    contacts: Sequence[Contact],
    q: Qualification,
    rules: Rules,
    stages: Mapping[str, Stage],
) -> Opportunity:
    """A qualified lead's opportunity: stable id per lead, data-derived dates, stage from rules."""
    facts = _Facts([lead], [contacts])
    stage = stages[stage_for(q, rules)]
    best, months = facts.budget[0], facts.timeline_months[0]
    return _opportunity(lead, contacts, best, months, stage, account_for(lead), rules)


def _opportunity(
    lead: Lead,
    contacts: Sequence[Contact],
    best: Contact | None,
    months: int | None,
    stage: Stage,
    account: Account,
    rules: Rules,
) -> Opportunity:
    converted_at: datetime = lead.last_seen_at
    if months is None:
        months = rules.opportunity.default_close_months
    primary = contacts[0] if len(contacts) == 1 else max(contacts, key=_primary_rank)
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


def _why(score: int, met: AbstractSet[str], negative: Sequence[str]) -> str:
    text = f"score {score}; met: {', '.join(sorted(met)) or 'none'}"
    return text + (f"; negative: {', '.join(negative)}" if negative else "")


_NEVER = Prior(None)


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
    accounts: dict[str, Account] = {}
    opps: list[Opportunity] = []
    conversions: dict[str, tuple[str, str, datetime]] = {}
    status_history: list[StatusChange] = []
    stage_history: list[StageChange] = list(closing)
    ordered = sorted(leads, key=lambda ld: ld.lead_id)
    facts = _Facts(ordered, [contacts_by_lead[ld.lead_id] for ld in ordered])
    quals, verdicts = _score(facts, _compile(rules), as_of)
    for lead, members, q, v, i in zip(ordered, facts.members, quals, verdicts, count()):
        before = prior.get(lead.lead_id, _NEVER)
        at = changed_at or lead.last_seen_at
        if before.opportunity_id and before.account_id and before.converted_at:
            conversions[lead.lead_id] = (
                before.opportunity_id,
                before.account_id,
                before.converted_at,
            )
        if q.status != before.status:
            reason = v.why
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
            acc = account_for(lead)
            stage = by_name[v.stage]
            best, months = facts.budget[i], facts.timeline_months[i]
            opp = _opportunity(lead, members, best, months, stage, acc, rules)
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
                    f"converted from lead; {v.why}",
                    rules.version,
                )
            )
            continue
        current = by_name.get(before.stage or "")
        target = by_name[v.stage]
        if current and not current.is_closed and target.sort_order > current.sort_order:
            stage_history.append(
                StageChange(
                    before.opportunity_id,
                    lead.lead_id,
                    current.name,
                    target.name,
                    target.probability,
                    at,
                    f"advanced by new evidence; {v.why}",
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
