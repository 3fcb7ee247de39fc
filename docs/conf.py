"""Sphinx configuration for cmlp's documentation.

The docs describe the *installed* package: ``src/`` is never put on
``sys.path``, so the tutorial's doctests and the plots run against the
compiled wheel that users get (``pip install . && pip install --group docs`` first).
"""
import importlib
import re
import sys
from pathlib import Path

from sphinx.util import logging

import cmlp

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# A stale or source-tree import would document something users never run.
if (ROOT / "src") in Path(cmlp.__file__).resolve().parents:
    raise RuntimeError(f"cmlp was imported from the source tree ({cmlp.__file__}); "
                       "install it (pip install . && pip install --group docs) and build from elsewhere")

# The docs' own extensions (docs/_ext): the benchmarks page's tables.
sys.path.insert(0, str(DOCS / "_ext"))

project = "cmlp"
author = "The cmlp developers"
copyright = "the cmlp developers"
release = cmlp.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    # MathJax from a PyPI package, copied into _static: the maths renders
    # with no internet access (and no CDN is asked for the pages).
    "sphinx-mathjax-offline",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",
    "sphinx_copybutton",
    "benchmark_tables",
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


# Public modules: each exports __all__, and each name there is in api.rst.
PUBLIC_MODULES = ["cmlp", "cmlp.training", "cmlp.io", "cmlp.sklearn", "cmlp.plot"]


def check_api_reference(app):
    """Every name cmlp exports has an entry in api.rst, and every entry is exported."""
    text = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. (?:auto)?(?:class|function|exception|data):: (cmlp\.[\w.]+)",
                                text, flags=re.MULTILINE))
    # A name re-exported by cmlp is documented once, as cmlp.<name>.
    exported = {f"cmlp.{name}" for name in cmlp.__all__}
    for module_name in PUBLIC_MODULES[1:]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            logger.warning("cannot import %s for the API reference: %s", module_name, error,
                           location="api")
            continue
        exported |= {f"{module_name}.{name}" for name in module.__all__
                     if getattr(cmlp, name, None) is not getattr(module, name)}
    for name in sorted(exported - documented):
        logger.warning("%s is exported but not in the API reference", name, location="api")
    for name in sorted(documented - exported):
        logger.warning("the API reference documents %s, which is not exported", name,
                       location="api")


def _object_at(dotted):
    """The object a dotted name under cmlp refers to, or None."""
    parts = dotted.split(".")
    if parts[0] != "cmlp":
        return None
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute, None)
        return obj
    return None


def resolve_reexports(app, env, node, contnode):
    """Resolve names as docstrings write them to where the reference documents them.

    Docstrings name objects relative to the module that defines them
    (``fit`` in ``cmlp.training``, ``save`` in ``cmlp.io``), while the
    reference documents each re-exported object once, as ``cmlp.<name>``,
    so ``cmlp.training.History`` must find ``cmlp.History`` and a bare
    ``fit`` in ``History``'s docstring must find ``cmlp.training.fit``.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    modules = [node.get("py:module")]
    owner = _object_at(f"cmlp.{node['py:class']}") if node.get("py:class") else None
    modules.append(getattr(owner, "__module__", None))
    modules += PUBLIC_MODULES
    py = env.get_domain("py")
    for dotted in [target] + [f"{module}.{target}" for module in modules if module]:
        obj = _object_at(dotted)
        if obj is None:
            continue
        name = getattr(obj, "__name__", None)
        documented = (f"cmlp.{name}" if name in cmlp.__all__ and getattr(cmlp, name) is obj
                      else dotted)
        found = py.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], documented,
                                node, contnode)
        if found is not None:
            return found
    return None


def setup(app):
    app.connect("source-read", drop_missing_pages)
    app.connect("builder-inited", check_api_reference)
    app.connect("missing-reference", resolve_reexports)


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
    ("py:class", "torch.nn.Sequential"),
    ("py:class", "torch.optim.SGD"),
    ("py:class", "torch.optim.Adam"),
    ("py:class", "torch.optim.AdamW"),
    ("py:class", "sklearn.neural_network.MLPRegressor"),
    ("py:func", "open"),   # the builtin; only builtin classes resolve without intersphinx
    ("py:class", "matplotlib.axes.Axes"),
    ("py:class", "matplotlib.text.Text"),
]

# -- API reference -----------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True    # "np.float64", as written, not "<class ...>"
# The numpydoc parameter lists give the types readers see; the annotations are
# for type checkers and editors, and stay out of the rendered signatures.
autodoc_typehints = "none"
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
# SVG: text stays sharp at any width, and a figure that a phone shrinks to its
# screen keeps the size its inches give it relative to the page. Figures are
# drawn at most about 5 inches wide, so that 10 pt text stays legible there.
plot_formats = [("svg", 96)]
plot_working_directory = str(DOCS)   # plot code finds ../benchmarks/ from here
plot_rcparams = {"figure.dpi": 96, "font.size": 10, "savefig.bbox": "tight",
                 "svg.hashsalt": "cmlp"}   # the same SVG ids on every build

# -- HTML ---------------------------------------------------------------------
# The copy button copies code without the ">>> " and "... " prompts, and
# without the printed output, so what is copied runs as it is. A bare "..."
# (the blank line that ends a loop) is copied as an empty line: the plain
# python prompt needs it before the next statement (tests/test_newcomer.py).
copybutton_prompt_text = r">>> |\.\.\. |\.\.\.$"
copybutton_prompt_is_regexp = True
html_theme = "furo"
html_title = f"cmlp {release}"
html_static_path = ["_static"]
html_css_files = ["cmlp.css"]
# The maths: MathJax's files as the offline extension copies them into _static.
mathjax_path = "mathjax/tex-chtml.js"
