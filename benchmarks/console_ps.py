"""Benchmark: the console with 100,000 live processes, and what it costs the app loop.

Registers N processes of five kinds with random names (so sorting by name
or kind is real work, not one long run of equal keys), starts a console,
and runs commands from a client process while a task on the app loop spins
on ``await asyncio.sleep(0)`` and records the longest gap between two of
its turns: the app loop's worst stall while each command runs. The console
answers from its own thread, so that stall comes from the GIL: the console
keeps the interpreter's switch interval at 1 ms while it works, and does no
single long call into C (sorts in chunks, JSON one record at a time,
``killall`` in slices of the app loop's time).

    python benchmarks/console_ps.py [N] [--rounds R] [--uvloop]

Each round runs every command once, then registers again the processes
``killall`` killed and runs a full garbage collection (neither measured),
so what is measured is the console's cost, not the collector's debt for
50,000 new objects. One ``ps`` before the first round warms up.

With ``--tasks T`` (default: N), T plain asyncio tasks wait on the app loop
too, so ``tasks`` (every task on the loop, managed or not) lists N + T.

Targets (design): ``ps`` and ``tasks`` answer in under 300 ms at 100,000
processes and 100,000 plain tasks, and
the app loop is never stalled by more than 5 ms, in particular during
``ps --sort name``, ``ps --json`` and ``killall KIND``. The gaps include
the operating system's scheduling: on a busy machine, compare with the idle
line (the same measurement with the console idle), the baseline of the
ratio printed. Medians, spreads, ratios and verdicts mean what
``_harness.py`` says; the stall targets are on the worst (max) gap, not the
median.

Then the state dump (``dump state``, SIGUSR2), which runs on the app loop
itself: built by ``dumps.state_text`` and written by
``dumps.Writer.write_text``, as ``App`` does, once per round; and once built
the old way, in one call (``state()`` and one ``json.dumps``), for
comparison. Target (issue 10): the app loop is stalled <= 10 ms by it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import socket
import string
import sys
import tempfile
import time

from _harness import median, verdict, worst_gap_while

from archangel import Process, ProcessManager
from archangel.console import Console
from archangel.console.client import TelnetFilter
from archangel.service import dumps

PROMPT = b"archangel> "
KINDS = ("light", "conn", "task", "pipeline", "worker")
#: Half the processes are of the kind ``killall`` kills, the rest share four others.
VICTIMS = "light"
CLASSES = {
    kind: type(f"{kind.title()}Process", (Process,), {"kind": kind, "__module__": __name__})
    for kind in KINDS
}
COMMANDS = (
    ("ps", "showing"),
    ("ps --sort name", "showing"),
    ("ps --sort -name -o {half}", "showing"),  # the offset: half the processes
    ("ps --sort kind", "showing"),
    ("ps -n 'a*'", "showing"),
    ("ps --json --limit 10000", "]}"),
    ("stats", "session"),
    ("tasks", "showing"),
    ("tasks -o {half}", "showing"),  # the tasks' ids sorted up to the middle
    ("tasks -n Task-99", "showing"),
    ("tasks --json --limit 10000", "]}"),
    (f"killall {VICTIMS}", "killed"),
)
#: The commands the 5 ms verdict is about.


def register(manager: ProcessManager, count: int, rng: random.Random, kind: str = "") -> None:
    for _ in range(count):
        chosen = kind or (VICTIMS if rng.random() < 0.5 else rng.choice(KINDS[1:]))
        process = CLASSES[chosen]()
        process.name = "".join(rng.choices(string.ascii_letters, k=12))
        manager.register(process)


def client(address: str) -> None:
    """The client, in its own process: a line from stdin goes to the console, and
    ``[seconds, the reply's last characters]`` comes back on stdout, as JSON.

    A separate process, so that only the app's thread and the console's compete
    for the GIL in the process measured.
    """
    host, port = address.rsplit(":", 1)
    telnet = TelnetFilter()
    with socket.create_connection((host, int(port))) as sock:

        def read() -> bytes:
            chunks: list[bytes] = []
            tail = b""
            while not tail.endswith(PROMPT):
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("console closed the connection")
                text, _ = telnet.feed(data)
                chunks.append(text)
                tail = (tail + text)[-len(PROMPT) :]
            return b"".join(chunks)

        read()
        for line in sys.stdin:
            started = time.perf_counter()
            sock.sendall(line.encode())
            reply = read()
            elapsed = time.perf_counter() - started
            print(json.dumps([elapsed, reply[-300:].decode("utf-8", "replace")]), flush=True)


async def main(count: int, rounds: int, plain_tasks: int | None = None) -> int:
    manager = ProcessManager()
    rng = random.Random(1)
    started = time.perf_counter()
    register(manager, count, rng)
    never = asyncio.Event()
    waiting = [
        asyncio.ensure_future(never.wait())
        for _ in range(count if plain_tasks is None else plain_tasks)
    ]
    await asyncio.sleep(0)
    print(f"{len(waiting)} plain tasks wait on the app loop")
    gc.collect()
    victims = sum(1 for p in manager.processes() if p.kind == VICTIMS)
    print(
        f"registered {count} processes ({len(KINDS)} kinds, random names; "
        f"{victims} of kind {VICTIMS!r}) in {time.perf_counter() - started:.2f} s"
    )
    answers: dict[str, list[float]] = {}
    stalls: dict[str, list[float]] = {}
    commands = [(line.format(half=count // 2), expected) for line, expected in COMMANDS]
    with Console(manager) as console:
        assert isinstance(console.address, tuple)
        command = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            "{}:{}".format(*console.address),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert command.stdin is not None and command.stdout is not None
        stdin, stdout = command.stdin, command.stdout

        async def ask(line: str) -> tuple[float, str]:
            stdin.write(line.encode() + b"\n")
            await stdin.drain()
            elapsed, text = json.loads(await stdout.readline())
            return elapsed, text

        await ask("ps")  # warm up (the first command of a process pays for first-time paths)
        idle = await worst_gap_while(asyncio.ensure_future(asyncio.sleep(0.5)))
        for _ in range(rounds):
            for line, expected in commands:
                work = asyncio.ensure_future(ask(line))
                stall = await worst_gap_while(work)
                elapsed, text = work.result()
                assert expected in text, text
                answers.setdefault(line, []).append(elapsed)
                stalls.setdefault(line, []).append(stall)
            # Bring the killed kind back (not measured), and pay the collector's
            # debt for it now: what is measured is the console's, not the registering.
            await asyncio.sleep(0.1)
            register(manager, count - len(manager), rng, VICTIMS)
            gc.collect()
        stdin.close()
        await command.wait()

    def ms(values: list[float]) -> str:
        return f"{median(values) * 1000:7.1f} {max(values) * 1000:7.1f}"

    print(f"{'':28} {'answer (ms)':>15}   {'app-loop stall (ms)':>19}")
    print(f"{'command':28} {'median':>7} {'max':>7}   {'median':>9} {'max':>9}")
    for line, _ in commands:
        print(f"{line:28} {ms(answers[line])}   {ms(stalls[line])}")
    print(f"{'(console idle, 0.5 s)':28} {'':15}   {'':9} {idle * 1000:9.1f}")
    measured = [line for line, _ in commands]
    worst_line = max(measured, key=lambda line: max(stalls[line]))
    worst = max(stalls[worst_line])
    typical = max(median(stalls[line]) for line in measured)
    versus = f"{worst / idle:.1f}x the idle loop's" if idle else "the idle loop's was 0"
    print(
        f"worst app-loop stall during any command above: {worst * 1000:.1f} ms "
        f"(in {worst_line!r}; {versus}; the worst median over {rounds} rounds is "
        f"{typical * 1000:.1f} ms)"
    )
    print(verdict("worst app-loop stall", worst * 1000, 5, at_least=False, fmt=".1f", unit=" ms"))
    worst_ps = max(answers["ps"])
    ps_ms = worst_ps * 1000
    print(verdict("slowest ps answer", ps_ms, 300, at_least=False, fmt=".1f", unit=" ms"))
    worst_tasks = max(answers["tasks"]) * 1000
    print(verdict("slowest tasks answer", worst_tasks, 300, at_least=False, fmt=".1f", unit=" ms"))
    never.set()
    await asyncio.gather(*waiting)
    await dump_state(manager, rounds)
    return 0  # a target not met is printed, not an error


async def dump_state(manager: ProcessManager, rounds: int) -> float:
    """The state dump's time and app-loop stall, in slices (as App does) and in one call."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.json")
        writer = dumps.Writer()  # as App writes its dumps

        async def sliced() -> None:
            pieces = await dumps.state_text(manager, name="bench", bus_state="RUN")
            await writer.write_text(path, pieces)

        async def whole() -> None:  # before issue 10: built and encoded in one call each
            data = dumps.state(manager, name="bench", bus_state="RUN")
            await writer.write_json(path, data)

        results: dict[str, tuple[list[float], list[float]]] = {}
        for name, dump, times in (("dump state", sliced, rounds), ("(in one call)", whole, 1)):
            for _ in range(times):
                gc.collect()
                started = time.perf_counter()
                work = asyncio.ensure_future(dump())
                stall = await worst_gap_while(work)
                work.result()
                elapsed = time.perf_counter() - started
                took, stalls = results.setdefault(name, ([], []))
                took.append(elapsed)
                stalls.append(stall)
        size = os.stat(path).st_size
    print(f"state dump of {len(manager)} processes ({size / 1e6:.1f} MB of JSON):")
    for name, (took, stalls) in results.items():
        print(
            f"  {name:26} takes {median(took) * 1000:7.0f} ms, "
            f"app-loop stall median {median(stalls) * 1000:6.1f} ms, "
            f"max {max(stalls) * 1000:6.1f} ms"
        )
    worst = max(results["dump state"][1])
    whole = max(results["(in one call)"][1])
    print(f"dump state's worst stall / the one-call dump's: {worst / whole:.2f}")
    what = "worst app-loop stall during dump state"
    print(verdict(what, worst * 1000, 10, at_least=False, fmt=".1f", unit=" ms"))
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=None, help="plain tasks (default: N)")
    parser.add_argument("--uvloop", action="store_true", help="run the app loop on uvloop")
    parser.add_argument("--client", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.client)
    elif args.uvloop:
        import uvloop

        sys.exit(uvloop.run(main(args.count, args.rounds, args.tasks)))
    else:
        sys.exit(asyncio.run(main(args.count, args.rounds, args.tasks)))
