"""Tests for archangel.service.daemon: real forks, real pidfiles, real privilege drops.

Everything that forks, chdirs or changes ids runs in a subprocess (a small
script written to tmp_path), never in the pytest process. Every daemon a test
starts is SIGKILLed at teardown.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archangel.errors import DaemonError, PidFileError, PidFileUnusable
from archangel.service.daemon import PidFile, check, drop_privileges, read_pid, send_signal

SYSTEMD_VARS = ("NOTIFY_SOCKET", "INVOCATION_ID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
ENV = {key: value for key, value in os.environ.items() if key not in SYSTEMD_VARS}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing user and group needs root")


def _has_nobody() -> bool:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return False
    return True


needs_nobody = pytest.mark.skipif(not _has_nobody(), reason="no 'nobody' user on this system")


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """PIDs of daemons a test started; each is SIGKILLed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run a Python script (dedented source) in a fresh interpreter; argv[1] is tmp_path."""

    def run(
        source: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        script = tmp_path / f"script_{len(list(tmp_path.glob('script_*')))}.py"
        script.write_text(textwrap.dedent(source))
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env={**ENV, **(env or {})},
        )

    return run


HOLDER = """
import signal, sys
from archangel.service.daemon import PidFile
signal.signal(signal.SIGUSR1, lambda *args: print("usr1", flush=True))
with PidFile(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@pytest.fixture
def holder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Start processes that hold a pidfile until their stdin closes."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in procs:
        reap(proc)


def reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    proc.wait()


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.01)


def dead_pid() -> int:
    """A PID that belonged to a process which has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- daemonize ---------------------------------------------------------------

DAEMON = """
import fcntl, json, os, sys, time
from archangel.service.daemon import daemonize
tmp = sys.argv[1]
detach = {"none": None, "true": True}[sys.argv[2]]
extra = open(os.path.join(tmp, "extra"), "w")
closed = fcntl.fcntl(extra.fileno(), fcntl.F_DUPFD, 50)
kept = fcntl.fcntl(extra.fileno(), fcntl.F_DUPFD, 60)
launcher = os.getpid()
handle = daemonize(
    workdir=os.path.join(tmp, "work"), umask=0o027, stdout=os.path.join(tmp, "out.log"),
    stderr=os.path.join(tmp, "err.log"), keep_fds=[kept], detach=detach,
)
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
umask = os.umask(0)
os.umask(umask)
open("made-by-daemon", "w").close()
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
info = dict(
    launcher=launcher, pid=os.getpid(), ppid=os.getppid(), sid=os.getsid(0),
    pgid=os.getpgid(0), cwd=os.getcwd(), umask=umask, fds=fds, closed=closed, kept=kept,
    stdin=os.readlink("/proc/self/fd/0"), detached=handle.detached, handle_pid=handle.pid,
)
with open(os.path.join(tmp, "info.json.tmp"), "w") as file:
    json.dump(info, file)
os.rename(os.path.join(tmp, "info.json.tmp"), os.path.join(tmp, "info.json"))
handle.ready()
time.sleep(30)
"""


@pytest.mark.parametrize(
    ("detach", "env"),
    [("none", {}), ("true", {"INVOCATION_ID": "0123"})],
    ids=["auto", "forced-under-systemd"],
)
def test_daemonize_double_forks_into_a_new_session(
    run: Run, tmp_path: Path, daemons: list[int], detach: str, env: dict[str, str]
) -> None:
    (tmp_path / "work").mkdir()
    result = run(DAEMON, detach, env=env)
    info = json.loads((tmp_path / "info.json").read_text())
    daemons.append(info["pid"])

    # The launcher returned once the daemon was ready, silently, and the
    # daemon kept none of its stdio pipes (or run() would still be waiting).
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert info["pid"] != info["launcher"]
    assert info["handle_pid"] == info["pid"]
    assert info["detached"] is True
    os.kill(info["pid"], 0)  # still running
    # First fork + setsid: a session of its own led by the intermediate
    # child; second fork: not a session leader, so it never gets a terminal.
    assert info["sid"] not in (os.getsid(0), info["pid"])
    assert info["pgid"] == info["sid"]
    # Its parent (the session leader) exits right after the second fork: the
    # daemon is re-parented to init or a subreaper. Read it from outside, as
    # the daemon may have looked before the intermediate child was gone.
    deadline = time.monotonic() + 5
    while (ppid := _ppid(info["pid"])) in (info["launcher"], info["sid"]):
        assert time.monotonic() < deadline, f"still a child of {ppid}"
        time.sleep(0.01)
    assert info["cwd"] == str(tmp_path / "work")
    assert info["umask"] == 0o027
    assert (tmp_path / "work" / "made-by-daemon").stat().st_mode & 0o777 == 0o640
    assert info["stdin"] == "/dev/null"
    assert (tmp_path / "out.log").read_text() == "to stdout\n"
    assert (tmp_path / "err.log").read_text() == "to stderr\n"
    # Descriptors: stdio, the kept one, the start-up pipe (closed by ready()
    # only after the listing) and listdir's own; the unkept one is gone.
    assert info["kept"] in info["fds"]
    assert info["closed"] not in info["fds"]
    others = set(info["fds"]) - {0, 1, 2, info["kept"]}
    assert len(others) <= 2


ACTIVATED = """
import json, os, socket, sys
from archangel.service.daemon import daemonize
listener = socket.create_server(("127.0.0.1", 0))
fd = listener.detach()
if fd != 3:
    os.dup2(fd, 3)  # where socket activation puts the first socket
    os.close(fd)
