"""Echo benchmark: a raw uvloop echo server against the same server managed by archangel.

Measures, in one run, with the two variants interleaved round by round:

* ping-pong: 50 connections, each sending 100 bytes and waiting for the whole
  echo before sending again (round trips per second);
* connection churn: concurrent slots that each connect, echo 100 bytes once
  and close, over and over (connections per second);
* memory, in-process with ``tracemalloc``: bytes per tracked live connection
  (the mixin's fields and the manager's table entry) and per history record.

Each server runs in its own subprocess (``echo.py --serve raw|managed``, on
uvloop) and is loaded by a separate client process: ``echo_client.c``, a
small epoll load generator compiled with ``cc -O2`` at start (a multi-process
Python client if there is no C compiler). The C client spins (its
``epoll_wait`` never sleeps): waking a sleeping client costs the server's
core an inter-processor interrupt in the kernel, more often the more the
client sleeps, so with a sleeping client a slower server pays more per
connection and the difference between the variants is exaggerated
(``--block-client`` shows it; ``docs/benchmarks.rst`` has the profile). The
spinning client reports the share of time its polls found nothing, so
"client busy" still says which side waited for which.

On two or more cores the server is pinned to one core and the client to the
others (``taskset``); both processes' CPU use over the measured window is
reported, so a reader can see which side was the bottleneck. Every round
pair alternates which variant runs first (``--floor`` adds a third variant:
the least tracking any Python code can do, a PID and a table entry);
medians, spreads (min-max) and ratios are printed, per round pair and of the
medians. Figures swing by tens of percent between runs on a noisy
machine: quote the ratios, not the absolute rates. Pairs in which other
processes took part of a core are marked, and the server's CPU time per
operation, which such disturbance hardly moves, is printed with the rate
ratio it implies for a saturated server.

Targets (printed beside the measured figures, never asserted):

* managed echo round trips/s >= 0.97 x raw uvloop, same run;
* managed connection churn >= 0.93 x raw uvloop, same run;
* a tracked live connection costs <= 300 bytes more than a plain protocol;
* a history record costs <= 200 bytes.

Run: ``python benchmarks/echo.py`` (about a minute; ``--quick`` for a ~10 s
smoke run; ``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import uvloop

import archangel

HERE = Path(__file__).resolve().parent
CLIENT_SOURCE = HERE / "echo_client.c"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: How long a client may take beyond warm-up + duration (connecting, draining).
CLIENT_SLACK = 15.0
DRAIN = 2.0
#: Other processes taking more than this % of a core mark a round as disturbed.
DISTURBED = 5

TARGETS = {"pingpong": 0.97, "churn": 0.93}
MEMORY_TARGETS = {"live": 300, "history": 200}


# -- the servers (``--serve raw|managed``, one subprocess per round) ------------


class RawEcho(asyncio.Protocol):
    """The baseline: a plain uvloop echo protocol."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoProcess(archangel.Process, asyncio.Protocol):
    """The same echo code; inheriting the mixin makes each connection a process."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class FloorEcho(RawEcho):
    """The ``--floor`` reference: the least tracking any Python code can do.

    A PID and a table entry, made by a Python factory and dropped by a Python
    ``connection_lost`` (which replaces the baseline's no-op one): no state,
    no timestamps, no hooks, no history, no counters. What this costs per
    connection, no pure-Python process manager can avoid.
    """

    pid = 0
    table: ClassVar[dict[int, FloorEcho]] = {}

    def connection_lost(self, exc: Exception | None) -> None:
        del self.table[self.pid]


_floor_pids = itertools.count(1)


def floor_factory() -> FloorEcho:
    protocol = FloorEcho()
    protocol.pid = pid = next(_floor_pids)
    FloorEcho.table[pid] = protocol
    return protocol


async def serve(variant: str, host: str) -> None:
    """Serve until SIGINT/SIGTERM or EOF on stdin; print the port, then the counters."""
    loop = asyncio.get_running_loop()
    manager = archangel.ProcessManager() if variant == "managed" else None
    factory: Callable[[], asyncio.Protocol]
    if manager is not None:
        factory = manager.register(EchoProcess)
    else:
        factory = floor_factory if variant == "floor" else RawEcho
    server = await loop.create_server(factory, host, 0, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:  # EOF: the parent is done with us (or gone)
        if not os.read(stdin, 4096):
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, on_stdin)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.close()
    if manager is not None:
        deadline = loop.time() + DRAIN
        while len(manager) and loop.time() < deadline:  # EOFs still in flight
            await asyncio.sleep(0.01)
        print("counters", json.dumps(manager.counters), flush=True)


# -- the Python fallback client (``--client pingpong|churn``) ---------------------


@dataclasses.dataclass
class _Counts:
    ops: int = 0
    total: int = 0
    errors: int = 0
    stop: bool = False


async def python_client(
    mode: str, host: str, port: int, conns: int, seconds: float, warmup: float, size: int
) -> None:
    """The same protocol and output as ``echo_client.c``, on asyncio streams."""
    counts = _Counts()
    msg = b"x" * size
    failures = (OSError, asyncio.IncompleteReadError)

    async def pingpong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not counts.stop:
                writer.write(msg)
                await reader.readexactly(size)
                counts.ops += 1
            counts.total += 1
        except failures:
            counts.errors += 1
        finally:
            writer.close()

    async def churn() -> None:
        while not counts.stop:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(msg)
                await reader.readexactly(size)
                writer.close()
                await writer.wait_closed()
            except failures:
                counts.errors += 1
            else:
                counts.ops += 1
                counts.total += 1

    if mode == "pingpong":
        streams = await asyncio.gather(
            *(asyncio.open_connection(host, port) for _ in range(conns))
        )
        tasks = [asyncio.create_task(pingpong(r, w)) for r, w in streams]
    else:
        tasks = [asyncio.create_task(churn()) for _ in range(conns)]
    await asyncio.sleep(warmup)
    ops0, t0 = counts.ops, time.monotonic()
    print("start", flush=True)
    await asyncio.sleep(seconds)
    ops1, t1 = counts.ops, time.monotonic()
    print("end", flush=True)
    counts.stop = True
    _, pending = await asyncio.wait(tasks, timeout=DRAIN)
    for task in pending:
        task.cancel()
    print(
        f"result mode={mode} ops={ops1 - ops0} seconds={t1 - t0:.6f} total={counts.total} "
        f"errors={counts.errors} unfinished={len(pending)}",
        flush=True,
    )


# -- driving a round -------------------------------------------------------------


@dataclasses.dataclass
class Config:
    rounds: int
    seconds: float
    warmup: float
    conns: int
    slots: int
    size: int
    threads: int
    host: str
    client: str | None  # the compiled C client, or None for the Python one
    spin: bool  # the C client spins instead of sleeping in epoll_wait
    server_cpus: list[int] | None  # None: not pinned
    client_cpus: list[int] | None


@dataclasses.dataclass
class Sample:
    """One client run against one server: rate and both sides' CPU use."""

    rate: float  # ops per second over the measured window
    ops: int
    server_cpu: float  # % of one core
    client_cpu: float
    client_idle: float  # share of the window a spinning client found nothing to do; nan if unknown
    others: float  # % of the server's core used by other processes (or stolen)
    client_others: float  # the same on the client's cores (this script included)
    server_us: float  # server CPU time per op, microseconds
    total: int  # connections that completed cleanly, warm-up and drain included
    errors: int
    unfinished: int

    @property
    def client_busy(self) -> float:
        """The client's CPU use less the polls that found nothing (% of one core)."""
        if math.isnan(self.client_idle):
            return self.client_cpu
        return self.client_cpu * (1 - self.client_idle)

    @property
    def disturbed(self) -> bool:
        """Whether other processes took a noticeable share of either side's cores."""
        return self.others > DISTURBED or self.client_others > DISTURBED


class Children:
    """Every subprocess of the benchmark; all are ended on exit, errors or Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, bufsize=0, **kwargs)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        self.procs.clear()


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def cores_busy(cpus: list[int]) -> int:
    """Ticks these cores were not idle (steal included: time the VM did not run)."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(t) for t in fields[:8]]  # user nice system idle iowait ...
                busy += sum(ticks) - ticks[3] - ticks[4]  # ... irq softirq steal
    return busy


def pinned(cpus: list[int] | None, cmd: list[str]) -> list[str]:
    if cpus is None:
        return cmd
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd]


