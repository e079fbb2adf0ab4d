"""Publishing in bulk: rows a chunk proved new go in by plain COPY / INSERT, the rest by the merge,
and both give the same tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import Engine, select

from flows import stages
from flows.settings import load_settings
from tests.conftest import pg_database
from tests.warehouse.conftest import land
from transforms.records import Link
from warehouse import db, matching, publish
from warehouse import schema as t
from warehouse.load import Rows, arrow_rows, insert_new, insert_new_arrow, merge

# Every table a publish writes.
PUBLISHED = (
    "contacts",
    "contact_features",
    "contact_blocks",
    "match_term_counts",
    "lead_links",
    "match_review",
    "lead_merges",
    "lead_splits",
    "leads",
    "accounts",
    "opportunities",
    "lead_status_history",
    "opportunity_stage_history",
    "rejects",
)


@contextmanager
def _another(url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty warehouse of the same dialect."""
    if url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with pg_database() as other:
        yield other


def _two_runs(sample_config: Path, url: str, name: str) -> Engine:
    """The samples without the fair sheet published by `run_first`, then the fair sheet's rows
    by `run_second` (they join leads of the first run): the warehouse fixture, for any URL."""
    cfg = sample_config.parent / f"{name}.yaml"
    cfg.write_text(sample_config.read_text().replace("sqlite:///leadflow.db", url))
    settings = load_settings(cfg)
    csv = sample_config.parent / "sources" / "fair_istanbul_2026.csv"
    full = csv.read_text()
    engine = db.make_engine(url)
    db.upgrade(engine)
    try:
        csv.write_text(full.splitlines()[0] + "\n")
        land(engine, settings, "run_first")
        stages.process_pending(engine, settings, "run_first")
    finally:
        csv.write_text(full)
    land(engine, settings, "run_second")
    stages.process_pending(engine, settings, "run_second")
    return engine


def _tables(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            name: [
                tuple(r)
                for r in conn.execute(
                    select(t.metadata.tables[name]).order_by(
                        *(
                            t.metadata.tables[name].primary_key.columns
                            or t.metadata.tables[name].columns
                        )
                    )
                )
            ]
            for name in PUBLISHED
        }


