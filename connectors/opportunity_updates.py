"""Reads the CRM's opportunities as given: export files (Salesforce report, HubSpot deals, plain CSV)
and the Salesforce and HubSpot APIs, oldest change first, from a last-modified time on."""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.http import HttpClient, NextLinkPaginator, PaginationError, iter_pages

SALESFORCE_API_VERSION = "v62.0"
HUBSPOT_API_URL = "https://api.hubapi.com"
# HubSpot's search endpoints page up to 10,000 results per query: a run stops there, and the next
# one goes on from the last modification time it reached.
HUBSPOT_SEARCH_LIMIT = 10_000
HUBSPOT_DEAL_PROPERTIES = (
    "dealname",
    "dealstage",
    "amount",
    "deal_currency_code",
    "closedate",
    "hs_lastmodifieddate",
)


def iter_export_files(pattern: str) -> Iterator[tuple[str, str, str]]:
    """(path, text, SHA-256 of the bytes) of each file the path or glob names, in name order."""
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    for path in paths:
        data = Path(path).read_bytes()
        yield path, data.decode("utf-8-sig", errors="replace"), hashlib.sha256(data).hexdigest()


def salesforce_soql(since: datetime | None, *, multi_currency: bool, id_field: str | None) -> str:
    """Opportunities changed at or after `since`, oldest change first, with the primary contact's
    email (else the first contact role's). CurrencyIsoCode exists only in multi-currency orgs."""
    fields = ["Id", "StageName", "Amount", "CloseDate", "IsClosed", "IsWon", "LastModifiedDate"]
    fields += ["CurrencyIsoCode"] if multi_currency else []
    fields += [id_field] if id_field else []
    roles = (
        "(SELECT Contact.Email FROM OpportunityContactRoles "
        "ORDER BY IsPrimary DESC, CreatedDate LIMIT 1)"
    )
    where = f" WHERE LastModifiedDate >= {_soql_datetime(since)}" if since else ""
    # Field names come from this module or the config, which allows only API names (\w+).
    return (
        f"SELECT {', '.join(fields)}, {roles} FROM Opportunity{where} ORDER BY LastModifiedDate, Id"  # noqa: S608
    )


def _soql_datetime(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # a SOQL literal: unquoted, in UTC


def iter_salesforce_opportunities(
    client: HttpClient,
    instance_url: str,
    since: datetime | None,
    *,
    multi_currency: bool = False,
    id_field: str | None = None,
    max_pages: int = 1000,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of Opportunity records from the REST query resource, following nextRecordsUrl."""
    url = f"{instance_url.rstrip('/')}/services/data/{SALESFORCE_API_VERSION}/query"
    soql = salesforce_soql(since, multi_currency=multi_currency, id_field=id_field)
    pager = NextLinkPaginator(url, {"q": soql}, "nextRecordsUrl")
    for page, _params in iter_pages(client, pager, max_pages=max_pages):
        records = page.get("records") if isinstance(page, dict) else None
        if not isinstance(records, list):
            raise PaginationError(f"{url}: a page without a records list")
        yield records


def iter_hubspot_deals(
    client: HttpClient,
    base_url: str,
    since: datetime | None,
    *,
    id_property: str | None = None,
    page_size: int = 100,
    max_pages: int = 1000,
) -> Iterator[tuple[list[dict[str, Any]], dict[str, list[str]]]]:
    """Pages of deals modified at or after `since` (the CRM search API, oldest change first), each
    with its deals' associated contact emails by deal id (associations, then a contacts batch read)."""
    base = base_url.rstrip("/")
    properties = [*HUBSPOT_DEAL_PROPERTIES, *([id_property] if id_property else [])]
    body: dict[str, Any] = {
        "properties": properties,
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "limit": page_size,
    }
    if since is not None:
        value = str(int(since.timestamp() * 1000))
        body["filterGroups"] = [
            {
                "filters": [
                    {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": value}
                ]
            }
        ]
    seen: set[str] = set()
    after: str | None = None
    for _ in range(max_pages):
        request = {**body, "after": after} if after else body
        page = client.post_json(f"{base}/crm/v3/objects/deals/search", request)
        deals = page.get("results") if isinstance(page, dict) else None
        if not isinstance(deals, list):
            raise PaginationError(f"{base}/crm/v3/objects/deals/search: a page without results")
        yield deals, _hubspot_emails(client, base, [str(d.get("id")) for d in deals])
        after = ((page.get("paging") or {}).get("next") or {}).get("after")
        if not after or int(after) >= HUBSPOT_SEARCH_LIMIT:
            return
        if after in seen:
            raise PaginationError(f"{base}/crm/v3/objects/deals/search: page token repeated")
        seen.add(after)
    raise PaginationError(f"{base}/crm/v3/objects/deals/search: more than {max_pages} pages")


def _hubspot_emails(client: HttpClient, base: str, deal_ids: Sequence[str]) -> dict[str, list[str]]:
    if not deal_ids:
        return {}
    links = client.post_json(
        f"{base}/crm/v4/associations/deals/contacts/batch/read",
        {"inputs": [{"id": d} for d in deal_ids]},
    )
    contacts: dict[str, list[str]] = {}
    for r in links.get("results", []) if isinstance(links, dict) else []:
        ids = [str(to.get("toObjectId")) for to in r.get("to", []) if to.get("toObjectId")]
        contacts[str((r.get("from") or {}).get("id"))] = sorted(ids, key=lambda i: (len(i), i))
    wanted = sorted({c for ids in contacts.values() for c in ids})
    email: dict[str, str] = {}
    if wanted:
        found = client.post_json(
            f"{base}/crm/v3/objects/contacts/batch/read",
            {"properties": ["email"], "inputs": [{"id": c} for c in wanted]},
        )
        for c in found.get("results", []) if isinstance(found, dict) else []:
            value = (c.get("properties") or {}).get("email")
            if value:
                email[str(c.get("id"))] = str(value)
    return {d: [email[c] for c in ids if c in email] for d, ids in contacts.items()}
