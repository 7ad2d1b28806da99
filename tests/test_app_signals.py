"""The App's stop and reload under real signals, in a child process, on both loops.

Each test runs a small service in a child (``python service.py LOOP``), sends
it real signals with ``os.kill`` and follows it through the lines it prints
and, for systemd, through a real ``NOTIFY_SOCKET`` datagram socket the test
binds. Lines are read by a thread into a queue, so every wait has a timeout.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.service_helpers import (
    SLOW_START,
    closed_by_peer,
    connect,
    hook_lines,
    popen,
    write_script,
)
from tests.test_systemd import ENV_VARS

ROOT = Path(__file__).resolve().parent.parent
LOOPS = pytest.mark.parametrize("loop", ["uvloop", "asyncio"])

PRELUDE = textwrap.dedent(
    """
    import asyncio, logging, sys
    from archangel import App, State
    from archangel.kernel.task import TaskProcess

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
    logging.getLogger("archangel.service.signals").setLevel(logging.INFO)
    print = __import__("functools").partial(print, flush=True)
    """
)


@dataclass
class Child:
    """A service in a child process, its printed lines queued as they come."""

    process: subprocess.Popen[str]
    lines: queue.SimpleQueue[str] = field(default_factory=queue.SimpleQueue)
    seen: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def expect(self, line: str, timeout: float = 20) -> list[str]:
        """Wait for ``line``; return the lines printed before it (since the last wait)."""
        before = []
        while (got := self.lines.get(timeout=timeout).rstrip("\n")) != line:
            before.append(got)
        self.seen.extend([*before, line])
        return before

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def kill(self, sig: signal.Signals) -> None:
        os.kill(self.process.pid, sig)

    def rest(self) -> list[str]:
        """The lines after the last wait, once the child has exited (all of them)."""
        assert self.process.poll() is not None
        if self.reader is not None:
            self.reader.join(30)  # to the end of its output
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get().rstrip("\n"))
        return rest


RunChild = Callable[..., Child]


@pytest.fixture
def run_child(tmp_path: Path) -> Iterator[RunChild]:
    children: list[tuple[Child, threading.Thread]] = []

    def run(source: str, loop: str, env: dict[str, str] | None = None) -> Child:
        script = tmp_path / f"service{len(children)}.py"
        script.write_text(PRELUDE + textwrap.dedent(source))
        environ = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        environ.update(PYTHONPATH=str(ROOT / "src"), **(env or {}))
        process = subprocess.Popen(
            [sys.executable, str(script), loop],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environ,
        )
        child = Child(process)
        stdout = process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: [child.lines.put(line) for line in stdout])
        reader.start()
        child.reader = reader
        children.append((child, reader))
        return child

    yield run
    for child, reader in children:
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()
        reader.join()
        for stream in (child.process.stdin, child.process.stdout):
            if stream is not None:
                stream.close()


STUCK_HOOK = """
    app = App("stuck-hook", shutdown_timeout=0.5)

    async def flush_forever():
        print("hook awaiting")
        await asyncio.Event().wait()

    @app.bus.on(State.START)
    def spawn():
        app.manager.spawn(asyncio.Event().wait, name="worker").at_exit(flush_forever)

    app.bus.subscribe(State.RUN, lambda: print("running"))
    app.bus.subscribe(State.EXIT, lambda: print("exit subscribers ran"))
    status = app.run(loop=sys.argv[1])
    print("status", status)
    sys.exit(status)
"""


@LOOPS
def test_sigterm_ends_a_service_whose_at_exit_hook_never_returns(
    run_child: RunChild, loop: str
) -> None:
    """Today this service never ends: a second and third SIGTERM do not help either."""
    child = run_child(STUCK_HOOK, loop)
    child.expect("running")
    child.kill(signal.SIGTERM)
    child.expect("hook awaiting")
    assert child.process.wait(timeout=30) == 3  # EXIT_FORCED
    child.expect("exit subscribers ran")
    child.expect("status 3")
    assert any("stop forced" in line for line in child.seen)


DEAF_TASK = """
    app = App("deaf-task", shutdown_timeout=1)

    async def deaf():  # not a process: a plain task that swallows its cancellations
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("swallowed a cancel")

    @app.bus.on(State.START)
    def start():
        app.deaf = asyncio.get_running_loop().create_task(deaf(), name="deaf")

    app.bus.subscribe(State.RUN, lambda: print("running"))
    status = app.run(loop=sys.argv[1])
    print("status", status)
    sys.exit(status)
