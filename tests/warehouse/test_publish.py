"""Write–audit–publish: a reader sees the state before a run or after it, never part of it."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, text

from flows import stages
from flows.settings import Settings
from warehouse import publish

# One statement: one snapshot on both dialects, so a half-merged run would show as a mixed tuple.
STATE = text(
    "select (select count(*) from contacts), (select count(*) from leads), "
    "(select count(*) from lead_links), (select count(*) from opportunities), "
    "(select count(*) from accounts), (select count(*) from rejects)"
)


def _state(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(STATE).one())


def test_readers_see_old_or_new_state_during_a_publish(
    warehouse: tuple[Settings, Engine], warehouse_url: str, monkeypatch: Any
) -> None:
    settings, engine = warehouse
    old = _state(engine)  # landing commits at once (extraction rejects too); processing is the run

    # Hold the publishing transaction open right after the merge, while readers look.
    merged, release = threading.Event(), threading.Event()
    real_publish = publish.publish

    def publish_then_wait(*args: Any) -> None:
        real_publish(*args)
        merged.set()
        assert release.wait(60), "the test never released the publish"

    monkeypatch.setattr(publish, "publish", publish_then_wait)
    seen: list[tuple[int, ...]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(_state(engine))

    errors: list[BaseException] = []

    def writer() -> None:
        try:
            stages.process_pending(engine, settings, "run_second")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    w = threading.Thread(target=writer)
    r = threading.Thread(target=reader)
    w.start()
    r.start()
    assert merged.wait(120), "the publish never merged"
    during = [_state(engine) for _ in range(5)]
    release.set()
    w.join(120)
    stop.set()
    r.join(30)
    new = _state(engine)

    assert not errors, errors
    assert new != old
    # While the merge sat uncommitted, readers saw exactly the old state.
    assert during == [old] * 5
    assert len(seen) > 5 and set(seen) <= {old, new}, set(seen) - {old, new}


def test_an_opportunity_follows_its_lead_into_the_lead_it_merged_into(
    warehouse: tuple[Settings, Engine],
) -> None:
    _, engine = warehouse
    with engine.begin() as conn:
        row = conn.execute(
            text("select opportunity_id, lead_id from opportunities order by opportunity_id")
        ).first()
        assert row is not None
        opp_id, merged = row
        survivor = conn.execute(
            text("select min(lead_id) from leads where opportunity_id is null")
        ).scalar_one()
        ps = publish.PublishSet(
            contacts=[],
            rejects=[],
            links=[],
            leads=[],
            qualifications=[],
            merges=[(merged, survivor)],
            accounts=[],
            opportunities=[],
            conversions={},
            reparented={opp_id: survivor},
        )
        publish.publish(conn, ps, "run_merge")
        moved = conn.execute(
            text("select lead_id from opportunities where opportunity_id = :o"), {"o": opp_id}
        ).scalar_one()
        orphans = conn.execute(
            text(
                "select count(*) from opportunities o "
                "where not exists (select 1 from leads l where l.lead_id = o.lead_id)"
            )
        ).scalar_one()
    assert survivor and moved == survivor
    assert orphans == 0
