"""Record types that flow between the stages: plain, typed values with no behaviour of their own."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


def stable_id(prefix: str, *parts: object) -> str:
    """An id derived only from stable keys, so re-runs, backfills and rebuilds agree on it."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return f"{prefix}_{digest[:20]}"


def raw_id_for(source: str, source_record_id: str) -> str:
    return stable_id("raw", source, source_record_id)


@dataclass(frozen=True, slots=True)
class RawRow:
    """A landed raw record as the transforms see it."""

    raw_id: str
    source: str
    source_kind: str
    source_record_id: str
    received_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that could not pass a stage, with the reason; it is kept, never dropped."""

    source: str
    source_record_id: str
    stage: str
    code: str
    message: str
    raw: str
    raw_id: str | None = None

    @property
    def reject_id(self) -> str:
        return stable_id("rej", self.source, self.source_record_id, self.stage)


@dataclass(frozen=True, slots=True)
class Contact:
    """One normalized sighting of a person, one per raw record that identifies somebody."""

    contact_id: str
    raw_id: str
    source: str
    source_kind: str
    received_at: datetime
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    name_key: str | None = None
    email: str | None = None
    email_key: str | None = None
    email_is_role: bool = False
    email_is_free: bool = False
    email_is_disposable: bool = False
    phone: str | None = None
    phone_raw: str | None = None
    company: str | None = None
    company_key: str | None = None
    company_domain: str | None = None
    job_title: str | None = None
    street: str | None = None
    city: str | None = None
    postal_code: str | None = None
    region: str | None = None
    country: str | None = None
    birth_date: date | None = None
    interest: str | None = None
    message: str | None = None
    budget_amount: float | None = None
    budget_currency: str | None = None
    timeline_months: int | None = None
    consent: bool | None = None
    issues: tuple[str, ...] = ()
    phone_ext: str | None = None
    phone_is_mobile: bool | None = None
    # the record's further addresses and numbers (a work and a mobile phone, "E-mail 2"),
    # normalized; the contact's own email and phone are the first valid of each
    other_emails: tuple[str, ...] = ()
    other_phones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Link:
    """Why a contact belongs to a lead: the rule that linked it and its score."""

    contact_id: str
    lead_id: str
    rule: str
    score: float
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lead:
    """The golden record of one real person, built from all of their contacts."""

    lead_id: str
    first_name: str | None
    last_name: str | None
    full_name: str | None
    email: str | None
    phone: str | None
    company: str | None
    company_key: str | None
    company_domain: str | None
    job_title: str | None
    city: str | None
    postal_code: str | None
    country: str | None
    lead_source: str
    first_seen_at: datetime
    last_seen_at: datetime
    contact_count: int
    source_count: int
    survivorship: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Qualification:
    """A lead's status and score, with the reasons per criterion and the rules that gave them."""

    lead_id: str
    status: str
    score: int
    grade: str
    reasons: dict[str, list[str]]
    rules_version: str


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str
    kind: str  # "business" or "person"
    domain: str | None
    company_key: str | None
    country: str | None


@dataclass(frozen=True, slots=True)
class Opportunity:
    opportunity_id: str
    lead_id: str
    account_id: str
    name: str
    primary_contact_id: str
    lead_source: str
    stage: str
    probability: int
    amount: float | None
    currency: str | None
    close_date: date
    created_at: datetime