"""


@LOOPS
def test_a_task_that_ignores_cancellation_does_not_keep_the_service_up(
    run_child: RunChild, loop: str
) -> None:
    """asyncio.Runner waits for every cancelled task with no bound: this never ended."""
    child = run_child(DEAF_TASK, loop)
    child.expect("running")
    child.kill(signal.SIGTERM)
    child.expect("swallowed a cancel")
    assert child.process.wait(timeout=30) == 3  # EXIT_FORCED: something did not end
    child.expect("status 3")
    left = [line for line in child.seen if "ignored its cancellation" in line]
    assert len(left) == 1 and "'deaf'" in left[0] and "service" in left[0], child.seen
    # Said once: not again by asyncio when the task is collected at the exit.
    assert not [line for line in child.rest() if "Task was destroyed" in line], child.seen


SECOND_SIGTERM = """
    app = App("second-term", shutdown_timeout=120)

    class Stubborn(TaskProcess):
        def on_stop(self):  # never ends gracefully: only a kill ends it
            print("asked to stop")

    @app.bus.on(State.START)
    def spawn():
        worker = app.manager.spawn(Stubborn(asyncio.Event().wait(), name="stubborn"))
        worker.at_exit(lambda: print("hook ran:", worker.exit_reason.value))

    app.bus.subscribe(State.RUN, lambda: print("running"))
    sys.exit(app.run(loop=sys.argv[1]))
"""


@LOOPS
def test_a_second_sigterm_is_a_quick_stop(run_child: RunChild, loop: str) -> None:
    """Today the second SIGTERM is one more graceful stop: this waits the full 120 s."""
    child = run_child(SECOND_SIGTERM, loop)
    child.expect("running")
    child.kill(signal.SIGTERM)
    child.expect("SIGTERM received (#1): graceful")
    child.expect("asked to stop")  # draining, and it would for 120 s
    child.kill(signal.SIGTERM)
    child.expect("SIGTERM received (#2): quick")
    child.expect("hook ran: killed")  # killed now, and the at-exit hook still ran
    assert child.process.wait(timeout=30) == 0  # asked for: not a forced stop


OVERLAPPING_HUPS = """
    app = App("hups")
    count = 0
    running = False

    @app.bus.on("reload")
    async def reread():
        global count, running
        count += 1
        if running:
            print("overlap")
        running = True
        print(f"reload {count} start")
        await asyncio.to_thread(sys.stdin.readline)  # until the test lets it go on
        print(f"reload {count} end")
        running = False

    app.bus.subscribe(State.RUN, lambda: print("running"))
    app.bus.subscribe(State.EXIT, lambda: print(f"reloads {count}"))
    sys.exit(app.run(loop=sys.argv[1]))
"""


def pending(sock: socket.socket) -> list[str]:
    """Every datagram queued on ``sock`` now (a local datagram is queued by ``sendto``)."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        return got
    finally:
        sock.settimeout(20)


@LOOPS
def test_overlapping_sighups_reload_one_at_a_time_and_systemd_sees_one_ready(
    run_child: RunChild,
    loop: str,
    tmp_path: Path,
) -> None:
    """Today: reloads side by side, and RELOADING, RELOADING, READY, READY."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    try:
        child = run_child(OVERLAPPING_HUPS, loop, {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        child.expect("running")
        assert notify.recv(4096).decode().startswith("READY=1\nSTATUS=hups: running")

        child.kill(signal.SIGHUP)
        child.expect("reload 1 start")
        [reloading] = pending(notify)
        assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
        for number in (2, 3, 4):  # three more during the first: one by one, each delivered
            child.kill(signal.SIGHUP)
            before = child.expect(f"SIGHUP received (#{number}): reload")
            assert "overlap" not in before and "reload 2 start" not in before
        assert pending(notify) == []  # no READY=1 while reloading

        child.go_on()
        child.expect("reload 1 end")
        child.expect("reload 2 start")  # the three coalesced into one, after the first
        [again] = pending(notify)  # a fresh RELOADING=1, and still no READY=1
        assert again.startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert int(again.split("=")[-1]) >= int(reloading.split("=")[-1])
        child.go_on()
        child.expect("reload 2 end")
        assert notify.recv(4096).decode() == "READY=1"  # once, after the last reload

        child.kill(signal.SIGTERM)
        assert notify.recv(4096).decode() == "STOPPING=1"
        assert child.process.wait(timeout=30) == 0
        child.expect("reloads 2")
        assert "overlap" not in child.seen + child.rest()
        assert pending(notify) == []  # nothing more was sent
    finally:
        notify.close()


BOUND_SIGNALS = """
    import signal
    def on_usr1(sig):
        print(f"callback got {sig.name}")

    async def on_alrm(sig):
        await asyncio.sleep(0)
        print(f"async callback got {sig.name}")
        raise RuntimeError("a bad handler")

    def broken(sig):
        raise ValueError("a bad sync handler")

    app = App(
        "bound",
        signals={
            "USR1": on_usr1,
            "HUP": "my-channel",
            "ALRM": on_alrm,
            "USR2": [broken, "state"],
            "WINCH": "nobody-listens",
        },
    )
    app.bus.subscribe("my-channel", lambda sig: print(f"channel got {sig.name}"))
    app.bus.subscribe(State.RUN, lambda: print("running"))
    status = app.run(loop=sys.argv[1])
    print("status", status)
    sys.exit(status)
