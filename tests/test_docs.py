"""What the prose promises about the GIL, checked against what the kernels do."""
import re
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
