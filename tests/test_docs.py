"""What the docs promise, checked: the GIL threshold the prose quotes, maths that renders offline."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cmlp

ROOT = Path(__file__).resolve().parents[1]
GIL_SENTENCES = [
    ("docs/guide/performance.rst", r"Compiled passes of ([\d,]+) multiply-adds or more"),
    ("docs/guide/threads.rst", r"if the pass has at least ([\d,]+) multiply-adds"),
    ("README.md", r"The GIL is released for every pass of at least ([\d,]+)"),
]


def gil_threshold():
    """The threshold as show_config reports it to users."""
    reported = cmlp.show_config(mode="dicts")["vector kernels"]["GIL released"]
    return int(re.search(r"(\d+) multiply-adds", reported).group(1))


@pytest.mark.parametrize("path, sentence", GIL_SENTENCES)
def test_quoted_gil_threshold_is_the_one_show_config_reports(path, sentence):
    text = " ".join((ROOT / path).read_text(encoding="utf-8").split())
    quoted = re.search(sentence, text)
    assert quoted, f"{path} no longer says {sentence!r}"
    assert int(quoted.group(1).replace(",", "")) == gil_threshold()


@pytest.mark.spawns_python
def test_the_docs_typeset_maths_from_a_bundled_mathjax_and_load_no_script_from_the_internet(tmp_path):
    # One page of maths built with the docs' own configuration (-c docs): the
    # page must load MathJax from the build's own _static, which must hold it
    # and its fonts, and no page may ask a CDN for anything.
    pytest.importorskip("sphinx")
    if importlib.util.find_spec("sphinx-mathjax-offline") is None:
        pytest.skip("the docs dependency group is not installed (pip install --group docs)")
    source, out = tmp_path / "src", tmp_path / "html"
    source.mkdir()
    (source / "index.rst").write_text("Maths\n=====\n\n:math:`a^{(1)} = \\sigma(z^{(1)})`\n\n"
                                      ".. math::\n\n   \\delta^{(1)} = \\partial E / \\partial z^{(1)}\n",
                                      encoding="utf-8")
    subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", "-c", str(ROOT / "docs"),
                    str(source), str(out)], check=True, capture_output=True, cwd=tmp_path)
    page = (out / "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page)
    assert "_static/mathjax/tex-chtml.js" in scripts
    assert not [src for src in scripts if re.match(r"(https?:)?//", src)], scripts
    assert not re.findall(r"<link[^>]*href=\"(?:https?:)?//", page)
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert any((out / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
