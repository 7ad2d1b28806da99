"""Kernel micro-benchmark: what one managed process costs.

Measures, on uvloop and on the default loop, in interleaved rounds:

* ``register + exit``: a registered factory builds a protocol, the transport
  calls ``connection_made`` and ``connection_lost``; the manager assigns the
  PID, tracks it, records history and counters.
* the same three calls on a plain ``asyncio.Protocol`` (the raw baseline);
* ``new``: building the process alone (``Echo()``, whose ``Process.__new__``
  sets every default) against building the plain protocol: what ``__new__``
  costs per connection;
* ``create_task`` of a trivial coroutine, run to completion.

Targets: the register-to-exit cycle costs at most 1.2 µs (issue 10) and less
than one ``asyncio.create_task`` of a trivial coroutine (issue 2).

Run: ``python benchmarks/kernel.py [--rounds 7] [--n 100000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import uvloop

import archangel

#: The register-to-exit cycle's target, in seconds.
CYCLE_TARGET = 1.2e-6


class RawEcho(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Echo(archangel.Process, asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class FakeTransport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def bench_protocol(factory: Callable[[], Any], n: int) -> float:
    transport = FakeTransport()
    start = time.perf_counter()
    for _ in range(n):
        proto = factory()
        proto.connection_made(transport)
        proto.connection_lost(None)
    return (time.perf_counter() - start) / n


async def bench_new(cls: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        cls()
    return (time.perf_counter() - start) / n


async def bench_create_task(n: int) -> float:
    loop = asyncio.get_running_loop()

    async def trivial() -> None:
        return None

    start = time.perf_counter()
    tasks = [loop.create_task(trivial()) for _ in range(n)]
    await asyncio.gather(*tasks)
    return (time.perf_counter() - start) / n


async def one_round(n: int) -> dict[str, float]:
    manager = archangel.ProcessManager(history=1000)
    return {
        "raw protocol": await bench_protocol(RawEcho, n),
        "register + exit": await bench_protocol(manager.register(Echo), n),
        "new: raw": await bench_new(RawEcho, n),
        "new: Process": await bench_new(Echo, n),
        "create_task": await bench_create_task(n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "uvloop": uvloop.new_event_loop,
        "asyncio": asyncio.new_event_loop,
    }
    results: dict[str, dict[str, list[float]]] = {name: {} for name in loops}
    for _ in range(args.rounds):  # interleave loops and variants round by round
        for name, factory in loops.items():
            with asyncio.Runner(loop_factory=factory) as runner:
                for key, value in runner.run(one_round(args.n)).items():
                    results[name].setdefault(key, []).append(value)
    print(f"kernel: {args.rounds} rounds x {args.n:,} processes, ns per process (median, min-max)")
    for name, variants in results.items():
        print(f"  {name}")
        for key, values in variants.items():
            ns = [v * 1e9 for v in values]
            print(f"    {key:16} {statistics.median(ns):7.0f} ns  ({min(ns):.0f}-{max(ns):.0f})")
        managed = statistics.median(variants["register + exit"])
        task = statistics.median(variants["create_task"])
        raw = statistics.median(variants["raw protocol"])
        ok = "met" if managed < task else "NOT met"
        cycle_ok = "met" if managed <= CYCLE_TARGET else "NOT met"
        new = statistics.median(variants["new: Process"]) - statistics.median(variants["new: raw"])
        print(
            f"    register+exit = {managed * 1e9:.0f} ns (target <= "
            f"{CYCLE_TARGET * 1e9:.0f}: {cycle_ok}); / create_task = {managed / task:.2f} "
            f"(target < 1.00: {ok}); overhead over raw protocol: "
            f"{(managed - raw) * 1e9:.0f} ns, of which Process.__new__ {new * 1e9:.0f} ns"
        )


if __name__ == "__main__":
    main()
