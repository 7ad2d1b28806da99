"""Developer tasks: ``nox`` runs lint, typecheck, tests (both loops) and docs."""

from __future__ import annotations

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
    """mypy --strict on the library."""
    session.install("-e", ".", "mypy>=1.11", "types-aiofiles")
    session.run("mypy", "--strict")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite, every async test on the default loop and on uvloop."""
    session.install("-e", ".[test]")
    # A test that fails on uvloop while leaking a transport can deadlock the
    # interpreter's teardown (a ResourceWarning raised as an error inside
    # uvloop): bound the run so such a failure ends CI in minutes, not hours.
    session.run("timeout", "--kill-after=30", "900", "pytest", *session.posargs, external=True)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Sphinx, warnings as errors."""
    session.install("-e", ".", "sphinx>=7")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks; each prints its ratio against the raw baseline and its target.

    ``nox -s bench`` runs them all (several minutes); ``nox -s bench -- echo kernel``
    runs the ones named. aiostream and watchfiles are installed here only, as
    comparison points.
    """
    session.install("-e", ".", "aiostream", "watchfiles")
    names = session.posargs or BENCHMARKS
    for name in names:
        session.run("python", f"benchmarks/{name}.py")


BENCHMARKS = ["kernel", "echo", "bus", "shutdown", "pipeline", "tail_latency", "console_ps"]
