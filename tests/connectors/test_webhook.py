"""The webhook receiver on loopback: valid posts are spooled and ingested once, invalid ones get a 4xx."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from connectors.webhook import Spool, make_server
from tests.connectors.test_webform import land, table
from warehouse.schema import raw_contacts

SECRET = "hook-secret"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    spool = tmp_path / "spool"
    server = make_server({"site": (Spool(str(spool)), SECRET)}, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", spool
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def post(base: str, body: bytes, **headers: str) -> int:
    h = {"Content-Type": "application/json", **headers}
    return requests.post(f"{base}/hooks/site", data=body, headers=h, timeout=5).status_code


def test_invalid_posts_get_4xx_and_write_nothing(receiver: tuple[str, Path]) -> None:
    base, spool = receiver
    good = json.dumps({"email": "w@example.com"}).encode()
    assert post(base, good) == 401
    assert post(base, good, **{"X-Leadflow-Secret": "wrong"}) == 401
    assert post(base, b"{not json", **{"X-Leadflow-Secret": SECRET}) == 400
    assert post(base, b"[1, 2]", **{"X-Leadflow-Secret": SECRET}) == 400
    assert post(base, b"x" * (1024 * 1024 + 1), **{"X-Leadflow-Secret": SECRET}) == 413
    resp = requests.post(f"{base}/hooks/other", data=good, timeout=5)
    assert resp.status_code == 404
    assert list(spool.iterdir()) == []


def test_spooled_submissions_land_once(receiver: tuple[str, Path], tmp_path: Path) -> None:
    base, spool = receiver
    body = json.dumps({"id": "s1", "fields": {"Name": "Web One", "Email": "w1@example.com"}})
    assert post(base, body.encode(), **{"X-Leadflow-Secret": SECRET}) == 202
    # Typeform signs the body with HMAC-SHA256 instead of sending the secret
    signed = json.dumps({"token": "s2", "answers": [], "hidden": {"email": "w2@example.com"}})
    sig = base64.b64encode(hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).digest())
    assert post(base, signed.encode(), **{"Typeform-Signature": "sha256=" + sig.decode()}) == 202
    form = requests.post(
        f"{base}/hooks/site",
        data={"email": "w3@example.com", "name": "Form Post"},
        headers={"X-Leadflow-Secret": SECRET},
        timeout=5,
    )
    assert form.status_code == 202

    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\nsources:\n"
        f"  - {{name: site, kind: webform, path: '{spool}', webhook: {{secret_env: HOOK_SECRET}}}}\n"
    )
    assert land(cfg, "site")["landed"] == 3
    assert land(cfg, "site").get("landed", 0) == 0
    # a provider retry of the same body is the same record
    assert post(base, body.encode(), **{"X-Leadflow-Secret": SECRET}) == 202
    assert (
        post(base, b'{"id": "s4", "email": "w4@example.com"}', **{"X-Leadflow-Secret": SECRET})
        == 202
    )
    assert land(cfg, "site")["landed"] == 1
    ids = sorted(r.source_record_id for r in table(cfg, raw_contacts))
    assert ids[:3] == ["s1", "s2", "s4"] and ids[3].startswith("sha256:")


def test_a_half_written_line_waits_for_the_next_run(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    f = spool / "2026-03-01.jsonl"
    f.write_bytes(
        b'{"received_at": "2026-03-01T10:00:00+00:00", "submission": {"id": "a"}}\n'
        b"not json at all\n"
        b'{"received_at": "2026-03-01T10:01:00+00:00", "submiss'
    )
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\nsources:\n"
        f"  - {{name: site, kind: webform, path: '{spool}'}}\n"
    )
    stats = land(cfg, "site")
    assert stats["landed"] == 1 and stats["rejected"] == 1
    with f.open("ab") as fh:
        fh.write(b'ion": {"id": "b"}}\n')
    assert land(cfg, "site")["landed"] == 1
