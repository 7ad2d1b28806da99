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

Every variant runs once a round, in an order rotating from round to round
(the loops too); medians, spreads and ratios mean what ``_harness.py`` says.

Targets: the register-to-exit cycle costs at most 1.2 µs (issue 10) and at
most one ``asyncio.create_task`` of a trivial coroutine (issue 2), i.e. the
ratio register+exit / create_task <= 1.00.

Run: ``python benchmarks/kernel.py [--rounds 7] [--n 100000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import uvloop
from _harness import median, order, spread, verdict

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


async def one_round(n: int, round_number: int) -> dict[str, float]:
    manager = archangel.ProcessManager(history=1000)
    variants = {
        "raw protocol": lambda: bench_protocol(RawEcho, n),
        "register + exit": lambda: bench_protocol(manager.register(Echo), n),
        "new: raw": lambda: bench_new(RawEcho, n),
        "new: Process": lambda: bench_new(Echo, n),
        "create_task": lambda: bench_create_task(n),
    }
    results = {name: await variants[name]() for name in order(list(variants), round_number)}
    return {name: results[name] for name in variants}  # reported in a fixed order


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
    for round_number in range(args.rounds):  # interleave loops and variants round by round
        for name in order(list(loops), round_number):
            with asyncio.Runner(loop_factory=loops[name]) as runner:
                for key, value in runner.run(one_round(args.n, round_number)).items():
                    results[name].setdefault(key, []).append(value)
    print(f"kernel: {args.rounds} rounds x {args.n:,} processes, ns per process")
    for name, variants in results.items():
        print(f"  {name}")
        for key, values in variants.items():
            ns = median(values) * 1e9
            print(f"    {key:16} {ns:7.0f} ns ({spread(values, '.0f', ' ns', 1e9)})")
        managed = median(variants["register + exit"])
        task = median(variants["create_task"])
        raw = median(variants["raw protocol"])
        new = median(variants["new: Process"]) - median(variants["new: raw"])
        print(
            f"    register+exit / create_task = {managed / task:.2f}; overhead over the raw "
            f"protocol: {(managed - raw) * 1e9:.0f} ns, of which Process.__new__ "
            f"{new * 1e9:.0f} ns"
        )
        ns, limit = managed * 1e9, CYCLE_TARGET * 1e9
        cycle = verdict("register+exit", ns, limit, at_least=False, fmt=".0f", unit=" ns")
        print(f"    {cycle}")
        print(f"    {verdict('register+exit / create_task', managed / task, 1.0, at_least=False)}")


if __name__ == "__main__":
    main()
