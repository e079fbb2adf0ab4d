"""The console over real HTTP against a real warehouse (SQLite and PostgreSQL): who may enter,
every page and action, decisions that change the leads exactly as SQL would, splits, revocations."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select, text

from console.auth import TokenError, read_token
from flows.cli import main
from tests.conftest import pg_database
from tests.console.conftest import (
    FORMULA_COMPANY,
    HOSTILE_NAME,
    TOKEN,
    Console,
    build,
    csrf_of,
)
from warehouse import db
from warehouse import schema as t

PAGES = ["/", "/reviews", "/leads", "/leads?q=hans", "/rejects", "/runs"]
API = [
    "/api/overview",
    "/api/reviews",
    "/api/leads?q=ayse@firma.com.tr",
    "/api/rejects",
    "/api/runs",
]


def _lead_of(console: Console, record: str) -> str:
    return console.links()[console.contact_of(record)]


def test_nothing_without_a_token(console: Console) -> None:
    for path in PAGES:
        r = requests.get(console.base + path, allow_redirects=False, timeout=30)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=")
    for path in API:
        assert requests.get(console.base + path, timeout=30).status_code == 401, path
        bad = {"Authorization": "Bearer not-the-token"}
        assert requests.get(console.base + path, headers=bad, timeout=30).status_code == 401
    lead = _lead_of(console, "wf-3")
    for path in (f"/leads/{lead}", "/reviews/rev_x"):
        assert (
            requests.get(console.base + path, allow_redirects=False, timeout=30).status_code == 303
        )
    assert requests.post(console.base + "/api/apply", timeout=30).status_code == 401
    # A forged session cookie is no session.
    forged = {"leadflow_session": "eyJuIjoiZXZlIn0.deadbeef"}
    r = requests.get(console.base + "/", cookies=forged, allow_redirects=False, timeout=30)
    assert r.status_code == 303


def test_login_sets_a_strict_httponly_session_and_pages_answer(console: Console) -> None:
    r = requests.post(
        console.base + "/login",
        data={"token": "wrong-token-wrong-token", "steward": "Eve"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 401 and "leadflow_session" not in r.headers.get("set-cookie", "")
    r = requests.post(
        console.base + "/login",
        data={"token": TOKEN, "steward": "Sam Steward", "next": "//evil.example/"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"  # never an open redirect
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    s = console.login()
    lead = _lead_of(console, "wf-3")
    for path in [*PAGES, f"/leads/{lead}"]:
        page = s.get(console.base + path, timeout=30)
        assert page.status_code == 200, path
        assert "Sam Steward" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    for path in API:
        assert console.api("GET", path).status_code == 200, path
    css = s.get(console.base + "/static/console.css", timeout=30)
    assert css.status_code == 200 and "svg.funnel" in css.text
    assert "http://" not in s.get(console.base + "/", timeout=30).text.split("<main>")[0]


def test_state_changes_need_the_csrf_token(console: Console) -> None:
    s = console.login()
    lead = _lead_of(console, "wf-3")
    page = s.get(f"{console.base}/leads/{lead}", timeout=30).text
    contact = console.contact_of("wf-5")
    rid = console.api("GET", "/api/reviews").json()["reviews"][0]["review_id"]
    forms = {
        f"/reviews/{rid}/decide": {"decision": "different", "pos": "0"},
        f"/reviews/{rid}/revoke": {},
        f"/leads/{lead}/split": {"contact_id": contact},
        "/apply": {},
        "/rejects/replay": {"reason": "no_identity"},
        "/logout": {},
    }
    for path, data in forms.items():
        # without a session: to the login form; with one but no CSRF token: refused
        r = requests.post(console.base + path, data=data, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        r = s.post(console.base + path, data=data, allow_redirects=False, timeout=30)
        assert r.status_code == 403, path
    for path in [f"/api{p}" for p in forms if p != "/logout"]:
        assert requests.post(console.base + path, json={}, timeout=30).status_code == 401, path
        assert s.post(console.base + path, json={}, timeout=30).status_code == 403, path
    assert _review_row(console.url, rid).decision == "open"
    assert console.api("GET", "/api/overview").json()["pending_decisions"] == 0
    for data in ({"contact_id": contact}, {"contact_id": contact, "csrf_token": "0" * 32}):
        r = s.post(
            f"{console.base}/leads/{lead}/split", data=data, allow_redirects=False, timeout=30
        )
        assert r.status_code == 403
    # A session's API call needs the header; the same call with it reaches the handler.
    r = s.post(
        f"{console.base}/api/leads/{lead}/split", json={"contact_id": "con_nope"}, timeout=30
    )
    assert r.status_code == 403
    r = s.post(
        f"{console.base}/api/leads/{lead}/split",
        json={"contact_id": "con_nope"},
        headers={"X-CSRF-Token": csrf_of(page)},
        timeout=30,
    )
    assert r.status_code == 409 and "not a contact" in r.json()["detail"]
    engine = db.make_engine(console.url)
    with engine.connect() as conn:
        splits = conn.execute(text("select count(*) from match_review where kind = 'split'"))
        assert splits.scalar_one() == 0
    engine.dispose()


def test_hostile_values_render_as_inert_text(console: Console) -> None:
    s = console.login()
    lead = _lead_of(console, "wf-6")
    html = s.get(f"{console.base}/leads/{lead}", timeout=30).text
    assert "<script>window.__pwned" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "=HYPERLINK(&#34;http://evil.example/&#34;,&#34;click&#34;)" in html
    found = s.get(console.base + "/leads", params={"q": "mallory@evil.example"}, timeout=30).text
    assert lead in found and "<script>window.__pwned" not in found
    # A hostile query is escaped too.
    q = s.get(console.base + "/leads", params={"q": '"><img src=x onerror=alert(1)>'}, timeout=30)
    assert "<img src=x" not in q.text and "&lt;img src=x onerror=alert(1)&gt;" in q.text
    api = console.api("GET", f"/api/leads/{lead}").json()
    assert HOSTILE_NAME in [c["full_name"] for c in api["contacts"]]
    assert api["contacts"][0]["company"] == FORMULA_COMPANY


def test_search_by_email_phone_name_and_company(console: Console) -> None:
    ayse = _lead_of(console, "wf-3")
    hans = _lead_of(console, "wf-1")
    for q in ("AYSE@Firma.com.tr", "+90 532 123 45 67", "0090 532 1234567", "ayşe kaya", "Firma"):
        found = [
            r["lead_id"] for r in console.api("GET", "/api/leads", params={"q": q}).json()["leads"]
        ]
        assert ayse in found, q
    found = [
        r["lead_id"] for r in console.api("GET", "/api/leads", params={"q": "Hans"}).json()["leads"]
    ]
    assert hans in found and ayse not in found
    assert console.api("GET", "/api/leads", params={"q": "nobody-like-this"}).json()["leads"] == []
    s = console.login()
    r = s.get(console.base + "/leads", params={"q": ayse}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"] == f"/leads/{ayse}"


def test_lead_page_shows_provenance_contacts_and_reasons(console: Console) -> None:
    lead = _lead_of(console, "wf-3")
    d = console.api("GET", f"/api/leads/{lead}").json()
    assert len(d["contacts"]) == 3
    assert {c["source_record_id"] for c in d["contacts"]} == {"wf-3", "wf-4", "wf-5"}
    assert all(c["raw_payload"] and c["link_rule"] for c in d["contacts"])
    s = console.login()
    html = s.get(f"{console.base}/leads/{lead}", timeout=30).text
    # Each golden field names the contact it came from and its survivorship rule.
    supplier = d["lead"]["survivorship"]["email"]
    assert f'href="#{supplier}"' in html and "most recent" in html and "source priority" in html
    assert "Raw payload" in html and "wf-4" in html and "Not this person" in html


def test_a_qualified_leads_page_shows_its_account_and_opportunity(console: Console) -> None:
    lead = _lead_of(console, "wf-8")
    d = console.api("GET", f"/api/leads/{lead}").json()
    assert d["lead"]["status"] == "Qualified" and {"need", "market", "timeline"} <= set(
        d["lead"]["reasons"]
    )
    opp, account = d["opportunity"], d["account"]
    assert opp["lead_id"] == lead and opp["stage"] == "Needs Analysis"
    assert account["name"] == "Vogel Bau GmbH"
    assert [(h["from_stage"], h["to_stage"]) for h in d["stage_history"]] == [
        (None, "Needs Analysis")
    ]
    html = console.login().get(f"{console.base}/leads/{lead}", timeout=30).text
    shown = html.split("<h2>Account and opportunity</h2>")[1].split("<h2>Contacts</h2>")[0]
    assert "Vogel Bau GmbH" in shown and opp["opportunity_id"] in shown
    assert "Needs Analysis" in shown and "25000" in shown.replace(".", "").replace(",", "")


def test_overview_funnel_runs_and_rejects(console: Console) -> None:
    s = console.login()
    html = s.get(console.base + "/", timeout=30).text
    assert '<svg class="funnel"' in html and "forms" in html
    ov = console.api("GET", "/api/overview").json()
    assert ov["leads"] >= 4 and ov["open_reviews"] >= 1 and ov["open_rejects"] == 1
    runs = console.api("GET", "/api/runs").json()
    assert runs and runs[0]["status"] == "succeeded" and "failed_checks" in runs[0]
    docs = runs[0]["docs_url"]
    assert docs and docs.startswith(f"/runs/{runs[0]['run_id']}/docs/")
    assert s.get(console.base + docs, timeout=30).status_code == 200
    assert (
        s.get(
            f"{console.base}/runs/{runs[0]['run_id']}/docs/../../leadflow.yaml", timeout=30
        ).status_code
        == 404
    )
    rejects = console.api("GET", "/api/rejects").json()
    (group,) = rejects
    assert group["rejects"] == 1 and group["samples"][0]["source_record_id"] == "wf-7"
    assert "nobody" in s.get(console.base + "/rejects", timeout=30).text


def test_replay_action_runs_the_replay_flow(console: Console) -> None:
    reason = console.api("GET", "/api/rejects").json()[0]["reason"]
    before = {r["run_id"] for r in console.api("GET", "/api/runs").json()}
    r = console.api("POST", "/api/rejects/replay", json={"reason": reason})
    assert r.status_code == 202
    job = console.wait_job(r.json()["job_id"])
    assert job["status"] == "succeeded", job
    runs = {r["run_id"]: r for r in console.api("GET", "/api/runs").json()}
    assert job["run_id"] in set(runs) - before and runs[job["run_id"]]["flow"] == "replay"
    # Still nobody: the record stays in quarantine, nothing lost.
    assert console.api("GET", "/api/rejects").json()[0]["rejects"] == 1


def test_review_queue_decision_changes_leads_exactly_as_sql(
    console: Console, tmp_path: Path
) -> None:
    """A must_link decided in the console and the same decision by UPDATE in a twin warehouse:
    after the next run the two warehouses hold the same leads, and the pair is one lead."""
    queue = console.api("GET", "/api/reviews").json()
    assert queue["total"] >= 1
    pair = next(
        r
        for r in queue["reviews"]
        if {r["contact_a"], r["contact_b"]}
        == {console.contact_of("wf-1"), console.contact_of("wf-2")}
    )
    assert pair["priority"] > 0
    detail = console.api("GET", f"/api/reviews/{pair['review_id']}").json()
    assert {"email", "phone", "street", "city"} <= set(detail["differing"])
    assert "postal_code" not in detail["differing"]
    assert "full_name" not in detail["differing"]
    s = console.login()
    html = s.get(console.base + "/reviews", timeout=30).text
    assert 'class="differs"' in html and "Hans Weber" in html

    with _twin(console, tmp_path) as (twin_url, twin_cfg, _twin_source):
        before = console.links()
        # the console: the steward presses "same person"
        r = s.post(
            f"{console.base}/reviews/{pair['review_id']}/decide",
            data={"decision": "same", "pos": "0", "csrf_token": csrf_of(html)},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 303
        # the twin: the same decision in SQL
        engine = db.make_engine(twin_url)
        with engine.begin() as conn:
            conn.execute(
                t.match_review.update()
                .where(t.match_review.c.review_id == pair["review_id"])
                .values(decision="must_link", decided_by="sql", decided_at=datetime.now(UTC))
            )
        engine.dispose()
        # the next run of each, with nothing new to land: the decision alone changes the leads
        for cfg in (console.cfg, twin_cfg):
            assert main(["run", "--config", str(cfg)]) == 0
        after = console.links()
        assert after[console.contact_of("wf-2")] == after[console.contact_of("wf-1")]
        assert after[console.contact_of("wf-1")] == before[console.contact_of("wf-1")]
        assert _leads_table(console.url) == _leads_table(twin_url)

    row = _review_row(console.url, pair["review_id"])
    assert row.decision == "must_link" and row.decided_by == "Sam Steward" and row.applied
    assert row.decided_at is not None
    log = console.api("GET", f"/api/reviews/{pair['review_id']}").json()["log"]
    assert [(e["action"], e["decision"], e["steward"]) for e in log] == [
        ("decide", "must_link", "Sam Steward")
    ]

    # Revoked and applied: the pair is back in the queue and the clustering is the earlier one.
    r = console.api("POST", f"/api/reviews/{pair['review_id']}/revoke")
    assert r.status_code == 200 and r.json()["revoked"] == [pair["review_id"]]
    # until a rebuild undoes the merge, the revocation is shown as not applied, with Apply now
    assert console.api("GET", "/api/overview").json()["pending_decisions"] == 1
    merged = s.get(f"{console.base}/leads/{after[console.contact_of('wf-1')]}", timeout=30).text
    assert (
        'id="apply"' in merged and 'action="/apply"' in s.get(console.base + "/", timeout=30).text
    )
    job = console.wait_job(console.api("POST", "/api/apply").json()["job_id"])
    assert job["status"] == "succeeded", job
    restored = console.links()
    assert {k: restored[k] for k in before} == before
    assert pair["review_id"] in {
        r["review_id"] for r in console.api("GET", "/api/reviews").json()["reviews"]
    }


@pytest.mark.parametrize("console", ["postgresql"], indirect=True)
def test_a_change_is_committed_before_the_answer_says_it_is_done(console: Console) -> None:
    """The answer to a state change comes after its transaction committed: a commit that fails
    (here a deferred trigger refuses one steward's decisions) is an error, never a 200 or a
    redirect over a decision that was not stored."""
    engine = db.make_engine(console.url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.steward = 'Refused Steward' THEN "
                "RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON review_log "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"
            )
        )
    try:
        pair = console.api("GET", "/api/reviews").json()["reviews"][0]
        r = requests.post(
            f"{console.base}/api/reviews/{pair['review_id']}/decide",
            json={"decision": "different"},
            headers={"Authorization": f"Bearer {TOKEN}", "X-Steward": "Refused Steward"},
            timeout=60,
        )
        assert r.status_code == 500
        s = console.login("Refused Steward")
        html = s.get(console.base + "/reviews", timeout=30).text
        r = s.post(
            f"{console.base}/reviews/{pair['review_id']}/decide",
            data={"decision": "different", "pos": "0", "csrf_token": csrf_of(html)},
            allow_redirects=False,
            timeout=60,
        )
        assert r.status_code == 500
        assert _review_row(console.url, pair["review_id"]).decision == "open"
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_at_commit ON review_log"))
            conn.execute(text("DROP FUNCTION refuse_at_commit()"))
        engine.dispose()


@contextmanager
def _twin(console: Console, tmp: Path) -> Iterator[tuple[str, Path, Path]]:
    """A second warehouse of the same dialect, built by the same run of the same sources."""
    folder = tmp / "twin"
    if console.url.startswith("sqlite"):
        url = f"sqlite:///{folder / 'twin.db'}"
        folder.mkdir()
        yield (url, *build(folder, url))
    else:
        with pg_database() as url:
            yield (url, *build(folder, url))
    shutil.rmtree(folder, ignore_errors=True)


def _leads_table(url: str) -> list[tuple[object, ...]]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        leads = conn.execute(
            select(
                t.leads.c.lead_id,
                t.leads.c.full_name,
                t.leads.c.email,
                t.leads.c.contact_count,
                t.leads.c.status,
                t.leads.c.score,
            ).order_by(t.leads.c.lead_id)
        ).all()
        links = conn.execute(
            select(t.lead_links.c.contact_id, t.lead_links.c.lead_id, t.lead_links.c.rule).order_by(
                t.lead_links.c.contact_id
            )
        ).all()
        merges = conn.execute(
            select(t.lead_merges.c.merged_lead_id, t.lead_merges.c.into_lead_id)
        ).all()
    engine.dispose()
    return [tuple(r) for r in [*leads, *links, *merges]]


def _review_row(url: str, rid: str) -> Any:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        row = conn.execute(select(t.match_review).where(t.match_review.c.review_id == rid)).one()
    engine.dispose()
    return row


def test_split_separates_the_contact_and_revoke_joins_it_again(console: Console) -> None:
    lead = _lead_of(console, "wf-3")
    out = console.contact_of("wf-5")
    keep = [console.contact_of("wf-3"), console.contact_of("wf-4")]
    r = console.api("POST", f"/api/leads/{lead}/split", json={"contact_id": out})
    assert r.status_code == 200 and len(r.json()["reviews"]) == 2
    s = console.login()
    html = s.get(f"{console.base}/leads/{lead}", timeout=30).text
    assert "split" in html and "cannot_link" in html and 'id="apply"' in html
    # "Apply now" from the page (a form post), then the run shows up under the job.
    r = s.post(
        f"{console.base}/apply",
        data={"csrf_token": csrf_of(html)},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/runs?job=")
    job = console.wait_job(r.headers["location"].split("job=")[1])
    assert job["status"] == "succeeded", job
    links = console.links()
    assert links[out] != lead
    assert [links[c] for c in keep] == [lead, lead]  # the part that keeps the lead keeps its id
    # the processing run, not a rebuild, applied it: recorded like a merge, in lead_splits
    assert _flow_of(console, job["run_id"]) == "apply"
    assert _splits(console.url) == [(links[out], lead, job["run_id"])]
    page = s.get(f"{console.base}/leads/{lead}", timeout=30).text
    assert out not in page.split("<h2>Contacts</h2>")[1].split("<h2>Merges</h2>")[0]

    # Revoking any row of the split revokes all of it; applied, the contact is back.
    r_ids = console.api("GET", f"/api/leads/{lead}").json()["reviews"]
    rid = next(x["review_id"] for x in r_ids if x["kind"] == "split")
    revoked = console.api("POST", f"/api/reviews/{rid}/revoke").json()["revoked"]
    assert len(revoked) == 2 and set(revoked) <= {x["review_id"] for x in r_ids}
    job = console.wait_job(console.api("POST", "/api/apply").json()["job_id"])
    assert job["status"] == "succeeded", job
    assert _flow_of(console, job["run_id"]) == "rebuild"  # only a rebuild undoes a split
    links = console.links()
    assert [links[c] for c in [*keep, out]] == [lead, lead, lead]
    # A lead of one contact cannot be split.
    single = _lead_of(console, "wf-6")
    r = console.api(
        "POST", f"/api/leads/{single}/split", json={"contact_id": console.contact_of("wf-6")}
    )
    assert r.status_code == 409


def _flow_of(console: Console, run_id: str) -> str:
    return str(
        next(r["flow"] for r in console.api("GET", "/api/runs").json() if r["run_id"] == run_id)
    )


def _splits(url: str) -> list[tuple[object, ...]]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                t.lead_splits.c.lead_id, t.lead_splits.c.split_from_lead_id, t.lead_splits.c.run_id
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_the_console_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LEADFLOW_CONSOLE_TOKEN", raising=False)
    monkeypatch.delenv("LEADFLOW_CONSOLE_TOKEN_BLOCK", raising=False)
    with pytest.raises(TokenError, match="no token"):
        read_token()
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(f"warehouse:\n  url: sqlite:///{tmp_path / 'w.db'}\n")
    assert main(["console", "--config", str(cfg)]) == 2
    assert "LEADFLOW_CONSOLE_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("LEADFLOW_CONSOLE_TOKEN", "short")
    with pytest.raises(TokenError, match="at least 16"):
        read_token()
    monkeypatch.setenv("LEADFLOW_CONSOLE_TOKEN", TOKEN)
    assert read_token() == TOKEN


def test_the_token_can_come_from_a_prefect_secret_block(
    monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> None:
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    monkeypatch.delenv("LEADFLOW_CONSOLE_TOKEN", raising=False)
    monkeypatch.delenv("LEADFLOW_CONSOLE_TOKEN_BLOCK", raising=False)
    Secret(value=SecretStr(TOKEN)).save("leadflow-console-token", overwrite=True)
    assert read_token("leadflow-console-token") == TOKEN
    monkeypatch.setenv("LEADFLOW_CONSOLE_TOKEN_BLOCK", "leadflow-console-token")
    assert read_token() == TOKEN
    with pytest.raises(TokenError, match="no-such-block"):
        read_token("no-such-block")
    Secret(value=SecretStr("short")).save("leadflow-short-token", overwrite=True)
    with pytest.raises(TokenError, match="at least 16"):
        read_token("leadflow-short-token")


def test_binding_beyond_loopback_warns() -> None:
    from console.server import bind_warning

    assert bind_warning("127.0.0.1") is None and bind_warning("::1") is None
    warning = bind_warning("0.0.0.0")
    assert warning and "0.0.0.0" in warning