launcher = os.getpid()
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(launcher) if sys.argv[2] == "self" else "1")
handle = daemonize(stdout=os.path.join(sys.argv[1], "out.log"))
fd3 = os.readlink("/proc/self/fd/3") if os.path.exists("/proc/self/fd/3") else None
print(json.dumps(dict(
    launcher=launcher, pid=os.getpid(), listen_pid=os.environ["LISTEN_PID"],
    fd3=fd3 and fd3.startswith("socket:"),
)), flush=True)
handle.ready()
"""


@pytest.mark.parametrize(
    ("listen_pid", "kept"), [("self", True), ("other", False)], ids=["ours", "not-ours"]
)
def test_daemonize_keeps_socket_activated_descriptors_for_the_daemon(
    run: Run, tmp_path: Path, listen_pid: str, kept: bool
) -> None:
    result = run(ACTIVATED, listen_pid)
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "out.log").read_text())
    assert info["pid"] != info["launcher"]
    if kept:  # the socket is open in the daemon, and $LISTEN_PID names it
        assert (info["fd3"], info["listen_pid"]) == (True, str(info["pid"]))
    else:  # passed to another process: closed like any other, $LISTEN_PID untouched
        assert (info["fd3"], info["listen_pid"]) == (None, "1")


@pytest.mark.parametrize("variable", ["NOTIFY_SOCKET", "INVOCATION_ID"])
def test_daemonize_under_systemd_stays_in_the_foreground(
    run: Run, tmp_path: Path, variable: str
) -> None:
    result = run(
        """
        import os, sys
        from archangel.service.daemon import daemonize
        before = os.getpid()
        handle = daemonize(workdir=sys.argv[1], umask=0o077)
        handle.ready()
        handle.fail("ignored: only the first report counts")
        print(before == os.getpid(), handle.detached, os.getcwd(), oct(os.umask(0)), handle)
        """,
        env={variable: "/nonexistent/notify"},
    )
    assert result.returncode == 0, result.stderr
    same, detached, cwd, umask, handle = result.stdout.split(" ", 4)
    assert (same, detached, cwd, umask) == ("True", "False", str(tmp_path), "0o77")
    assert re.fullmatch(r"<DaemonHandle pid=\d+ foreground \[ready\]>\n", handle)


def test_launcher_exits_non_zero_with_the_daemons_reason(run: Run, tmp_path: Path) -> None:
    result = run(
        """
        import sys
        from archangel.service.daemon import daemonize
        handle = daemonize()
        handle.fail("port 80 is already in use")
        sys.exit(1)
        """
    )
    assert result.returncode == 1
    assert re.fullmatch(
        r"daemon \(pid \d+\) could not start: port 80 is already in use\n", result.stderr
    )
    assert result.stdout == ""


def test_launcher_reports_a_daemon_that_dies_without_a_word(run: Run, tmp_path: Path) -> None:
    log = tmp_path / "err.log"
    result = run(
        """
        import sys
        from archangel.service.daemon import daemonize
        daemonize(stderr=sys.argv[2])
        raise RuntimeError("config file is broken")
        """,
        str(log),
    )
    assert result.returncode == 1
    expected = rf"daemon \(pid \d+\) exited before it was ready; see {re.escape(str(log))}\n"
    assert re.fullmatch(expected, result.stderr)
    wait_for(lambda: "RuntimeError: config file is broken" in log.read_text())


def test_a_worker_closing_its_copy_lets_the_launcher_see_the_daemon_die(
    run: Run, tmp_path: Path, daemons: list[int]
) -> None:
    result = run(
        """
        import os, sys, time
        from archangel.service.daemon import daemonize
        handle = daemonize()
        worker = os.fork()
        if worker == 0:
            handle.close()  # a worker: drops its copy of the start-up pipe
            handle.ready()  # and never speaks for the daemon
            time.sleep(30)
            os._exit(0)
        with open(os.path.join(sys.argv[1], "worker"), "w") as file:
            file.write(str(worker))
        os._exit(3)  # the daemon dies before it is ready
        """
    )
    daemons.append(int((tmp_path / "worker").read_text()))
    assert result.returncode == 1
    assert re.fullmatch(r"daemon \(pid \d+\) exited before it was ready\n", result.stderr)


INSTANCE = """
import sys, time
from archangel.service.daemon import PidFile, daemonize
from archangel.errors import PidFileError
handle = daemonize()
pidfile = PidFile(sys.argv[2])
try:
    pidfile.acquire()
