"""A run's touched keys: held while they are fewer than the checks would read by key, given up
for `everything` once they are more (so a large run holds no keys at all)."""

from __future__ import annotations

from transforms.records import Link
from warehouse import quality
from warehouse.publish import PublishSet, Touched


def _chunk(*pairs: tuple[str, str]) -> PublishSet:
    """A chunk that links each (contact, lead) pair."""
    return PublishSet(
        contacts=[],
        rejects=[],
        links=[Link(c, lead, "email", 1.0, {}) for c, lead in pairs],
        leads=[],
        qualifications=[],
        merges=[],
        accounts=[],
        opportunities=[],
        conversions={},
    )


def test_keys_added_again_do_not_count_twice() -> None:
    touched = Touched(limits={"leads": 3, "contacts": 3, "opportunities": 3})
    touched.add(_chunk(("c1", "L1"), ("c2", "L2")))
    touched.add(_chunk(("c1", "L1"), ("c2", "L2")))  # four held, two distinct
    touched.add(_chunk(("c3", "L3")))
    assert not touched.everything
    assert touched.leads == {"L1", "L2", "L3"}
    assert touched.contacts == {"c1", "c2", "c3"}


def test_one_key_past_the_limit_gives_them_all_up() -> None:
    touched = Touched(limits={"leads": 3, "contacts": 100, "opportunities": 100})
    touched.add(_chunk(("c1", "L1"), ("c2", "L2"), ("c3", "L3")))
    touched.add(_chunk(("c4", "L4")))
    assert touched.everything
    assert touched.leads == touched.contacts == set()
    touched.add(_chunk(("c5", "L5")))  # nothing is held any more
    assert touched.contacts == set()


def test_the_limits_are_where_the_checks_read_whole_tables() -> None:
    counts = {"leads": 10, "lead_links": 21, "opportunities": 0}
    limits = quality.scope_limits(counts)
    assert limits == {"leads": 5, "contacts": 10, "opportunities": 0}
    at, past = (
        Touched(leads={f"L{i}" for i in range(5)}),
        Touched(leads={f"L{i}" for i in range(6)}),
    )
    assert not quality.is_whole(at, counts) and quality.is_whole(past, counts)
    # an empty warehouse: any key is the whole table
    fresh = Touched(limits=quality.scope_limits({}))
    fresh.add(_chunk(("c1", "L1")))
    assert fresh.everything and quality.is_whole(fresh, {})
