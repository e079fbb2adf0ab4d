"""Match models and the matching index in the warehouse: models round-trip, links name the model
and keep their evidence, term counts follow the contacts, erasure takes a person's values out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from sqlalchemy import func, select, text

from flows.cli import main
from tests.flows.test_pipeline import _use
from transforms import scoring
from transforms.match import MATCH_COLUMNS, MATCH_SCHEMA, block_table
from warehouse import db, matching
from warehouse import schema as t


def test_a_model_round_trips_and_the_active_one_is_used(warehouse_url: str) -> None:
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    shipped = scoring.default_model()
    spec = dict(shipped.spec)
    spec["probability_two_random_records_match"] = 1e-5
    at = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        assert matching.active_model(conn) == shipped  # nothing trained: the shipped one
        matching.save_model(conn, "m-test", spec, {"contacts": 1234}, at)
        assert matching.active_model(conn) == shipped  # saved, not active
        matching.activate_model(conn, "m-test")
    with engine.connect() as conn:
        active = matching.active_model(conn)
        assert active.version == "m-test" and dict(active.spec) == spec
        assert matching.model_named(conn, "m-test").spec == active.spec
        (row,) = matching.model_versions(conn)
        assert row["stats"] == {"contacts": 1234} and row["active"]
    with engine.begin() as conn:
        matching.activate_model(conn, "default")  # back to the shipped model
        assert matching.active_model(conn) == shipped
    engine.dispose()


def test_every_link_names_its_model_and_keeps_its_evidence(
    prefect_api: None, sample_config: Path, warehouse_url: str
) -> None:
    _use(sample_config, warehouse_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    engine = db.make_engine(warehouse_url)
    with engine.connect() as conn:
        links = conn.execute(select(t.lead_links)).mappings().all()
        reviews = conn.execute(select(t.match_review)).mappings().all()
        features = conn.execute(select(func.count()).select_from(t.contact_features)).scalar()
        contacts = conn.execute(select(func.count()).select_from(t.contacts)).scalar()
        # The term counts are the contacts' own values, counted.
        counted = {(r.column_name, r.value): r.n for r in conn.execute(select(t.match_term_counts))}
        recount = {}
        for col in scoring.TF_COLUMNS:
            q = text(
                f"select {col}, count(*) from contact_features where {col} is not null group by 1"  # noqa: S608 - a column name constant
            )
            recount.update({(col, v): n for v, n in conn.execute(q)})
    engine.dispose()
    version = scoring.default_model().version
    assert features == contacts
    assert counted == recount and counted
    by_model = [lk for lk in links if lk["rule"] == "model"]
    assert by_model, "the samples hold people seen more than once"
    for lk in links:
        assert lk["model_version"] == version
    for lk in by_model:
        ev = lk["evidence"]
        assert ev["model_version"] == version and ev["matched_contact_id"]
        assert ev["match_probability"] == lk["score"] >= 0.8
        weights = [c["log2_bayes_factor"] for c in ev["comparisons"]]
        assert weights and all(isinstance(w, float) for w in weights)
        # the total is the prior plus every comparison's weight
        prior = scoring.default_model().prior_log2
        assert abs(ev["match_weight"] - (prior + sum(weights))) < 0.1
    for r in reviews:
        assert r["model_version"] == version and r["evidence"]["comparisons"]


def test_erasure_takes_a_persons_values_out_of_the_index(
    prefect_api: None, sample_config: Path, warehouse_url: str
) -> None:
    _use(sample_config, warehouse_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    engine = db.make_engine(warehouse_url)
    f = t.contact_features.c
    with engine.connect() as conn:
        person = pa.Table.from_pylist(
            [
                dict(r._mapping)
                for r in conn.execute(select(t.contact_features).where(f.last == "isik"))
            ],
            schema=MATCH_SCHEMA,
        )
    # the person's stored keys (their hashes) are in the index before
    theirs = set(block_table(person).column("block_hash").to_pylist())
    assert person.num_rows and theirs
    assert (
        main(["forget", "ismail.isik@isiktekstil.com.tr", "--yes", "--config", str(sample_config)])
        == 0
    )
    with engine.connect() as conn:
        rest = [dict(r._mapping) for r in conn.execute(select(t.contact_features))]
        stored = sorted(conn.execute(select(t.contact_blocks)).tuples())
        counted = {r.value for r in conn.execute(select(t.match_term_counts))}
    engine.dispose()
    values = {v for r in rest for k, v in r.items() if k != "contact_id" and v is not None}
    assert "isik" not in values and "isik" not in counted
    # the index holds exactly the keys of the contacts left: none of the person's own
    left = block_table(pa.Table.from_pylist(rest, schema=MATCH_SCHEMA))
    assert stored == sorted(
        zip(
            left.column("block_hash").to_pylist(),
            left.column("contact_id").to_pylist(),
            strict=True,
        )
    )
    assert theirs - {h for h, _ in stored}
    assert set(MATCH_COLUMNS) >= set(scoring.TF_COLUMNS)