except PidFileError as exc:
    handle.fail(str(exc))
    sys.exit(1)
handle.ready()
time.sleep(30)
"""


def test_second_daemon_is_refused_then_recovers_a_stale_pidfile(
    run: Run, tmp_path: Path, daemons: list[int]
) -> None:
    path = tmp_path / "app.pid"
    first = run(INSTANCE, str(path))
    assert first.returncode == 0, first.stderr
    pid = read_pid(path)
    daemons.append(pid)
    assert check(path) == pid

    second = run(INSTANCE, str(path))
    assert second.returncode == 1
    assert re.fullmatch(
        rf"daemon \(pid \d+\) could not start: "
        rf"pidfile {re.escape(str(path))} is held by running process {pid}\n",
        second.stderr,
    )

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _locked(path))
    third = run(INSTANCE, str(path))
    assert third.returncode == 0, third.stderr
    daemons.append(read_pid(path))
    assert read_pid(path) != pid


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ("stdout='/nonexistent/dir/out.log'", "cannot open stdout file /nonexistent/dir/out.log"),
        ("stdin='/nonexistent/in'", "cannot open stdin file /nonexistent/in"),
        ("workdir='/nonexistent/dir'", "cannot change directory to /nonexistent/dir"),
    ],
)
def test_daemonize_errors_before_the_fork_raise_in_the_caller(
    run: Run, kwargs: str, message: str
) -> None:
    result = run(
        f"""
        import os
        from archangel.service.daemon import daemonize
        from archangel.errors import DaemonError
        before = os.getpid(), os.getcwd()
        try:
            daemonize({kwargs})
        except DaemonError as exc:
            print(exc)
        print((os.getpid(), os.getcwd()) == before)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{message}: No such file or directory\nTrue\n"


# --- PidFile -----------------------------------------------------------------


def _locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_pidfile_writes_our_pid_and_holds_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pidfile = PidFile(path)
    assert repr(pidfile) == f"<PidFile {str(path)!r} [released]>"
    pidfile.acquire()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
        assert pidfile.held
        assert pidfile.pid == os.getpid()
        assert _locked(path)
        assert os.listdir(tmp_path) == ["app.pid"]  # no temporary file left behind
        assert repr(pidfile) == f"<PidFile {str(path)!r} [held by pid {os.getpid()}]>"
    finally:
        pidfile.release()
    assert not path.exists()
    assert not pidfile.held
    pidfile.release()  # idempotent