def first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line a child prints ("" if it exits first); TimeoutError after ``timeout``."""
    assert proc.stdout is not None
    fd, buffer, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            if not selector.select(deadline - time.monotonic()):
                raise TimeoutError(f"no output from {proc.args!r} in {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


def client_commands(config: Config, mode: str, port: int) -> list[list[str]]:
    count = config.conns if mode == "pingpong" else config.slots
    timing = [str(config.seconds), str(config.warmup)]
    if config.client is not None:
        args = [mode, config.host, str(port), str(count), *timing]
        wait = "spin" if config.spin else "block"
        return [[config.client, *args, str(config.threads), str(config.size), wait]]
    # Python fallback: one process per client core, the connections shared out.
    procs = max(1, len(config.client_cpus or [0]))
    shares = [count // procs + (i < count % procs) for i in range(procs)]
    common = ["--host", config.host, "--port", str(port), "--size", str(config.size)]
    common += ["--seconds", timing[0], "--warmup", timing[1]]
    return [
        [sys.executable, __file__, "--client", mode, "--conns", str(share), *common]
        for share in shares
        if share
    ]


def run_clients(
    children: Children, config: Config, mode: str, port: int, server_pid: int
) -> Sample:
    """Run the client(s) once; CPU is sampled when all say "start" and all say "end"."""
    clients = [
        children.spawn(pinned(config.client_cpus, cmd), stdout=subprocess.PIPE)
        for cmd in client_commands(config, mode, port)
    ]
    pids = [server_pid, *(c.pid for c in clients)]
    server_cpus, client_cpus = config.server_cpus or [], config.client_cpus or []

    def sample() -> tuple[float, list[int]]:
        cores = [cores_busy(server_cpus), cores_busy(client_cpus)]
        return time.monotonic(), [*cores, *map(cpu_ticks, pids)]

    marks = {"start": 0, "end": 0}
    samples: dict[str, tuple[float, list[int]]] = {}
    results: list[dict[str, str]] = []
    timeout = config.warmup + config.seconds + CLIENT_SLACK
    buffers = {c.stdout.fileno(): b"" for c in clients if c.stdout is not None}
    # A selector over the raw pipes: every client's "start"/"end" is seen at
    # once, whichever prints first; CPU is sampled when the last one does.
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while buffers:
            ready = selector.select(timeout)
            if not ready:
                raise TimeoutError(f"{mode} client(s) gave no output in {timeout:.0f} s")
            for key, _ in ready:
                fd = key.fd
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                    del buffers[fd]
                    continue
                *lines, buffers[fd] = (buffers[fd] + chunk).split(b"\n")
                for line in map(bytes.decode, lines):
                    if line in marks:
                        marks[line] += 1
                        if marks[line] == len(clients):
                            samples[line] = sample()
                    elif line.startswith("result "):
                        results.append(dict(f.split("=", 1) for f in line.split()[1:]))
    for proc in clients:
        if proc.wait(timeout=DRAIN + 5) != 0:
            raise RuntimeError(f"{mode} client {proc.args!r} failed ({proc.returncode})")
    if len(results) != len(clients) or len(samples) != 2:
        raise RuntimeError(f"{mode} client(s) ended without a complete report")
    (t0, ticks0), (t1, ticks1) = samples["start"], samples["end"]
    used = [(b - a) / CLK_TCK / (t1 - t0) * 100 for a, b in zip(ticks0, ticks1, strict=True)]
    server_core, client_cores, server, *client = used
    ops = sum(int(r["ops"]) for r in results)
    idles = [float(r.get("idle", "-1")) for r in results]
    return Sample(
        rate=sum(int(r["ops"]) / float(r["seconds"]) for r in results),
        ops=ops,
        server_cpu=server,
        client_cpu=sum(client),
        client_idle=statistics.mean(idles) if min(idles) >= 0 else float("nan"),
        others=max(0.0, server_core - server) if server_cpus else float("nan"),
        client_others=max(0.0, client_cores - sum(client)) if client_cpus else float("nan"),
        server_us=server / 100 * (t1 - t0) / max(ops, 1) * 1e6,
        total=sum(int(r["total"]) for r in results),
        errors=sum(int(r["errors"]) for r in results),
        unfinished=sum(int(r["unfinished"]) for r in results),
    )


def run_round(config: Config, variant: str) -> tuple[dict[str, Sample], dict[str, Any] | None]:
    """One server subprocess: ping-pong, then churn; returns the samples and counters."""
    with Children() as children:
        cmd = [sys.executable, __file__, "--serve", variant, "--host", config.host]
        server = children.spawn(
            pinned(config.server_cpus, cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        first = first_line(server, timeout=30)
        if not first.startswith("port "):
            raise RuntimeError(f"{variant} server did not start (said {first!r})")
        port = int(first.split()[1])
        samples = {
            mode: run_clients(children, config, mode, port, server.pid)
            for mode in ("pingpong", "churn")
        }
        out, _ = server.communicate(timeout=DRAIN + 10)  # EOF on its stdin stops it
        counters = None
        for line in out.decode().splitlines():
            if line.startswith("counters "):
                counters = json.loads(line.split(" ", 1)[1])
        return samples, counters


def share(server: float, client: float) -> str:
    """Other processes' share of the server's and the client's cores, if pinned."""
    if math.isnan(server):
        return "n/a"
    return f"{server:2.0f}%/{client:2.0f}%"


