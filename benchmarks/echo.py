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
reported, so a reader can see which side was the bottleneck. Every round pair
alternates which variant runs first (``--floor`` adds a third variant: the
least tracking any Python code can do, a PID and a table entry); medians,
spreads and ratios are printed, per round pair and of the medians, with the
meanings ``_harness.py`` gives them. Figures swing by tens of percent between
runs on a noisy machine: quote the ratios, not the absolute rates. Pairs in
which other processes took part of a core are marked, and the server's CPU
time per operation, which such disturbance hardly moves, is printed with the
rate ratio it implies for a saturated server.

Targets (printed beside the measured figures, never asserted):

* managed echo round trips/s >= 0.97 x raw uvloop, same run (issue 10);
* managed connection churn >= 0.90 x raw uvloop, same run (issue 10);
* a tracked live connection costs <= 300 bytes more than a plain protocol;
* a history record costs <= 200 bytes.

The work is split by job: ``echo_servers.py`` (the servers),
``echo_load.py`` (the load clients and a round's CPU sampling),
``echo_memory.py`` (the tracemalloc figures); this script drives the rounds
and reports.

Run: ``python benchmarks/echo.py`` (about a minute; ``--quick`` for a ~10 s
smoke run; ``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import tempfile
from importlib.metadata import version
from typing import Any

import uvloop
from _harness import figure, median, order, spread, verdict
from echo_load import (
    DISTURBED,
    Config,
    Sample,
    build_client,
    choose_cpus,
    python_client,
    run_round,
)
from echo_memory import measure_memory, report_memory
from echo_servers import serve

import archangel

#: managed / raw, of the medians, in the same run (issue 10).
TARGETS = {"pingpong": 0.97, "churn": 0.90}


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
            key: median(getattr(s, key) for s in samples)
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
            f"  {variant:8}: median {figure(rates, ',.0f', f' {unit}/s')}  "
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
    print(f"  ratio managed/raw: {ratio:.3f} of the medians")
    marked = " ".join(f"{p:.3f}{'' if q else '*'}" for p, q in zip(pairs, quiet, strict=True))
    print(f"    per round pair: {marked}; median {figure(pairs, '.3f')}")
    # CPU per op holds steady when other processes take part of a core; its
    # inverse is the rate ratio a saturated, undisturbed server would show.
    implied = raw["server_us"] / managed["server_us"]
    print(
        f"  server CPU per {unit}, managed/raw: {1 / implied:.3f} of the medians  "
        f"(per round pair {spread(costs, '.3f')})\n"
        f"    so a saturated server would give a ratio of {implied:.3f}"
    )
    if not all(quiet):
        undisturbed = [p for p, q in zip(pairs, quiet, strict=True) if q]
        summary = (
            f"the {len(undisturbed)} undisturbed pairs give a median of {median(undisturbed):.3f}"
            if undisturbed
            else "no pair was undisturbed"
        )
        print(f"    * other processes took > {DISTURBED}% of a core in that pair; {summary}")
    name = "ping-pong" if mode == "pingpong" else "churn"
    print(f"  {verdict(f'{name} managed/raw', ratio, target, at_least=True, fmt='.3f')}{caveat}")
    what = f"{name} managed/raw from server CPU per {unit}"
    print(f"  {verdict(what, implied, target, at_least=True, fmt='.3f')}")
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
            for variant in order(variants, i):
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
