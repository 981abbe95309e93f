"""Sphinx configuration of batchtunnel's documentation (MyST Markdown, traits from their help strings).

Built in CI with warnings as errors: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import batchtunnel

project = "batchtunnel"
author = "the batchtunnel developers"
copyright = "2026, the batchtunnel developers"
release = version = batchtunnel.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "autodoc_traits"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_member_order = "bysource"
html_theme = "alabaster"
html_title = f"batchtunnel {release}"
