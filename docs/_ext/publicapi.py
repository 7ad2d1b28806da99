"""Sphinx directive ``.. publicmodule:: MODULE``: a module, its names at their public paths.

Users import ``archangel.Process`` and ``archangel.pipes.tail``, not
``archangel.kernel.process.Process``; the reference should say so, and a link
written either way should land on the same entry. The directive renders the
module's docstring (``automodule`` without members), then each name the module
defines and exports (its ``__all__``, less those it re-exports from another
public module: they are documented there) at its
public path: the shortest package on the way down (``archangel``, then the
layer package) whose ``__all__`` exports the same object, else the module
itself.

- Classes go through ``autoclass``, which records the module path as the
  canonical name, so ``archangel.kernel.process.Process`` (as type hints spell
  it) resolves to the entry of ``archangel.Process``.
- Functions go through ``autofunction``, at their public path.
- Data is written as ``py:data`` with its ``#:`` comment read from the module
  that defines it (``autodata`` at a package path would look for the comment in
  the package), and the module path as its canonical name.

Options: ``:members: A, B`` (only those), ``:exclude-members: A, B``.

The extension also resolves, where Sphinx finds no entry (``missing-reference``):

- names spelled the way the code sees them: relative to the module that
  defines a docstring (``:class:`Watcher``` in ``archangel.pipes.watch``) or
  by module path (``archangel.pipes.supplies.tail``), to the public entry;
  an inherited attribute to the entry on the class that defines it;
- standard-library (and aiohttp) names spelled through private modules, as type hints do
  (``asyncio.events.AbstractEventLoop`` is filed as ``asyncio.AbstractEventLoop``);
- names with no entry by design, shown as plain text: type variables, and
  what a module keeps to itself (private, or left out of its ``__all__``:
  ``_Record``, the ``StrPath`` alias).

Anything else stays a warning, and ``-W -n`` fails on it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any, ParamSpec, TypeVar

from docutils import nodes
from docutils.nodes import Element
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: Names type hints give standard-library objects (their defining, private
#: module) -> the name the Python documentation files them under.
STDLIB_ALIASES = {
    "_asyncio.Future": "asyncio.Future",
    "_asyncio.Task": "asyncio.Task",
    "asyncio.base_events.Server": "asyncio.Server",
    "asyncio.events.AbstractEventLoop": "asyncio.AbstractEventLoop",
    "asyncio.events.Handle": "asyncio.Handle",
    "asyncio.events.TimerHandle": "asyncio.TimerHandle",
    "asyncio.protocols.BaseProtocol": "asyncio.BaseProtocol",
    "asyncio.protocols.BufferedProtocol": "asyncio.BufferedProtocol",
    "asyncio.protocols.Protocol": "asyncio.Protocol",
    "asyncio.streams.StreamReader": "asyncio.StreamReader",
    "asyncio.streams.StreamWriter": "asyncio.StreamWriter",
    "asyncio.transports.BaseTransport": "asyncio.BaseTransport",
    # aiohttp's, the same way: its documentation files them under aiohttp.web.
    "aiohttp.web_app.Application": "aiohttp.web.Application",
    "aiohttp.web_request.Request": "aiohttp.web.Request",
    "aiohttp.web_response.Response": "aiohttp.web.Response",
    "aiohttp.web_response.StreamResponse": "aiohttp.web.StreamResponse",
    "asyncio.transports.Transport": "asyncio.Transport",
    "asyncio.trsock.TransportSocket": "socket.socket",
}

#: Standard-library types the Python documentation files as data, not classes.
STDLIB_DATA = {"types.FrameType", "types.TracebackType", "types.CodeType"}


def public_path(module: str, name: str, obj: Any) -> str:
    """The shortest package above ``module`` exporting ``obj`` as ``name``, else ``module``.

    A package whose submodule has the same name (``archangel.pipes.line_server``
    is a module and the function the package exports) is passed over: the two
    would share one entry.
    """
    parts = module.split(".")
    for depth in range(1, len(parts)):
        package = importlib.import_module(".".join(parts[:depth]))
        exported = name in getattr(package, "__all__", ())
        clash = f"{package.__name__}.{name}" in sys.modules
        if exported and not clash and getattr(package, name, None) is obj:
            return package.__name__
    return module


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


class PublicModule(SphinxDirective):
    """``.. publicmodule:: MODULE``: see the module docstring."""

    required_arguments = 1
    option_spec = {
        "members": directives.unchanged,
        "exclude-members": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        modname = self.arguments[0]
        module = importlib.import_module(modname)
        analyzer = ModuleAnalyzer.for_module(modname)
        analyzer.analyze()
        comments = analyzer.find_attr_docs()
        names = _names(self.options.get("members")) or list(module.__all__)
        excluded = set(_names(self.options.get("exclude-members")))
        lines = [f".. automodule:: {modname}", "   :no-members:", ""]
        for name in names:
            if name in excluded:
                continue
            obj = getattr(module, name)
            home = getattr(obj, "__module__", modname)
            # Names from a private module are documented where they are exported.
            defined_here = home == modname or home.rpartition(".")[2].startswith("_")
            if inspect.isclass(obj) and defined_here:
                lines += [f".. autoclass:: {public_path(modname, name, obj)}.{name}", ""]
            elif inspect.isfunction(obj) and defined_here:
                lines += [f".. autofunction:: {public_path(modname, name, obj)}.{name}", ""]
            elif ("", name) in comments:
                lines += [
                    f".. py:data:: {name}",
                    f"   :module: {public_path(modname, name, obj)}",
                ]
                if len(repr(obj)) <= 60:  # a table is better read in its module's docs
                    lines.append(f"   :value: {obj!r}")
                if public_path(modname, name, obj) != modname:
                    lines.append(f"   :canonical: {modname}.{name}")
                lines.append("")
                lines += ["   " + line for line in comments[("", name)]]
                lines.append("")
            # else: re-exported from the module that defines it, documented there.
        # Later text on the page reads names relative to the module again.
        lines += [f".. py:currentmodule:: {modname}", ""]
        content = StringList(lines, source=f"<publicmodule {modname}>")
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, content, container)
        return container.children


def _missing_reference(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve private stdlib spellings; render type variables as plain text."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if target in STDLIB_DATA:
        node["reftype"] = "data"
        return None
    if target in STDLIB_ALIASES:
        # Handlers run by priority: intersphinx's, next, looks up the public name.
        node["reftarget"] = STDLIB_ALIASES[target]
        return None
    module = node.get("py:module") or ""
    klass = node.get("py:class") or ""
    candidates = [target] if target.startswith("archangel") else []
    if module:
        candidates += [f"{module}.{klass}.{target}"] if klass else []
        candidates.append(f"{module}.{target}")
        # A docstring's names are the defining module's, not the public path's.
        found = _lookup(f"{module}.{klass.partition('.')[0]}") if klass else None
        home = getattr(found[0], "__module__", None) if found else None
        if isinstance(home, str) and home != module:
            candidates += [f"{home}.{klass}.{target}", f"{home}.{target}"]  # klass is set
    for candidate in candidates:
        found = _lookup(candidate)
        if found is None:
            continue
        obj, public, exported = found
        if not exported or isinstance(obj, TypeVar | ParamSpec):
            # Type variables, aliases and helpers a module keeps to itself
            # (private, or left out of its ``__all__``) have no entry.
            return contnode
        resolved = env.domains["py"].resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
        )
        if resolved is not None:
            return resolved
    return None


def _lookup(dotted: str) -> tuple[Any, str, bool] | None:
    """What ``dotted`` names: the object, its documented name, whether it is exported.

    The documented name is the public path of the module-level object it
    starts from; an attribute a class inherits is looked for on the class that
    defines it.
    """
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            head: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        break
    else:
        return None
    attrs = parts[split:]
    if not all(attrs):
        return None
    try:
        first = getattr(head, attrs[0])
    except AttributeError:
        return None
    obj, rest = first, attrs[1:]
    if rest and inspect.isclass(first):
        owner = next((c for c in first.__mro__ if rest[0] in c.__dict__), first)
        first, attrs = owner, [owner.__name__, *rest]
    for i, attr in enumerate(rest):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            # An instance attribute (set in ``__init__``) is not on the class.
            if i < len(rest) - 1 or not inspect.isclass(obj):
                return None
            obj = None
    home = getattr(first, "__module__", None)
    if not isinstance(home, str) or not home.startswith("archangel"):
        home = head.__name__
    defining = importlib.import_module(home)
    exported = attrs[0] in getattr(defining, "__all__", ()) or attrs[0] in getattr(
        head, "__all__", ()
    )
    return obj, ".".join([public_path(home, attrs[0], first), *attrs]), exported


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.add_directive("publicmodule", PublicModule)
    # Before intersphinx's handler (priority 500), which then sees the public name.
    app.connect("missing-reference", _missing_reference, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
