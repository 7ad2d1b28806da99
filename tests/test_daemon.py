"""Tests for archangel.service.daemon: real forks, real pidfiles, real privilege drops.

Everything that forks, chdirs or changes ids runs in a subprocess (a small
script written to tmp_path), never in the pytest process. Every daemon a test
starts is SIGKILLed at teardown.
The pidfile's own tests are in test_pidfile.py.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archangel.errors import DaemonError
from archangel.service.daemon import check, drop_privileges, read_pid
from tests.service_helpers import (
    ROOT,
    SLOW_START,
    Run,
    _locked,
    gone,
    needs_nobody,
    needs_root,
    wait_for,
    write_script,
)


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


def test_a_daemon_stopped_while_starting_tells_its_launcher(tmp_path: Path) -> None:
    write_script(tmp_path / "slow.py", SLOW_START)
    pidfile, log = tmp_path / "slow.pid", tmp_path / "slow.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HOOK_LOG": str(tmp_path / "hooks")}
    cli = [sys.executable, "-m", "archangel"]
    launcher = subprocess.Popen(
        [*cli, "run", "slow:app", "--daemon", f"--pidfile={pidfile}", f"--log-file={log}"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = None
    try:
        deadline = time.monotonic() + 10
        while "port " not in (log.read_text() if log.exists() else ""):
            assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        pid = int(pidfile.read_text())
        stop = subprocess.run(
            [*cli, "signal", f"--pidfile={pidfile}", "term"], env=env, capture_output=True
        )
        assert stop.returncode == 0, stop.stderr
        _, err = launcher.communicate(timeout=10)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
        if pid is not None and not gone(pid, timeout=10):
            os.kill(pid, signal.SIGKILL)
    assert launcher.returncode == 1
    assert f"daemon (pid {pid}) could not start: stopped during START, before it was ready" in err
    assert "start cancelled" in log.read_text()
    assert not pidfile.exists()


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
