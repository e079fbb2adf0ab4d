"""Web-form APIs (Typeform, HubSpot, generic) served by a real local HTTP server in their documented shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Request, Response

from flows.settings import load_settings
from flows.sources import SourceError
from tests.connectors.conftest import land_source
from transforms.fields import flatten_submission, map_fields
from warehouse import db
from warehouse.schema import raw_contacts, rejects, source_cursors

TOKEN = "tf-test-token"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def typeform_item(n: int, at: datetime, email: str | None = None) -> dict[str, Any]:
    """A response as Typeform's Responses API documents it (answers keyed by field ref)."""
    return {
        "landing_id": f"land{n}",
        "token": f"tok{n:03d}",
        "response_id": f"tok{n:03d}",
        "landed_at": (at - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "submitted_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metadata": {"user_agent": "Mozilla/5.0", "platform": "other", "browser": "default"},
        "hidden": {"utm_source": "fair"},
        "calculated": {"score": 0},
        "answers": [
            {
                "field": {"id": "Fn1", "type": "short_text", "ref": "full_name"},
                "type": "text",
                "text": f"Person {n}",
            },
            {
                "field": {"id": "Em1", "type": "email", "ref": "0b6a7e2c-work-email"},
                "type": "email",
                "email": email or f"person{n}@example.com",
            },
            {
                "field": {"id": "Ch1", "type": "multiple_choice", "ref": "interest"},
                "type": "choice",
                "choice": {"label": "Sensors"},
            },
        ],
    }


class FakeTypeform:
    """GET /forms/{id}/responses: since (inclusive, to the second), after (exclusive token), page_size."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.faults: list[Callable[[Request], Response | None]] = []
        self.break_later_pages = False

    def __call__(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Response('{"code":"AUTHENTICATION_FAILED"}', status=401)
        if self.faults:
            return self.faults.pop(0)(request) or Response("", status=500)
        if self.break_later_pages and request.args.get("after"):
            return Response('{"items": [', content_type="application/json")
        items = sorted(self.items, key=lambda i: i["token"])  # processing order
        since = request.args.get("since")
        if since:
            items = [i for i in items if i["submitted_at"][:19] >= since]
        after = request.args.get("after")
        if after:
            items = [i for i in items if i["token"] > after]
        size = int(request.args.get("page_size", 25))
        body = {"total_items": len(items), "page_count": 1, "items": items[:size]}
        return Response(json.dumps(body), content_type="application/json")


def write_cfg(tmp_path: Path, url: str, extra: str = "") -> Path:
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        "sources:\n"
        f"  - name: tf\n    kind: webform\n    url: '{url}'\n    preset: typeform\n"
        f"    token_env: TF_TOKEN\n    page_size: 2\n    lag_minutes: 60\n"
        # a local server has no rate limit to keep to: Typeform's 2 requests a second would
        # only slow the test down (the limit itself is tested in test_http)
        f"    http: {{backoff_seconds: 0.01, max_attempts: 3, rate_limit: {{requests_per_second: 1000}}}}\n"
        f"{extra}"
    )
    return cfg


def land(cfg: Path, name: str = "tf") -> dict[str, int]:
    return land_source(cfg, name)


def table(cfg: Path, t: Any) -> list[Any]:
    engine = db.make_engine(load_settings(cfg).warehouse.url)
    with engine.connect() as conn:
        rows = list(conn.execute(select(t)))
    engine.dispose()
    return rows


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_TOKEN", TOKEN)


def test_typeform_pages_land_once_and_a_late_submission_is_found(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    fake = FakeTypeform([typeform_item(i, T0 + timedelta(minutes=10 * i)) for i in range(1, 6)])
    httpserver.expect_request("/forms/abc/responses").respond_with_handler(fake)
    cfg = write_cfg(tmp_path, httpserver.url_for("/forms/abc/responses"))

    assert land(cfg)["landed"] == 5
    assert land(cfg).get("landed", 0) == 0  # the lag window re-reads, nothing lands twice
    (cursor,) = table(cfg, source_cursors)
    assert cursor.cursor == {"submitted_until": (T0 + timedelta(minutes=50)).isoformat()}

    # committed late: submitted before the newest one we saw, inside the lag window
    fake.items.append(typeform_item(9, T0 + timedelta(minutes=45)))
    assert land(cfg)["landed"] == 1
    ids = sorted(r.source_record_id for r in table(cfg, raw_contacts))
    assert ids == ["tok001", "tok002", "tok003", "tok004", "tok005", "tok009"]
    # the second run asked only for the lag window, to the second, as Typeform wants it
    sinces = {r.args.get("since") for r, _ in httpserver.log if r.args.get("since")}
    assert "2026-03-01T08:50:00" in sinces


def test_typeform_answers_flatten_by_ref_and_type() -> None:
    flat = flatten_submission(typeform_item(1, T0))
    fields = map_fields(flat)
    assert fields["full_name"] == "Person 1"
    assert fields["email"] == "person1@example.com"  # found by answer type: its ref is opaque
    assert fields["interest"] == "Sensors"
    assert flat["utm_source"] == "fair"


def test_429_and_500_are_retried_within_one_run(httpserver: HTTPServer, tmp_path: Path) -> None:
    fake = FakeTypeform([typeform_item(i, T0 + timedelta(minutes=i)) for i in range(1, 4)])
    fake.faults = [
        lambda r: Response("", status=429, headers={"Retry-After": "0"}),
        lambda r: Response("upstream", status=500),
    ]
    httpserver.expect_request("/forms/abc/responses").respond_with_handler(fake)
    cfg = write_cfg(tmp_path, httpserver.url_for("/forms/abc/responses"))
    stats = land(cfg)
    assert stats["landed"] == 3 and stats.get("rejected", 0) == 0
    assert [resp.status_code for _, resp in httpserver.log][:3] == [429, 500, 200]


def test_malformed_json_page_keeps_earlier_pages_and_the_cursor_short_of_it(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    fake = FakeTypeform([typeform_item(i, T0 + timedelta(minutes=i)) for i in range(1, 6)])

    fake.break_later_pages = True
    httpserver.expect_request("/forms/abc/responses").respond_with_handler(fake)
    cfg = write_cfg(tmp_path, httpserver.url_for("/forms/abc/responses"))
    stats = land(cfg)
    assert stats["landed"] == 2 and stats["rejected"] == 1
    (rej,) = table(cfg, rejects)
    assert rej.code == "http_error" and "not JSON" in rej.message
    (cursor,) = table(cfg, source_cursors)
    assert cursor.cursor["submitted_until"] == (T0 + timedelta(minutes=2)).isoformat()
    fake.break_later_pages = False
    assert land(cfg)["landed"] == 3  # the next run picks up where the broken page was


def test_an_empty_first_page_is_done(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/forms/abc/responses").respond_with_handler(FakeTypeform([]))
    cfg = write_cfg(tmp_path, httpserver.url_for("/forms/abc/responses"))
    assert land(cfg).get("landed", 0) == 0
    assert len(httpserver.log) == 1


def test_a_refused_token_fails_the_source_loudly(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/forms/abc/responses").respond_with_handler(FakeTypeform([]))
    cfg = write_cfg(tmp_path, httpserver.url_for("/forms/abc/responses"))
    import os

    os.environ["TF_TOKEN"] = "wrong"
    with pytest.raises(Exception, match="HTTP 401"):
        land(cfg)


def test_a_missing_token_variable_names_the_variable(tmp_path: Path) -> None:
    import os

    del os.environ["TF_TOKEN"]
    cfg = write_cfg(tmp_path, "http://127.0.0.1:9/forms/abc/responses")
    with pytest.raises(SourceError, match="environment variable TF_TOKEN is not set"):
        land(cfg)


def hubspot_page(request: Request) -> Response:
    """GET /form-integrations/v1/submissions/forms/{guid}: newest first, ms times, paging.next.after."""
    subs = [
        {
            "conversionId": f"conv-{n}" if n != 3 else None,
            "submittedAt": int((T0 + timedelta(hours=n)).timestamp() * 1000),
            "values": [
                {"name": "email", "value": f"hs{n}@example.com"},
                {"name": "firstname", "value": f"Hub{n}"},
            ],
            "pageUrl": "https://example.com/contact",
        }
        for n in range(6, 0, -1)
    ]
    for s in subs:
        if s["conversionId"] is None:
            del s["conversionId"]
    start = int(request.args.get("after", 0))
    limit = int(request.args["limit"])
    body: dict[str, Any] = {"results": subs[start : start + limit]}
    if start + limit < len(subs):
        body["paging"] = {"next": {"after": str(start + limit), "link": "ignored"}}
    return Response(json.dumps(body), content_type="application/json")


def test_hubspot_newest_first_stops_at_the_cursor(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/submissions/forms/g1").respond_with_handler(hubspot_page)
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\nsources:\n"
        f"  - {{name: hs, kind: webform, preset: hubspot, url: '{httpserver.url_for('/submissions/forms/g1')}',"
        " token_env: TF_TOKEN, page_size: 2, lag_minutes: 30}\n"
    )
    assert land(cfg, "hs")["landed"] == 6
    ids = {r.source_record_id for r in table(cfg, raw_contacts)}
    assert {"conv-6", "conv-1"} <= ids
    assert any(i.startswith("sha256:") for i in ids)  # the one without conversionId
    (cursor,) = table(cfg, source_cursors)
    assert cursor.cursor["submitted_until"] == (T0 + timedelta(hours=6)).isoformat()
    httpserver.clear_log()
    assert land(cfg, "hs").get("landed", 0) == 0
    assert len(httpserver.log) == 1  # the first page already reaches below the cursor


def test_generic_preset_with_a_repeated_token_keeps_what_it_read(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/api/leads").respond_with_json(
        {"data": {"leads": [{"uid": "L1", "mail": "g1@example.com"}]}, "meta": {"next": "same"}}
    )
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\nsources:\n"
        f"  - name: gen\n    kind: webform\n    preset: generic\n    url: '{httpserver.url_for('/api/leads')}'\n"
        "    records_path: data.leads\n    id_field: uid\n    next_token_path: meta.next\n"
        "    next_token_param: cursor\n    columns: {mail: email}\n"
    )
    stats = land(cfg, "gen")
    assert stats["landed"] == 1 and stats["rejected"] == 1
    (rej,) = table(cfg, rejects)
    assert rej.code == "pagination" and "repeated" in rej.message


def test_an_undated_export_submission_keeps_when_the_export_was_first_landed(
    tmp_path: Path,
) -> None:
    """Never the file's modification time: a copy of the export dates its rows as the first did."""
    import os
    import shutil

    from connectors.webform import iter_webform_export

    export = tmp_path / "forms.json"
    subs = [
        {"id": "s1", "email": "hans@weber.de", "name": "Hans Weber"},
        {"id": "s2", "email": "ayse@firma.com.tr", "submitted_at": "2026-03-03T10:00:00Z"},
    ]
    export.write_text(json.dumps(subs), encoding="utf-8")
    first_read = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
    batches = list(iter_webform_export("forms", str(export), None, now=first_read))
    got = {r.source_record_id: r.received_at for b in batches for r in b.records}
    assert got == {"s1": first_read, "s2": datetime(2026, 3, 3, 10, 0, tzinfo=UTC)}
    later = datetime(2026, 6, 1, tzinfo=UTC)
    copy = tmp_path / "copy.json"
    shutil.copy(export, copy)
    os.utime(copy, (later.timestamp(), later.timestamp()))
    # the same source reading the copy later (its cursor), and a backfill without a cursor
    cursor = batches[-1].cursor
    for again in (
        iter_webform_export("forms", str(copy), cursor, now=later),
        iter_webform_export("forms", str(copy), None, now=later, landed=cursor["first_landed"]),
    ):
        assert {r.source_record_id: r.received_at for b in again for r in b.records} == got
