"""Time from SIGTERM to exit with 10,000 idle connections open.

Starts ``archangel run examples.service:app`` (the echo service) as a real
process, opens N idle connections to it, checks they are all tracked (state
dump), sends SIGTERM and measures until the process has exited. Every
connection's at-exit hook writes a line to a hook log, and the benchmark
checks that there is exactly one per connection. Rounds interleave uvloop and
the default loop (the order rotating); the median and spread over the rounds
mean what ``_harness.py`` says. The target is absolute: there is no baseline
to take a ratio against.

Target (issue 4): SIGTERM to exit <= 1 s with 10,000 idle connections.

Run: ``python benchmarks/shutdown.py [--conns 10000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import median, order, spread, verdict

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def one_round(loop: str, conns: int, tmp: Path) -> tuple[float, int]:
    state, hooks = tmp / f"{loop}.state.json", tmp / f"{loop}.hooks.log"
    log = tmp / f"{loop}.log"
    for path in (state, hooks, log):
        path.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SERVICE_PORT": "0",
        "SERVICE_STATE_FILE": str(state),
        "SERVICE_HOOK_LOG": str(hooks),
        "SERVICE_SHUTDOWN_TIMEOUT": "30",
    }
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "archangel", "run", "examples.service:app"),
            *(f"--loop={loop}", f"--log-file={log}"),
        ],
        cwd=ROOT,
        env=env,
    )
    clients: list[socket.socket] = []
    try:
        # Signal only once the handlers are installed: SIGUSR2's default action kills.
        wait_for(lambda: log.exists() and "bus state: RUN" in log.read_text(), 10, "RUN")
        addresses = _dump(server.pid, state)["addresses"]
        assert isinstance(addresses, list)
        port = addresses[0][1]
        for _ in range(conns):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        wait_for(lambda: _tracked(server.pid, state) >= conns, 60, f"{conns} tracked conns")
        start = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
        elapsed = time.perf_counter() - start
        if status != 0:
            raise SystemExit(f"the service exited with status {status}")
        hook_lines = hooks.read_text().splitlines() if hooks.exists() else []
        return elapsed, len(hook_lines)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for sock in clients:
            sock.close()


def _dump(pid: int, state: Path) -> dict[str, object]:
    """Ask for one state dump (SIGUSR2) and wait for it: one signal per dump."""
    state.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    wait_for(state.exists, 30, "the state dump")
    data: dict[str, object] = json.loads(state.read_text())
    return data


def _tracked(pid: int, state: Path) -> int:
    counters = _dump(pid, state)["counters"]
    assert isinstance(counters, dict)
    return int(counters["running"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.conns + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    results: dict[str, list[float]] = {"uvloop": [], "asyncio": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(args.rounds):
            for loop in order(list(results), round_number):
                elapsed, hooks = one_round(loop, args.conns, Path(tmp))
                results[loop].append(elapsed)
                ok = "every hook ran once" if hooks == args.conns else f"{hooks} hooks!"
                print(f"  {loop:8} SIGTERM -> exit {elapsed * 1000:7.1f} ms  ({ok})", flush=True)
    print(f"shutdown: {args.conns:,} idle connections, {args.rounds} rounds per loop")
    for loop, values in results.items():
        ms = median(values) * 1000
        print(f"  {loop:8} median {ms:7.1f} ms ({spread(values, '.1f', ' ms', 1000)})")
        what = f"{loop} SIGTERM to exit"
        print(f"  {verdict(what, ms, 1000, at_least=False, fmt='.0f', unit=' ms')}")


if __name__ == "__main__":
    main()
