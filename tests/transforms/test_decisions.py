"""Review decisions between existing leads, with no new contact: a must_link merges, a
cannot_link inside one lead splits it and the lead keeps its id."""

from __future__ import annotations

from tests.transforms.test_resolve import contact
from transforms.resolve import CANNOT_LINK, MUST_LINK, ReviewDecision, resolve_contacts


def test_must_link_merges_two_existing_leads() -> None:
    a, b = contact(1, "Hans Weber", city="Hannover"), contact(2, "Jan Brandt", city="Kiel")
    res = resolve_contacts(
        [], [(a, "lead_a"), (b, "lead_b")], [ReviewDecision(a.contact_id, b.contact_id, MUST_LINK)]
    )
    assert res.merges == [("lead_b", "lead_a")]
    assert {lk.contact_id: lk.lead_id for lk in res.links} == {b.contact_id: "lead_a"}
    assert [ld.lead_id for ld in res.leads] == ["lead_a"] and res.splits == []


def test_cannot_link_splits_the_lead_that_holds_both() -> None:
    a = contact(1, "Ayşe Kaya", email="ayse@kaya.com.tr")
    b = contact(2, "Ayse Kaya", email="AYSE@kaya.com.tr")
    c = contact(3, "Ayşe Kaya", email="ayse@kaya.com.tr", city="Ankara")
    other = contact(4, "Jan Brandt", email="jan@brandt.de")
    existing = [(a, "lead_k"), (b, "lead_k"), (c, "lead_k"), (other, "lead_j")]
    res = resolve_contacts([], existing, [ReviewDecision(a.contact_id, b.contact_id, CANNOT_LINK)])
    lead_of = {lk.contact_id: lk.lead_id for lk in res.links}
    assert lead_of[a.contact_id] == "lead_k"  # the part with the earliest contact keeps the id
    assert lead_of[b.contact_id] != "lead_k"
    # c shares the email of both: it goes with one of them, never joins the two
    assert lead_of[c.contact_id] in {"lead_k", lead_of[b.contact_id]}
    assert res.splits == [(lead_of[b.contact_id], "lead_k")]
    assert other.contact_id not in lead_of  # an unrelated lead is untouched
    assert res.merges == []
    assert sorted(ld.lead_id for ld in res.leads) == sorted({"lead_k", lead_of[b.contact_id]})


def test_a_contact_taken_out_of_its_lead_leaves_the_lead_to_the_others() -> None:
    """A steward's "not this person" on the lead's first contact: the others keep the lead."""
    a = contact(1, "Ayşe Kaya", email="ayse@kaya.com.tr")
    b = contact(2, "Ayse Kaya", email="AYSE@kaya.com.tr", city="Ankara")
    c = contact(3, "Ayşe Kaya", phone="+905321112233", email="ayse@kaya.com.tr")
    existing = [(a, "lead_k"), (b, "lead_k"), (c, "lead_k")]
    out = [
        ReviewDecision(a.contact_id, other.contact_id, CANNOT_LINK, split_out=True)
        for other in (b, c)
    ]
    res = resolve_contacts([], existing, out)
    lead_of = {lk.contact_id: lk.lead_id for lk in res.links}
    assert lead_of[b.contact_id] == lead_of[c.contact_id] == "lead_k"
    assert lead_of[a.contact_id] != "lead_k"
    assert res.splits == [(lead_of[a.contact_id], "lead_k")]