"""


@LOOPS
def test_any_signal_runs_a_callback_or_publishes_on_a_channel(
    run_child: RunChild, loop: str
) -> None:
    """Today a callable or a channel for a signal is refused when the App is made."""
    child = run_child(BOUND_SIGNALS, loop)
    child.expect("running")
    child.kill(signal.SIGUSR1)
    child.expect("callback got SIGUSR1")
    child.kill(signal.SIGHUP)
    child.expect("channel got SIGHUP")
    child.kill(signal.SIGALRM)
    child.expect("async callback got SIGALRM")
    child.kill(signal.SIGUSR2)
    child.expect("SIGUSR2 received (#1): broken")
    child.kill(signal.SIGWINCH)
    child.expect("bound: SIGWINCH is bound to channel 'nobody-listens', which has no subscribers")
    child.kill(signal.SIGUSR1)  # the service is still up after the failing handlers
    child.expect("callback got SIGUSR1")
    child.kill(signal.SIGTERM)
    child.expect("status 0")
    assert child.process.wait(timeout=30) == 0
    text = "\n".join(child.seen)
    assert "bound: the SIGALRM handler" in text and "RuntimeError: a bad handler" in text
    assert "bound: the SIGUSR2 handler" in text and "ValueError: a bad sync handler" in text


RESTORED_HANDLER = """
    import signal
    signal.signal(signal.SIGUSR1, lambda signum, frame: print("my own handler ran"))
    app = App("restored")

    @app.bus.on(State.RUN)
    def running():
        print("running")
        app.request_stop()

    status = app.run(loop=sys.argv[1])
    print("status", status)
    signal.raise_signal(signal.SIGUSR1)  # the App's SIGUSR1 (runlog) is gone: mine is back
    print("still alive")
"""


@LOOPS
def test_the_handlers_the_app_replaced_are_put_back_when_it_exits(
    run_child: RunChild, loop: str
) -> None:
    """Today they are reset to the default: the SIGUSR1 after the App kills the process."""
    child = run_child(RESTORED_HANDLER, loop)
    child.expect("running")
    child.expect("status 0")
    child.expect("my own handler ran")
    child.expect("still alive")
    assert child.process.wait(timeout=30) == 0


def test_third_sigint_exits_at_once(tmp_path: Path) -> None:
    """1st SIGINT: graceful (stuck in a STOP hook), 2nd: quick (kills), 3rd: exit now."""
    script = write_script(
        tmp_path / "stuck.py",
        """
        app = App("stuck", shutdown_timeout=60)

        @app.bus.on(State.START)
        async def start():
            await app.serve(Echo, "127.0.0.1", 0)

        @app.bus.on(State.RUN)
        def ready():
            print("running", app.addresses[0][1], flush=True)

        @app.bus.on(State.STOP)
        async def never_done():
            print("stopping", flush=True)
            await asyncio.Event().wait()

        sys.exit(app.run())
        """,
    )
    child = popen(script, tmp_path)
    try:
        assert child.stdout is not None
        word, port = child.stdout.readline().split()
        assert word == "running"
        conns = connect(int(port), 5)
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline() == "stopping\n"
        for conn in conns:  # graceful, and stuck before the drain: connections are up
            conn.sendall(b"still")
            assert conn.recv(5) == b"still"
        assert not (tmp_path / "hooks").exists()

        child.send_signal(signal.SIGINT)  # quick: kills every connection, runs the hooks
        assert all(closed_by_peer(conn) for conn in conns)
        lines = hook_lines(tmp_path / "hooks", 5)
        assert sorted(lines) == [f"{pid} killed" for pid in range(1, 6)]
        assert child.poll() is None  # the quick stop is stuck in the same STOP hook

        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) == 128 + signal.SIGINT
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize(("sig", "reason"), [("SIGTERM", "shutdown"), ("SIGQUIT", "killed")])
def test_a_stop_signal_during_start_stops_the_service(
    tmp_path: Path, loop: str, sig: str, reason: str
) -> None:
    child = popen(write_script(tmp_path / "slow.py", SLOW_START), tmp_path, loop)
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline()]
        while not lines[-1].startswith("port "):
            assert lines[-1], f"the service ended before it listened: {lines}"
            lines.append(child.stdout.readline())
        [conn] = connect(int(lines[-1].split()[1]), 1)  # accepted while still in START
        child.send_signal(signal.Signals[sig])
        assert closed_by_peer(conn)
        rest, err = child.communicate(timeout=10)
        out = "".join(lines) + rest
        assert child.returncode == 0, out + err
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert "start cancelled" in out
    assert "slow-start: stop requested during START: start cancelled" in out
    states = [line.split("bus state: ")[1] for line in out.splitlines() if "bus state: " in line]
    assert states == ["ENTER", "IDLE", "START", "STOP", "IDLE", "EXIT", "EXITED"]
    assert (tmp_path / "hooks").read_text() == f"1 {reason}\n"