def describe_round(variant: str, samples: dict[str, Sample], counters: Any) -> str:
    def cpu(sample: Sample) -> str:
        return (
            f"server {sample.server_cpu:3.0f}% client {sample.client_busy:3.0f}% "
            f"others {share(sample.others, sample.client_others)}"
        )

    pp, ch = samples["pingpong"], samples["churn"]
    text = (
        f"{variant:8} ping-pong {pp.rate:9,.0f} rt/s ({cpu(pp)})  "
        f"churn {ch.rate:8,.0f} conn/s ({cpu(ch)})"
    )
    errors = pp.errors + ch.errors + pp.unfinished + ch.unfinished
    if errors:
        text += f"  client errors {errors}"
    if counters is not None:
        expected = pp.total + ch.total
        tracked = counters["started"] == counters["exited"] == expected
        text += (
            f"\n             counters: started={counters['started']:,} "
            f"exited={counters['exited']:,} failed={counters['failed']} "
            f"killed={counters['killed']} running={counters['running']}; the client "
            f"completed {pp.total} ping-pong + {ch.total:,} churn = {expected:,}: "
            + ("every connection tracked" if tracked else "MISMATCH (see client errors)")
        )
    return text


# -- reporting -------------------------------------------------------------------


def spread(values: list[float], fmt: str = ",.0f") -> str:
    return f"min {min(values):{fmt}}  max {max(values):{fmt}}"


