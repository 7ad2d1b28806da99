"""The ``archangel`` command line, run as an operator runs it: a subprocess per command.

Each runs the archangel under test (``SRC``), with real pidfiles, real
signals and real services.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import archangel

ROOT = Path(__file__).resolve().parent.parent
#: Where the archangel under test comes from, for the subprocesses that run it.
SRC = str(Path(archangel.__file__).resolve().parent.parent)


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archangel", *args],
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(cwd or ROOT)]), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- signal names -------------------------------------------------------------------------

#: Holds a pidfile's lock as a service does, and prints each signal it gets.
HOLDER = """
import fcntl, os, signal, sys
path = sys.argv[1]
for name in ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT", "SIGALRM"):
    signal.signal(getattr(signal, name), lambda n, f: print(signal.Signals(n).name, flush=True))
with open(path, "w") as file:
    file.write(f"{os.getpid()}\\n")
    file.flush()
    fcntl.flock(file, fcntl.LOCK_EX)
    print("locked", flush=True)
    while True:
        signal.pause()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    pidfile = tmp_path / "svc.pid"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(pidfile)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"
    yield pidfile, proc
    proc.kill()
    proc.communicate()


@pytest.mark.parametrize(
    ("spelling", "received"),
    [
        ("TERM", "SIGTERM"),
        ("SIGTERM", "SIGTERM"),
        ("term", "SIGTERM"),
        ("sigterm", "SIGTERM"),
        ("SigTerm", "SIGTERM"),
        ("Hup", "SIGHUP"),
        ("SIGUSR2", "SIGUSR2"),
        ("usr1", "SIGUSR1"),
        ("alrm", "SIGALRM"),
    ],
)
def test_signal_takes_any_spelling_of_a_signal_name(
    spelling: str, received: str, holder: tuple[Path, subprocess.Popen[str]]
) -> None:
    pidfile, proc = holder
    done = cli("signal", f"--pidfile={pidfile}", spelling)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sent {received} to pid {proc.pid}\n"
    assert proc.stdout is not None
    assert proc.stdout.readline() == received + "\n"


@pytest.mark.parametrize("name", ["CHECK", "check"])
def test_signal_check_only_tests_that_it_runs(
    name: str, holder: tuple[Path, subprocess.Popen[str]]
) -> None:
    pidfile, proc = holder
    done = cli("signal", f"--pidfile={pidfile}", name)
    assert (done.returncode, done.stdout) == (0, f"running: pid {proc.pid}\n")


@pytest.mark.parametrize("name", ["KILL", "sigkill", "SIGCHECK", "9", "TERMX", ""])
def test_an_unknown_signal_name_is_refused_with_the_valid_ones(
    name: str, holder: tuple[Path, subprocess.Popen[str]]
) -> None:
    pidfile, _ = holder
    done = cli("signal", f"--pidfile={pidfile}", name)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last == (
        f"archangel signal: error: argument SIGNAL: unknown signal {name!r}: "
        "use INT, TERM, QUIT, HUP, USR1, USR2, ALRM, TTIN, TTOU, URG or check"
    )


# -- --pidfile "" -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("status",), ("signal", "hup"), ("run", "examples.service:app")]
)
@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_pidfile_path_is_a_usage_error(command: tuple[str, ...], path: str) -> None:
    done = cli(*command, f"--pidfile={path}")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"archangel {command[0]}: error: argument --pidfile: the path is empty: "
        "give a file, e.g. /run/app.pid"
    )


# -- run --umask -----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", ["999", "8", "7777", "1000", "-1", "abc", "0x22", "", "02 2"])
def test_run_refuses_a_bad_umask_in_one_line_with_status_2(umask: str) -> None:
    done = cli("run", "examples.service:app", f"--umask={umask}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"archangel run: error: argument --umask: {umask!r} is not a umask: "
        "give octal digits 000-777, e.g. 022"
    )


UMASK_APP = """
import os
from archangel import App, State

app = App("umask", shutdown_timeout=2)

@app.bus.on(State.RUN)
def report():
    mask = os.umask(0)
    os.umask(mask)
    print(f"umask {mask:03o}", flush=True)
    app.request_stop()
"""


