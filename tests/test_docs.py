"""Numbers the prose quotes, checked against the code that defines them."""
import re
from pathlib import Path

import pytest

from cmlp import _kernels

ROOT = Path(__file__).resolve().parents[1]
GIL_SENTENCES = [
    ("docs/guide/performance.rst", r"Compiled passes of ([\d,]+) multiply-adds or more"),
    ("docs/guide/threads.rst", r"if the pass has at least ([\d,]+) multiply-adds"),
    ("README.md", r"The GIL is released for every pass of at least ([\d,]+)"),
]


@pytest.mark.parametrize("path, sentence", GIL_SENTENCES)
def test_quoted_gil_threshold_is_the_kernels(path, sentence):
    text = " ".join((ROOT / path).read_text(encoding="utf-8").split())
    quoted = re.search(sentence, text)
    assert quoted, f"{path} no longer says {sentence!r}"
    assert int(quoted.group(1).replace(",", "")) == _kernels.GIL_RELEASE_MIN_WORK
