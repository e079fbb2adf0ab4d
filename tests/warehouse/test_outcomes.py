"""CRM updates move opportunities with history, close them won or lost, and the marts follow."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, func, select, text
from werkzeug import Request, Response

from flows.settings import HttpSettings, OpportunityUpdatesSource, Settings, WarehouseSettings
from flows.stages import apply_opportunity_updates, read_crm_apis, refresh_marts
from tests.warehouse.test_mart_numbers import fill, rows
from warehouse import db, landing
from warehouse import schema as t

UPDATES = """opportunity_id,email,stage,amount,currency,close_date,outcome,changed_at
,Ayse@Fair.example,,22000,TRY,2026-03-09,won,2026-03-09T12:00:00Z
O9,,,,,,lost,
,nobody@x.example,Negotiation/Review,,,,,
O1,,Closed Won,,,,,2026-03-05T06:00:00Z
O4,,Moonshot,,,,,
"""


def test_updates_close_opportunities_and_win_rates_follow(
    warehouse_url: str, tmp_path: Path
) -> None:
    exports = tmp_path / "crm"
    exports.mkdir()
    (exports / "2026-03-10.csv").write_text(UPDATES)
    settings = Settings(
        warehouse=WarehouseSettings(url=warehouse_url),
        opportunity_updates=[OpportunityUpdatesSource(name="crm", path=str(exports / "*.csv"))],
    )
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        fill(conn)
        conn.execute(
            t.contacts.update()
            .where(t.contacts.c.contact_id == "c4")
            .values(email_key="ayse@fair.example")
        )
        refresh_marts(conn, settings)
    assert {r["lead_source"]: r["win_rate"] for r in rows(engine, "mart_outcomes_by_source")} == {
        "fair": None,
        "web": Decimal("0.7500"),
    }
    with engine.begin() as conn:
        stats = apply_opportunity_updates(conn, settings, "run_crm")
        refresh_marts(conn, settings)
    assert stats == {
        "opportunity_updates_read": 5,
        "opportunity_updates_applied": 2,
        "opportunity_updates_rejected": 3,
        "opportunity_stage_moves": 1,
    }
    with engine.connect() as conn:
        o3 = conn.execute(
            select(t.opportunities).where(t.opportunities.c.opportunity_id == "O3")
        ).one()
        moves = conn.execute(
            select(t.opportunity_stage_history.c.from_stage, t.opportunity_stage_history.c.to_stage,
                   t.opportunity_stage_history.c.rules_version)
            .where(t.opportunity_stage_history.c.opportunity_id == "O3")
            .order_by(t.opportunity_stage_history.c.changed_at)
        ).all()  # fmt: skip
        rejected: dict[str, str] = dict(
            conn.execute(
                text("select source_record_id, code from rejects where stage = 'outcome'")
            ).all()
        )
    # Matched by the lead's email; the catalogue's probability comes with the stage.
    assert (o3.stage, o3.probability, o3.close_date) == ("Closed Won", 100, date(2026, 3, 9))
    assert Decimal(str(o3.amount)) == Decimal("22000")
    assert moves[-1] == ("Proposal/Price Quote", "Closed Won", "crm:crm")
    assert rejected == {
        "2026-03-10.csv:3": "unmatched_opportunity",
        "2026-03-10.csv:4": "unmatched_opportunity",
        "2026-03-10.csv:6": "unknown_stage",
    }
    fair = {r["lead_source"]: r for r in rows(engine, "mart_outcomes_by_source")}["fair"]
    # Created 02-27 06:00, closed 03-09 12:00; 22000 TRY at 40 per EUR.
    assert (fair["won"], fair["win_rate"]) == (1, Decimal("1.0000"))
    assert fair["median_sales_cycle_days"] == Decimal("10.25")
    assert fair["won_amount"] == Decimal("550.00")
    stage_rows = [r for r in rows(engine, "mart_stage_transitions") if r["opportunity_id"] == "O3"]
    assert [r["to_stage"] for r in sorted(stage_rows, key=lambda r: r["changed_at"])][
        -1
    ] == "Closed Won"

    # Idempotent: the same file is not applied again; the same rows in a new file change nothing.
    with engine.begin() as conn:
        assert apply_opportunity_updates(conn, settings, "run_again") == {}
    (exports / "2026-03-11.csv").write_text(UPDATES)
    with engine.begin() as conn:
        again = apply_opportunity_updates(conn, settings, "run_again")
        history = conn.execute(text("select count(*) from opportunity_stage_history")).scalar_one()
    assert again["opportunity_stage_moves"] == 0 and history == 11
    engine.dispose()


# --- the CRMs' APIs, served by a real local HTTP server in their documented shapes ------------

SF_PAGE_1: list[dict[str, Any]] = [
    {
        "attributes": {
            "type": "Opportunity",
            "url": "/services/data/v62.0/sobjects/Opportunity/006A",
        },
        "Id": "006A",
        "StageName": "Negotiation/Review",
        "Amount": 21000.0,
        "CloseDate": "2026-04-30",
        "IsClosed": False,
        "IsWon": False,
        "LastModifiedDate": "2026-03-08T10:00:00.000+0000",
        "Leadflow_Opportunity_Id__c": None,
        "OpportunityContactRoles": {
            "totalSize": 1,
            "done": True,
            "records": [
                {
                    "attributes": {"type": "OpportunityContactRole"},
                    "Contact": {"attributes": {"type": "Contact"}, "Email": "Ayse@Fair.example"},
                }
            ],
        },
    },
    {
        "attributes": {
            "type": "Opportunity",
            "url": "/services/data/v62.0/sobjects/Opportunity/006C",
        },
        "Id": "006C",
        "StageName": "Closed Lost",
        "Amount": None,
        "CloseDate": "2026-03-08",
        "IsClosed": True,
        "IsWon": False,
        "LastModifiedDate": "2026-03-08T11:00:00.000+0000",
        "Leadflow_Opportunity_Id__c": "O9",
        "OpportunityContactRoles": None,
    },
]
SF_PAGE_2: list[dict[str, Any]] = [
    {
        **SF_PAGE_1[0],
        "StageName": "Closed Won",
        "IsClosed": True,
        "IsWon": True,
        "Amount": 22000.0,
        "CloseDate": "2026-03-09",
        "LastModifiedDate": "2026-03-09T12:00:00.000+0000",
    }
]


def salesforce(httpserver: HTTPServer) -> list[str]:
    """GET /services/data/v62.0/query?q=…, then nextRecordsUrl; the SOQL of each query is kept."""
    asked: list[str] = []

    def query(request: Request) -> Response:
        soql = request.args["q"]
        asked.append(soql)
        since = re.search(r"LastModifiedDate >= (\S+)", soql)
        records = [
            r
            for r in [*SF_PAGE_1, *SF_PAGE_2]
            if since is None
            or r["LastModifiedDate"][:19] >= since[1].rstrip("Z")  # ISO text sorts by time
        ]
        first, rest = records[:2], records[2:]
        body: dict[str, Any] = {"totalSize": len(records), "done": not rest, "records": first}
        if rest:
            body["nextRecordsUrl"] = "/services/data/v62.0/query/01gXX-2"
        return Response(json.dumps(body), content_type="application/json")

    def more(request: Request) -> Response:
        body = {"totalSize": 3, "done": True, "records": SF_PAGE_2}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/services/data/v62.0/query").respond_with_handler(query)
    httpserver.expect_request("/services/data/v62.0/query/01gXX-2").respond_with_handler(more)
    return asked


HS_DEALS = [
    ("1501", "contractsent", "21000", "TRY", "2026-03-08T10:00:00.000Z", "201"),
    ("1503", "qualifiedtobuy", "", "", "2026-03-08T11:00:00.000Z", "202"),
    ("1502", "closedwon", "22000", "TRY", "2026-03-09T12:00:00.000Z", "201"),
]
HS_EMAILS = {"201": "ayse@fair.example", "202": "nobody@x.example"}


def hubspot(httpserver: HTTPServer) -> list[dict[str, Any]]:
    """POST /crm/v3/objects/deals/search (GTE filter, ascending, after), then the deals' contact
    associations (v4 batch read) and the contacts' emails (batch read)."""
    bodies: list[dict[str, Any]] = []

    def search(request: Request) -> Response:
        body = json.loads(request.data)
        bodies.append(body)
        assert request.headers["Authorization"] == "Bearer hs-test-token"
        since = 0
        for group in body.get("filterGroups", []):
            (f,) = group["filters"]
            assert (f["propertyName"], f["operator"]) == ("hs_lastmodifieddate", "GTE")
            since = int(f["value"])
        deals = [
            {
                "id": d,
                "properties": {
                    "dealname": f"Deal {d}",
                    "dealstage": stage,
                    "amount": amount or None,
                    "deal_currency_code": cur or None,
                    "closedate": "2026-04-30T00:00:00Z",
                    "hs_lastmodifieddate": modified,
                },
                "createdAt": "2026-03-01T00:00:00Z",
                "updatedAt": modified,
                "archived": False,
            }
            for d, stage, amount, cur, modified, _ in HS_DEALS
            if datetime.fromisoformat(modified).timestamp() * 1000 >= since
        ]
        start, limit = int(body.get("after", 0)), body["limit"]
        out: dict[str, Any] = {"total": len(deals), "results": deals[start : start + limit]}
        if start + limit < len(deals):
            out["paging"] = {"next": {"after": str(start + limit), "link": "ignored"}}
        return Response(json.dumps(out), content_type="application/json")

    def associations(request: Request) -> Response:
        contact = {d: c for d, *_, c in HS_DEALS}
        results = [
            {
                "from": {"id": i["id"]},
                "to": [
                    {
                        "toObjectId": int(contact[i["id"]]),
                        "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 3}],
                    }
                ],
            }
            for i in json.loads(request.data)["inputs"]
        ]
        return Response(json.dumps({"status": "COMPLETE", "results": results}))

    def contacts(request: Request) -> Response:
        results = [
            {"id": i["id"], "properties": {"email": HS_EMAILS[i["id"]], "hs_object_id": i["id"]}}
            for i in json.loads(request.data)["inputs"]
        ]
        return Response(json.dumps({"status": "COMPLETE", "results": results}))

    httpserver.expect_request("/crm/v3/objects/deals/search", method="POST").respond_with_handler(
        search
    )
    httpserver.expect_request(
        "/crm/v4/associations/deals/contacts/batch/read", method="POST"
    ).respond_with_handler(associations)
    httpserver.expect_request(
        "/crm/v3/objects/contacts/batch/read", method="POST"
    ).respond_with_handler(contacts)
    return bodies