def verdict(value: float, target: float, above: bool) -> str:
    ok = value >= target if above else value <= target
    return "met" if ok else "NOT met"


def bottleneck(
    server: float, client: float, others: float, client_others: float, client_cores: int
) -> str:
    """Which side limited the rate, from median CPU use (% of one core)."""
    if server >= 90:
        return "the server saturates its core, as intended"
    if client >= 90 * client_cores:
        return "CLIENT-BOUND: the rate ratio says little about the server"
    if server + others >= 90 or client + client_others >= 90 * client_cores:
        return (
            f"other processes took {others:.0f}% of the server's core and "
            f"{client_others:.0f}% of the client's: the rates are disturbed, the "
            "CPU-per-op ratio is the steadier figure"
        )
    return "neither side saturated (latency-bound): compare the CPU per op"


def report(config: Config, mode: str, results: dict[str, list[Sample]]) -> None:
    unit = "rt" if mode == "pingpong" else "conn"
    if mode == "pingpong":
        title = f"echo ping-pong ({config.conns} conns x {config.size} B)"
    else:
        title = f"connection churn ({config.slots} slots: connect, {config.size} B echo, close)"
    where = "not pinned"
    if config.server_cpus and config.client_cpus:
        clients = ",".join(map(str, config.client_cpus))
        where = f"server on cpu{config.server_cpus[0]}, client on cpu{clients}"
    print(f"\n{title}, {config.rounds} rounds x {config.seconds:g} s, {where}")
    medians: dict[str, dict[str, float]] = {}
    for variant in results:
        samples = results[variant]
        rates = [s.rate for s in samples]
        m = medians[variant] = {
            key: statistics.median(getattr(s, key) for s in samples)
            for key in (
                "rate",
                "server_cpu",
                "client_busy",
                "others",
                "client_others",
                "server_us",
            )
        }
        print(
            f"  {variant:8}: median {m['rate']:9,.0f} {unit}/s  ({spread(rates)})  "
            f"server cpu {m['server_cpu']:3.0f}%  client busy {m['client_busy']:3.0f}%  "
            f"others {share(m['others'], m['client_others'])}  "
            f"server {m['server_us']:.1f} us/{unit}"
        )
    raw, managed = medians["raw"], medians["managed"]
    ratio = managed["rate"] / raw["rate"]
    both = list(zip(results["managed"], results["raw"], strict=True))
    pairs = [m.rate / r.rate for m, r in both]
    costs = [m.server_us / r.server_us for m, r in both]
    quiet = [not (m.disturbed or r.disturbed) for m, r in both]
    target = TARGETS[mode]
    caveat = "" if sum(quiet) * 2 >= len(quiet) else "; unreliable: most pairs disturbed (*)"
    print(
        f"  ratio managed/raw: {ratio:.3f} of the medians  (target >= {target}: "
        f"{verdict(ratio, target, above=True)}{caveat})"
    )
    marked = " ".join(f"{p:.3f}{'' if q else '*'}" for p, q in zip(pairs, quiet, strict=True))
    print(
        f"    per round pair: {marked}  "
        f"(median {statistics.median(pairs):.3f}, {spread(pairs, '.3f')})"
    )
    # CPU per op holds steady when other processes take part of a core; its
    # inverse is the rate ratio a saturated, undisturbed server would show.
    implied = raw["server_us"] / managed["server_us"]
    print(
        f"  server CPU per {unit}, managed/raw: {1 / implied:.3f} of the medians  "
        f"(per round pair {spread(costs, '.3f')})\n"
        f"    so a saturated server would give a ratio of {implied:.3f}  "
        f"(target >= {target}: {verdict(implied, target, above=True)})"
    )
    if not all(quiet):
        undisturbed = [p for p, q in zip(pairs, quiet, strict=True) if q]
        summary = (
            f"the {len(undisturbed)} undisturbed pairs give a median of "
            f"{statistics.median(undisturbed):.3f}"
            if undisturbed
            else "no pair was undisturbed"
        )
        print(f"    * other processes took > {DISTURBED}% of a core in that pair; {summary}")
    cores = len(config.client_cpus or [0])
    if config.client is not None:  # the C client's threads: one core each at most
        cores = min(cores, config.threads)
    server = min(raw["server_cpu"], managed["server_cpu"])
    client = max(raw["client_busy"], managed["client_busy"])
    others = max(raw["others"], managed["others"])
    client_others = max(raw["client_others"], managed["client_others"])
    print(f"  bottleneck: {bottleneck(server, client, others, client_others, cores)}")
    if "floor" in medians:
        floor = medians["floor"]
        floor_pairs = [
            f.rate / r.rate for f, r in zip(results["floor"], results["raw"], strict=True)
        ]
        print(
            f"  floor (a PID and a table entry in Python, nothing else) / raw: "
            f"{floor['rate'] / raw['rate']:.3f} of the medians "
            f"(per round pair {spread(floor_pairs, '.3f')}); server CPU per {unit} "
            f"{floor['server_us'] - raw['server_us']:+.1f} us, managed "
            f"{managed['server_us'] - raw['server_us']:+.1f} us"
        )