def test_rows_published_by_copy_equal_those_of_the_merge(
    sample_config: Path, warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appended: list[tuple[str, int]] = []
    published: list[publish.PublishSet] = []
    real_publish = publish.publish

    def spying(conn: Any, ps: publish.PublishSet, run_id: str) -> None:
        published.append(ps)
        real_publish(conn, ps, run_id)

    def counting(conn: Any, table: Any, rows: Rows) -> int:
        appended.append((table.name, len(rows.values)))
        return insert_new(conn, table, rows)

    def counting_arrow(conn: Any, table: Any, data: pa.Table) -> int:
        appended.append((table.name, data.num_rows))
        return insert_new_arrow(conn, table, data)

    with monkeypatch.context() as m:
        m.setattr(publish, "insert_new", counting)
        m.setattr(matching, "insert_new", counting)
        m.setattr(matching, "insert_new_arrow", counting_arrow)
        m.setattr(publish, "publish", spying)
        fast = _two_runs(sample_config, warehouse_url, "fast")
    fast_tables = _tables(fast)
    fast.dispose()

    def merged(conn: Any, table: Any, rows: Rows) -> int:
        return merge(conn, table, rows)

    def merged_arrow(conn: Any, table: Any, data: pa.Table) -> int:
        if not table.primary_key.columns:  # the blocking keys: written once, nothing to merge
            return insert_new(conn, table, arrow_rows(data))
        return merge(conn, table, arrow_rows(data))

    with _another(warehouse_url, tmp_path) as other, monkeypatch.context() as m:
        m.setattr(publish, "insert_new", merged)
        m.setattr(matching, "insert_new", merged)
        m.setattr(matching, "insert_new_arrow", merged_arrow)
        slow = _two_runs(sample_config, other, "merge")
        slow_tables = _tables(slow)
        slow.dispose()

    # the second run added contacts to leads of the first: updates through the merge
    second = [ps for ps in published if ps.contacts][-1]
    assert any(ld.lead_id not in second.new_leads for ld in second.leads)
    by_table = {name for name, n in appended if n}
    assert {"contacts", "contact_features", "contact_blocks", "lead_links", "leads"} <= by_table
    assert fast_tables["contacts"], "the samples published contacts"
    for name in PUBLISHED:
        assert fast_tables[name] == slow_tables[name], name


def test_an_incremental_run_merges_the_rows_it_relinks_and_updates(
    sample_config: Path, warehouse_url: str
) -> None:
    """A later run re-links existing contacts and updates existing leads: those go through the
    merge (an insert would be a duplicate key), next to the new contacts' COPY."""
    engine = _two_runs(sample_config, warehouse_url, "first")
    with engine.connect() as conn:
        links = dict(conn.execute(select(t.lead_links.c.contact_id, t.lead_links.c.lead_id)).all())
        leads = conn.execute(select(t.leads.c.lead_id)).scalars().all()
    assert len(links) >= 3 and len(leads) >= 2
    old_contact, other_contact = sorted(links)[:2]
    into = links[other_contact] if links[other_contact] != links[old_contact] else None
    into = into or next(ld for ld in leads if ld != links[old_contact])
    with engine.begin() as conn:
        existing = next(iter(_lead_rows(conn, [into])))
        new_contact = dataclasses.replace(
            _contact(conn, old_contact), contact_id="con_new_bulk", raw_id="raw_new_bulk"
        )
        ps = publish.PublishSet(
            contacts=[new_contact],
            rejects=[],
            links=[
                Link("con_new_bulk", into, "email", 1.0, {"why": "new"}),
                Link(old_contact, into, "phone", 0.9, {"why": "relinked"}),
            ],
            leads=[dataclasses.replace(existing[0], contact_count=99)],
            qualifications=[existing[1]],
            merges=[],
            accounts=[],
            opportunities=[],
            conversions={},
            new_contacts=True,
            new_leads=frozenset(),  # the lead was read as existing
        )
        publish.publish(conn, ps, "run_third")
    with engine.connect() as conn:
        relinked = conn.execute(
            select(t.lead_links.c.lead_id, t.lead_links.c.rule).where(
                t.lead_links.c.contact_id.in_([old_contact, "con_new_bulk"])
            )
        ).all()
        count = conn.execute(
            select(t.leads.c.contact_count).where(t.leads.c.lead_id == into)
        ).scalar_one()
        n_contacts = conn.execute(select(t.contacts.c.contact_id)).scalars().all()
    engine.dispose()
    assert sorted(relinked) == [(into, "email"), (into, "phone")]
    assert count == 99, "the existing lead was updated"
    assert "con_new_bulk" in n_contacts


def test_a_row_claimed_new_that_exists_fails_the_transaction(warehouse_url: str) -> None:
    """The plain insert never overwrites: a wrong claim is a unique violation, not a silent
    second version of the row."""
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    cols = ("contact_id", "lead_id", "rule", "score", "evidence")
    rows = Rows(cols, [("con_1", "lead_1", "email", 1.0, {"fields": ["email"]})])
    with engine.begin() as conn:
        assert insert_new(conn, t.lead_links, rows) == 1
    # SQLite's IntegrityError through SQLAlchemy, psycopg's UniqueViolation from the COPY
    with pytest.raises(Exception, match="(?i)unique"), engine.begin() as conn:
        insert_new(conn, t.lead_links, rows)
    with engine.connect() as conn:
        kept = conn.execute(select(t.lead_links.c.evidence)).scalars().all()
    engine.dispose()
    assert kept == [{"fields": ["email"]}]


def _contact(conn: Any, contact_id: str) -> Any:
    from warehouse.resolution import contacts_by_id

    return contacts_by_id(conn, [contact_id])[contact_id]


def _lead_rows(conn: Any, lead_ids: list[str]) -> Iterator[tuple[Any, Any]]:
    """(Lead, Qualification) of existing leads, as a run would hand them back unchanged."""
    from transforms.records import Qualification
    from warehouse.resolution import iter_leads

    ld = t.leads
    quals = {
        r.lead_id: Qualification(r.lead_id, r.status, r.score, r.grade, r.reasons, r.rules_version)
        for r in conn.execute(select(ld).where(ld.c.lead_id.in_(lead_ids)))
    }
    for batch in iter_leads(conn):
        for lead in batch:
            if lead.lead_id in quals:
                yield lead, quals[lead.lead_id]
