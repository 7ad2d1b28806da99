"""Module constants that are not exported are private by name (issue 11)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["archangel.kernel.process", "archangel.kernel.adopt"])
def test_the_process_state_shorthands_are_private(module: str) -> None:
    mod = importlib.import_module(module)
    for name in ("NEW", "RUNNING", "EXITED"):
        assert not hasattr(mod, name), f"{module}.{name} looks public but is not in __all__"
    assert "_EXITED" in vars(mod) and "_NEW" in vars(mod)


def _modules() -> list[str]:
    import pkgutil

    import archangel

    found = pkgutil.walk_packages(archangel.__path__, "archangel.")
    return sorted(info.name for info in found if info.name != "archangel.__main__")


@pytest.mark.parametrize("module", _modules())
def test_uppercase_module_constants_are_exported_or_private(module: str) -> None:
    # A module-level UPPERCASE name reads as public: it is in __all__ (and
    # documented), or it starts with an underscore. Type variables are not
    # constants (``S``, ``T``) and are left out.
    import ast
    import inspect
    from typing import TypeVar

    mod = importlib.import_module(module)
    exported = set(getattr(mod, "__all__", ()))
    tree = ast.parse(inspect.getsource(mod))
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            elts = target.elts if isinstance(target, ast.Tuple) else [target]
            names += [e.id for e in elts if isinstance(e, ast.Name)]
    public_looking = [
        n
        for n in names
        if n.isupper() and not n.startswith("_") and not isinstance(getattr(mod, n), TypeVar)
    ]
    assert [n for n in public_looking if n not in exported] == [], module
