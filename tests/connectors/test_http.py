"""The shared HTTP helper against a real local server: retries, Retry-After, caps and paginators."""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from connectors.http import (
    HttpClient,
    HttpError,
    NextLinkPaginator,
    PageNumberPaginator,
    PaginationError,
    RetryPolicy,
    TokenPaginator,
    iter_pages,
    parse_retry_after,
)
from tests.connectors.dovecot import free_port


def client(sleeps: list[float], attempts: int = 4) -> HttpClient:
    return HttpClient(
        timeout=(2, 5), retry=RetryPolicy(attempts=attempts, backoff_base=0.01), sleep=sleeps.append
    )


def test_429_waits_as_long_as_retry_after_says(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/x").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    httpserver.expect_ordered_request("/x").respond_with_json({"ok": 1})
    sleeps: list[float] = []
    assert client(sleeps).get_json(httpserver.url_for("/x")) == {"ok": 1}
    assert sleeps == [7.0]


def test_500_then_success_backs_off_with_jitter(httpserver: HTTPServer) -> None:
    for _ in range(2):
        httpserver.expect_ordered_request("/x").respond_with_data("oops", status=500)
    httpserver.expect_ordered_request("/x").respond_with_json([1, 2])
    sleeps: list[float] = []
    c = client(sleeps)
    assert c.get_json(httpserver.url_for("/x")) == [1, 2]
    assert len(sleeps) == 2 and c.requests_made == 3
    assert 0 <= sleeps[0] <= 0.01 and 0 <= sleeps[1] <= 0.02  # base·2^n, full jitter


def test_attempts_are_capped(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_data("down", status=503)
    sleeps: list[float] = []
    with pytest.raises(HttpError, match="gave up after 3 tries: HTTP 503"):
        client(sleeps, attempts=3).get(httpserver.url_for("/x"))
    assert len(sleeps) == 2
    assert len(httpserver.log) == 3


def test_a_4xx_is_not_retried_and_the_query_stays_out_of_the_message(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/x").respond_with_data("no", status=401)
    sleeps: list[float] = []
    with pytest.raises(HttpError) as err:
        client(sleeps).get(httpserver.url_for("/x") + "?access_token=SECRET")
    assert err.value.status == 401 and "SECRET" not in str(err.value)
    assert sleeps == [] and len(httpserver.log) == 1


def test_connection_refused_is_retried_then_reported() -> None:
    sleeps: list[float] = []
    with pytest.raises(HttpError, match="ConnectionError"):
        client(sleeps, attempts=2).get(f"http://127.0.0.1:{free_port()}/x")
    assert len(sleeps) == 1


def test_malformed_json_is_an_http_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_data("{not json", content_type="application/json")
    with pytest.raises(HttpError, match="not JSON"):
        client([]).get_json(httpserver.url_for("/x"))


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert RetryPolicy(retry_after_max=30).wait(0, 999) == 30


def _token_pages(request: Request) -> Response:
    import json

    pages = {"": ("a", [1, 2]), "a": ("b", [3]), "b": (None, [4])}
    nxt, items = pages[request.args.get("cursor", "")]
    return Response(json.dumps({"data": items, "next": nxt}), content_type="application/json")


def test_token_paginator_stops_when_no_token(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/p").respond_with_handler(_token_pages)
    pager = TokenPaginator(httpserver.url_for("/p"), {}, "cursor", token_path="next")
    items = [x for page, _ in iter_pages(client([]), pager) for x in page["data"]]
    assert items == [1, 2, 3, 4]


def test_repeated_page_token_is_refused(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/p").respond_with_json({"data": [1], "next": "same"})
    pager = TokenPaginator(httpserver.url_for("/p"), {}, "cursor", token_path="next")
    pages = iter_pages(client([]), pager)
    next(pages), next(pages)
    with pytest.raises(PaginationError, match="repeated"):
        next(pages)


def test_page_cap(httpserver: HTTPServer) -> None:
    def endless(request: Request) -> Response:
        import json

        n = int(request.args.get("t", "0"))
        return Response(json.dumps({"next": n + 1}), content_type="application/json")

    httpserver.expect_request("/p").respond_with_handler(endless)
    pager = TokenPaginator(httpserver.url_for("/p"), {}, "t", token_path="next")
    with pytest.raises(PaginationError, match="more than 5 pages"):
        list(iter_pages(client([]), pager, max_pages=5))


def test_page_number_paginator_ends_on_a_short_page(httpserver: HTTPServer) -> None:
    def numbered(request: Request) -> Response:
        import json

        page = int(request.args["page"])
        items = [page * 10 + i for i in range(2 if page < 3 else 1)]
        return Response(json.dumps({"rows": items}), content_type="application/json")

    httpserver.expect_request("/n").respond_with_handler(numbered)
    pager = PageNumberPaginator(httpserver.url_for("/n"), {}, "rows", page_size=2)
    rows = [x for page, _ in iter_pages(client([]), pager) for x in page["rows"]]
    assert rows == [10, 11, 20, 21, 30]


def test_next_link_paginator_follows_relative_links(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/l", query_string="").respond_with_json(
        {"rows": [1], "links": {"next": "/l?page=2"}}
    )
    httpserver.expect_request("/l", query_string="page=2").respond_with_json(
        {"rows": [2], "links": {"next": None}}
    )
    pager = NextLinkPaginator(httpserver.url_for("/l"), {}, "links.next")
    assert [p["rows"] for p, _ in iter_pages(client([]), pager)] == [[1], [2]]
