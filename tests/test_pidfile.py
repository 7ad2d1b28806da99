"""Tests for archangel.service.pidfile: real pidfiles, real locks, real processes holding them."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archangel.errors import PidFileError, PidFileUnusable
from archangel.service.pidfile import PidFile, check, read_pid, send_signal
from tests.service_helpers import ENV, ROOT, Run, _locked, needs_nobody, needs_root, wait_for

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


def dead_pid() -> int:
    """A PID that belonged to a process which has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- PidFile -----------------------------------------------------------------


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


def test_a_pidfile_unreadable_after_dropping_privileges_is_still_removed(
    tmp_path: Path,
) -> None:
    """release() reads the pidfile through the descriptor acquire() opened.

    A service that drops privileges (``--user``) may no longer read its own
    pidfile by path; it must still recognise its PID and remove the file,
    not log that the pidfile "no longer holds" it.
    """
    from archangel.service.pidfile import PidFile

    # A directory the dropped user may write in, outside pytest's 0700 tree.
    run_dir = Path(tempfile.mkdtemp(prefix="archangel-run-"))
    run_dir.chmod(0o777)
    pidfile = run_dir / "svc.pid"
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        status = 99
        try:
            os.dup2(write_end, 2)
            logging.basicConfig(stream=os.fdopen(2, "w", closefd=False), force=True)
            lock = PidFile(pidfile)
            lock.acquire()
            pidfile.chmod(0o000)  # unreadable by path from now on
            if os.geteuid() == 0:  # root reads anything: become nobody, as --user does
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            lock.release()
            status = 0
        finally:
            logging.shutdown()
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as err:
        message = err.read()
    _, wait_status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, message
    assert "no longer holds" not in message
    assert not pidfile.exists(), message
    run_dir.rmdir()


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


# --- readers never make a start fail ----------------------------------------------

STATUS_READER = """
import sys
from archangel.errors import PidFileUnusable
from archangel.service.pidfile import check, send_signal
path, first = sys.argv[1], True
while True:
    for read in (check, lambda path: send_signal(path, 0)):  # `status`, `signal check`
        try:
            read(path)
        except PidFileUnusable:
            pass
    if first:
        print("reading", flush=True)
        first = False
"""


STARTER = """
import logging, sys
from archangel import App, State
from archangel.cli import main

def make():
    app = App("racer", shutdown_timeout=5)
    app.bus.subscribe(State.RUN, app.request_stop)  # up, then down again
    return app

if __name__ == "__main__":
    path, stale, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.CRITICAL)
    statuses = []
    for _ in range(count):
        with open(path, "w") as file:  # a stale pidfile whose PID runs again
            file.write(stale + "\\n")
        run = ["run", "starter:make", f"--pidfile={path}", "--loop=asyncio"]
        statuses.append(main([*run, "--log-level=CRITICAL"]))
    print(" ".join(map(str, statuses)))
"""


def test_status_readers_never_make_a_start_over_a_stale_pidfile_fail(tmp_path: Path) -> None:
    """Many readers of a stale pidfile (its PID reused by a live process) while it is replaced."""
    pidfile = tmp_path / "race.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    (tmp_path / "starter.py").write_text(STARTER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", STATUS_READER, str(pidfile)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        for reader in readers:
            assert reader.stdout is not None
            assert reader.stdout.readline() == "reading\n"
        starts = 200
        starter = subprocess.run(
            [sys.executable, "starter.py", str(pidfile), str(os.getpid()), str(starts)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert starter.returncode == 0, starter.stderr
        assert starter.stdout.split() == ["0"] * starts, starter.stderr
        assert all(reader.poll() is None for reader in readers)  # still reading
    finally:
        for reader in readers:
            reader.kill()
            reader.communicate()
