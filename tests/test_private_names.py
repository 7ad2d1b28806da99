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