def test_pidfile_context_manager_releases_on_error(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"

    def fail_while_held() -> None:
        with PidFile(path) as pidfile:
            assert pidfile.held
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail_while_held()
    assert not path.exists()


def test_pidfile_held_by_a_live_process_is_refused(tmp_path: Path, holder: Callable) -> None:
    path = tmp_path / "app.pid"
    proc = holder(path)
    with pytest.raises(PidFileUnusable) as info:
        PidFile(path).acquire()
    err = info.value
    assert str(err) == f"pidfile {path} is held by running process {proc.pid}"
    assert (err.reason, err.path, err.pid) == ("held", str(path), proc.pid)
    assert isinstance(err, PidFileError)
    assert isinstance(err, OSError)
    assert read_pid(path) == proc.pid  # untouched

    proc.stdin.close()
    assert proc.stdout.read() == "released\n"
    proc.wait()
    assert not path.exists()


def test_pidfile_held_in_this_process_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with PidFile(path) as first:
        with pytest.raises(PidFileUnusable, match="is held by running process") as info:
            PidFile(path).acquire()
        assert info.value.pid == os.getpid()
        with pytest.raises(PidFileUnusable, match=r"is already held by <PidFile"):
            first.acquire()
    assert not path.exists()


def test_sigkilled_holder_leaves_a_stale_pidfile_that_acquire_recovers(
    tmp_path: Path, holder: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "app.pid"
    proc = holder(path)
    proc.kill()
    proc.wait()
    assert read_pid(path) == proc.pid  # the file stayed behind
    with PidFile(path):
        assert read_pid(path) == os.getpid()
    assert f"replacing stale pidfile {path}: process {proc.pid} is not running" in caplog.text


@pytest.mark.parametrize(
    ("contents", "logged"),
    [
        (f"{os.getpid()}\n", "runs but holds no lock"),
        ("", "is empty"),
        ("garbage", "does not hold a PID: 'garbage'"),
    ],
    ids=["live-pid-unlocked", "empty", "garbage"],
)
def test_unlocked_pidfile_is_stale_whatever_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, contents: str, logged: str
) -> None:
    path = tmp_path / "app.pid"
    path.write_text(contents)
    with PidFile(path):
        assert read_pid(path) == os.getpid()
    assert logged in caplog.text
    assert not path.exists()


def test_release_leaves_a_pidfile_that_no_longer_holds_our_pid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "app.pid"
    with PidFile(path):
        path.write_text("12345\n")  # overwritten in place by someone else
    assert path.read_text() == "12345\n"
    assert (
        f"pidfile {path} no longer holds pid {os.getpid()} (it holds 12345); leaving it"
        in caplog.text
    )

    with PidFile(path):
        other = tmp_path / "other"
        other.write_text(f"{os.getpid()}\n")
        other.rename(path)  # replaced by another file, even one naming us
    assert path.exists()
    assert f"pidfile {path} was replaced by another file; leaving it" in caplog.text


def test_release_in_a_forked_child_keeps_the_pidfile(run: Run, tmp_path: Path) -> None:
    result = run(
        """
        import os, sys
        from archangel.service.daemon import PidFile
        path = os.path.join(sys.argv[1], "app.pid")
        pidfile = PidFile(path)
        pidfile.acquire()
        child = os.fork()
        if child == 0:
            pidfile.release()
            os._exit(0 if os.path.exists(path) else 1)
        _, status = os.waitpid(child, 0)
        print(os.waitstatus_to_exitcode(status), pidfile.held, os.path.exists(path))
        pidfile.release()
        print(os.path.exists(path))
        """
    )
    assert result.stdout == "0 True True\nFalse\n", result.stderr


def test_racing_acquirers_elect_exactly_one_holder(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text("999999\n")  # a stale file, to exercise the rename path as well
    go = tmp_path / "go"
    racer = """
import os, sys, time
from archangel.service.daemon import PidFile
from archangel.errors import PidFileUnusable
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
try:
    pidfile = PidFile(sys.argv[1])
    pidfile.acquire()
except PidFileUnusable as exc:
    print(exc.reason, flush=True)
else:
    print("won", flush=True)
sys.stdin.readline()
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", racer, str(path), str(go)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for _ in range(8)
    ]
    try:
        time.sleep(0.3)  # let them all start polling
        go.touch()
        outcomes = [proc.stdout.readline().strip() for proc in procs]  # type: ignore[union-attr]
        assert sorted(outcomes) == ["held"] * 7 + ["won"]
        winner = procs[outcomes.index("won")]
        assert read_pid(path) == winner.pid
    finally:
        for proc in procs:
            reap(proc)


def test_acquire_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "app.pid"
    with pytest.raises(PidFileUnusable) as info:
        PidFile(path).acquire()
    assert str(info.value) == (
        f"cannot create pidfile {path}: directory {path.parent} does not exist"
    )
    assert info.value.reason == "io"


def test_acquire_waits_out_a_readers_shared_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A shared flock (a reader of another program) on a stale pidfile is not a holder."""
    path = tmp_path / "app.pid"
    path.write_text(f"{os.getpid()}\n")  # a live PID, unlocked: stale
    caplog.set_level(logging.DEBUG, logger="archangel.service.pidfile")
    pidfile, outcome = PidFile(path), queue.SimpleQueue[object]()
    with open(path) as reader:
        fcntl.flock(reader, fcntl.LOCK_SH)
        starter = threading.Thread(target=lambda: outcome.put(_try(pidfile.acquire)))
        starter.start()
        wait_for(lambda: "waiting for its readers' shared locks" in caplog.text)
    starter.join(timeout=10)
    assert outcome.get(timeout=0) is None  # acquired once the reader let go
    try:
        assert pidfile.held
        assert read_pid(path) == os.getpid()
    finally:
        pidfile.release()


def test_acquire_gives_up_on_a_shared_lock_held_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "app.pid"
    path.write_text("garbage\n")
    monkeypatch.setattr("archangel.service.pidfile._READERS_PATIENCE", 0.05)
    with open(path) as reader:
        fcntl.flock(reader, fcntl.LOCK_SH)
        with pytest.raises(PidFileUnusable) as info:
            PidFile(path).acquire()
    assert str(info.value) == (
        f"pidfile {path} is locked by another process that does not run it "
        "(a shared lock, held for over 0.05 s)"
    )
    assert info.value.reason == "held"
    assert path.read_text() == "garbage\n"


def test_acquire_never_replaces_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "app.pid"
    os.mkfifo(fifo)
    with pytest.raises(PidFileUnusable) as info:
        PidFile(fifo).acquire()
    assert str(info.value) == f"pidfile {fifo} is not a regular file"
    assert info.value.reason == "io"
    assert fifo.is_fifo()
    with pytest.raises(PidFileUnusable) as info:
        PidFile(tmp_path).acquire()
    assert str(info.value) == f"pidfile {tmp_path} is a directory"
    assert os.listdir(tmp_path) == ["app.pid"]  # no temporary file left behind


def _try(call: Callable[[], object]) -> object:
    try:
        call()
    except Exception as exc:
        return exc
    return None


# --- read_pid, check, send_signal --------------------------------------------


def _pid_max() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text())


@pytest.mark.parametrize(
    ("contents", "problem"),
    [
        (b"", "is empty"),
        (b" \n\n", "is empty"),
        (b"abc\n", "does not hold a PID: 'abc'"),
        (b"12abc", "does not hold a PID: '12abc'"),
        (b"12 34", "does not hold a PID: '12 34'"),
        (b"1_000", "does not hold a PID: '1_000'"),
        (b"0x10", "does not hold a PID: '0x10'"),
        ("١٢".encode(), r"does not hold a PID: '\xd9\xa1\xd9\xa2'"),
        (b"\xff\xfe\x00", r"does not hold a PID: '\xff\xfe\x00'"),
        (b"0\n", "holds 0, not a positive PID"),
        (b"-42\n", "holds -42, not a positive PID"),
        (b"99999999999\n", "holds 99999999999, above the largest PID this system allows"),
        (b"1" * 100, "is too large to hold a PID (more than 64 bytes)"),
    ],
)
def test_read_pid_malformed_contents_each_say_what_is_wrong(
    tmp_path: Path, contents: bytes, problem: str
) -> None:
    path = tmp_path / "app.pid"
    path.write_bytes(contents)
    with pytest.raises(PidFileUnusable) as info:
        read_pid(path)
    assert str(info.value).startswith(f"pidfile {path} {problem}")
    assert info.value.reason == "malformed"
    if "largest" in problem:
        assert str(info.value).endswith(f"({_pid_max()})")


def test_read_pid_accepts_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text("  4321\r\n")
    assert read_pid(path) == 4321


def test_read_pid_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with pytest.raises(PidFileUnusable) as info:
        read_pid(str(path))
    assert str(info.value) == f"pidfile {path} does not exist"
    assert (info.value.reason, info.value.pid) == ("missing", None)


def test_read_pid_of_a_directory_or_a_fifo(tmp_path: Path) -> None:
    with pytest.raises(PidFileUnusable) as info:
        read_pid(tmp_path)
    assert str(info.value) == f"pidfile {tmp_path} is a directory"
    assert info.value.reason == "io"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(PidFileUnusable) as info:
        check(tmp_path / "fifo")  # not "is empty", as reading it without a writer says
    assert str(info.value) == f"pidfile {tmp_path / 'fifo'} is not a regular file"
    assert info.value.reason == "io"


def test_check_and_send_signal_reach_the_live_holder(tmp_path: Path, holder: Callable) -> None:
    path = tmp_path / "app.pid"
    proc = holder(path)
    assert check(path) == proc.pid
    assert send_signal(path, 0) == proc.pid
    assert send_signal(path, signal.SIGUSR1) == proc.pid
    assert proc.stdout.readline() == "usr1\n"


def test_check_dead_process_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pid = dead_pid()
    path.write_text(f"{pid}\n")
    with pytest.raises(PidFileUnusable) as info:
        check(path)
    assert str(info.value) == f"pidfile {path} is stale: process {pid} is not running"
    assert (info.value.reason, info.value.pid) == ("stale", pid)
    with pytest.raises(PidFileUnusable, match="is stale"):
        send_signal(path, signal.SIGTERM)


def test_check_live_process_without_the_lock_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text(f"{os.getpid()}\n")  # a PID reused by a process that is not the daemon
    with pytest.raises(PidFileUnusable) as info:
        check(path)
    assert str(info.value) == (
        f"pidfile {path} is stale: process {os.getpid()} runs but does not hold its lock"
    )
    assert info.value.reason == "stale"
    assert check(path, require_lock=False) == os.getpid()


@pytest.mark.parametrize("procfs", [True, False], ids=["proc-locks", "shared-lock-probe"])
def test_check_tells_the_lock_with_or_without_proc_locks(
    tmp_path: Path, holder: Callable, monkeypatch: pytest.MonkeyPatch, procfs: bool
) -> None:
    if not procfs:  # as on a system without /proc/locks
        monkeypatch.setattr(
            "archangel.service._flocks._PROC_LOCKS", str(tmp_path / "no-proc-locks")
        )
    held, unlocked = tmp_path / "held.pid", tmp_path / "unlocked.pid"
    proc = holder(held)
    unlocked.write_text(f"{proc.pid}\n")  # a live PID that holds no lock on this file
    assert check(held) == proc.pid
    with pytest.raises(PidFileUnusable, match="runs but does not hold its lock"):
        check(unlocked)
    with open(unlocked) as reader:  # a reader's shared lock is not a holder's
        fcntl.flock(reader, fcntl.LOCK_SH)
        with pytest.raises(PidFileUnusable, match="runs but does not hold its lock"):
            check(unlocked)


def test_proc_locks_lines_are_read_as_the_kernel_writes_them() -> None:
    from archangel.service._flocks import _flock_listed

    device = os.makedev(0xFE, 1)
    table = (
        "1: POSIX  ADVISORY  WRITE 10 fe:01:77 0 EOF\n"  # not an flock
        "2: FLOCK  ADVISORY  READ 11 fe:01:77 0 EOF\n"  # a reader's shared lock
        "3: -> FLOCK  ADVISORY  WRITE 12 fe:01:77 0 EOF\n"  # waiting, not holding
        "4: FLOCK  ADVISORY  WRITE 13 fe:01:770 0 EOF\n"  # another inode
        "5: FLOCK  ADVISORY  WRITE 14 00:2f:77 0 EOF\n"  # another device (or btrfs)
    )
    assert not _flock_listed(table, device, 77, 99)
    assert _flock_listed(table + "6: FLOCK  ADVISORY  WRITE 15 fe:01:77 0 EOF\n", device, 77, 99)
    assert _flock_listed(table, device, 77, 14)  # the holder is the PID in the file


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="archangel-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@needs_root
@needs_nobody
def test_permission_denied_reading_or_signalling(
    run: Run, shared_dir: Path, holder: Callable
) -> None:
    private = shared_dir / "private.pid"
    private.write_text(f"{os.getpid()}\n")
    private.chmod(0o600)
    public = shared_dir / "public.pid"
    proc = holder(public)  # a root process, holding the lock
    result = run(
        """
        import json, sys
        from archangel.service.daemon import check, drop_privileges
        from archangel.errors import PidFileUnusable
        drop_privileges("nobody")
        for path in sys.argv[2:]:
            try:
                check(path)
            except PidFileUnusable as exc:
                print(json.dumps([exc.reason, str(exc)]))
        """,
        str(private),
        str(public),
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        ["permission", f"cannot read pidfile {private}: Permission denied"],
        [
            "permission",
            f"not permitted to signal process {proc.pid} named by pidfile {public}: "
            "it runs as another user",
        ],
    ]


@needs_root
@needs_nobody
def test_status_of_a_service_run_by_another_user(
    run: Run, shared_dir: Path, holder: Callable
) -> None:
    """``status`` says it runs (0); ``signal`` says it may not signal it (5)."""
    public = shared_dir / "public.pid"
    proc = holder(public)  # a root process, holding the lock
    command = """
        import sys
        from archangel.cli import main
        from archangel.service.daemon import drop_privileges
        drop_privileges("nobody")
        sys.exit(main(sys.argv[2:]))
        """
    status = run(command, "status", f"--pidfile={public}")
    assert (status.returncode, status.stdout) == (0, f"running: pid {proc.pid} ({public})\n")
    signalled = run(command, "signal", f"--pidfile={public}", "hup")
    assert signalled.returncode == 5
    assert "it runs as another user" in signalled.stderr


# --- drop_privileges ---------------------------------------------------------

IDS = """
import json, os, sys
from archangel.service.daemon import drop_privileges
args = json.loads(sys.argv[2])
drop_privileges(*args)
print(json.dumps([os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]))
"""


@needs_root
@needs_nobody
@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["nobody", "nogroup"], "nobody"),
        ([65534, "65534"], "nobody"),
        (["nobody"], "nobody"),
        ([None, "nogroup"], "group-only"),
    ],
    ids=["names", "numeric", "user-only", "group-only"],
)
def test_drop_privileges_in_a_real_process(run: Run, args: list[object], ids: str) -> None:
    nobody = pwd.getpwnam("nobody")
    result = run(IDS, json.dumps(args))
    assert result.returncode == 0, result.stderr
    uid, euid, gid, egid, groups = json.loads(result.stdout)
    expected_uid = nobody.pw_uid if ids == "nobody" else 0
    assert (uid, euid) == (expected_uid, expected_uid)
    assert (gid, egid) == (nobody.pw_gid, nobody.pw_gid)
    assert 0 not in groups  # root's supplementary groups are gone


