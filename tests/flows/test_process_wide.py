"""What a run changes for the whole process (the cyclic collector, Arrow's memory pool) is put
back as it was, also when flows sharing a process (a worker serving several deployments) pause
and resume it in any order."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest

from connectors.base import gc_paused
from flows.stages import bounded_heap, collector_paused


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_interleaved_pauses_of_the_collector_leave_it_as_it_was(collector_on: None) -> None:
    # a chunk of one flow pauses, a connector of another flow pauses, the chunk ends first
    chunk, connector = collector_paused(), gc_paused()
    chunk.__enter__()
    connector.__enter__()
    chunk.__exit__(None, None, None)
    assert not gc.isenabled()  # the connector is still building its batch
    connector.__exit__(None, None, None)
    assert gc.isenabled()  # nobody pauses it any more: on, as it was
    # and in the other order
    connector, chunk = gc_paused(), collector_paused()
    connector.__enter__()
    chunk.__enter__()
    connector.__exit__(None, None, None)
    assert not gc.isenabled()
    chunk.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_off_before_stays_off(collector_on: None) -> None:
    gc.disable()
    with collector_paused(), gc_paused():
        pass
    assert not gc.isenabled()


def test_concurrent_chunks_share_the_system_pool_and_put_back_the_first(
    collector_on: None,
) -> None:
    before = pa.default_memory_pool().backend_name
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, str] = {}

    def first() -> None:
        with bounded_heap():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with bounded_heap():
            second_in.set()
            first_out.wait(10)
            # the first chunk is done: this one still allocates from the system's allocator
            seen["after_first"] = pa.default_memory_pool().backend_name

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen["after_first"] == "system"
    assert pa.default_memory_pool().backend_name == before
