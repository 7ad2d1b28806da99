"""Statistics and dumps (pyzenkit): user counts, calc_statistics, periodic runlog and stats line.

The pure parts (``calc_statistics``, the counters' tree) are tested directly;
the periodic timers on the virtual clock; the signals and the periodic runlog
of a real service in a subprocess (``test_a_real_service_...``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archangel import App, Cog, InvalidArgument, Pipeline, Process, ProcessManager, State
from archangel.console import Console
from archangel.service import Runlog, calc_statistics
from archangel.service.statistics import counters, format_statistics
from conftest import VirtualClockLoop
from console_helpers import RawClient

ROOT = Path(__file__).resolve().parent.parent


class Job(Process):
    kind = "job"


# -- calc_statistics: pyzenkit's definition ---------------------------------------------


def test_calc_statistics_gives_pyzenkits_count_increment_speed_and_percentage() -> None:
    current = {"started": 50, "kinds": {"conn": {"started": 40, "failed": 0}}}
    previous = {"started": 40, "kinds": {"conn": {"started": 40, "failed": 0}}}
    assert calc_statistics(current, previous, 5.0) == {
        # pyzenkit: inc = cur - prev, spd = inc / tdiff, pct = inc / (cur / 100)
        "started": {"cnt": 50, "inc": 10, "spd": 2.0, "pct": 20.0},
        "kinds": {
            "conn": {
                "started": {"cnt": 40, "inc": 0, "spd": 0.0, "pct": 0.0},
                "failed": {"cnt": 0, "inc": 0, "spd": 0.0, "pct": 0.0},
            }
        },
    }


def test_calc_statistics_counts_what_was_not_there_before_as_new() -> None:
    # The first reading (previous {}), a key or a whole branch new since the last.
    result = calc_statistics({"a": 8, "new": {"b": 2.5}}, {}, 2.0)
    assert result == {
        "a": {"cnt": 8, "inc": 8, "spd": 4.0, "pct": 100.0},
        "new": {"b": {"cnt": 2.5, "inc": 2.5, "spd": 1.25, "pct": 100.0}},
    }
    # A branch that was a number before is compared against nothing.
    assert calc_statistics({"x": {"y": 1}}, {"x": 5}, 1.0) == {
        "x": {"y": {"cnt": 1, "inc": 1, "spd": 1.0, "pct": 100.0}}
    }


def test_calc_statistics_a_gauge_dropping_to_zero_keeps_its_increment() -> None:
    # pyzenkit zeroes every member of a non-positive count; here only pct is.
    assert calc_statistics({"running": 0}, {"running": 3}, 2.0) == {
        "running": {"cnt": 0, "inc": -3, "spd": -1.5, "pct": 0.0}
    }
    assert calc_statistics({"running": 1}, {"running": 3}, 2.0)["running"]["pct"] == -200.0


def test_calc_statistics_leaves_out_what_is_not_a_number_and_survives_zero_seconds() -> None:
    current = {"phase": "running", "ok": True, "n": 4, "cogs": {}}
    assert calc_statistics(current, {"n": 2}, 0) == {
        "n": {"cnt": 4, "inc": 2, "spd": 0.0, "pct": 50.0},
        "cogs": {},
    }


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf, "5", None, True])
def test_calc_statistics_refuses_bad_seconds(seconds: Any) -> None:
    with pytest.raises(InvalidArgument, match="calc_statistics: seconds must be a finite"):
        calc_statistics({"a": 1}, {}, seconds)


# -- user statistics ----------------------------------------------------------------------


def test_a_process_counts_its_own_events_and_its_kind_keeps_them_after_it_exits() -> None:
    manager = ProcessManager()
    quiet = manager.register(Job())
    a, b = manager.register(Job()), manager.register(Job())
    assert "user" not in manager.counters["kinds"]["job"]  # nothing counted yet
    assert "_archangel_stats" not in vars(quiet)  # no per-instance cost until the first inc
    a.inc("requests")
    a.inc("requests", 2)
    b.inc("requests")
    b.inc("bytes", 0.5)
    assert a.statistics() == {"requests": 3} and quiet.statistics() == {}
    assert manager.counters["kinds"]["job"]["user"] == {"requests": 4, "bytes": 0.5}
    a._exit(None)
    b.kill()
    assert manager.counters["kinds"]["job"]["user"] == {"requests": 4, "bytes": 0.5}
    a.inc("late")  # after its exit (an at-exit hook, say): straight to the kind's totals
    assert manager.counters["kinds"]["job"]["user"] == {"requests": 4, "bytes": 0.5, "late": 1}
    assert a.statistics() == {"requests": 3, "late": 1}
    assert "_archangel_stats" not in vars(quiet)


def test_counts_made_before_registering_reach_the_manager() -> None:
    manager = ProcessManager()
    job = Job()
    job.inc("early")
    manager.register(job)
    job.inc("early")
    assert manager.counters["kinds"]["job"]["user"] == {"early": 2}
    job._exit(None)
    assert manager.counters["kinds"]["job"]["user"] == {"early": 2}


class Greeter(Process, asyncio.Protocol):
    kind = "greeter"

    def __init__(self) -> None:
        self.inc("made")  # before the factory registers it


def test_a_protocols_counts_from_its_init_join_the_totals_at_its_next_count() -> None:
    manager = ProcessManager()
    factory = manager.register(Greeter)
    greeter = factory()
    assert "user" not in manager.counters["kinds"]["greeter"]
    assert greeter.statistics() == {"made": 1}
    greeter.inc("greeted")
    assert manager.counters["kinds"]["greeter"]["user"] == {"made": 1, "greeted": 1}
    factory().inc("greeted", 2)
    assert manager.counters["kinds"]["greeter"]["user"] == {"made": 2, "greeted": 3}


def test_the_manager_and_the_app_count_their_own_under_user(tmp_path: Path) -> None:
    manager = ProcessManager()
    assert "user" not in manager.counters
    manager.inc("jobs", 3)
    app = App("counting", runlog_file=tmp_path / "r.json")
    app.inc("reloads")
    app.inc("reloads")
    assert manager.counters["user"] == {"jobs": 3}
    assert app.manager.counters["user"] == {"reloads": 2}


@pytest.mark.parametrize(
    ("name", "n", "message"),
    [
        ("", 1, r"inc\(\) takes a statistic's name, a non-empty string, not ''"),
        (7, 1, r"inc\(\) takes a statistic's name, a non-empty string, not 7"),
        ("x", True, r"inc\('x', n\) takes a finite number to add, not True"),
        ("x", "2", r"inc\('x', n\) takes a finite number to add, not '2'"),
        ("x", math.nan, r"inc\('x', n\) takes a finite number to add, not nan"),
    ],
)
def test_inc_refuses_bad_names_and_counts(name: Any, n: Any, message: str) -> None:
    manager = ProcessManager()
    job = manager.register(Job())
    with pytest.raises(InvalidArgument, match=r"<Job pid=1 job \[new\]>: " + message):
        job.inc(name, n)
    with pytest.raises(InvalidArgument, match=r"<ProcessManager 'manager'.*>: " + message):
        manager.inc(name, n)
    assert "user" not in manager.counters and "user" not in manager.counters["kinds"]["job"]


# -- the counters' tree and the runlog ------------------------------------------------------


class Evens(Cog):
    """Counts the even items on its pipeline (a cog's way to count)."""

    def __call__(self, item: int) -> list[int]:
        if item % 2 == 0:
            self.pipeline.inc("even")
        return [item]


def double(item: int) -> list[int]:
    return [item * 2]


async def _gate(n: int, gate: asyncio.Event) -> AsyncIterator[int]:
    for i in range(n):
        yield i
    await gate.wait()


async def test_the_runlog_gives_statistics_per_kind_per_pipeline_and_per_cog() -> None:
    manager = ProcessManager()
    gate = asyncio.Event()
    pipe = manager.spawn(Pipeline(_gate(4, gate), Evens(), double, double, name="numbers"))
    twin_a = manager.spawn(Pipeline([], name="twin"))
    twin_b = manager.spawn(Pipeline(_gate(0, gate), name="twin"))
    await twin_a.wait()  # empty: done at once, so one "twin" left alive...
    twin_c = manager.spawn(Pipeline(_gate(0, gate), name="twin"))  # ...and another
    job = manager.register(Job())
    job.inc("ticks", 5)
    runlog = Runlog(manager, "svc")
    while pipe.counters["out"] < 4:
        await asyncio.sleep(0)
    first = runlog()
    numbers = first["pipelines"]["numbers"]
    assert numbers["in"] == 4 and numbers["out"] == 4 and numbers["user"] == {"even": 2}
    assert list(numbers["cogs"]) == ["Evens", "double#2", "double#3"]  # a name twice: its place
    assert counters(manager)["pipelines"]["numbers"]["cogs"] == numbers["cogs"]
    assert numbers["cogs"]["double#3"]["in"] == 4
    assert set(first["pipelines"]) == {"numbers", f"twin#{twin_b.pid}", f"twin#{twin_c.pid}"}
    stats = first["statistics"]
    # The first runlog: everything is new.
    assert stats["kinds"]["job"]["user"]["ticks"] == {
        "cnt": 5,
        "inc": 5,
        "spd": pytest.approx(5 / first["interval"]),
        "pct": 100.0,
    }
    assert stats["pipelines"]["numbers"]["cogs"]["Evens"]["in"]["inc"] == 4
    assert stats["pipelines"]["numbers"]["user"]["even"]["cnt"] == 2
    assert stats["started"]["cnt"] == first["counters"]["started"] == 5
    job.inc("ticks", 15)
    job._exit(None)
    second = runlog()
    ticks = second["statistics"]["kinds"]["job"]["user"]["ticks"]
    assert ticks["cnt"] == 20 and ticks["inc"] == 15 and ticks["pct"] == 75.0
    assert ticks["spd"] == pytest.approx(15 / second["interval"])
    assert second["statistics"]["pipelines"]["numbers"]["in"]["inc"] == 0
    assert second["statistics"]["exited"]["inc"] == 1
    json.dumps(second)  # JSON-ready as it is
    gate.set()
    for p in (pipe, twin_b, twin_c):
        await p.wait()


def test_the_statistics_line_sums_up_totals_kinds_pipelines_and_the_apps_counts() -> None:
    tree = {
        "started": 12,
        "running": 2,
        "kinds": {"conn": {"started": 12, "user": {"requests": 30}}},
        "pipelines": {"p": {"in": 9, "out": 9, "swallowed": 0, "cogs": {"c": {"in": 9}}}},
        "user": {"reloads": 1},
    }
    line = format_statistics(calc_statistics(tree, {"started": 2, "running": 2}, 10.0), 10.0)
    assert line == (
        "statistics over 10 s: started 12 (+10, 1.0/s); running 2; "
        "kinds.conn.user.requests 30 (+30, 3.0/s); pipelines.p.in 9 (+9, 0.9/s); "
        "pipelines.p.out 9 (+9, 0.9/s); user.reloads 1 (+1, 0.1/s)"
    )


# -- the App: periodic runlog and statistics line --------------------------------------------


@pytest.mark.parametrize("what", ["runlog_interval", "stats_interval"])
@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "5", True])
def test_the_intervals_must_be_positive_numbers(what: str, value: Any) -> None:
    with pytest.raises(InvalidArgument, match=f"App 'bad': {what} must be a positive number"):
        App("bad", **{what: value})


