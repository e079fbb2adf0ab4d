"""Two converted leads turn out to be one person: both opportunities stay, one stays open."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text

from flows.cli import main
from tests.conftest import write_config
from warehouse import db
from warehouse.schema import metadata

HEADER = "Ad Soyad;E-posta;Telefon;Şirket;Ünvan;Şehir;Ülke;Bütçe;Zamanlama;İlgi Alanı;KVKK Onayı\n"
# The same person twice, once with her work email and once with her mobile: nothing ties the two
# rows together yet, and both qualify on their own, so the first run converts two leads.
FIRST = HEADER + (
    "Ayşe Kaya;ayse@kaya-lojistik.com.tr;;Kaya Lojistik A.Ş.;Genel Müdür;Ankara;Türkiye;"
    "500.000 TL;3 ay içinde;Forklift filosu için teklif;Evet\n"
    "Ayşe Kaya;;0532 123 45 67;;Satın Alma Müdürü;İzmir;Türkiye;400.000 TL;2 ay;"
    "Depo raf sistemleri fiyat teklifi;Evet\n"
)
# Later she writes with both, which proves the two leads are one person.
BRIDGE = HEADER + (
    "Ayşe Kaya;ayse@kaya-lojistik.com.tr;0532 123 45 67;Kaya Lojistik A.Ş.;Genel Müdür;Ankara;"
    "Türkiye;500.000 TL;3 ay içinde;Forklift teklif;Evet\n"
)


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return rows


def test_merging_converted_leads_keeps_every_opportunity_and_one_open(
    prefect_api: None, warehouse_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    (sheets / "fair.csv").write_text(FIRST, encoding="utf-8")
    cfg = write_config(
        tmp_path / "leadflow.yaml",
        warehouse_url,
        f"default_region: TR\nsources:\n  - name: fair\n    kind: spreadsheet\n"
        f"    path: {sheets}\nquality:\n  docs_dir: {tmp_path / 'docs'}\n",
    )
    assert main(["run", "--config", str(cfg)]) == 0
    before = _rows(
        warehouse_url,
        "select o.opportunity_id, o.lead_id, l.converted_at from opportunities o "
        "join leads l on l.lead_id = o.lead_id order by l.converted_at, o.opportunity_id",
    )
    assert len(before) == 2
    (kept, first_lead, _), (closed, second_lead, _) = before

    (sheets / "later.csv").write_text(BRIDGE, encoding="utf-8")
    capsys.readouterr()
    assert main(["run", "--config", str(cfg)]) == 0, capsys.readouterr()

    leads = _rows(warehouse_url, "select lead_id, opportunity_id from leads")
    assert len(leads) == 1
    survivor, opp_of_survivor = leads[0]
    assert survivor in {first_lead, second_lead}
    merged = ({first_lead, second_lead} - {survivor}).pop()
    assert _rows(warehouse_url, "select merged_lead_id, into_lead_id from lead_merges") == [
        (merged, survivor)
    ]
    # Conversion is sticky: both opportunities still exist, both now belong to the survivor.
    opps = {
        oid: (lead, stage, prob)
        for oid, lead, stage, prob in _rows(
            warehouse_url, "select opportunity_id, lead_id, stage, probability from opportunities"
        )
    }
    assert set(opps) == {kept, closed}
    # The survivor's own opportunity continues; the other one is closed as a duplicate and stays
    # with the merged lead id, which lead_merges maps to the survivor.
    own = str(opp_of_survivor)
    dup = ({kept, closed} - {own}).pop()
    assert opps[own][0] == survivor and opps[own][1] != "Closed Lost"
    assert opps[dup] == (merged, "Closed Lost", 0)
    reason = [
        r
        for r in _rows(
            warehouse_url, "select opportunity_id, reason from opportunity_stage_history"
        )
        if r[0] == dup and "duplicate" in str(r[1])
    ]
    assert len(reason) == 1 and "continues" in str(reason[0][1]) and own in str(reason[0][1])

    # A third run changes nothing.
    snap = _rows(warehouse_url, "select opportunity_id, lead_id, stage from opportunities")
    assert main(["run", "--config", str(cfg)]) == 0
    assert _rows(warehouse_url, "select opportunity_id, lead_id, stage from opportunities") == snap

    # She asks to be erased: the duplicate under the merged lead id loses her name too, and the
    # next run still passes the quality gate.
    assert main(["forget", "--config", str(cfg), "--yes", "ayse@kaya-lojistik.com.tr"]) == 0
    engine = db.make_engine(warehouse_url)
    with engine.connect() as conn:
        values = [
            str(v)
            for table in metadata.sorted_tables
            for row in conn.execute(select(table))
            for v in row
            if v is not None
        ]
    engine.dispose()
    for trace in ("Ayşe", "ayse@", "532 123", "5321234567"):
        assert not [v for v in values if trace in v], trace
    stages = _rows(warehouse_url, "select opportunity_id, stage from opportunities")
    assert sorted(map(str, stages)) == sorted(str((o, s)) for o, _, s in snap)  # both still there
    assert main(["run", "--config", str(cfg)]) == 0
