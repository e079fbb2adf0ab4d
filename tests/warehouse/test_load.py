"""The bulk upsert on both dialects: inserts, updates, keeps, and leaves unchanged rows alone."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import column, select, table, text

from warehouse import db
from warehouse.load import count_present, key_table, pg_arrow, upsert
from warehouse.schema import lead_links


def _links(n: int, rule: str = "email", evidence: Any = None) -> list[dict[str, Any]]:
    return [
        {
            "contact_id": f"con_{i}",
            "lead_id": f"lead_{i % 3}",
            "rule": rule,
            "score": 1.0,
            "evidence": evidence if evidence is not None else {"fields": ["email"], "i": i},
        }
        for i in range(n)
    ]


def test_upsert_inserts_updates_and_keeps(warehouse_url: str) -> None:
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    pg = engine.dialect.name == "postgresql"
    version = text("select contact_id, xmin::text from lead_links order by 1")
    with engine.begin() as conn:
        upsert(conn, lead_links, _links(5))
    with engine.begin() as conn:
        before = conn.execute(version).all() if pg else []
        upsert(conn, lead_links, _links(5))  # the same rows again
    with engine.begin() as conn:
        if pg:  # an unchanged row is not rewritten: same row version
            assert conn.execute(version).all() == before
        changed = _links(6)
        changed[1]["evidence"] = {"fields": ["phone"]}  # a JSON value changes
        changed[2]["rule"] = "phone"
        upsert(conn, lead_links, changed)
        upsert(conn, lead_links, [{**changed[3], "rule": "kept"}], update=False)
    with engine.connect() as conn:
        rows = {r.contact_id: r for r in conn.execute(select(lead_links))}
    engine.dispose()
    assert len(rows) == 6
    assert rows["con_1"].evidence == {"fields": ["phone"]}
    assert rows["con_2"].rule == "phone"
    assert rows["con_3"].rule == "email", "update=False keeps the row already there"
    assert rows["con_0"].evidence == {"fields": ["email"], "i": 0}


def test_rows_of_one_upsert_share_their_columns(warehouse_url: str) -> None:
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    rows = _links(2)
    del rows[1]["evidence"]
    with engine.begin() as conn, pytest.raises(Exception) as err:
        upsert(conn, lead_links, rows)
    engine.dispose()
    assert "evidence" in str(err.value) or "same columns" in str(err.value)


def test_a_key_table_holds_every_key_exactly(warehouse_url: str) -> None:
    """Keys that COPY's text format must escape (backslash, tab, newline, carriage return) come
    back as they went in, beside blocking keys with their separator and non-ASCII text."""
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    keys = ["a\\b", "tab\there", "line\nbreak", "cr\rx", "n:işık\x1fweiß", "\\N", "", "plain"]
    with engine.begin() as conn:
        tmp = key_table(conn, [*keys, "plain"])
        got = sorted(conn.execute(select(tmp.c.k)).scalars())
        assert count_present(conn, lead_links, "contact_id", keys) == 0
        # keys with nothing to escape are joined as they are; one newline among them is not
        for some in (["n:işık\x1fweiß", "", "plain"], ["plain", "line\nbreak"], [7, 8]):
            tmp = key_table(conn, some, "few_keys")
            assert sorted(conn.execute(select(tmp.c.k)).scalars()) == sorted(map(str, some))
    engine.dispose()
    assert got == sorted(keys)


def test_a_query_reaches_arrow_as_the_driver_reads_it(pg_url: str) -> None:
    """PostgreSQL's COPY-to-Arrow path gives the values the driver gives: NULL and '' apart,
    separators, quotes and line breaks inside values, non-ASCII text, numbers."""
    engine = db.make_engine(pg_url)
    values = [None, "", "a,b", 'say "hi"', "line\nbreak", "işık\x1fweiß", "\\N", " padded "]
    schema = pa.schema([("k", pa.string()), ("v", pa.string()), ("n", pa.float64())])
    with engine.begin() as conn:
        tmp = key_table(conn, [f"{i:02d}" for i in range(len(values))], "arrow_keys")
        conn.exec_driver_sql("CREATE TEMP TABLE arrow_vals (k text, v text, n numeric)")
        conn.execute(
            text("INSERT INTO arrow_vals VALUES (:k, :v, :n)"),
            [{"k": f"{i:02d}", "v": v, "n": i / 8} for i, v in enumerate(values)],
        )
        vals = table("arrow_vals", column("k"), column("v"), column("n"))
        q = select(vals.c.k, vals.c.v, vals.c.n).join(tmp, tmp.c.k == vals.c.k).order_by(vals.c.k)
        got = pg_arrow(conn, q, schema)
        empty = pg_arrow(conn, q.where(vals.c.k == "none"), schema)
    engine.dispose()
    assert got.column("v").to_pylist() == values
    assert got.column("n").to_pylist() == [i / 8 for i in range(len(values))]
    assert empty.num_rows == 0 and empty.schema == schema


def test_arrow_rows_go_in_as_they_are_and_a_present_one_fails_the_insert(
    warehouse_url: str,
) -> None:
    """Empty strings stay apart from NULLs; quotes, separators, line breaks and non-ASCII text
    reach the table as written; the rows land whatever their order; a row already there fails."""
    from warehouse.load import insert_new_arrow
    from warehouse.schema import contact_features, match_term_counts

    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    odd = ['say "hi"', "a,b;c", "two\nlines\r\n", "", None, "Çağrı Öztürk", "back\\slash\t"]
    features = pa.table(
        {
            "contact_id": [f"con_{i}" for i in reversed(range(len(odd)))],
            "first": odd,
            "city": list(reversed(odd)),
        }
    )
    # integers too, beside text
    counts = pa.table(
        {"column_name": ["last", "email"], "value": ["x", "y"], "n": [2_000_000_000, 1]}
    )
    with engine.begin() as conn:
        assert insert_new_arrow(conn, contact_features, features) == len(odd)
        assert insert_new_arrow(conn, match_term_counts, counts) == 2
        assert insert_new_arrow(conn, match_term_counts, counts.slice(0, 0)) == 0
    with engine.connect() as conn:
        got = {
            r.contact_id: (r.first, r.city, r.email_key)
            for r in conn.execute(select(contact_features))
        }
        stored_counts = sorted(conn.execute(select(match_term_counts)).tuples())
    want = dict(
        zip(
            features.column("contact_id").to_pylist(),
            zip(odd, reversed(odd), [None] * len(odd), strict=True),
            strict=True,
        )
    )
    assert got == want
    assert stored_counts == [("email", "y", 1), ("last", "x", 2_000_000_000)]
    # the driver's own error on PostgreSQL (the COPY runs on its cursor), SQLAlchemy's on SQLite
    with pytest.raises(Exception, match="(?i)unique"), engine.begin() as conn:
        insert_new_arrow(conn, match_term_counts, counts.slice(1))
    with engine.connect() as conn:
        assert len(conn.execute(select(match_term_counts)).all()) == 2
    engine.dispose()