@pytest.mark.parametrize(("given", "octal"), [("027", "027"), ("0o077", "077"), ("7", "007")])
def test_run_applies_a_good_umask(given: str, octal: str, tmp_path: Path) -> None:
    (tmp_path / "umask_app.py").write_text(UMASK_APP)
    done = cli("run", "umask_app:app", f"--umask={given}", "--loop=asyncio", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"umask {octal}\n" in done.stdout


# -- demo --help -----------------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["80", "120", "60"])
def test_demo_help_keeps_its_examples_and_describes_every_option(columns: str) -> None:
    done = cli("demo", "--help", COLUMNS=columns)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    lines = text.splitlines()
    assert lines[0].startswith("usage: archangel demo")
    assert "::" not in text  # no reStructuredText markup
    # The examples are lines of their own, as typed, never reflowed into the prose.
    assert "  printf 'hello\\n' | nc -q1 127.0.0.1 8888   a connection comes and goes" in lines
    assert "  archangel console 127.0.0.1:8023           ps, info 1, kill 1, pipes, help" in lines
    options = " ".join(text.split("options:", 1)[1].split())
    for described in (
        "--port PORT echo port (default 8888; 0: any)",
        "--console-port PORT console port (default 8023; 0: any)",
        "--interval SECONDS seconds between two printouts of the process table (default 5)",
        "--seconds SECONDS stop by itself after this long (default: run until Ctrl-C)",
        "--loop {uvloop,asyncio} event loop (default uvloop)",
    ):
        assert described in options
    width = int(columns)
    assert all(len(line) <= max(width, 80) for line in lines)


# -- run: the exit statuses, case by case ------------------------------------------------

RUN_APPS = """
import asyncio
from archangel import App, State

def ready(app):
    app.bus.subscribe(State.RUN, lambda: print("running", flush=True))
    return app

def clean():
    return ready(App("clean", shutdown_timeout=2))

def stuck():  # a STOP subscriber that never returns
    app = ready(App("stuck", shutdown_timeout=0.5))

    async def never():
        await asyncio.Event().wait()

    app.bus.subscribe(State.STOP, never)
    return app

def badstop():  # a STOP subscriber that raises
    app = ready(App("badstop", shutdown_timeout=2))

    def fail():
        raise RuntimeError("flush failed")

    app.bus.subscribe(State.STOP, fail)
    return app

def broken():  # a start that fails
    app = App("broken")

    def fail():
        raise OSError("the backend is down")

    app.bus.subscribe(State.START, fail)
    return app
"""


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    (tmp_path / "run_apps.py").write_text(RUN_APPS)
    return tmp_path


def run_until_running(apps: Path, target: str, *signals: int, args: tuple[str, ...] = ()) -> int:
    """Run ``target`` in the foreground, send ``signals`` once it runs; its exit status."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "archangel", "run", target, "--loop=asyncio", *args],
        cwd=apps,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(apps)])},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "running\n"
        for signum in signals:
            proc.send_signal(signum)
        return proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_run_exits_0_after_a_clean_stop(signum: int, apps: Path) -> None:
    pidfile = apps / "clean.pid"
    status = run_until_running(apps, "run_apps:clean", signum, args=(f"--pidfile={pidfile}",))
    assert status == 0
    assert not pidfile.exists()


def test_run_exits_3_after_a_stop_forced_at_the_shutdown_timeout(apps: Path) -> None:
    assert run_until_running(apps, "run_apps:stuck", signal.SIGTERM) == 3


def test_run_exits_1_when_the_start_fails(apps: Path) -> None:
    done = cli("run", "run_apps:broken", "--loop=asyncio", cwd=apps)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].endswith("broken could not start: the backend is down")
    done = cli("run", "run_apps:clean", "--user=nosuchuser", "--loop=asyncio", cwd=apps)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].endswith(
        "clean could not start: unknown user 'nosuchuser'"
    )


def test_run_exits_1_when_a_step_of_the_stop_fails(apps: Path) -> None:
    assert run_until_running(apps, "run_apps:badstop", signal.SIGTERM) == 1


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
@pytest.mark.parametrize("kind", ["directory", "fifo", "missing directory"])
def test_run_refuses_an_unusable_pidfile_in_one_line_with_status_6(
    kind: str, daemon: bool, apps: Path
) -> None:
    pidfile = apps / "svc.pid"
    if kind == "directory":
        pidfile.mkdir()
        said = f"pidfile {pidfile} is a directory"
    elif kind == "fifo":
        os.mkfifo(pidfile)
        said = f"pidfile {pidfile} is not a regular file"
    else:
        pidfile = apps / "nowhere" / "svc.pid"
        said = f"cannot create pidfile {pidfile}: directory {pidfile.parent} does not exist"
    args = ["run", "run_apps:clean", f"--pidfile={pidfile}", "--loop=asyncio"]
    done = cli(*args, *(["--daemon"] if daemon else []), cwd=apps)
    assert done.returncode == 6
    assert done.stderr == f"archangel run: {said}\n"  # one line, before anything started
    assert done.stdout == ""


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_run_refuses_a_pidfile_held_by_a_live_instance_with_status_1(
    daemon: bool, apps: Path
) -> None:
    pidfile = apps / "svc.pid"
    first = subprocess.Popen(
        [sys.executable, "-m", "archangel", "run", "run_apps:clean", f"--pidfile={pidfile}"],
        cwd=apps,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(apps)])},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline() == "running\n"
        args = ["run", "run_apps:clean", f"--pidfile={pidfile}", "--loop=asyncio"]
        done = cli(*args, *(["--daemon"] if daemon else []), cwd=apps)
        assert done.returncode == 1
        assert done.stderr == (
            f"archangel run: clean could not start: pidfile {pidfile} is held by running "
            f"process {first.pid}\n"
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
        first.communicate()


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("--workdir=/nonexistent", "cannot change directory to /nonexistent: No such file"),
        ("--log-file=/nonexistent/svc.log", "cannot open log file /nonexistent/svc.log: No such"),
    ],
)
def test_run_reports_a_bad_workdir_or_log_file_in_one_line_with_status_1(
    option: str, said: str, apps: Path
) -> None:
    done = cli("run", "run_apps:clean", option, "--loop=asyncio", cwd=apps)
    assert done.returncode == 1
    assert done.stderr.startswith(f"archangel run: {said}")
    assert len(done.stderr.splitlines()) == 1


def test_run_refuses_an_unknown_log_level_or_target_with_status_2(apps: Path) -> None:
    done = cli("run", "run_apps:clean", "--log-level=LOUD", cwd=apps)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "archangel run: error: argument --log-level: unknown level 'LOUD': "
        "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )
    done = cli("run", "run_apps:nothing", cwd=apps)
    assert done.returncode == 2
    assert done.stderr == "archangel run: module 'run_apps' has no 'nothing'\n"
