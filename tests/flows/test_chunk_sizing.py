"""Chunks shrink as their contexts grow: past `resolution.context_budget` (a chunk and the existing
contacts it is resolved against, together; a target estimated from the chunk before, not a cap),
the next chunk takes fewer records, so a run's memory does not follow the warehouse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flows import stages
from flows.settings import load_settings
from tests import crashkit
from warehouse import db
from warehouse import schema as t


def test_the_next_chunk_shrinks_in_proportion_to_the_context_the_last_one_brought() -> None:
    sizer = stages.ChunkSizer(most=50_000, budget=250_000)
    assert sizer.size() == 50_000  # nothing seen yet: the most
    sizer.observe(50_000, 100_000)  # 150k in all, within the budget
    assert sizer.size() == 50_000
    sizer.observe(50_000, 400_000)  # 9 contacts per new one: 250k / 9
    assert sizer.size() == 27_777
    sizer.observe(27_777, 27_777 * 99)  # a hundred per new one: a tenth of the most at least
    assert sizer.size() == 5_000
    sizer.observe(5_000, 0)  # a context that shrank again lets the chunks grow back
    assert sizer.size() == 50_000
    sizer.observe(0, 10_000)  # a chunk of decisions only says nothing about the ratio
    assert sizer.size() == 50_000


def _run(folder: Path, resolution: str) -> tuple[stages.ProcessStats, list[int], set[Any]]:
    """The generated sample through landing and processing with these resolution settings: the
    counts, the size of each chunk, and the leads as sets of contact ids."""
    config = crashkit.write_sample(folder, rows=600)
    config.write_text(config.read_text(encoding="utf-8") + resolution, encoding="utf-8")
    settings = load_settings(config)
    engine = db.make_engine(f"sqlite:///{folder / 'warehouse.db'}")
    db.upgrade(engine)
    for source in settings.sources:
        stages.extract_and_land(engine, source, "run_one")
    sizes: list[int] = []
    real = stages.process_chunk

    def counted(conn: Any, rows: list[Any], *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(rows))
        return real(conn, rows, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stages, "process_chunk", counted)
        stats = stages.process_pending(engine, settings, "run_one")
    lk = t.lead_links
    with engine.connect() as conn:
        leads: dict[str, set[str]] = {}
        for contact_id, lead_id in conn.execute(select(lk.c.contact_id, lk.c.lead_id)):
            leads.setdefault(lead_id, set()).add(contact_id)
    engine.dispose()
    return stats, sizes, {frozenset(v) for v in leads.values()}


def test_a_run_over_budget_takes_smaller_chunks_and_finds_the_same_leads(tmp_path: Path) -> None:
    fixed, fixed_sizes, fixed_leads = _run(tmp_path / "fixed", "resolution:\n  chunk_size: 200\n")
    budget = "resolution:\n  chunk_size: 200\n  context_budget: 240\n"
    small, small_sizes, small_leads = _run(tmp_path / "budget", budget)
    # within budget every chunk but the last is full
    assert fixed.chunks == len(fixed_sizes) and set(fixed_sizes[:-1]) == {200}
    # over it: the first chunk found an empty warehouse (no context), so the second is full
    # too; the later ones are smaller, never below a tenth of chunk_size
    assert small.chunks == len(small_sizes) > fixed.chunks
    assert small_sizes[:2] == [200, 200] and max(small_sizes[2:]) < 200
    assert min(small_sizes[:-1]) >= 20
    assert small.context_contacts > 0 and fixed.context_contacts > 0
    # the same records processed, the same people found
    assert small.raw_processed == fixed.raw_processed == sum(fixed_sizes) == sum(small_sizes)
    assert small.contacts == fixed.contacts and small.rejects == fixed.rejects
    assert small_leads == fixed_leads
    assert len(fixed_leads) < fixed.contacts  # repeats were joined: the comparison is not empty
