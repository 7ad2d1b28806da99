"""Sphinx configuration for archangel's documentation."""

import sys
from pathlib import Path

import archangel

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "archangel"
author = "the archangel developers"
copyright = "2026, the archangel developers"
release = archangel.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "stategraph",
    "publicapi",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Every cross-reference must resolve (``sphinx-build -n``, and here for any build).
nitpicky = True
# The build has no network: the inventories are kept in docs/_inventories/
# (Python 3.11's from Debian's python3.11-doc, aiohttp 3.8's from
# python-aiohttp-doc); the URLs are where the links point.
# Third-party names in signatures that no inventory here files.
nitpick_ignore = [
    ("py:class", "telnetlib3.TelnetServer"),
    ("py:class", "telnetlib3.server.TelnetServer"),
    ("py:class", "WebSocketServer"),  # websockets.asyncio.server.Server, imported for typing
    # prometheus_client's documentation is not Sphinx: no inventory exists.
    ("py:class", "prometheus_client.metrics_core.Metric"),
    ("py:class", "prometheus_client.metrics.Histogram"),
    ("py:class", "prometheus_client.registry.CollectorRegistry"),
]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3.11/", "_inventories/python.inv"),
    "aiohttp": ("https://docs.aiohttp.org/en/stable/", "_inventories/aiohttp.inv"),
}
html_theme = "alabaster"
exclude_patterns = ["_build"]
