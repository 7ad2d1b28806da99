"""The CLI on a real daemon: ``archangel run examples.service:app --daemon``, signal, status.

Each test starts the example service as a real detached process and talks
to it only the way an operator would: the command line, its pidfile, its
dump files, its port.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.service_helpers import ROOT, closed_by_peer, connect, gone, hook_lines


class Service:
    """The example service run as a daemon in ``tmp``, plus the commands to drive it."""

    def __init__(self, tmp: Path, loop: str) -> None:
        self.tmp = tmp
        self.loop = loop
        self.pidfile = tmp / "service.pid"
        self.log = tmp / "service.log"
        self.hooks = tmp / "hooks.log"
        self.state = tmp / "state.json"
        self.runlog = tmp / "runlog.json"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SERVICE_PORT": "0",
            "SERVICE_SHUTDOWN_TIMEOUT": "5",
            "SERVICE_HOOK_LOG": str(self.hooks),
            "SERVICE_STATE_FILE": str(self.state),
            "SERVICE_RUNLOG_FILE": str(self.runlog),
        }
        self.started: list[int] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "archangel", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self) -> int:
        done = self.cli(
            "run",
            "examples.service:app",
            "--daemon",
            f"--pidfile={self.pidfile}",
            f"--log-file={self.log}",
            f"--loop={self.loop}",
        )
        assert done.returncode == 0, done.stderr + self.log_text()
        pid = int(self.pidfile.read_text())
        self.started.append(pid)
        return pid

    def signal(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.cli("signal", f"--pidfile={self.pidfile}", name)

    def dump(self, name: str, path: Path) -> dict[str, object]:
        before = path.stat().st_mtime_ns if path.exists() else 0
        assert self.signal(name).returncode == 0
        deadline = time.monotonic() + 10
        while not path.exists() or path.stat().st_mtime_ns == before:
            assert time.monotonic() < deadline, f"no {path.name} after {name}"
            time.sleep(0.01)
        data: dict[str, object] = json.loads(path.read_text())  # complete, thanks to the rename
        return data

    def port(self) -> int:
        addresses = self.dump("usr2", self.state)["addresses"]
        assert isinstance(addresses, list)
        return int(addresses[0][1])

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop_all(self) -> None:
        for pid in self.started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(params=["uvloop", "asyncio"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, request.param)
    yield svc
    svc.stop_all()


async def ping_until_closed(port: int, conns: int, term: Service) -> int:
    """Open ``conns`` connections and ping-pong on each until the server closes it.

    Sends SIGTERM through the CLI once every connection has echoed at least
    once; returns how many connections echoed (were accepted and served).
    """
    echoed = 0
    all_echoed = asyncio.Event()

    async def client() -> None:
        nonlocal echoed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        first = True
        try:
            while True:
                writer.write(b"ping\n")
                line = await reader.readline()
                if not line:
                    return
                if first:
                    first = False
                    echoed += 1
                    if echoed == conns:
                        all_echoed.set()
        except ConnectionError:
            return
        finally:
            writer.close()

    clients = [asyncio.ensure_future(client()) for _ in range(conns)]
    async with asyncio.timeout(20):
        await all_echoed.wait()
        done = await asyncio.to_thread(term.signal, "term")
        assert done.returncode == 0, done.stderr
        await asyncio.gather(*clients)
    return echoed


def test_daemon_lifecycle_signals_dumps_and_graceful_stop_under_load(service: Service) -> None:
    pid = service.start()
    assert service.cli("status", f"--pidfile={service.pidfile}").returncode == 0

    # A second instance is refused, naming the first.
    second = service.cli("run", "examples.service:app", "--daemon", f"--pidfile={service.pidfile}")
    assert second.returncode == 1
    assert second.stderr == (
        f"archangel run: echo-service could not start: "
        f"pidfile {service.pidfile} is held by running process {pid}\n"
    )

    port = service.port()
    state = service.dump("usr2", service.state)
    assert state["bus"] == {"state": "RUN"}
    assert state["pid"] == pid
    runlog = service.dump("usr1", service.runlog)
    assert set(runlog) >= {"counters", "rates", "uptime"}

    # SIGHUP reloads; the service and its connections stay up.
    assert service.signal("hup").returncode == 0
    assert service.signal("check").returncode == 0

    # SIGTERM under load: every accepted connection's at-exit hook runs exactly once.
    accepted = asyncio.run(ping_until_closed(port, 100, service))
    assert accepted == 100
    assert gone(pid), service.log_text()
    assert not service.pidfile.exists()
    pids = Counter(int(line.split()[0]) for line in service.hooks.read_text().splitlines())
    assert set(pids.values()) == {1}
    assert sorted(pids) == list(range(1, len(pids) + 1))
    assert len(pids) >= accepted  # + the short connections the dumps did not make
    reasons = {line.split()[1] for line in service.hooks.read_text().splitlines()}
    assert reasons == {"shutdown"}
    log = service.log_text()
    for expected in ("SIGUSR2 received", "SIGUSR1 received", "reload #1", "SIGTERM received"):
        assert expected in log
    assert "EXITED" in log

    status = service.cli("status", f"--pidfile={service.pidfile}")
    assert status.returncode == 3
    assert "does not exist" in status.stderr


def test_stale_pidfile_of_a_killed_daemon_is_recovered(service: Service) -> None:
    pid = service.start()
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    assert service.pidfile.exists()  # left behind
    status = service.cli("status", f"--pidfile={service.pidfile}")
    assert status.returncode == 1
    assert "stale" in status.stderr
    assert service.signal("term").returncode == 1

    new_pid = service.start()  # recovers the stale pidfile
    assert new_pid != pid
    assert int(service.pidfile.read_text()) == new_pid
    assert service.signal("quit").returncode == 0  # quick stop
    assert gone(new_pid)
    assert not service.pidfile.exists()


def test_sigint_stops_gracefully(service: Service) -> None:
    pid = service.start()
    assert service.signal("int").returncode == 0
    assert gone(pid)
    assert "SIGINT received (#1): graceful" in service.log_text()


def test_bad_pidfiles_get_distinct_messages_and_statuses(tmp_path: Path) -> None:
    svc = Service(tmp_path, "asyncio")
    pidfile = svc.pidfile
    cases = {
        b"": "is empty",
        b"garbage\n": "does not hold a PID: 'garbage'",
        b"-5\n": "holds -5, not a positive PID",
        b"99999999999\n": "holds 99999999999, above the largest PID",
    }
    for contents, word in cases.items():
        pidfile.write_bytes(contents)
        for args in (
            ("status", f"--pidfile={pidfile}"),
            ("signal", f"--pidfile={pidfile}", "hup"),
        ):
            done = svc.cli(*args)
            assert done.returncode == 4, (contents, done.stderr)
            assert f"pidfile {pidfile} {word}" in done.stderr

    missing = svc.cli("signal", f"--pidfile={tmp_path / 'nope.pid'}", "term")
    assert missing.returncode == 3
    assert "does not exist" in missing.stderr

    usage = svc.cli("run", "no_such_module:app")
    assert usage.returncode == 2
    assert "cannot import 'no_such_module'" in usage.stderr


def test_unreadable_pidfile_is_permission_denied(tmp_path: Path) -> None:
    """The real CLI code in a forked child that cannot read the pidfile."""
    from archangel.cli import main

    pidfile = tmp_path / "locked.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    pidfile.chmod(0o600 if os.geteuid() == 0 else 0o000)
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        status = 99
        try:
            os.dup2(write_end, 2)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            if os.geteuid() == 0:  # root reads anything: become nobody first
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            status = main(["status", f"--pidfile={pidfile}"])
            sys.stderr.flush()
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as err:
        message = err.read()
    _, wait_status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 5, message
    assert f"pidfile {pidfile}" in message or str(pidfile) in message
    assert "ermission denied" in message


def test_run_replaces_an_unlocked_malformed_pidfile(tmp_path: Path) -> None:
    svc = Service(tmp_path, "asyncio")
    try:
        for contents, problem in ((b"", "is empty"), (b"garbage\n", "does not hold a PID")):
            svc.pidfile.write_bytes(contents)
            pid = svc.start()
            assert f"replacing stale pidfile: pidfile {svc.pidfile} {problem}" in svc.log_text()
            assert svc.cli("status", f"--pidfile={svc.pidfile}").returncode == 0
            assert svc.signal("term").returncode == 0
            assert gone(pid)
            assert not svc.pidfile.exists()

        # A malformed file that a live process holds locked is still refused.
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCKED_GARBAGE, str(svc.pidfile)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "locked\n"
            done = svc.cli("run", "examples.service:app", "--daemon", f"--pidfile={svc.pidfile}")
            assert done.returncode == 1
            assert f"pidfile {svc.pidfile} is held by another process" in done.stderr
            assert svc.pidfile.read_text() == "garbage\n"
        finally:
            holder.kill()
            holder.communicate()
    finally:
        svc.stop_all()


LOCKED_GARBAGE = """
import fcntl, sys
with open(sys.argv[1], "w") as file:
    file.write("garbage\\n")
    file.flush()
    fcntl.flock(file, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_relative_paths_stay_where_the_command_was_run(tmp_path: Path) -> None:
    launch, work = tmp_path / "launch", tmp_path / "work"
    launch.mkdir()
    work.mkdir()
    svc = Service(tmp_path, "asyncio")
    svc.env.update(SERVICE_STATE_FILE="state.json", SERVICE_RUNLOG_FILE="runlog.json")
    run = ["run", "examples.service:app", "--daemon", "--pidfile=svc.pid", "--log-file=svc.log"]
    done = subprocess.run(
        [sys.executable, "-m", "archangel", *run, f"--workdir={work}"],
        cwd=launch,
        env=svc.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    svc.pidfile, svc.log = launch / "svc.pid", launch / "svc.log"
    pid = int(svc.pidfile.read_text())
    svc.started.append(pid)
    try:
        assert svc.dump("usr2", launch / "state.json")["pid"] == pid
        assert svc.dump("usr1", launch / "runlog.json")["name"] == "echo-service"
        assert os.readlink(f"/proc/{pid}/cwd") == str(work)  # it did move
        assert os.listdir(work) == []
        assert svc.signal("term").returncode == 0
        assert gone(pid)
    finally:
        svc.stop_all()


def test_sigquit_kills_open_connections_and_runs_their_hooks(service: Service) -> None:
    pid = service.start()
    conns = connect(service.port(), 10)
    assert service.signal("quit").returncode == 0
    assert all(closed_by_peer(conn) for conn in conns)
    assert gone(pid), service.log_text()
    lines = hook_lines(service.hooks, 10)
    assert sorted(lines, key=lambda line: int(line.split()[0])) == [
        f"{n} killed" for n in range(1, 11)
    ]
    assert not service.pidfile.exists()
    assert "SIGQUIT received (#1): quick" in service.log_text()


@pytest.mark.parametrize(
    ("command", "described"),
    [
        ([], "An asyncio process manager"),
        (["demo"], "The demo service: an echo server"),
        (["run"], "Run the App named MODULE:APP"),
        (["signal"], "Send a signal to the running service"),
        (["status"], "Say whether the service a pidfile names runs"),
        (["console"], "Talk to an archangel console"),
    ],
)
def test_help_of_every_command(
    command: list[str], described: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from archangel.cli import main

    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(" ".join(["usage: archangel", *command]))
    assert described in " ".join(out.split())


# --- a refused start says why in its last line ---------------------------------

HOLD_PIDFILE = """
import fcntl, os, sys
path, contents = sys.argv[1], sys.argv[2]
with open(path, "w") as file:
    file.write(contents.replace("PID", str(os.getpid())) + "\\n")
    file.flush()
    fcntl.flock(file, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()
"""

APP_RUN = """
import logging, sys
from archangel import App
logging.basicConfig(level=logging.INFO)
sys.exit(App("one", pidfile=sys.argv[1]).run(loop="asyncio"))
"""


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Lock ``tmp_path/held.pid`` in another process, holding its PID (``"PID"``) or garbage."""
    holders: list[subprocess.Popen[str]] = []

    def start(contents: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_PIDFILE, str(tmp_path / "held.pid"), contents],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in holders:
        proc.kill()
        proc.communicate()


def last_line(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    return lines[-1] if lines else ""


def test_a_start_refused_by_a_held_pidfile_says_so_in_its_last_line(
    tmp_path: Path, hold: Callable[[str], subprocess.Popen[str]]
) -> None:
    svc = Service(tmp_path, "asyncio")
    pidfile = tmp_path / "held.pid"
    run = ["run", "examples.service:app", f"--pidfile={pidfile}", "--loop=asyncio"]
    script = tmp_path / "one.py"
    script.write_text(APP_RUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = hold("PID")
    by_pid = f"could not start: pidfile {pidfile} is held by running process {holder.pid}"

    foreground = svc.cli(*run)
    assert foreground.returncode == 1
    assert last_line(foreground.stderr).endswith(f"echo-service {by_pid}"), foreground.stderr
    daemon = svc.cli(*run, "--daemon")
    assert daemon.returncode == 1
    assert last_line(daemon.stderr).endswith(f"echo-service {by_pid}"), daemon.stderr
    api = subprocess.run(
        [sys.executable, str(script), str(pidfile)], capture_output=True, text=True, env=env
    )
    assert api.returncode == 1
    assert last_line(api.stderr).endswith(f"one {by_pid}"), api.stderr

    # A held file that names no PID passes the command's own check, so the App's
    # start is what refuses it: in the foreground and in the daemon alike.
    holder.kill()
    holder.wait()
    hold("garbage")
    by_other = f"could not start: pidfile {pidfile} is held by another process"
    foreground = svc.cli(*run)
    assert foreground.returncode == 1
    assert last_line(foreground.stderr).endswith(f"echo-service {by_other}"), foreground.stderr
    daemon = svc.cli(*run, "--daemon")
    assert daemon.returncode == 1
    assert re.fullmatch(rf"daemon \(pid \d+\) {re.escape(by_other)}", last_line(daemon.stderr))
    assert pidfile.read_text() == "garbage\n"
