"""The echo benchmark's memory figures, in-process with ``tracemalloc``.

:func:`measure_memory` builds 10,000 (``--memory-n``) plain echo protocols
and as many tracked ``EchoProcess`` objects (given a fake transport,
``RUNNING``, in the manager's table): the difference per object is what
tracking one live connection costs. Then as many exited processes with
``ProcessManager(history=n)`` against ``history=0``: the bytes one history
record holds. tracemalloc counts the bytes Python asks the allocator for,
not the allocator's rounding to size classes.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

from _harness import verdict
from echo_servers import EchoProcess, RawEcho

import archangel

#: Bytes: a tracked live connection costs at most ``live`` more than a plain
#: protocol; a history record costs at most ``history``.
MEMORY_TARGETS = {"live": 300, "history": 200}


class FakeTransport:
    """Enough of a transport for ``connection_made`` and ``details()``."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def traced(build: Callable[[], object]) -> int:
    """Bytes still allocated (per tracemalloc) by what ``build`` returns."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    del kept
    return after - before


def measure_memory(n: int) -> dict[str, float]:
    transport = FakeTransport()

    def plain() -> object:
        protocols = [RawEcho() for _ in range(n)]
        for protocol in protocols:
            protocol.connection_made(transport)
        return protocols

    def live() -> object:
        manager = archangel.ProcessManager()
        factory = manager.register(EchoProcess)
        protocols = [factory() for _ in range(n)]
        for protocol in protocols:
            protocol.connection_made(transport)
        assert len(manager) == n and protocols[-1].state is archangel.ProcessState.RUNNING
        return manager, protocols

    def exited(history: int) -> Callable[[], object]:
        def build() -> object:
            manager = archangel.ProcessManager(history=history)
            factory = manager.register(EchoProcess)
            protocols = [factory() for _ in range(n)]
            for protocol in protocols:
                protocol.connection_made(transport)
            for protocol in protocols:
                protocol.connection_lost(None)
            assert len(manager) == 0 and len(manager.history) == history
            return manager  # the protocols are dropped: only the history holds them

        return build

    tracemalloc.start()
    try:
        traced(live)  # warm every cache and free list once
        result = {
            "plain": traced(plain) / n,
            "managed": traced(live) / n,
            "history": (traced(exited(n)) - traced(exited(0))) / n,
        }
    finally:
        tracemalloc.stop()
    # Cross-check from sizes: the record, the objects only it holds (its pid
    # and two times) and its slot in the deque (64 per 528-byte block).
    manager = archangel.ProcessManager(history=1)
    process = manager.register(EchoProcess)()
    process.connection_made(transport)
    process.connection_lost(None)
    record = manager.history[0]
    for key, part in {"record": record, "pid": record.pid, "started": record.started}.items():
        result[f"size {key}"] = sys.getsizeof(part)
    result["size deque slot"] = 528 / 64
    return result


def report_memory(n: int, memory: dict[str, float]) -> None:
    """Print the figures of :func:`measure_memory` with their verdicts."""
    extra = memory["managed"] - memory["plain"]
    live, history = MEMORY_TARGETS["live"], MEMORY_TARGETS["history"]
    sizes = (
        memory["size record"],
        memory["size pid"],
        2 * memory["size started"],
        memory["size deque slot"],
    )
    print(f"\nmemory (tracemalloc, {n:,} objects each, one measurement)")
    print(f"  plain echo protocol     : {memory['plain']:4.0f} B")
    print(
        f"  tracked EchoProcess     : {memory['managed']:4.0f} B  (RUNNING, in the table; "
        f"{memory['managed'] / memory['plain']:.2f}x the plain protocol)"
    )
    print(
        f"  per tracked connection  : {extra:4.0f} B more: the defaults Process.__new__ sets, "
        "the pid and start time, the table entry"
    )
    print(
        f"  per history record      : {memory['history']:4.0f} B; by getsizeof: "
        f"record {sizes[0]:.0f} + pid {sizes[1]:.0f} + two times {sizes[2]:.0f} + deque "
        f"slot {sizes[3]:.0f} = {sum(sizes):.0f} B"
    )
    print("  " + verdict("B per tracked connection", extra, live, at_least=False, fmt=".0f"))
    per_record = memory["history"]
    print("  " + verdict("B per history record", per_record, history, at_least=False, fmt=".0f"))
