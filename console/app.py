"""The steward console: server-rendered pages and a JSON API over the warehouse, behind a token."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Connection, Engine

from console import views
from console.auth import SESSION_COOKIE, SESSION_SECONDS, Keys, Session, clean_steward
from flows.settings import Settings
from transforms.normalize import company_key, fold, normalize_email, normalize_phone
from transforms.resolve import CANNOT_LINK, MUST_LINK
from warehouse import db, stewardship

HERE = Path(__file__).parent
PER_PAGE = 25
DECISIONS = {
    "same": MUST_LINK,
    "different": CANNOT_LINK,
    MUST_LINK: MUST_LINK,
    CANNOT_LINK: CANNOT_LINK,
}

# Inline scripts and styles never run: a value that escaped escaping would still be inert.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    pass


class Unauthorized(Exception):
    pass


class Forbidden(Exception):
    pass


@dataclass
class Job:
    """A flow the console started (apply now, replay): its state as this process saw it."""

    job_id: str
    kind: str
    steward: str
    status: str = "queued"
    run_id: str | None = None
    error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Jobs:
    """One flow at a time, in a worker thread; the run itself is recorded in pipeline_runs."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadflow-console-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, steward: str, work: Callable[[], dict[str, Any]]) -> Job:
        job = Job(f"job_{uuid.uuid4().hex[:16]}", kind, steward)
        with self._lock:
            self._jobs[job.job_id] = job

        def run() -> None:
            job.status = "running"
            try:
                result = work()
                job.run_id = result.get("run_id")
                job.detail = {"status": result.get("status")}
                job.status = "succeeded"
            except Exception as exc:  # the run log has the details; the console shows the line
                from flows.pipeline import failure_reason

                job.status, job.error = "failed", failure_reason(exc)
            finally:
                job.finished_at = datetime.now(UTC)

        self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)[:10]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def parse_query(q: str, region: str) -> dict[str, Any]:
    """What a search box query names: an email (key), a phone (E.164), else a name and a company."""
    text = " ".join(q.split())
    if not text:
        return {}
    if "@" in text:
        _, key, _ = normalize_email(text)
        return {"email_key": key or fold(text)}
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 6 and digits >= len(text.replace(" ", "")) * 0.6:
        phone, _ = normalize_phone(text, region)
        if phone:
            return {"phone": phone}
    out = {"name": fold(text)}
    ck = company_key(text)
    if ck:
        out["company"] = ck
    return out


