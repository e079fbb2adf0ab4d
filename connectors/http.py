"""The one HTTP helper: a session with timeouts, a rate limit, retries with backoff and jitter, and paginators."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urljoin

import requests

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "leadflow/0.1 (+https://github.com/leadflow)"


class HttpError(RuntimeError):
    """A request that failed for good: a 4xx, or retries used up. The message names the URL."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PaginationError(RuntimeError):
    """A paginator that would loop: a page token seen before, or more pages than the cap."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: `attempts` in all, waits of base·2^n (capped) with full jitter."""

    attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 300.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        # full jitter (AWS architecture blog): spreads clients that failed together
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `burst` requests at once, then one every 1/`per_second` seconds on average."""

    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"a rate limit needs per_second > 0 and burst >= 1, not {self}")


class TokenBucket:
    """A token bucket shared by every request of one client, whichever thread makes them.

    Each request takes a token; tokens come back at `per_second` up to `burst`. A request that
    finds none reserves the next one (the count goes below zero) and sleeps until it is due, so
    waiting callers are served in the order they came, without holding the lock while they sleep.
    """

    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self._clock, self._sleep = clock, sleep
        self._tokens = float(limit.burst)
        self._at = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> float:
        """Take a token, sleeping until one is due; give the seconds slept."""
        with self._lock:
            now = self._clock()
            refill = (now - self._at) * self.limit.per_second
            self._tokens = min(float(self.limit.burst), self._tokens + refill)
            self._at = now
            self._tokens -= 1.0
            wait = -self._tokens / self.limit.per_second if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass
class HttpClient:
    """A requests Session that always sets a timeout, keeps to its rate limit, and retries."""

    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: tuple[float, float] = (10.0, 60.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    session: requests.Session = field(default_factory=requests.Session)
    limiter: TokenBucket | None = None  # every attempt, retries included, takes a token

    def __post_init__(self) -> None:
        self.session.headers.update({"User-Agent": USER_AGENT, **self.headers})
        self.requests_made = 0
        self.retries_made = 0

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> requests.Response:
        return self.request("GET", url, params=params)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One call with retries on 429, 5xx and connection errors; raise HttpError otherwise."""
        return self._call(method, url, None, **kwargs)[0]

    def _call(
        self,
        method: str,
        url: str,
        parse: Callable[[requests.Response], Any] | None,
        **kwargs: Any,
    ) -> tuple[requests.Response, Any]:
        """The request with retries; `parse` (e.g. JSON) failing on a 2xx body is retried too:
        a body cut short by a dropped connection is a transient fault, like a reset."""
        last = ""
        for attempt in range(self.retry.attempts):
            retry_after: float | None = None
            if self.limiter is not None:
                self.limiter.acquire()
            self.requests_made += 1
            try:
                resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except (
                requests.ConnectionError,
                requests.Timeout,
                # the body broke off before Content-Length, or did not decode
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                last = f"{type(exc).__name__}"
            else:
                if resp.status_code < 400:
                    if parse is None:
                        return resp, None
                    try:
                        return resp, parse(resp)
                    except (ValueError, RecursionError) as exc:
                        last = f"the response is not JSON ({str(exc)[:200]})"
                elif resp.status_code not in RETRY_STATUS:
                    raise HttpError(
                        f"{method} {_safe(url)}: HTTP {resp.status_code}", resp.status_code
                    )
                else:
                    last = f"HTTP {resp.status_code}"
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if attempt + 1 < self.retry.attempts:
                self.retries_made += 1
                self.sleep(self.retry.wait(attempt, retry_after))
        raise HttpError(f"{method} {_safe(url)}: gave up after {self.retry.attempts} tries: {last}")

    def get_bytes(self, url: str) -> bytes:
        return self.get(url).content

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._call("GET", url, lambda r: r.json(), params=params)[1]

    def post_json(self, url: str, body: Any) -> Any:
        """A JSON body posted for a JSON answer (search and batch-read APIs), retried like a GET."""
        return self._call("POST", url, lambda r: r.json(), json=body)[1]

    def close(self) -> None:
        self.session.close()


def _safe(url: str) -> str:
    """The URL without its query: tokens sometimes travel there and must not reach logs."""
    return url.split("?", 1)[0]


class Paginator(Protocol):
    """Gives the request for the next page, and knows when there is none."""

    def first(self) -> tuple[str, dict[str, Any]]: ...

    def next(
        self, url: str, params: dict[str, Any], page: Any
    ) -> tuple[str, dict[str, Any]] | None: ...


def dig(doc: Any, path: str | None) -> Any:
    """The value at a dotted path ("paging.next.after"), or None; "" or None is the document."""
    if not path:
        return doc
    for part in path.split("."):
        if isinstance(doc, Mapping):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


@dataclass
class TokenPaginator:
    """Next-page token found at `token_path` in the page (or computed by `token_of`) → `param`."""

    url: str
    params: dict[str, Any]
    param: str
    token_path: str | None = None
    token_of: Callable[[Any], Any] | None = None

    def first(self) -> tuple[str, dict[str, Any]]:
        return self.url, dict(self.params)

    def next(
        self, url: str, params: dict[str, Any], page: Any
    ) -> tuple[str, dict[str, Any]] | None:
        token = self.token_of(page) if self.token_of else dig(page, self.token_path)
        if token in (None, ""):
            return None
        return url, {**params, self.param: token}


@dataclass
class PageNumberPaginator:
    """?page=1,2,3… until a page comes back with fewer than `page_size` records."""

    url: str
    params: dict[str, Any]
    records_path: str | None
    page_param: str = "page"
    page_size: int = 100
    first_page: int = 1

    def first(self) -> tuple[str, dict[str, Any]]:
        return self.url, {**self.params, self.page_param: self.first_page}

    def next(
        self, url: str, params: dict[str, Any], page: Any
    ) -> tuple[str, dict[str, Any]] | None:
        records = dig(page, self.records_path)
        if not isinstance(records, list) or len(records) < self.page_size:
            return None
        return url, {**params, self.page_param: int(params[self.page_param]) + 1}


@dataclass
class NextLinkPaginator:
    """A full URL of the next page at `link_path` in the body, or in the `Link: rel=next` header."""

    url: str
    params: dict[str, Any]
    link_path: str | None = None

    def first(self) -> tuple[str, dict[str, Any]]:
        return self.url, dict(self.params)

    def next(
        self, url: str, params: dict[str, Any], page: Any
    ) -> tuple[str, dict[str, Any]] | None:
        link = dig(page, self.link_path) if self.link_path else None
        if not link:
            return None
        return urljoin(url, str(link)), {}


def iter_pages(
    client: HttpClient, paginator: Paginator, max_pages: int = 1000
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(page document, the request params that fetched it), until the paginator says done.

    Raises PaginationError on a request already made (a repeated page token would loop
    forever) and when `max_pages` is reached.
    """
    request: tuple[str, dict[str, Any]] | None = paginator.first()
    seen: set[str] = set()
    pages = 0
    while request is not None:
        url, params = request
        key = json.dumps([url, sorted(params.items())], default=str)
        if key in seen:
            raise PaginationError(f"{_safe(url)}: page token repeated ({len(seen)} pages read)")
        seen.add(key)
        if pages >= max_pages:
            raise PaginationError(f"{_safe(url)}: more than {max_pages} pages; raise max_pages")
        page = client.get_json(url, params)
        pages += 1
        yield page, params
        request = paginator.next(url, params, page)
