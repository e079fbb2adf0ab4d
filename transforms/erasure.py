"""Who an erasure is about, as pure functions: the hashes a tombstone keeps (never the values),
the values that find a person's records, and which new sightings a tombstone suppresses."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from transforms.records import Contact, RawRow, Reject

ERASED = "erased"  # the reject code (and the placeholder value) of an erased person's records


def person_key_hash(kind: str, value: str) -> str:
    """The hash a tombstone keeps: of the normalized email key or E.164 phone, never the value."""
    return hashlib.sha256(f"leadflow-erasure\x1f{kind}\x1f{value}".encode()).hexdigest()


def contact_key_hashes(c: Contact) -> list[str]:
    out = []
    if c.email_key:
        out.append(person_key_hash("email", c.email_key))
    if c.phone:
        out.append(person_key_hash("phone", c.phone))
    return out


def person_hashes(contacts: Sequence[Contact], email_key: str | None) -> set[str]:
    """The tombstones of a person: their contacts' keys, and the email key the operator gave
    (tombstoned even when nothing was found yet)."""
    hashes = {h for c in contacts for h in contact_key_hashes(c)}
    if email_key:
        hashes.add(person_key_hash("email", email_key))
    return hashes


def person_values(
    contacts: Sequence[Contact], email: str | None, email_key: str | None
) -> list[str]:
    """The values that find a person's raw records and rejects, also those that never became a
    contact: their contacts' emails and phones, and the email as the operator gave it."""
    given = {v for v in (email, email_key) if v}
    found = {v for c in contacts for v in (c.email, c.email_key, c.phone, c.phone_raw) if v}
    return sorted(found | given)


def split_erased(
    contacts: Sequence[Contact],
    rows: Sequence[RawRow],
    keys: Mapping[str, Sequence[str]],
    tombstones: set[str],
) -> tuple[list[Contact], list[Reject], set[str]]:
    """(kept, erased, lifted): contacts whose `keys` (by contact id) hit a tombstone become
    'erased' rejects holding no personal data; one that gives consent again goes through and
    lifts the tombstones it holds."""
    by_raw = {r.raw_id: r for r in rows}
    kept: list[Contact] = []
    erased: list[Reject] = []
    lifted: set[str] = set()
    for c in contacts:
        if not tombstones.intersection(keys[c.contact_id]):
            kept.append(c)
        elif c.consent is True:
            kept.append(c)
            lifted.update(keys[c.contact_id])
        else:
            row = by_raw[c.raw_id]
            erased.append(
                Reject(
                    row.source,
                    row.source_record_id,
                    "normalize",
                    ERASED,
                    "a person who asked to be erased; suppressed until they consent again",
                    "",
                    row.raw_id,
                )
            )
    return kept, erased, lifted
