"""Sphinx configuration for archangel's documentation."""

from importlib.metadata import version as _version

project = "archangel"
author = "the archangel developers"
copyright = "2026, the archangel developers"
release = _version("archangel")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
