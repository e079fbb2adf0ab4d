"""A broken config gives one clear line naming the key or path, exit status 2, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.http import RateLimit
from flows.cli import main
from flows.settings import WebformSource, load_settings
from flows.sources import http_client
from transforms.fields import CANONICAL

CASES = [
    (
        "unknown_key",
        "warehouse:\n  url: sqlite:///{db}\n  colour: blue\n",
        "warehouse.colour: unknown key",
    ),
    ("wrong_type", "default_region: 12\n", "default_region"),
    ("bad_region", "default_region: Turkey\n", "default_region"),
    (
        "missing_file",
        "sources:\n  - name: s\n    kind: spreadsheet\n    path: nope.csv\n",
        "sources[0].path: file not found: nope.csv",
    ),
    ("unknown_kind", "sources:\n  - name: s\n    kind: fax\n    path: x\n", "sources[0]"),
    (
        "missing_path",
        "sources:\n  - name: s\n    kind: email\n",
        "sources[0]: give exactly one of path or imap",
    ),
    (
        "path_and_url",
        "sources:\n  - {name: s, kind: spreadsheet, path: m.mbox, url: 'https://x/y.csv'}\n",
        "sources[0]: give exactly one of path or url (got path, url)",
    ),
    (
        "url_without_preset",
        "sources:\n  - {name: s, kind: webform, url: 'https://api.typeform.com/forms/a/responses'}\n",
        "sources[0]: url needs a preset: typeform, hubspot or generic",
    ),
    (
        "url_not_http",
        "sources:\n  - {name: s, kind: spreadsheet, url: 'file:///etc/passwd'}\n",
        "sources[0]: url must start with https:// or http://",
    ),
    (
        "token_value_in_config",
        "sources:\n  - {name: s, kind: webform, preset: hubspot, url: 'https://x', token_env: 'pat-na1-1234-abcd'}\n",
        "sources[0].token_env: must name an environment variable",
    ),
    (
        "imap_without_password",
        "sources:\n  - {name: s, kind: email, imap: {host: h, user: u}}\n",
        "sources[0].imap: imap: give exactly one of password_env or password_block",
    ),
    (
        "imap_bad_security",
        "sources:\n  - {name: s, kind: email, imap: {host: h, user: u, password_env: P, security: tls}}\n",
        "sources[0].imap.security",
    ),
    (
        "generic_without_paths",
        "sources:\n  - {name: s, kind: webform, preset: generic, url: 'https://x'}\n",
        "the generic preset needs records_path and id_field",
    ),
    (
        "preset_with_path",
        "sources:\n  - {name: s, kind: webform, preset: typeform, path: m.mbox}\n",
        "preset applies to url, not path",
    ),
    (
        "rate_limit_twice",
        "sources:\n  - {name: s, kind: webform, preset: typeform, url: 'https://x',"
        " http: {rate_limit: {requests_per_second: 2, requests_per_minute: 60}}}\n",
        "sources[0].http.rate_limit: give exactly one of requests_per_second or requests_per_minute",
    ),
    (
        "rate_limit_zero",
        "sources:\n  - {name: s, kind: webform, preset: typeform, url: 'https://x',"
        " http: {rate_limit: {requests_per_second: 0}}}\n",
        "sources[0].http.rate_limit.requests_per_second",
    ),
    (
        "column_map_to_no_field",
        "sources:\n  - {name: s, kind: spreadsheet, path: m.mbox, columns: {E-posta: e_mail}}\n",
        "sources[0].columns: 'E-posta' maps to 'e_mail', which is not a field (did you mean "
        "email?); valid fields: full_name, first_name, last_name, email, phone,",
    ),
    (
        "webform_column_map_to_no_field",
        "sources:\n  - {name: s, kind: webform, path: m.mbox, columns: {tel: telephone}}\n",
        "sources[0].columns: 'tel' maps to 'telephone', which is not a field",
    ),
    (
        "crm_path_and_api",
        "opportunity_updates:\n  - {name: c, path: m.mbox, api: hubspot, token_env: T}\n",
        "opportunity_updates[0]: give exactly one of path or api",
    ),
    (
        "crm_api_without_token",
        "opportunity_updates:\n  - {name: c, api: hubspot}\n",
        "opportunity_updates[0]: an api needs exactly one of token_env or token_block",
    ),
    (
        "salesforce_without_url",
        "opportunity_updates:\n  - {name: c, api: salesforce, token_env: SF_TOKEN}\n",
        "opportunity_updates[0]: api salesforce needs url",
    ),
    (
        "salesforce_id_field_not_a_name",
        "opportunity_updates:\n  - {name: c, api: salesforce, url: 'https://x', token_env: T,"
        " opportunity_id_field: 'Id FROM User --'}\n",
        "opportunity_updates[0].opportunity_id_field",
    ),
    ("not_yaml", "warehouse: [unclosed\n", "is not valid YAML"),
    (
        "dupe_names",
        "sources:\n  - {name: a, kind: email, path: m.mbox}\n"
        "  - {name: a, kind: email, path: m.mbox}\n",
        "unique",
    ),
]


@pytest.mark.parametrize("name,body,expected", CASES, ids=[c[0] for c in CASES])
def test_broken_config_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, body: str, expected: str
) -> None:
    (tmp_path / "m.mbox").write_text("")
    db = tmp_path / "w.db"
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(body.replace("{db}", str(db)))
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err
    assert not db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leadflow.yaml", "m.mbox"]


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config: file not found" in capsys.readouterr().err


def test_env_overrides_warehouse_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text("warehouse:\n  url: sqlite:///a.db\n")
    assert load_settings(cfg).warehouse.url == "sqlite:///a.db"
    monkeypatch.setenv("LEADFLOW_WAREHOUSE_URL", "sqlite:///b.db")
    assert load_settings(cfg).warehouse.url == "sqlite:///b.db"


def test_relative_paths_resolve_against_the_config(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("name,email\n")
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text("sources:\n  - {name: x, kind: spreadsheet, path: data/x.csv}\n")
    assert load_settings(cfg).sources[0].path == str(tmp_path / "data" / "x.csv")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # no rate_limit: the provider's documented limit
        ("{preset: typeform, url: 'https://x'}", RateLimit(per_second=2.0)),
        ("{preset: hubspot, url: 'https://x'}", RateLimit(per_second=10.0)),
        ("{preset: generic, url: 'https://x', records_path: d, id_field: id}", None),
        ("{path: m.json}", None),
        # one's own limit wins, per minute or per second
        (
            "{preset: hubspot, url: 'https://x', http: {rate_limit: {requests_per_second: 19, burst: 5}}}",
            RateLimit(per_second=19.0, burst=5),
        ),
        (
            "{preset: generic, url: 'https://x', records_path: d, id_field: id,"
            " http: {rate_limit: {requests_per_minute: 30}}}",
            RateLimit(per_second=0.5),
        ),
    ],
)
def test_each_source_gets_its_rate_limit(
    tmp_path: Path, source: str, expected: RateLimit | None
) -> None:
    (tmp_path / "m.json").write_text("[]")
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(f"sources:\n  - {{name: s, kind: webform, {source[1:]}\n")
    settings = load_settings(cfg)
    src = settings.source("s")
    assert isinstance(src, WebformSource)
    client = http_client(src, None)
    assert (client.limiter.limit if client.limiter else None) == expected


def test_a_column_map_to_no_field_stops_the_real_command_in_one_line(tmp_path: Path) -> None:
    from tests.clirun import env, leadflow

    (tmp_path / "fair.csv").write_text("Ad Soyad;E-posta\nAda Demir;ada@demir.com.tr\n")
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        "warehouse: {url: 'sqlite:///w.db'}\nsources:\n"
        '  - {name: fair, kind: spreadsheet, path: fair.csv, columns: {"E-posta": e_mail}}\n'
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    result = leadflow(["run", "--config", str(cfg)], env(tmp_path, PREFECT_HOME=None))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "leadflow: config: sources[0].columns: 'E-posta' maps to 'e_mail', which is not a field "
        "(did you mean email?); valid fields: " + ", ".join(CANONICAL)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
