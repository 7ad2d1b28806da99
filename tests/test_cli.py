"""The ``archangel`` command line, run as an operator runs it: a subprocess per command.

Each runs the archangel under test (``SRC``), with real pidfiles, real
signals and real services.
"""

from __future__ import annotations

import os
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
for name in ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT"):
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
        "use INT, TERM, QUIT, HUP, USR1, USR2 or check"
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
