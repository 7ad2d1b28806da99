"""Developer tasks: ``nox`` runs lint, typecheck, tests (both loops) and docs."""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py", "docs")
    session.run(
        "ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "noxfile.py"
    )


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library, with the frameworks it adopts installed.

    The framework glue imports aiohttp, uvicorn and websockets lazily; without
    them mypy cannot check those calls (``import-not-found``), so this session
    installs the test extra, which carries them.
    """
    session.install("-e", ".[test]", "mypy>=1.11", "types-aiofiles")
    session.run("mypy", "--strict")


#: Tools the tests drive for real, as operators use them: command -> Debian package.
DEBIAN_TOOLS = {
    "chromium": "chromium",
    "logrotate": "logrotate",
    "nc": "netcat-openbsd",
    "socat": "socat",
    "telnet": "telnet",
}


def _debian_tools(session: nox.Session) -> None:
    """Install the Debian packages of the tools the tests run, if any is missing."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = sorted(
        {pkg for tool, pkg in DEBIAN_TOOLS.items() if not shutil.which(tool, path=path)}
    )
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    session.log(f"installing the Debian packages the tests drive: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite, every async test on the default loop and on uvloop."""
    _debian_tools(session)
    session.install("-e", ".[test]")
    # A test that fails on uvloop while leaking a transport can deadlock the
    # interpreter's teardown (a ResourceWarning raised as an error inside
    # uvloop): bound the run so such a failure ends CI in minutes, not hours.
    session.run("timeout", "--kill-after=30", "900", "pytest", *session.posargs, external=True)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Sphinx, warnings as errors, every cross-reference resolved (-n).

    The web extra is installed: autodoc imports archangel.web.
    """
    session.install("-e", ".[web]", "sphinx>=7")
    session.run(
        "sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks; each prints its ratio against a baseline of the same run and its target.

    ``nox -s bench`` runs them all (several minutes); ``nox -s bench -- echo kernel``
    runs the ones named; ``--quick`` (``nox -s bench -- --quick [NAME...]``) runs each
    with its smoke-run arguments (``QUICK``). The figures mean what
    ``benchmarks/_harness.py`` says; a missed target is printed, not a failure.
    aiostream and watchfiles are installed here only, as comparison points; the
    web extra for ``observe`` (the web endpoints under load).
    """
    session.install("-e", ".[web]", "aiostream", "watchfiles")
    quick = "--quick" in session.posargs
    names = [name for name in session.posargs if name != "--quick"] or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        session.error(f"no benchmark named {', '.join(unknown)}; the benchmarks: {BENCHMARKS}")
    for name in names:
        session.run("python", f"benchmarks/{name}.py", *(QUICK[name] if quick else []))


BENCHMARKS = [
    "kernel",
    "echo",
    "bus",
    "shutdown",
    "pipeline",
    "tail_latency",
    "console_ps",
    "console_memory",
    "workers",
    "observe",
]

#: Each benchmark's smoke-run arguments (``nox -s bench -- --quick``).
QUICK = {
    "workers": ["--seconds", "1", "--rounds", "1"],
    "observe": ["--quick"],
    "kernel": ["--rounds", "3", "--n", "20000"],
    "echo": ["--quick"],
    "bus": ["--rounds", "5"],
    "shutdown": ["--conns", "1000", "--rounds", "1"],
    "pipeline": ["--quick"],
    "tail_latency": ["--quick"],
    "console_ps": ["10000", "--rounds", "2"],
    "console_memory": ["--count", "5000", "--flood", "4", "--rounds", "2"],
}