def test_the_intervals_are_off_by_default() -> None:
    app = App("default")
    assert app.runlog_interval is None and app.stats_interval is None
    assert App("on", runlog_interval=2, stats_interval=0.5).stats_interval == 0.5


def _inode(path: Path) -> int:
    """Which write of ``path`` is there: each is a new file renamed over the last.

    Not the mtime: two writes within one tick of the kernel's coarse clock
    (4 ms) have the same. The next write's file exists before the rename
    frees the last one's inode, so two writes in a row never share one.
    """
    return path.stat().st_ino


async def _dumped(app: App, count: int) -> None:
    """Wait until ``count`` runlogs are written and done (the file is there a bit before).

    The periodic timer skips a tick whose previous dump is still being
    written, so the virtual clock must not be moved on before this.
    """
    deadline = time.monotonic() + 10
    while app.dump_counts["runlog"] < count:
        assert time.monotonic() < deadline, f"runlog {count} not done"
        await asyncio.sleep(0)


async def _until(path: Path, after: int = -1) -> None:
    """Wait until ``path`` is written, by another write than inode ``after`` (in real time)."""
    deadline = time.monotonic() + 10
    while not path.exists() or _inode(path) == after:
        assert time.monotonic() < deadline, f"{path} not written"
        await asyncio.sleep(0)


