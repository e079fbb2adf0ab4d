"""Reads the CRM's opportunity export files (Salesforce report, HubSpot deals, plain CSV) as given."""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator
from pathlib import Path


def iter_export_files(pattern: str) -> Iterator[tuple[str, str, str]]:
    """(path, text, SHA-256 of the bytes) of each file the path or glob names, in name order."""
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    for path in paths:
        data = Path(path).read_bytes()
        yield path, data.decode("utf-8-sig", errors="replace"), hashlib.sha256(data).hexdigest()
