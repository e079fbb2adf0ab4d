"""Fixtures for the flow tests."""

from __future__ import annotations

import pytest

from flows import pipeline


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connector task keeps its 3 retries, without the seconds of backoff between them."""
    fast = pipeline.extract_source.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(pipeline, "extract_source", fast)
