"""Sphinx configuration for the resnetzoo documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``. The build
never touches the network: cross-references to Python, PyTorch and torchvision
resolve through the small inventories in ``_inventories/`` (made by
``_scripts/make_inventories.py``), and everything generated (the weights table,
the load reports, the command-line help, the anatomy figure) comes from running the
installed package.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# The package from this checkout, even when it is not installed.
sys.path.insert(0, str(DOCS.parent / "src"))
sys.path.insert(0, str(DOCS / "_ext"))

# The build runs real code (load reports, CLI output); it must never reach out.
# huggingface_hub reads HF_HUB_OFFLINE when imported, so set it before anything imports it.
for _flag in ("RESNETZOO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_flag] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

import resnetzoo  # noqa: E402  (after sys.path is set)

# sphinx-autodoc-typehints 3.6 calls an API Sphinx 9 deprecated; nothing to fix on our side,
# and the message would repeat for every docstring.
warnings.filterwarnings(
    "ignore", message=r".*set_application.*", module="sphinx_autodoc_typehints.*"
)

project = "resnetzoo"
author = "resnetzoo developers"
copyright = "resnetzoo developers"
release = resnetzoo.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # before sphinx_autodoc_typehints, which reads its output
    "sphinx_autodoc_typehints",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_parser",
    "zoo_api",
    "zoo_tables",
    "zoo_reports",
    "zoo_cli",
    "zoo_figures",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Files starting with "_" are fragments that pages {include} (e.g. a generated benchmark table).
exclude_patterns = [
    "_build",
    "_ext",
    "_scripts",
    "_inventories",
    "_*.md",
    "**/_*.md",
    "README.md",
    ".gitignore",
]
templates_path: list[str] = []

# -- MyST ---------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

# -- autodoc / napoleon / type hints ------------------------------------------------
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # show `nn.BatchNorm2d`, not "<class 'torch.nn...'>"
autodoc_inherit_docstrings = False  # no nn.Module.forward boilerplate on every block
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = ["Shape"]  # the shape notes of modules and blocks
typehints_fully_qualified = False
always_document_param_types = False
typehints_document_rtype = True
typehints_defaults = None

# Every reference is checked; zoo_api decides which unresolved ones are errors (those into
# resnetzoo, torch, torchvision and the standard library) and resolves other import paths.
nitpicky = True

# -- intersphinx: local inventories, real URLs ---------------------------------------
# Each entry is (base URL the links point to, local inventory file): no download.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(DOCS / "_inventories" / "python.inv")),
    "torch": ("https://docs.pytorch.org/docs/stable/", str(DOCS / "_inventories" / "torch.inv")),
    "torchvision": (
        "https://docs.pytorch.org/vision/stable/",
        str(DOCS / "_inventories" / "torchvision.inv"),
    ),
}
intersphinx_disabled_reftypes = ["std:doc"]

# -- HTML ---------------------------------------------------------------------------
html_theme = "furo"
html_title = f"resnetzoo {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}
pygments_style = "friendly"
pygments_dark_style = "monokai"
