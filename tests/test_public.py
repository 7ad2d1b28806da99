"""The public face: every exported name resolves, errors are builtin-flavoured."""

from __future__ import annotations

import importlib

import pytest

import archangel
from archangel import errors

MODULES = [
    "archangel.kernel.adopt",
    "archangel.app",
    "archangel.service.asgi",
    "archangel.bus.bus",
    "archangel.bus.channels",
    "archangel.cli",
    "archangel.pipes.cogs",
    "archangel.console",
    "archangel.console.client",
    "archangel.service.daemon",
    "archangel.errors",
    "archangel.service.frameworks",
    "archangel.pipes.line_server",
    "archangel.kernel.manager",
    "archangel.service.pidfile",
    "archangel.pipes.pipeline",
    "archangel.kernel.process",
    "archangel.kernel.records",
    "archangel.service.signals",
    "archangel.service.dumps",
    "archangel.bus.states",
    "archangel.service.streams",
    "archangel.kernel.supervisor",
    "archangel.pipes.supplies",
    "archangel.service.systemd",
    "archangel.kernel.task",
    "archangel.bus.timers",
    "archangel.pipes.train",
    "archangel.pipes.watch",
]


def test_every_exported_name_resolves_and_all_is_sorted() -> None:
    for name in archangel.__all__:
        assert getattr(archangel, name) is not None, name
    assert archangel.__all__ == sorted(archangel.__all__, key=lambda n: (not n.isupper(), n))
    assert archangel.__version__


@pytest.mark.parametrize("module", MODULES)
def test_module_all_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__doc__, f"{module} has no module docstring"
    for name in getattr(mod, "__all__", ()):
        assert hasattr(mod, name), f"{module}.{name}"


def test_design_names_are_exported() -> None:
    for name in (
        "Process",
        "ProcessState",
        "ExitReason",
        "ProcessInfo",
        "ProcessManager",
        "Bus",
        "State",
        "STOP",
        "ChannelFailures",
        "InvalidTransition",
        "ArchangelError",
        "App",
        "Cog",
        "Pipeline",
    ):
        assert name in archangel.__all__, name


def test_submodule_helpers_named_by_the_design() -> None:
    from archangel.bus import states
    from archangel.pipes import cogs, supplies, watch
    from archangel.service import daemon

    assert callable(cogs.itemsetter)
    assert callable(cogs.itemgetter)
    assert callable(supplies.tail)
    assert callable(supplies.lines)
    assert callable(supplies.every)
    assert watch.Watcher
    assert daemon.PidFile
    assert states.StateGraph


def test_errors_subclass_the_base_and_a_builtin() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ArchangelError)
        if cls is not errors.ArchangelError:
            builtin_bases = [b for b in cls.__mro__ if b.__module__ == "builtins"]
            assert any(b not in (Exception, BaseException, object) for b in builtin_bases), name
