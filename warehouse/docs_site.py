"""Data Docs that work offline: each run's GX site loads its scripts and styles from inside the
site, the last `keep` runs' sites are kept, and one index page lists them.

GX 1.24's page templates load jQuery, Bootstrap, bootstrap-table, a date picker, Font Awesome and
Vega from CDNs, and its logo from S3: without internet a page is an empty frame (the validation
tables are drawn by bootstrap-table). The pages are rewritten to use the copies in
`warehouse/docs_assets/` (see its README for versions and licenses), and tags for anything else
outside are removed, so opening a site makes no request off this machine.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ASSETS = Path(__file__).with_name("docs_assets")
MANIFEST = "leadflow-run.json"
SHARED = ".shared"  # one copy of each static file, hard-linked into the sites that use it

# CDN address (without its scheme) → file under docs_assets; None: the tag is removed.
CDN: dict[str, str | None] = {
    "code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1.min.js",
    "cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper-1.12.9.min.js",
    "maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1.min.css",
    "stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1.min.js",
    "unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table-1.19.1.min.css",
    "unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1.min.js",
    "unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": "bootstrap-table-filter-control-1.19.1.min.js",
    "unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": "bootstrap-table-filter-control-1.19.1.min.css",
    "unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": "bootstrap-table-filter-control-1.19.1.min.css",
    "cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "bootstrap-datepicker-1.9.0.min.css",
    "cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "bootstrap-datepicker-1.9.0.min.js",
    "cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "cdn.jsdelivr.net/npm/vega@5": None,
    "cdn.jsdelivr.net/npm/vega-lite@5": None,
    "cdn.jsdelivr.net/npm/vega-embed@6": None,
    "cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": None,
}
LOGO_HOST = "great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
LOGO = "static/images/logo-long.png"  # the same logo, shipped in every GX site

# A tag that loads something by itself (a script, a stylesheet or icon, an image) from outside.
_LOADING_TAG = re.compile(
    r"<(script|link|img)\b([^>]*?)\b(src|href)=([\"'])(https?:)?//([^\"']+)\4([^>]*)>"
    r"(\s*</script>)?",
    re.IGNORECASE,
)
_CSS_URL = re.compile(r"url\(([\"']?)https?://([^)\"']+)\1\)")
_SRI = re.compile(r"\s(integrity|crossorigin)=([\"'])[^\"']*\2", re.IGNORECASE)


def _local(address: str, prefix: str) -> str | None:
    """The site-relative file for an outside address, or None to drop what loads it."""
    bare = address.split("?", 1)[0]
    if bare.startswith(LOGO_HOST):
        return prefix + LOGO
    target = CDN.get(bare)
    return prefix + "static/vendor/" + target if target else None


def localize_page(text: str, prefix: str) -> str:
    """One page with every outside load pointed at the site's own copy, or removed.

    `prefix` leads from the page to the site's root ("" for the index, "../../" two folders down).
    """

    def tag(m: re.Match[str]) -> str:
        name, before, attr, quote, _scheme, address, after, close = m.groups()
        local = _local(address, prefix)
        if local is None:
            return ""
        # SRI and CORS attributes make a browser refuse a file:// script: the copy is the same file.
        rest = _SRI.sub("", before + " " + after).strip()
        return f"<{name} {rest} {attr}={quote}{local}{quote}>{close or ''}".replace("  ", " ")

    text = _LOADING_TAG.sub(tag, text)
    return _CSS_URL.sub(lambda m: f"url({_local(m.group(2), prefix) or 'about:blank'})", text)


def localize(site: Path) -> None:
    """Copy the assets into `site/static/vendor` and rewrite every page and stylesheet of it."""
    vendor = site / "static" / "vendor"
    shutil.copytree(ASSETS, vendor, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    for page in site.rglob("*.html"):
        depth = len(page.relative_to(site).parts) - 1
        page.write_text(localize_page(page.read_text("utf-8"), "../" * depth), "utf-8")
    for css in (site / "static" / "styles").glob("*.css"):
        # the stylesheets sit two folders below the root
        css.write_text(localize_page(css.read_text("utf-8"), "../../"), "utf-8")


def _share(docs_dir: Path, site: Path) -> None:
    """Every static file of `site` becomes a hard link to one shared copy (a run's site is ~4 MB
    of identical images and fonts); where links are not possible the copy stays."""
    store = docs_dir / SHARED
    store.mkdir(exist_ok=True)
    for f in (site / "static").rglob("*"):
        if not f.is_file() or f.is_symlink():
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shared = store / digest
        try:
            if not shared.exists():
                os.link(f, shared)
            elif not os.path.samefile(f, shared):
                tmp = f.with_name(f.name + ".link")
                os.link(shared, tmp)
                os.replace(tmp, f)
        except OSError:
            continue


@dataclass(frozen=True)
class SiteEntry:
    run_id: str
    built_at: str
    checks: int
    failed: int
    critical: int
    folder: str


def _entries(docs_dir: Path) -> list[SiteEntry]:
    out = []
    for m in docs_dir.glob(f"*/{MANIFEST}"):
        try:
            data = json.loads(m.read_text("utf-8"))
            out.append(SiteEntry(**{**data, "folder": m.parent.name}))
        except (ValueError, TypeError):
            continue
    return sorted(out, key=lambda e: (e.built_at, e.run_id), reverse=True)


def prune(docs_dir: Path, keep: int) -> list[str]:
    """Remove all but the newest `keep` run sites (only folders leadflow wrote: with a manifest);
    shared files no site links to any more go too. Returns the removed folders."""
    removed = []
    for e in _entries(docs_dir)[keep:]:
        shutil.rmtree(docs_dir / e.folder, ignore_errors=True)
        removed.append(e.folder)
    store = docs_dir / SHARED
    if removed and store.is_dir():
        for f in store.iterdir():
            if f.stat().st_nlink <= 1:
                f.unlink(missing_ok=True)
    return removed


def write_index(docs_dir: Path) -> Path:
    """`docs_dir/index.html`: every kept run, newest first, with its checks and a link to its site
    (plain HTML, no script: it reads the same offline and in any browser)."""
    rows = []
    for e in _entries(docs_dir):
        state = "critical failure" if e.critical else ("warnings" if e.failed else "passed")
        rows.append(
            f"<tr class='{state.split()[0]}'><td><a href='{html.escape(e.folder)}/index.html'>"
            f"{html.escape(e.run_id)}</a></td><td>{html.escape(e.built_at)}</td>"
            f"<td>{e.checks}</td><td>{e.failed}</td><td>{state}</td></tr>"
        )
    body = "\n".join(rows) or "<tr><td colspan='5'>no run has been checked yet</td></tr>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>leadflow Data Docs: runs</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; }} th, td {{ padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }}
tr.warnings td {{ background: #fff6e0; }} tr.critical td {{ background: #fde8e8; }}
</style></head>
<body><h1>Data Docs by run</h1>
<p>The newest {len(rows)} runs' Great Expectations sites (older ones are removed; see
<code>quality.docs_keep</code>).</p>
<table id="runs"><thead><tr><th>run</th><th>checked at (UTC)</th><th>checks</th><th>failed</th>
<th>result</th></tr></thead>
<tbody>
{body}
</tbody></table></body></html>
"""
    index = docs_dir / "index.html"
    # two runs may finish at once: each writes its own file, the last rename wins whole
    tmp = docs_dir / f".index.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(page, "utf-8")
    os.replace(tmp, index)
    return index


def finish(
    site: Path, run_id: str, checks: int, failed: int, critical: int, keep: int, now: datetime
) -> None:
    """After GX wrote `site`: make it offline, record it, keep the newest `keep`, index them."""
    docs_dir = site.parent
    localize(site)
    _share(docs_dir, site)
    manifest = {
        "run_id": run_id,
        "built_at": now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "checks": checks,
        "failed": failed,
        "critical": critical,
    }
    (site / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    prune(docs_dir, keep)
    write_index(docs_dir)


def outside_addresses(site: Path) -> Sequence[str]:
    """What any page or stylesheet of `site` would still load from outside (empty when offline)."""
    found = []
    for f in [*site.rglob("*.html"), *site.rglob("*.css")]:
        text = f.read_text("utf-8", errors="replace")
        found += [m.group(6) for m in _LOADING_TAG.finditer(text)]
        found += [m.group(2) for m in _CSS_URL.finditer(text)]
    return found
