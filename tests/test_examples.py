"""The examples run as the README says: real processes, real sockets, real files."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def run_example(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_supervised_example_keeps_its_children_running_and_stops_them_last_first() -> None:
    # No random failures here: one near the end would change the last records.
    done = run_example("examples/supervised.py", "--seconds", "1.5", "--failure-rate", "0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # Mid-restart (a backoff, rest_for_one stopping the consumer) a line may
    # show fewer children, so any children match.
    progress = r"ingest: restarts=\d+ children=\[[\w:, ]*\] consumed=\d+"
    assert all(re.match(progress, line) for line in lines[:-4]), lines
    assert lines[-4].startswith("stopped: <ingest pid=1 supervisor [exited shutdown]>")
    # The consumer (started last) is stopped first, then the feed, then the supervisor.
    assert [line.split()[-2:] for line in lines[-3:]] == [
        ["consume:", "shutdown"],
        ["feed:", "shutdown"],
        ["ingest:", "shutdown"],
    ]


def test_supervised_example_gives_up_when_the_feed_keeps_failing() -> None:
    done = run_example("examples/supervised.py", "--seconds", "10", "--failure-rate", "0.5")
    assert done.returncode == 0, done.stderr
    assert "stopped: <ingest pid=1 supervisor [exited error]>" in done.stdout
    assert "RestartLimitExceeded" in done.stderr
    assert "more than 5 restarts in 2 s" in done.stderr
    assert done.stderr.count("ConnectionError: feed lost") >= 6  # 5 restarts, then no more


def test_worker_pool_example_starts_from_a_template_ignores_terminates_and_stops() -> None:
    done = run_example("examples/worker_pool.py", "--seconds", "0.6")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "shard 1: pid 2",
        "shard 2: pid 3",
        "shard 3: ignored",
        "shard 4: pid 4",
        "shard 4 worker ended",
        "shard 4 terminated: <shard pid=4 task [exited shutdown]>",
        "shard 2 worker ended",  # the App's stop: the pool stops the last started first
        "shard 1 worker ended",
        "<shards pid=1 supervisor [exited shutdown]>, restarts=0; exit status 0",
    ]


def test_worker_pool_example_gives_up_on_a_broken_shard_and_the_app_exits_1() -> None:
    done = run_example("examples/worker_pool.py", "--seconds", "20", "--broken-shard", "2")
    assert done.returncode == 1, done.stderr
    assert done.stdout.count("shard 2 worker ended") == 4  # the first start, 3 restarts
    assert done.stdout.splitlines()[-1] == (
        "<shards pid=1 supervisor [exited error]>, restarts=3; exit status 1"
    )
    assert "worker-pool: supervisor 'shards' (pid 1) gave up: RestartLimitExceeded" in done.stderr
    assert "more than 3 restarts in 2 s" in done.stderr


def test_tail_pipeline_example_counts_its_own_log_through_a_rotation() -> None:
    done = run_example("examples/tail_pipeline.py", "--seconds", "2.5", "--every", "1")
    assert done.returncode == 0, done.stderr
    assert "following " in done.stdout and "final counts: " in done.stdout
    assert "tail: 1 rotations, 0 truncations" in done.stdout  # it rotates after 1.5 s
    counters = re.search(r"pipeline counters: (\{.*\})", done.stdout)
    assert counters is not None, done.stdout
    values = dict(re.findall(r"'(\w+)': (\d+)", counters.group(1)))
    assert int(values["in"]) > 0
    assert int(values["in"]) == sum(int(values[k]) for k in ("out", "swallowed", "failed"))


def test_sessions_pipeline_example_pairs_times_out_and_releases_every_event() -> None:
    # Seed 10: a logout is forgotten 0.15 s in, so a login times out on the timer.
    done = run_example("examples/sessions_pipeline.py", "--seconds", "2.5", "--seed", "10")
    assert done.returncode == 0, done.stderr
    out = done.stdout

    def number(pattern: str) -> int:
        found = re.search(pattern, out)
        assert found is not None, (pattern, out)
        return int(found.group(1))

    closed, renamed = number(r"sessions: (\d+) closed"), number(r"(\d+) renamed")
    assert closed > 0 and renamed == 2 * closed  # a login and its logout, merged
    assert "raw texts still held: 0" in out  # every event_finished freed its resource
    assert number(r"released by the timer: (\d+)") >= 1
    assert "tail: rotations per file [1, 0]" in out  # auth.log rotated, app.log not
    counters = dict(re.findall(r"'(\w+)': (\d+)", out.split("pipeline counters: ")[1]))
    assert int(counters["out"]) == number(r"(\d+) finished") and counters["failed"] == "0"


def test_echo_server_example_echoes_and_stops_on_ctrl_c() -> None:
    server = subprocess.Popen(
        [sys.executable, "examples/echo_server.py", "--port", "0"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        port = int(banner.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"hello\n")
            assert conn.recv(100) == b"hello\n"
            server.send_signal(signal.SIGINT)
            out, err = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, err
    # The reporter task is pid 1, the connection pid 2: its at-exit hook ran.
    assert "pid 2 exited" in out
    assert "'conn': {'started': 1, 'exited': 1" in out and "'running': 0" in out


def test_from_rel_example_repeats_while_true_then_stops_the_app() -> None:
    done = run_example("examples/from_rel.py", "--ticks", "3", "--interval", "0.05")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"echo on port \d+", lines[0]), lines
    # Three calls: the first has nothing to compare with, then two diffs.
    assert [line.split(":")[0] for line in lines[1:]] == ["diff", "diff", "done", "stopping"]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_signals_and_timers_example_binds_signals_cancels_events_and_rearms(loop: str) -> None:
    done = run_example("examples/signals_and_timers.py", "--loop", loop)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "callback: SIGUSR1",
        "channel config-changed: SIGHUP",
        "queued: 1, next due in 30 s",
        "answer came; cancelled: True, queued: 0",
        "chain: HELLO",
        "poll 1",
        "cancelled after 1 poll",
        "poll 2",
        "poll 3",
    ]