async def test_the_periodic_runlog_and_statistics_run_from_run_to_stop(
    clock: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="archangel.app")
    runlog_file = tmp_path / "runlog.json"
    app = App("periodic", runlog_file=runlog_file, runlog_interval=10, stats_interval=4)
    task = asyncio.ensure_future(app.main())
    await app.bus.wait(State.RUN)
    app.inc("ticks", 3)
    await clock.advance(9)
    assert not runlog_file.exists()  # the first one interval after RUN
    lines = [r.getMessage() for r in caplog.records if "statistics over" in r.getMessage()]
    assert lines == [
        "periodic: statistics over 4 s: started 0; exited 0; killed 0; failed 0; running 0; "
        "user.ticks 3 (+3, 0.8/s)",
        "periodic: statistics over 4 s: started 0; exited 0; killed 0; failed 0; running 0; "
        "user.ticks 3",
    ]
    await clock.advance(1)
    await _until(runlog_file)
    await _dumped(app, 1)
    first = json.loads(runlog_file.read_text())
    assert first["statistics"]["user"]["ticks"]["inc"] == 3
    app.inc("ticks")
    before = _inode(runlog_file)
    await clock.advance(10)
    await _until(runlog_file, before)
    await _dumped(app, 2)
    second = json.loads(runlog_file.read_text())
    assert second["statistics"]["user"]["ticks"] == {
        "cnt": 4,
        "inc": 1,
        "spd": pytest.approx(1 / second["interval"]),
        "pct": 25.0,
    }
    app.request_stop()
    await clock.advance(0)
    assert await task == 0
    count = sum("statistics over" in r.getMessage() for r in caplog.records)
    mtime = runlog_file.stat().st_mtime_ns
    await clock.advance(60)
    assert sum("statistics over" in r.getMessage() for r in caplog.records) == count
    assert runlog_file.stat().st_mtime_ns == mtime  # the timers stopped at STOP


