"""The public face: every exported name resolves, errors are builtin-flavoured."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import archangel
from archangel import errors


def _modules() -> list[str]:
    """Every module of the package, found by walking it (private ones included)."""
    found = pkgutil.walk_packages(archangel.__path__, "archangel.")
    # __main__ runs the command line when imported: it is the one module left out.
    return sorted(info.name for info in found if info.name != "archangel.__main__")


MODULES = _modules()


def test_discovery_finds_every_layer() -> None:
    layers = {name.split(".")[1] for name in MODULES}
    assert {"kernel", "bus", "pipes", "service", "console", "web", "errors", "app"} <= layers
    assert "archangel.console.session" in MODULES  # a module inside a layer


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


def test_layer_packages_export_what_the_design_names() -> None:
    from archangel.bus import StateGraph
    from archangel.console import Console
    from archangel.pipes import Watcher, every, itemgetter, itemsetter, lines, tail
    from archangel.service import PidFile

    for helper in (itemsetter, itemgetter, tail, lines, every):
        assert callable(helper)
    assert Watcher and PidFile and StateGraph and Console


@pytest.mark.parametrize("package", ["kernel", "bus", "pipes", "service", "console"])
def test_layer_all_is_sorted_and_documented(package: str) -> None:
    mod = importlib.import_module(f"archangel.{package}")
    names = list(mod.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n)), package
    for name in names:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            assert obj.__doc__, f"archangel.{package}.{name} has no docstring"


def test_errors_subclass_the_base_and_a_builtin() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ArchangelError)
        if cls is not errors.ArchangelError:
            builtin_bases = [b for b in cls.__mro__ if b.__module__ == "builtins"]
            assert any(b not in (Exception, BaseException, object) for b in builtin_bases), name