@needs_root
@needs_nobody
def test_drop_privileges_without_root_is_refused_unless_already_there(run: Run) -> None:
    result = run(
        """
        from archangel.service.daemon import drop_privileges
        from archangel.errors import DaemonError
        drop_privileges("nobody", "nogroup")
        drop_privileges("nobody", "nogroup")  # already there: a no-op
        try:
            drop_privileges("root")
        except DaemonError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cannot switch to uid 0, gid 0: not root (euid 65534)\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such-user-xyz",), "unknown user 'no-such-user-xyz'"),
        ((None, "no-such-group-xyz"), "unknown group 'no-such-group-xyz'"),
        ((54321,), "user 54321 has no entry in the user database; name a group too"),
        ((-1,), "invalid user id -1: ids are not negative"),
    ],
)
def test_drop_privileges_rejects_bad_names_before_changing_anything(
    args: tuple[object, ...], message: str
) -> None:
    before = os.getuid(), os.getgid(), os.getgroups()
    with pytest.raises(DaemonError) as info:
        drop_privileges(*args)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert (os.getuid(), os.getgid(), os.getgroups()) == before


def test_drop_privileges_with_nothing_to_do() -> None:
    before = os.getuid(), os.getgid(), os.getgroups()
    drop_privileges()
    assert (os.getuid(), os.getgid(), os.getgroups()) == before


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])
