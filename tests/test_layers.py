"""The layering is a fact: every import in ``src/archangel`` points down the plan.

The plan (``../shared/design.md``, "The layers")::

    cli, demo        entry points: nothing imports them (but cli -> demo, __main__ -> cli)
    app              wires everything below
    console          the kernel and errors only (never app or bus)
    web              the kernel, errors and the console's loop bridge (never app or bus)
    service          kernel, bus, errors
    pipes            kernel, bus, errors
    kernel           errors only
    bus              errors only
    errors           nothing

Every import counts, the lazy ones inside functions and those only for type
checking included: each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import archangel

SRC = Path(archangel.__file__).parent

#: Layer -> the layers it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "bus": {"errors"},
    "kernel": {"errors"},
    "pipes": {"errors", "kernel", "bus"},
    "service": {"errors", "kernel", "bus"},
    "console": {"errors", "kernel"},
    "web": {"errors", "kernel", "console"},
    "app": {"errors", "kernel", "bus", "pipes", "service", "console", "web"},
    "__init__": {"errors", "kernel", "bus", "pipes", "service", "console", "app"},
    "demo": {"errors", "kernel", "bus", "pipes", "service", "console", "web", "app"},
    "cli": {"errors", "kernel", "bus", "pipes", "service", "console", "web", "app", "demo"},
    "__main__": {"cli"},
}


def _module_name(root: Path, file: Path) -> str:
    parts = file.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("archangel", *parts))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(root: Path) -> Iterator[tuple[str, int, str]]:
    """(importing module, line, imported archangel module) for every import under ``root``."""
    for file in sorted(root.rglob("*.py")):
        module = _module_name(root, file)
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                # ``from . import x`` imports module x of that package.
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target == "archangel" or target.startswith("archangel."):
                    yield module, node.lineno, target


def violations(root: Path) -> list[str]:
    """Every import under ``root`` that the plan forbids, as readable lines."""
    found = []
    for module, line, target in imports(root):
        source, dest = _layer(module), _layer(target)
        if dest != source and dest not in ALLOWED.get(source, set()):
            found.append(f"{module}:{line} imports {target} ({source} -> {dest})")
    return found


def test_every_import_points_down_the_plan() -> None:
    assert violations(SRC) == []


def test_every_module_is_in_a_known_layer() -> None:
    layers = {_layer(module) for module, _, _ in imports(SRC)}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    edges = {(module, target) for module, _, target in imports(SRC)}
    # app imports the console lazily, inside a method; cli imports demo with "from . import".
    assert ("archangel.app", "archangel.console") in edges
    assert ("archangel.cli", "archangel.demo") in edges
    assert ("archangel.kernel.manager", "archangel.errors") in edges


@pytest.mark.parametrize(
    ("where", "line", "edge"),
    [
        ("kernel/manager.py", "from ..bus import Bus", "kernel -> bus"),
        ("bus/bus.py", "from ..kernel.process import Process", "bus -> kernel"),
        ("console/render.py", "from ..app import App", "console -> app"),
        ("console/render.py", "from .. import bus", "console -> bus"),
        ("web/metrics.py", "from ..app import App", "web -> app"),
        ("web/target.py", "from ..bus.states import State", "web -> bus"),
        ("console/render.py", "from ..web import WebServer", "console -> web"),
        ("pipes/cogs.py", "    from archangel.service import dumps", "pipes -> service"),
        ("service/dumps.py", "from ..cli import main", "service -> cli"),
        ("app.py", "from .demo import main", "app -> demo"),
    ],
)
def test_a_forbidden_import_is_reported(tmp_path: Path, where: str, line: str, edge: str) -> None:
    """The check can fail: the package copied, one forbidden import added."""
    root = tmp_path / "archangel"
    for file in SRC.rglob("*.py"):
        copy = root / file.relative_to(SRC)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(file.read_text())
    target = root / where
    body = "def _added():\n" + line + "\n" if line.startswith(" ") else line + "\n"
    target.write_text(target.read_text() + "\n" + body)
    found = violations(root)
    assert len(found) == 1, found
    assert found[0].startswith(_module_name(root, target)) and f"({edge})" in found[0]