def _crm_warehouse(url: str) -> Engine:
    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.begin() as conn:
        fill(conn)
        conn.execute(
            t.contacts.update()
            .where(t.contacts.c.contact_id == "c4")
            .values(email_key="ayse@fair.example")
        )
    return engine


def _apply(engine: Engine, settings: Settings, run_id: str) -> dict[str, int]:
    reads = read_crm_apis(engine, settings)
    assert [r.failure for r in reads] == [None]
    with engine.begin() as conn:
        stats = apply_opportunity_updates(conn, settings, run_id, reads)
        refresh_marts(conn, settings)
    return stats


def _o3(engine: Engine) -> tuple[Any, list[tuple[str, str, str]]]:
    h = t.opportunity_stage_history
    with engine.connect() as conn:
        o3 = conn.execute(
            select(t.opportunities).where(t.opportunities.c.opportunity_id == "O3")
        ).one()
        moves = conn.execute(
            select(h.c.from_stage, h.c.to_stage, h.c.rules_version)
            .where(h.c.opportunity_id == "O3")
            .order_by(h.c.changed_at)
        ).all()
    return o3, [tuple(m) for m in moves]


@pytest.mark.parametrize("api", ["salesforce", "hubspot"])
def test_crm_apis_move_stages_incrementally_and_win_rates_follow(
    api: str, warehouse_url: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", "hs-test-token")
    if api == "salesforce":
        asked: list[Any] = salesforce(httpserver)
        src = OpportunityUpdatesSource(
            name="sf",
            api="salesforce",
            url=httpserver.url_for("/"),
            token_env="CRM_TOKEN",
            opportunity_id_field="Leadflow_Opportunity_Id__c",
        )
    else:
        asked = hubspot(httpserver)
        src = OpportunityUpdatesSource(
            name="hs",
            api="hubspot",
            url=httpserver.url_for("/"),
            token_env="CRM_TOKEN",
            page_size=2,
        )
    settings = Settings(warehouse=WarehouseSettings(url=warehouse_url), opportunity_updates=[src])
    engine = _crm_warehouse(warehouse_url)

    stats = _apply(engine, settings, "run_1")
    # Two changes of O3 (matched by its lead's email), oldest first, and one row matching nothing.
    assert stats == {
        "opportunity_updates_read": 3,
        "opportunity_updates_applied": 2,
        "opportunity_updates_rejected": 1,
        "opportunity_stage_moves": 2,
    }
    o3, moves = _o3(engine)
    assert (o3.stage, o3.probability, o3.currency) == ("Closed Won", 100, "TRY")
    assert Decimal(str(o3.amount)) == Decimal("22000")
    assert moves[-2:] == [
        ("Proposal/Price Quote", "Negotiation/Review", f"crm:{src.name}"),
        ("Negotiation/Review", "Closed Won", f"crm:{src.name}"),
    ]
    with engine.connect() as conn:
        (reject,) = conn.execute(
            select(t.rejects.c.source, t.rejects.c.code).where(t.rejects.c.stage == "outcome")
        ).all()
        cursor = landing.read_cursor(conn, f"{src.name}:api")
    assert tuple(reject) == (src.name, "unmatched_opportunity")
    assert cursor == {"modified_since": "2026-03-09T12:00:00+00:00"}
    # Created 02-27 06:00, closed 03-09 12:00; 22000 TRY at 40 per EUR.
    fair = {r["lead_source"]: r for r in rows(engine, "mart_outcomes_by_source")}["fair"]
    assert (fair["won"], fair["win_rate"], fair["won_amount"]) == (
        1,
        Decimal("1.0000"),
        Decimal("550.00"),
    )

    # The next run asks only for changes from the newest one applied on, and changes nothing.
    again = _apply(engine, settings, "run_2")
    if api == "salesforce":
        assert "WHERE LastModifiedDate >= 2026-03-09T12:00:00Z" in asked[-1]
        assert "WHERE" not in asked[0]
    else:
        (group,) = asked[-1]["filterGroups"]
        assert group["filters"][0]["value"] == str(
            int(datetime(2026, 3, 9, 12, tzinfo=UTC).timestamp() * 1000)
        )
    assert (again["opportunity_updates_read"], again["opportunity_stage_moves"]) == (1, 0)
    assert _o3(engine)[1] == moves
    engine.dispose()


def test_a_crm_api_failing_part_way_keeps_what_came_before(
    sqlite_url: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", "sf-test-token")
    httpserver.expect_request("/services/data/v62.0/query").respond_with_json(
        {"totalSize": 3, "done": False, "nextRecordsUrl": "/services/data/v62.0/query/01gXX-2",
         "records": SF_PAGE_1}
    )  # fmt: skip
    httpserver.expect_request("/services/data/v62.0/query/01gXX-2").respond_with_data(
        "unavailable", status=503
    )
    src = OpportunityUpdatesSource(
        name="sf",
        api="salesforce",
        url=httpserver.url_for("/"),
        token_env="CRM_TOKEN",
        http=HttpSettings(max_attempts=2, backoff_seconds=0),
    )
    settings = Settings(warehouse=WarehouseSettings(url=sqlite_url), opportunity_updates=[src])
    engine = _crm_warehouse(sqlite_url)
    (read,) = read_crm_apis(engine, settings)
    assert read.failure is not None and "HTTP 503" in read.failure
    with engine.begin() as conn:
        apply_opportunity_updates(conn, settings, "run_1", [read])
    o3, _ = _o3(engine)
    with engine.connect() as conn:
        cursor = landing.read_cursor(conn, "sf:api")
    assert o3.stage == "Negotiation/Review"
    assert cursor == {"modified_since": "2026-03-08T11:00:00+00:00"}  # the last change read
    engine.dispose()


def test_a_run_reads_the_crm_api_and_a_refusing_one_is_a_warning(
    prefect_api: None,
    sample_config: Path,
    sqlite_url: str,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main
    from tests.flows.test_pipeline import _use

    _use(sample_config, sqlite_url)
    monkeypatch.setenv("CRM_TOKEN", "hs-test-token")
    hubspot(httpserver)
    with sample_config.open("a", encoding="utf-8") as cfg:
        cfg.write(
            "opportunity_updates:\n"
            f"  - {{name: hs, api: hubspot, url: '{httpserver.url_for('/')}', token_env: CRM_TOKEN}}\n"
        )
    assert main(["run", "--config", str(sample_config)]) == 0
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        cursor = landing.read_cursor(conn, "hs:api")
        outcome_rejects = conn.execute(
            select(func.count()).select_from(t.rejects).where(t.rejects.c.stage == "outcome")
        ).scalar_one()
    # None of the samples' people has a deal in this CRM: every deal is quarantined.
    assert (cursor, outcome_rejects) == ({"modified_since": "2026-03-09T12:00:00+00:00"}, 3)
    capsys.readouterr()

    # The token is refused: the run still publishes, says why, and the cursor stays.
    httpserver.clear()
    httpserver.expect_request("/crm/v3/objects/deals/search", method="POST").respond_with_data(
        "{}", status=401
    )
    assert main(["run", "--config", str(sample_config)]) == 0
    out = capsys.readouterr().out
    assert "opportunity updates: warning: read stopped short: hs: POST" in out
    assert "HTTP 401" in out
    with engine.connect() as conn:
        assert landing.read_cursor(conn, "hs:api") == cursor
    engine.dispose()


def test_an_update_older_than_the_last_stage_change_moves_nothing(
    warehouse_url: str, tmp_path: Path
) -> None:
    """An export touched again later, or an older one read after a newer, does not reopen a deal."""
    exports = tmp_path / "crm"
    exports.mkdir()
    (exports / "b.csv").write_text(
        "email,stage,outcome,changed_at\nayse@fair.example,,won,2026-03-09T12:00:00Z\n"
    )
    settings = Settings(
        warehouse=WarehouseSettings(url=warehouse_url),
        opportunity_updates=[OpportunityUpdatesSource(name="crm", path=str(exports / "*.csv"))],
    )
    engine = _crm_warehouse(warehouse_url)
    with engine.begin() as conn:
        apply_opportunity_updates(conn, settings, "run_1")
    (exports / "a.csv").write_text(
        "email,stage,amount,changed_at\n"
        "ayse@fair.example,Negotiation/Review,99,2026-03-08T10:00:00Z\n"
    )
    with engine.begin() as conn:
        stats = apply_opportunity_updates(conn, settings, "run_2")
    o3, moves = _o3(engine)
    assert (o3.stage, Decimal(str(o3.amount))) == ("Closed Won", Decimal("20000"))
    assert moves[-1][1] == "Closed Won" and stats["opportunity_stage_moves"] == 0
    engine.dispose()