# -- memory ----------------------------------------------------------------------


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
    extra = memory["managed"] - memory["plain"]
    live, history = MEMORY_TARGETS["live"], MEMORY_TARGETS["history"]
    sizes = (
        memory["size record"],
        memory["size pid"],
        2 * memory["size started"],
        memory["size deque slot"],
    )
    print(f"\nmemory (tracemalloc, {n:,} objects each)")
    print(f"  plain echo protocol     : {memory['plain']:4.0f} B")
    print(f"  tracked EchoProcess     : {memory['managed']:4.0f} B  (RUNNING, in the table)")
    print(
        f"  per tracked connection  : {extra:4.0f} B more  (target <= {live}: "
        f"{verdict(extra, live, above=False)}): the defaults Process.__new__ sets, the pid "
        "and start time, the table entry"
    )
    print(
        f"  per history record      : {memory['history']:4.0f} B  (target <= {history}: "
        f"{verdict(memory['history'], history, above=False)}); by getsizeof: "
        f"record {sizes[0]:.0f} + pid {sizes[1]:.0f} + two times {sizes[2]:.0f} + deque "
        f"slot {sizes[3]:.0f} = {sum(sizes):.0f} B"
    )


# -- setting up --------------------------------------------------------------------


def build_client(directory: str) -> str | None:
    """Compile ``echo_client.c``; None (after a note) if that is not possible."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        print("note: no C compiler found; using the slower multi-process Python client")
        return None
    exe = os.path.join(directory, "echo_client")
    cmd = [compiler, "-O2", "-pthread", "-o", exe, str(CLIENT_SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"note: {' '.join(cmd)} failed; using the Python client\n{done.stderr}")
        return None
    return exe


def choose_cpus() -> tuple[list[int] | None, list[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        print("note: taskset not found; server and client are not pinned to cores")
        return None, None
    if len(cpus) < 2:
        print("note: only one core available; server and client share it, not pinned")
        return None, None
    return cpus[:1], cpus[1:]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured s per round (2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="s before measuring (0.5)")
    parser.add_argument("--conns", type=int, default=50, help="ping-pong connections (50)")
    parser.add_argument("--slots", type=int, default=32, help="concurrent churn slots (32)")
    parser.add_argument("--size", type=int, default=100, help="message bytes (100)")
    parser.add_argument("--threads", type=int, default=1, help="C client threads (1)")
    parser.add_argument("--memory-n", type=int, default=10_000, help="objects (10,000)")
    parser.add_argument(
        "--quick", action="store_true", help="a ~10 s smoke run: 2 rounds x 0.75 s"
    )
    parser.add_argument("--python-client", action="store_true", help="skip the C client")
    parser.add_argument(
        "--block-client",
        action="store_true",
        help="let the C client sleep in epoll_wait instead of spinning: the server "
        "then also pays for waking it, more the slower it is",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--host", default="127.0.0.1")
    # Internal: the server and Python client subprocesses.
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also serve a third variant, the least tracking Python code can do "
        "(a PID and a table entry), to show what no pure-Python manager can avoid",
    )
    parser.add_argument("--serve", choices=["raw", "managed", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=["pingpong", "churn"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 2, 0.75, 0.2
    return args


def main() -> None:
    args = parse_args()
    if args.serve or args.client:
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            if args.serve:
                runner.run(serve(args.serve, args.host))
            else:
                runner.run(
                    python_client(
                        args.client,
                        args.host,
                        args.port,
                        args.conns,
                        args.seconds,
                        args.warmup,
                        args.size,
                    )
                )
        return

    with tempfile.TemporaryDirectory(prefix="archangel-echo-") as build:
        server_cpus, client_cpus = (None, None) if args.no_pin else choose_cpus()
        config = Config(
            rounds=args.rounds,
            seconds=args.seconds,
            warmup=args.warmup,
            conns=args.conns,
            slots=args.slots,
            size=args.size,
            threads=args.threads,
            host=args.host,
            client=None if args.python_client else build_client(build),
            spin=not args.block_client,
            server_cpus=server_cpus,
            client_cpus=client_cpus,
        )
        if client_cpus is not None:
            os.sched_setaffinity(0, client_cpus)  # keep this process off the server's core
        client = "Python client"
        if config.client:
            client = f"C epoll client ({'spinning' if config.spin else 'sleeping'})"
        print(
            f"echo: {config.rounds} rounds x (ping-pong + churn) x {config.seconds:g} s "
            f"per variant, {client}, uvloop {version('uvloop')}, archangel "
            f"{archangel.__version__}"
        )
        variants = ["raw", "managed", "floor"] if args.floor else ["raw", "managed"]
        results: dict[str, dict[str, list[Sample]]] = {
            mode: {v: [] for v in variants} for mode in ("pingpong", "churn")
        }
        for i in range(config.rounds):
            # Rotate which variant goes first, so a drift favours none.
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            for variant in order:
                samples, counters = run_round(config, variant)
                for mode, sample in samples.items():
                    results[mode][variant].append(sample)
                print(
                    f"  round {i + 1}/{config.rounds} {describe_round(variant, samples, counters)}"
                )
    for mode in ("pingpong", "churn"):
        report(config, mode, results[mode])
    report_memory(args.memory_n, measure_memory(args.memory_n))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted; every server and client has been stopped", file=sys.stderr)
        sys.exit(130)
