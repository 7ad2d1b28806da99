"""Logger names follow the modules: an operator filters logs by a name that exists.

A module logs under ``__name__``, or, for a private helper module, under
the public module it serves (``pipes/_tail.py`` logs as
``archangel.pipes.supplies``), or under a child of either
(``archangel.console.session.telnet``). A name such as
``archangel.pipeline``, a module that no longer exists, cannot be found by
reading the tree.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

import archangel

SRC = Path(archangel.__file__).parent


def literal_logger_names() -> Iterator[tuple[str, str]]:
    """(file, name) for every ``logging.getLogger("...")`` / ``logging.Logger("...")``."""
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"getLogger", "Logger"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                yield str(path.relative_to(SRC)), node.args[0].value


def names_a_module(name: str) -> bool:
    """Whether ``name`` is an archangel module, or a child logger of one."""
    parts = name.split(".")
    if parts[0] != "archangel":
        return False
    for end in range(len(parts), 1, -1):
        try:
            if importlib.util.find_spec(".".join(parts[:end])) is not None:
                return True
        except ModuleNotFoundError:  # a child of a module that is no package
            continue
    return False


def test_the_walk_finds_the_literal_names() -> None:
    # Not vacuous: the private modules do name their loggers literally.
    names = dict(literal_logger_names())
    assert names["pipes/_tail.py"] == "archangel.pipes.supplies"


@pytest.mark.parametrize(("path", "name"), list(literal_logger_names()))
def test_a_literal_logger_name_is_a_module(path: str, name: str) -> None:
    assert names_a_module(name), f"{path} logs as {name!r}, which is no archangel module"


def test_an_old_path_is_refused() -> None:
    assert not names_a_module("archangel.pipeline")
    assert not names_a_module("archangel.supplies")
    assert names_a_module("archangel.console.session.telnet")
