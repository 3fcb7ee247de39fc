"""Sphinx configuration for cmlp's documentation.

The docs describe the *installed* package: ``src/`` is never put on
``sys.path``, so the tutorial's doctests and the plots run against the
compiled wheel that users get (``pip install ".[docs]"`` first).
"""
import re
from pathlib import Path

from sphinx.util import logging

import cmlp

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# A stale or source-tree import would document something users never run.
if (ROOT / "src") in Path(cmlp.__file__).resolve().parents:
    raise RuntimeError(f"cmlp was imported from the source tree ({cmlp.__file__}); "
                       "install it (pip install '.[docs]') and build from elsewhere")

project = "cmlp"
author = "The cmlp developers"
copyright = "the cmlp developers"
release = cmlp.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",
    "sphinx_copybutton",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = []

# Pages whose content lives outside docs/ and is made by other parts of the
# project. A page is built only when its source exists: no page promises
# numbers or entries that are not there.
OPTIONAL_PAGES = {
    "benchmarks": [ROOT / "benchmarks" / "latest.json", ROOT / "benchmarks" / "latest.md"],
    "changelog": [ROOT / "CHANGELOG.md"],
}
MISSING_PAGES = {page for page, sources in OPTIONAL_PAGES.items()
                 if not all(source.exists() for source in sources)}
exclude_patterns += [f"{page}.*" for page in MISSING_PAGES]


def drop_missing_pages(app, docname, source):
    """Take the entries of missing optional pages out of the index's toctree."""
    if docname == "index":
        source[0] = "\n".join(line for line in source[0].splitlines()
                              if line.strip() not in MISSING_PAGES)


def check_api_reference(app):
    """Every name cmlp exports has an entry in api.rst, and every entry is exported."""
    text = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. \w+:: cmlp\.(\w+)", text, flags=re.MULTILINE))
    exported = set(cmlp.__all__)
    for name in sorted(exported - documented):
        logger.warning("cmlp.%s is exported but not in the API reference", name,
                       location="api")
    for name in sorted(documented - exported):
        logger.warning("the API reference documents cmlp.%s, which cmlp does not export", name,
                       location="api")


def setup(app):
    app.connect("source-read", drop_missing_pages)
    app.connect("builder-inited", check_api_reference)


# -- nitpicky mode: every cross-reference must resolve ----------------------
nitpicky = True
# There is no intersphinx (the build runs offline), so references to other
# projects' objects cannot resolve. These are the external names the
# docstrings mention, and only those; anything else that fails is our bug.
nitpick_ignore = [
    ("py:class", "numpy.dtype"),
    ("py:class", "numpy.ndarray"),
    ("py:func", "numpy.asarray"),
    ("py:func", "numpy.random.default_rng"),
    ("py:class", "torch.nn.Linear"),
    ("py:class", "torch.nn.MSELoss"),
    ("py:class", "torch.nn.BCELoss"),
    ("py:class", "torch.nn.CrossEntropyLoss"),
]

# -- API reference -----------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True    # "np.float64", as written, not "<class ...>"
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False   # autodoc lists the members itself
numpydoc_xref_param_type = False      # types stay text: nothing to link offline

# -- doctests: the docs' numbers are checked against the installed package -----
# The tutorial compares with PyTorch where it is installed (":skipif: torch is None").
doctest_global_setup = """
try:
    import torch
except ImportError:
    torch = None
"""
doctest_test_doctest_blocks = "default"

# -- plots: generated at build time, so they cannot go stale -----------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_working_directory = str(DOCS)   # plot code finds ../benchmarks/ from here
plot_rcparams = {"figure.dpi": 110, "font.size": 10, "savefig.bbox": "tight"}

# -- HTML ---------------------------------------------------------------------
# The copy button copies code without the ">>> " and "... " prompts, and
# without the printed output, so what is copied runs as it is.
copybutton_prompt_text = r">>> |\.\.\. "
copybutton_prompt_is_regexp = True
html_theme = "furo"
html_title = f"cmlp {release}"
html_static_path = []
