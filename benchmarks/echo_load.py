"""The echo benchmark's load: the clients, and one round against one server subprocess.

The load client is ``echo_client.c``, a small epoll load generator compiled
with ``cc -O2`` at start (:func:`build_client`), or, without a C compiler,
:func:`python_client` in one process per client core (``echo.py --client
pingpong|churn``). Both print ``start`` when the measured window opens,
``end`` when it closes, then one ``result`` line. :func:`run_round` starts a
server subprocess (``echo.py --serve VARIANT``), runs a ping-pong and a
churn client against it, and samples both sides' CPU use from ``/proc``
over each measured window (:class:`Sample`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from echo_servers import DRAIN

HERE = Path(__file__).resolve().parent
#: The script the server and Python client subprocesses run (``--serve``, ``--client``).
ENTRY = HERE / "echo.py"
CLIENT_SOURCE = HERE / "echo_client.c"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: How long a client may take beyond warm-up + duration (connecting, draining).
CLIENT_SLACK = 15.0
#: Other processes taking more than this % of a core mark a round as disturbed.
DISTURBED = 5


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
        [sys.executable, str(ENTRY), "--client", mode, "--conns", str(share), *common]
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
        cmd = [sys.executable, str(ENTRY), "--serve", variant, "--host", config.host]
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