def create_app(
    settings: Settings,
    token: str,
    *,
    config_path: str | None = None,
    engine: Engine | None = None,
) -> FastAPI:
    """The console over `settings.warehouse`; flows it starts read `config_path`."""
    keys = Keys(token)
    engine = engine or db.make_engine(settings.warehouse.url, pool_pre_ping=True)
    db.upgrade(engine)
    jobs = Jobs()
    env = Environment(
        loader=PackageLoader("console", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        comparisons=views.comparisons,
        pretty_json=views.pretty_json,
        rate=views.rate,
        rule_of=views.RULE_OF_FIELD,
        quote=quote,
    )
    env.filters["ts"] = _ts

    app = FastAPI(title="leadflow console", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.jobs = jobs
    app.state.engine = engine

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_request: Request, _exc: Unauthorized) -> Response:
        return JSONResponse(
            {"detail": "a console token is required (Authorization: Bearer …)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden) -> Response:
        return JSONResponse({"detail": str(exc) or "bad or missing CSRF token"}, status_code=403)

    @app.exception_handler(stewardship.StewardError)
    async def _steward_error(request: Request, exc: stewardship.StewardError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=409)
        return HTMLResponse(_render("error.html", None, None, message=str(exc)), status_code=409)

    def _render(name: str, session: Session | None, request: Request | None, **ctx: Any) -> str:
        return env.get_template(name).render(
            steward=session.steward if session else None,
            csrf=keys.csrf_token(session) if session else "",
            path=request.url.path if request else "",
            **ctx,
        )

    def page(request: Request, session: Session, name: str, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(_render(name, session, request, **ctx))

    def session_of(request: Request) -> Session:
        s = keys.read_session(request.cookies.get(SESSION_COOKIE))
        if s is None:
            raise LoginRequired()
        return s

    def api_session(request: Request) -> Session:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            if keys.token_ok(auth[7:].strip()):
                name = clean_steward(request.headers.get("x-steward")) or "api"
                return Session(name, "bearer", 0)
            raise Unauthorized()
        s = keys.read_session(request.cookies.get(SESSION_COOKIE))
        if s is None:
            raise Unauthorized()
        if request.method not in ("GET", "HEAD") and not keys.csrf_ok(
            s, request.headers.get("x-csrf-token")
        ):
            raise Forbidden("a session's API call must send X-CSRF-Token")
        return s

    async def form(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}

    async def json_body(request: Request) -> dict[str, Any]:
        body = await request.body()
        if not body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise stewardship.StewardError("the body is not JSON") from None
        if not isinstance(data, dict):
            raise stewardship.StewardError("the body must be a JSON object")
        return data

    def posted(
        request: Request, data: dict[str, str] = Depends(form)
    ) -> tuple[Session, dict[str, str]]:
        s = session_of(request)
        if not keys.csrf_ok(s, data.get("csrf_token")):
            raise Forbidden("bad or missing CSRF token")
        return s, data

    def conn() -> Any:
        with engine.connect() as c:
            yield c

    def tx() -> Any:
        with engine.begin() as c:
            yield c

    # Ended with the handler, before the answer is sent: a change is committed (or its failure
    # answered) before the browser is told it is done and reads the next page.
    read = Depends(conn, scope="function")
    write = Depends(tx, scope="function")

    # ---- login -------------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return HTMLResponse(_render("login.html", None, request, next=_safe_next(next), error=None))

    @app.post("/login")
    def login(request: Request, data: dict[str, str] = Depends(form)) -> Response:
        nxt = _safe_next(data.get("next", "/"))
        steward = clean_steward(data.get("steward"))
        if not keys.token_ok(data.get("token")) or not steward:
            error = (
                "Wrong token." if steward else "Give your name: it is stored with every decision."
            )
            html = _render("login.html", None, request, next=nxt, error=error)
            return HTMLResponse(html, status_code=401)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            keys.new_session(steward),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/logout")
    def logout(p: tuple[Session, dict[str, str]] = Depends(posted)) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ---- overview, runs, rejects ---------------------------------------------------------------

    def overview_data(c: Connection) -> dict[str, Any]:
        from warehouse import reports

        data = stewardship.overview(c)
        data["funnel"] = reports.funnel(c)
        data["weeks"] = stewardship.funnel_by_week(c)
        return data

    @app.get("/", response_class=HTMLResponse)
    def overview(
        request: Request, s: Session = Depends(session_of), c: Connection = read
    ) -> HTMLResponse:
        data = overview_data(c)
        steps = ["contacts", "leads", "qualified", "opportunities"]
        total = {k: sum(r[k] for r in data["funnel"]) for k in steps}
        return page(
            request,
            s,
            "overview.html",
            data=data,
            total=total,
            source_svg=views.funnel_svg(data["funnel"], "source", steps),
            week_svg=views.funnel_svg(data["weeks"], "week", steps[1:]),
        )

    @app.get("/api/overview")
    def api_overview(s: Session = Depends(api_session), c: Connection = read) -> Any:
        return jsonable_encoder(overview_data(c))

    def runs_data(c: Connection) -> list[dict[str, Any]]:
        runs = stewardship.runs_with_checks(c)
        for r in runs:
            r["docs_url"] = _docs_url(settings, r)
        return runs

    @app.get("/runs", response_class=HTMLResponse)
    def runs(
        request: Request, s: Session = Depends(session_of), c: Connection = read
    ) -> HTMLResponse:
        return page(request, s, "runs.html", runs=runs_data(c), jobs=jobs.recent())

    @app.get("/api/runs")
    def api_runs(s: Session = Depends(api_session), c: Connection = read) -> Any:
        return jsonable_encoder(runs_data(c))

    @app.get("/runs/{run_id}/docs/{doc_path:path}")
    def run_docs(run_id: str, doc_path: str, s: Session = Depends(session_of)) -> Response:
        base = (Path(settings.quality.docs_dir) / run_id).resolve()
        target = (base / doc_path).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            return HTMLResponse("no such Data Docs page", status_code=404)
        return FileResponse(target)

    @app.get("/rejects", response_class=HTMLResponse)
    def rejects(
        request: Request, s: Session = Depends(session_of), c: Connection = read
    ) -> HTMLResponse:
        return page(request, s, "rejects.html", groups=stewardship.reject_groups(c))

    @app.get("/api/rejects")
    def api_rejects(s: Session = Depends(api_session), c: Connection = read) -> Any:
        return jsonable_encoder(stewardship.reject_groups(c))

    def start_replay(steward: str, reason: str | None) -> Job:
        def work() -> dict[str, Any]:
            from flows import pipeline

            return pipeline.replay(config=config_path, reason=reason)

        job = jobs.submit("replay", steward, work)
        job.detail["reason"] = reason
        return job

    @app.post("/rejects/replay")
    def replay(p: tuple[Session, dict[str, str]] = Depends(posted)) -> Response:
        s, data = p
        job = start_replay(s.steward, data.get("reason") or None)
        return RedirectResponse(f"/runs?job={job.job_id}", status_code=303)

    @app.post("/api/rejects/replay")
    def api_replay(
        s: Session = Depends(api_session), data: dict[str, Any] = Depends(json_body)
    ) -> Any:
        job = start_replay(s.steward, data.get("reason") or None)
        return JSONResponse(jsonable_encoder(asdict(job)), status_code=202)

    def start_apply(steward: str) -> Job:
        """The processing flow applies new decisions; only a rebuild takes back a revoked one."""

        def work() -> dict[str, Any]:
            from flows import pipeline
            from warehouse import resolution

            with engine.connect() as c:
                revoked = resolution.pending_revocations(c)
            return (
                pipeline.rebuild(config=config_path)
                if revoked
                else pipeline.apply(config=config_path)
            )

        return jobs.submit("apply", steward, work)

    @app.post("/apply")
    def apply_now(p: tuple[Session, dict[str, str]] = Depends(posted)) -> Response:
        job = start_apply(p[0].steward)
        return RedirectResponse(f"/runs?job={job.job_id}", status_code=303)

    @app.post("/api/apply")
    def api_apply(s: Session = Depends(api_session)) -> Any:
        return JSONResponse(jsonable_encoder(asdict(start_apply(s.steward))), status_code=202)

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: str, s: Session = Depends(api_session)) -> Any:
        job = jobs.get(job_id)
        if job is None:
            return JSONResponse({"detail": "no such job"}, status_code=404)
        return jsonable_encoder(asdict(job))

    # ---- the review queue ----------------------------------------------------------------------

    # Pairs are scored by match probability; a pair stored with a log2 weight (before match
    # models) is read against the prior those weights assumed.
    prior = -10.0
    queue_cache: dict[str, Any] = {"version": None, "order": []}
    queue_lock = threading.Lock()

    def queue_page(c: Connection, page_no: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the queue. The whole order is computed once per queue version; a decision
        does not change the version (ordering 50k pairs again after every press would cost the
        steward seconds): the pairs of a page that are no longer open leave the order as the
        page is read, and the page is filled from the pairs after them."""
        version = stewardship.queue_version(c)
        with queue_lock:
            if queue_cache["version"] != version:
                queue_cache["order"] = stewardship.queue_order(c, prior)
                queue_cache["version"] = version
            order: list[str] = queue_cache["order"]
            while True:
                ids = order[(page_no - 1) * per_page : page_no * per_page]
                rows = stewardship.queue_rows(c, ids, prior)
                if len(rows) == len(ids):
                    return rows, len(order)
                gone = set(ids) - {r["review_id"] for r in rows}
                order[:] = [i for i in order if i not in gone]

    @app.get("/reviews", response_class=HTMLResponse)
    def reviews(
        request: Request,
        pos: int = 0,
        s: Session = Depends(session_of),
        c: Connection = read,
    ) -> HTMLResponse:
        pos = max(0, pos)
        page_no = pos // PER_PAGE + 1
        rows, total = queue_page(c, page_no, PER_PAGE)
        if pos >= total and total:
            pos = total - 1
            page_no = pos // PER_PAGE + 1
            rows, total = queue_page(c, page_no, PER_PAGE)
        current = rows[pos % PER_PAGE] if rows and pos % PER_PAGE < len(rows) else None
        detail = stewardship.review_detail(c, current["review_id"]) if current else None
        return page(
            request,
            s,
            "reviews.html",
            rows=rows,
            total=total,
            pos=pos,
            first=(page_no - 1) * PER_PAGE,
            per_page=PER_PAGE,
            detail=detail,
            decided=stewardship.decided_reviews(c, 20),
            fields=stewardship.CONTACT_FIELDS,
        )

    @app.get("/api/reviews")
    def api_reviews(
        page: int = 1,
        per_page: int = PER_PAGE,
        s: Session = Depends(api_session),
        c: Connection = read,
    ) -> Any:
        rows, total = queue_page(c, max(page, 1), min(max(per_page, 1), 200))
        return jsonable_encoder({"total": total, "page": page, "reviews": rows})

    @app.get("/reviews/{rid}", response_class=HTMLResponse)
    def review(
        request: Request, rid: str, s: Session = Depends(session_of), c: Connection = read
    ) -> HTMLResponse:
        detail = stewardship.review_detail(c, rid)
        if detail is None:
            return HTMLResponse(_render("error.html", s, request, message="No such pair."), 404)
        return page(
            request, s, "review.html", detail=detail, fields=stewardship.CONTACT_FIELDS, pos=None
        )

    @app.get("/api/reviews/{rid}")
    def api_review(rid: str, s: Session = Depends(api_session), c: Connection = read) -> Any:
        detail = stewardship.review_detail(c, rid)
        if detail is None:
            return JSONResponse({"detail": "no such pair"}, status_code=404)
        return jsonable_encoder(detail)

    def _decide(c: Connection, rid: str, choice: str, steward: str) -> str:
        if choice not in DECISIONS:
            raise stewardship.StewardError(
                "decision must be same (must_link) or different (cannot_link)"
            )
        stewardship.decide(c, rid, DECISIONS[choice], steward, datetime.now(UTC))
        return DECISIONS[choice]

    @app.post("/reviews/{rid}/decide")
    def decide(
        rid: str, p: tuple[Session, dict[str, str]] = Depends(posted), c: Connection = write
    ) -> Response:
        s, data = p
        pos = _int(data.get("pos"))
        choice = data.get("decision", "")
        if choice == "skip":
            return RedirectResponse(f"/reviews?pos={pos + 1}", status_code=303)
        _decide(c, rid, choice, s.steward)
        # The decided pair leaves the queue: the same position now holds the next one.
        back = data.get("back")
        return RedirectResponse(
            _safe_next(back) if back else f"/reviews?pos={pos}", status_code=303
        )

    @app.post("/api/reviews/{rid}/decide")
    def api_decide(
        rid: str,
        s: Session = Depends(api_session),
        data: dict[str, Any] = Depends(json_body),
        c: Connection = write,
    ) -> Any:
        decision = _decide(c, rid, str(data.get("decision", "")), s.steward)
        return {"review_id": rid, "decision": decision, "decided_by": s.steward}

    @app.post("/reviews/{rid}/revoke")
    def revoke(
        rid: str, p: tuple[Session, dict[str, str]] = Depends(posted), c: Connection = write
    ) -> Response:
        s, data = p
        stewardship.revoke(c, rid, s.steward, datetime.now(UTC))
        back = data.get("back")
        return RedirectResponse(_safe_next(back) if back else "/reviews", status_code=303)

    @app.post("/api/reviews/{rid}/revoke")
    def api_revoke(rid: str, s: Session = Depends(api_session), c: Connection = write) -> Any:
        return {"revoked": stewardship.revoke(c, rid, s.steward, datetime.now(UTC))}

    # ---- the lead explorer ---------------------------------------------------------------------

    region = settings.default_region

    def search(c: Connection, q: str) -> list[dict[str, Any]]:
        keys_ = parse_query(q, region)
        return stewardship.search_leads(c, **keys_) if keys_ else []

    @app.get("/leads", response_class=HTMLResponse)
    def leads(
        request: Request,
        q: str = "",
        s: Session = Depends(session_of),
        c: Connection = read,
    ) -> Response:
        q = q[:200]
        if q.strip().startswith("lead_"):
            return RedirectResponse(f"/leads/{quote(q.strip())}", status_code=303)
        return page(request, s, "leads.html", q=q, results=search(c, q) if q.strip() else None)

    @app.get("/api/leads")
    def api_leads(q: str = "", s: Session = Depends(api_session), c: Connection = read) -> Any:
        return jsonable_encoder({"q": q, "leads": search(c, q[:200])})

    @app.get("/leads/{lead_id}", response_class=HTMLResponse)
    def lead(
        request: Request,
        lead_id: str,
        s: Session = Depends(session_of),
        c: Connection = read,
    ) -> Response:
        detail = stewardship.lead_detail(c, lead_id)
        if detail is None:
            now = stewardship.merged_into_now(c, lead_id)
            if now:
                return RedirectResponse(f"/leads/{quote(now)}?merged_from={quote(lead_id)}", 303)
            return HTMLResponse(_render("error.html", s, request, message="No such lead."), 404)
        return page(
            request,
            s,
            "lead.html",
            d=detail,
            merged_from=request.query_params.get("merged_from"),
            golden=views.RULE_OF_FIELD,
        )

    @app.get("/api/leads/{lead_id}")
    def api_lead(lead_id: str, s: Session = Depends(api_session), c: Connection = read) -> Any:
        detail = stewardship.lead_detail(c, lead_id)
        if detail is None:
            return JSONResponse(
                {"detail": "no such lead", "merged_into": stewardship.merged_into_now(c, lead_id)},
                status_code=404,
            )
        return jsonable_encoder(detail)

    @app.post("/leads/{lead_id}/split")
    def split(
        lead_id: str,
        p: tuple[Session, dict[str, str]] = Depends(posted),
        c: Connection = write,
    ) -> Response:
        s, data = p
        stewardship.split_contact(
            c, lead_id, data.get("contact_id", ""), s.steward, datetime.now(UTC)
        )
        return RedirectResponse(f"/leads/{quote(lead_id)}?split=1", status_code=303)

    @app.post("/api/leads/{lead_id}/split")
    def api_split(
        lead_id: str,
        s: Session = Depends(api_session),
        data: dict[str, Any] = Depends(json_body),
        c: Connection = write,
    ) -> Any:
        ids = stewardship.split_contact(
            c, lead_id, str(data.get("contact_id", "")), s.steward, datetime.now(UTC)
        )
        return {"lead_id": lead_id, "contact_id": data.get("contact_id"), "reviews": ids}

    return app


def _int(v: str | None) -> int:
    try:
        return max(0, int(v or 0))
    except ValueError:
        return 0


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never another host (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        v = value if value.tzinfo else value.replace(tzinfo=UTC)
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _docs_url(settings: Settings, run: dict[str, Any]) -> str | None:
    """The console's link to a run's Data Docs site, when the run built one."""
    docs = ((run.get("stats") or {}).get("process") or {}).get("data_docs")
    if not docs:
        return None
    base = (Path(settings.quality.docs_dir) / run["run_id"]).resolve()
    target = Path(docs).resolve()
    if target.is_dir():
        target = target / "index.html"
    try:
        rel = target.relative_to(base)
    except ValueError:
        return None
    return f"/runs/{quote(run['run_id'])}/docs/{quote(rel.as_posix())}"
