"""The shared HTTP helper against a real local server: retries, Retry-After, caps and paginators."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from connectors.http import (
    HttpClient,
    HttpError,
    NextLinkPaginator,
    PageNumberPaginator,
    PaginationError,
    RateLimit,
    RetryPolicy,
    TokenBucket,
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


class FakeClock:
    """Time that moves only when someone sleeps: the rate limit's arithmetic, exactly."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.mark.parametrize(
    ("limit", "idle", "expected"),
    [
        (RateLimit(per_second=2.0), 0.0, [0.0, 0.5, 1.0, 1.5, 2.0]),
        (RateLimit(per_second=1.0, burst=3), 0.0, [0.0, 0.0, 0.0, 1.0, 2.0]),
        # a long idle stretch refills the bucket up to `burst`, never beyond it
        (RateLimit(per_second=1.0, burst=2), 100.0, [100.0, 100.0, 101.0, 102.0, 103.0]),
        (RateLimit(per_second=100 / 60), 0.0, [0.0, 0.6, 1.2, 1.8, 2.4]),
    ],
)
def test_token_bucket_spacing(limit: RateLimit, idle: float, expected: list[float]) -> None:
    clock = FakeClock()
    bucket = TokenBucket(limit, clock=clock.now, sleep=clock.sleep)
    clock.sleep(idle)
    times = []
    for _ in expected:
        bucket.acquire()
        times.append(clock.now())
    assert times == pytest.approx(expected)
    assert bucket.waited == pytest.approx(expected[-1] - expected[0])


def test_a_rate_limit_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="per_second > 0"):
        RateLimit(per_second=0)
    with pytest.raises(ValueError, match="burst >= 1"):
        RateLimit(per_second=1, burst=0)


def _numbered_pages(clock: FakeClock, seen: list[float], pages: int) -> Any:
    """Pages 1..`pages` (a token each), noting the time every request reached the server."""

    def handler(request: Request) -> Response:
        import json

        seen.append(clock.now())
        n = int(request.args.get("after", "0")) + 1
        body = {"data": [n], "next": n if n < pages else None}
        return Response(json.dumps(body), content_type="application/json")

    return handler


def test_the_pages_of_one_source_share_the_bucket_and_a_429_still_waits_retry_after(
    httpserver: HTTPServer,
) -> None:
    clock, seen = FakeClock(), list[float]()
    httpserver.expect_ordered_request("/p").respond_with_handler(_numbered_pages(clock, seen, 3))
    httpserver.expect_ordered_request("/p").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "3"}
    )
    httpserver.expect_ordered_request("/p").respond_with_handler(_numbered_pages(clock, seen, 3))
    httpserver.expect_ordered_request("/p").respond_with_handler(_numbered_pages(clock, seen, 3))
    bucket = TokenBucket(RateLimit(per_second=2.0), clock=clock.now, sleep=clock.sleep)
    c = HttpClient(timeout=(2, 5), sleep=clock.sleep, limiter=bucket)
    pager = TokenPaginator(httpserver.url_for("/p"), {}, "after", token_path="next")
    assert [p["data"] for p, _ in iter_pages(c, pager)] == [[1], [2], [3]]
    # page 1 at once; the 429 half a second later; Retry-After's 3 s refilled the bucket, so the
    # retry goes straight after it; page 3 waits its half second again
    assert seen == pytest.approx([0.0, 3.5, 4.0])
    assert c.requests_made == 4 and bucket.waited == pytest.approx(1.0)


def test_a_real_clock_spaces_requests_at_the_rate(httpserver: HTTPServer) -> None:
    arrived: list[float] = []

    def handler(request: Request) -> Response:
        arrived.append(time.monotonic())
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/x").respond_with_handler(handler)
    c = HttpClient(timeout=(2, 5), limiter=TokenBucket(RateLimit(per_second=10.0)))
    for _ in range(5):
        c.get_json(httpserver.url_for("/x"))
    gaps = sorted(b - a for a, b in zip(arrived, arrived[1:], strict=False))
    # 0.1 s apart on the client; a loaded machine may shift one arrival, never all of them
    assert arrived[-1] - arrived[0] >= 0.3
    assert gaps[len(gaps) // 2] >= 0.05


def test_threads_sharing_one_bucket_never_beat_the_rate() -> None:
    bucket = TokenBucket(RateLimit(per_second=50.0, burst=2))
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=lambda: [bucket.acquire() for _ in range(3)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 12 tokens: 2 at once, then 10 more at 50 a second
    assert time.monotonic() - t0 >= 10 / 50