# -- the console's stats --------------------------------------------------------------------


async def test_the_consoles_stats_show_the_user_counts() -> None:
    manager = ProcessManager()
    manager.inc("reloads")
    job = manager.register(Job())
    job.inc("requests", 3)
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            stats = await client.ask("stats")
            assert "\nuser: reloads 1\n" in stats
            assert "\nuser (job): requests 3\n" in stats
            data = json.loads(await client.ask("stats --json"))
            assert data["counters"]["kinds"]["job"]["user"] == {"requests": 3}
            assert data["counters"]["user"] == {"reloads": 1}


# -- a real service: periodic runlog, SIGUSR1, SIGUSR2 --------------------------------------

SERVICE = textwrap.dedent(
    """
    import asyncio, logging, sys
    from archangel import App, State, TaskProcess

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    runlog, state, loop = sys.argv[1:4]
    app = App("stats-svc", runlog_file=runlog, state_file=state, shutdown_timeout=5,
              runlog_interval=0.2, stats_interval=0.2)

    class Worker(TaskProcess):
        kind = "worker"

        async def main(self):
            while True:
                self.inc("ticks")
                await asyncio.sleep(0.01)

    @app.bus.on(State.START)
    def start():
        app.manager.spawn(Worker(), name="ticker")

    @app.bus.on(State.RUN)
    def ready():
        app.inc("ready")
        print("ready", flush=True)

    @app.bus.on("state")
    def mine():
        return {"hello": "world"}

    sys.exit(app.run(loop=loop))
    """
)


def _wait_written(path: Path, after: int = -1) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while not path.exists() or _inode(path) == after:
        assert time.monotonic() < deadline, f"{path} not written"
        time.sleep(0.01)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_real_service_writes_its_runlog_periodically_and_on_signals(
    tmp_path: Path, loop: str
) -> None:
    script = tmp_path / "svc.py"
    script.write_text(SERVICE)
    runlog, state = tmp_path / "runlog.json", tmp_path / "state.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(runlog), str(state), loop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        # Periodic: written with no signal, then again.
        first = _wait_written(runlog)
        second = _wait_written(runlog, _inode(runlog))
        ticks = second["statistics"]["kinds"]["worker"]["user"]["ticks"]
        assert ticks["cnt"] > first["counters"]["kinds"]["worker"]["user"]["ticks"]
        assert 0 < ticks["inc"] <= ticks["cnt"] and ticks["spd"] > 0
        assert second["statistics"]["user"]["ready"]["cnt"] == 1
        # SIGUSR1 writes it too (the same runlog: increments since the previous one).
        proc.send_signal(signal.SIGUSR1)
        _wait_written(runlog, _inode(runlog))
        # SIGUSR2: the state, with the settings, the app's part and the user counts.
        proc.send_signal(signal.SIGUSR2)
        dumped = _wait_written(state)
        assert dumped["settings"]["runlog_interval"] == 0.2
        assert dumped["settings"]["signals"]["SIGUSR1"] == ["runlog"]
        assert dumped["app"] == {"mine": {"hello": "world"}}
        ticker = next(p for p in dumped["processes"] if p["name"] == "ticker")
        assert ticker["user"]["ticks"] > 0
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stats-svc: statistics over" in err
    assert "kinds.worker.user.ticks" in err


def test_the_statistics_example_counts_words_logs_lines_and_reports() -> None:
    done = subprocess.run(
        [sys.executable, "examples/statistics.py", "--seconds", "0.6"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    words, reports = done.stdout.splitlines()
    assert words.startswith("words: ") and int(words.split()[1]) > 0
    assert reports == "reports: 1"
    lines = [line for line in done.stderr.splitlines() if "statistics over" in line]
    assert len(lines) >= 1 and all("pipelines.words.user.words" in line for line in lines)
