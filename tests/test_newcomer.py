"""What a newcomer meets first: snippets that paste into the prompt, clear messages, --help."""
import code
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import cmlp

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.rst")])


def python_blocks(path):
    """Each Python block a reader may paste: Markdown ```python fences, rst code blocks and inline
    plot bodies (a plot of a file has a caption there) not in >>> form."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    blocks = []
    directive = r"^\.\. (?:plot::|code-block:: python)[ \t]*\n((?:[ \t]*\n|   [^\n]*\n)*)"
    for match in re.finditer(directive, text, re.M):
        source = "\n".join(line[3:] for line in _without_options(match.group(1).splitlines()))
        source = source.strip("\n") + "\n"
        if source.strip() and ">>>" not in source:
            blocks.append(source)
    return blocks


def _without_options(lines):
    """A directive's body without its options: ':name: value' lines, each with its indented
    continuation lines (a long :alt:), up to the blank line that ends them."""
    in_options = bool(lines) and lines[0].startswith("   :")
    for line in lines:
        if in_options and (line.startswith("   :") or line.startswith("    ")):
            continue
        in_options = False
        yield line


class _Prompt(code.InteractiveConsole):
    """The plain ``python`` prompt, fed one line at a time as a paste does; records what it rejects."""

    def __init__(self, run):
        super().__init__({"__name__": "__main__"})
        self.run, self.errors = run, []

    def runcode(self, compiled):
        if self.run:
            try:
                exec(compiled, self.locals)
            except Exception as error:  # the prompt would print it and go on
                self.errors.append(repr(error))

    def showsyntaxerror(self, filename=None, **kwargs):
        self.errors.append(repr(sys.exc_info()[1]))

    def paste(self, source):
        for line in source.splitlines():
            self.push(line)
        self.push("")  # the Enter a reader presses after pasting
        return self.errors


BLOCKS = [pytest.param(path, i, block, id=f"{path.relative_to(ROOT)}:{i}")
          for path in DOC_PAGES for i, block in enumerate(python_blocks(path))]
README_BLOCKS = [p for p in BLOCKS if p.values[0].name == "README.md"]


def test_the_readme_and_the_docs_have_python_blocks_to_check():
    assert len(README_BLOCKS) >= 2


@pytest.mark.parametrize("path, index, block", BLOCKS)
def test_block_pastes_into_the_interactive_prompt(path, index, block, monkeypatch, tmp_path):
    # Every block is fed to the prompt as a paste. README blocks also run there,
    # in a scratch directory (they save files), unless they train for seconds:
    # those run in the prompt under the slow marker below. The docs' plot blocks
    # are run by the docs build, in their page's context.
    monkeypatch.chdir(tmp_path)
    run = path.name == "README.md" and not _trains(block)
    if run and "sklearn" in block:
        pytest.importorskip("sklearn")
    if run and "to_torch" in block:
        pytest.importorskip("torch")
    assert _Prompt(run).paste(block) == []


def doctest_blocks(path):
    """Each block in >>> form of an rst page, dedented, as the page shows it."""
    blocks, current, indent = [], [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if current and line.strip():
            if line[:indent].strip() == "":
                current.append(line[indent:])
                continue
        if current:
            blocks.append(current)
            current = []
        if line.lstrip().startswith(">>> "):
            indent = len(line) - len(line.lstrip())
            current = [line[indent:]]
    return ["\n".join(block) for block in blocks + ([current] if current else [])]


def copied(block):
    """What the docs' copy button puts on the clipboard (sphinx-copybutton's formatCopyText, with
    the prompt pattern of docs/conf.py): the prompt lines without their prompts, and empty lines."""
    conf = (ROOT / "docs" / "conf.py").read_text(encoding="utf-8")
    prompt = re.search(r'^copybutton_prompt_text = r"(.*)"$', conf, re.M).group(1)
    lines = []
    for line in block.split("\n"):
        match = re.match(f"^({prompt})(.*)", line)
        if match:
            lines.append(match.group(2))
        elif not line.strip():
            lines.append(line)
    return "\n".join(lines)


COPIED = [pytest.param(path, i, copied(block), id=f"{path.relative_to(ROOT)}:>>>{i}")
          for path in DOC_PAGES if path.suffix == ".rst"
          for i, block in enumerate(doctest_blocks(path))]


def test_the_docs_have_doctest_blocks_to_copy():
    assert len(COPIED) >= 30


@pytest.mark.parametrize("path, index, source", COPIED)
def test_what_the_copy_button_copies_pastes_into_the_interactive_prompt(path, index, source):
    # The >>> blocks run in the doctest build; here each is copied as the copy
    # button copies it and pasted into the plain prompt, which must accept
    # every line (a loop needs the empty line of its bare "...").
    assert _Prompt(False).paste(source) == []


def _trains(block):
    return ".fit(" in block


@pytest.mark.slow
@pytest.mark.parametrize("path, index, block", [p for p in README_BLOCKS if _trains(p.values[2])])
def test_readme_block_that_trains_runs_in_the_interactive_prompt(path, index, block, monkeypatch,
                                                                  tmp_path):
    monkeypatch.chdir(tmp_path)
    if "sklearn" in block:
        pytest.importorskip("sklearn")
    if "to_torch" in block:
        pytest.importorskip("torch")
    assert _Prompt(True).paste(block) == []


@pytest.mark.slow  # the digits block trains for seconds
@pytest.mark.parametrize("path, index, block", README_BLOCKS)
def test_readme_block_runs_as_a_script(path, index, block, tmp_path):
    if "sklearn" in block:
        pytest.importorskip("sklearn")
    if "to_torch" in block:
        pytest.importorskip("torch")
    script = tmp_path / "snippet.py"
    script.write_text(block, encoding="utf-8")
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, capture_output=True)


def test_no_page_tells_a_reader_to_install_cmlp_from_pypi():
    # Nothing is published yet: `pip install cmlp` and `pip install "cmlp[extra]"` find
    # nothing. An install line installs from the clone (".", ".[extra]") or names the
    # optional package itself; the README may say what a release will publish.
    pages = [*DOC_PAGES, *sorted((ROOT / "examples").glob("*.py")), *sorted((ROOT / "src").rglob("*.py"))]
    offending = []
    for path in pages:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if (re.search(r"pip install ['\"]?cmlp\b(?![-.\w])", line)
                    and "not on PyPI" not in line and "will compile nothing" not in line):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offending == []


def test_sklearn_submodule_is_reached_from_import_cmlp_alone():
    probe = ("import sys, cmlp; assert 'sklearn' not in sys.modules, 'imported eagerly'; "
             "print(cmlp.sklearn.MLPClassifier.__name__, 'sklearn' in dir(cmlp))")
    pytest.importorskip("sklearn")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["MLPClassifier", "True"]


def test_unknown_attribute_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        cmlp.nonesuch  # noqa: B018 (the lookup is the test)


# A finder that makes the optional packages look absent, in a fresh interpreter.
_WITHOUT = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in {names!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
import cmlp
try:
    {call}
except ModuleNotFoundError as error:
    print(error)
"""


@pytest.mark.parametrize("missing, call, message", [
    ("torch", "cmlp.to_torch(cmlp.MLP([2, 1]))",
     "cmlp.to_torch needs PyTorch, which is not installed: pip install torch"),
    ("sklearn", "cmlp.sklearn.MLPClassifier",
     "cmlp.sklearn needs scikit-learn, which is not installed: pip install scikit-learn"),
    ("matplotlib", "cmlp.plot.backprop(cmlp.MLP([2, 1, 1]), [1.0, 2.0], [0.4])",
     "cmlp.plot needs matplotlib, which is not installed: pip install matplotlib"),
])
def test_a_missing_optional_dependency_says_what_to_install(missing, call, message):
    script = _WITHOUT.format(names={missing}, call=call)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == message


@pytest.mark.parametrize("output, targets, warns", [
    ("sigmoid", [[-3.0], [5.0]], True),
    ("sigmoid", [[0.0], [1.0]], False),
    ("tanh", [[-1.5], [0.5]], True),
    ("tanh", [[-1.0], [1.0]], False),
    ("relu", [[-0.1], [9.0]], True),
    ("relu", [[0.0], [90.0]], False),
    ("identity", [[-30.0], [50.0]], False),
])
def test_fit_warns_when_targets_lie_outside_the_output_range(output, targets, warns):
    net = cmlp.MLP([1, 3, 1], activation=["tanh", output], seed=0)
    X = np.array([[0.0], [1.0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.fit(X, np.array(targets), epochs=1, lr=0.1)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if warns:
        [message] = messages
        assert f"output activation {output!r}" in message and "'identity'" in message
        assert caught[0].filename == __file__  # points at the caller's fit
    else:
        assert messages == []


def test_cross_entropy_class_indices_are_not_taken_for_values():
    net = cmlp.MLP([2, 3], activation="softmax", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.fit(np.eye(3, 2), np.array([0, 2, 1]), loss="cross_entropy", epochs=1, lr=0.1)


def _runnable_scripts():
    """``python -m cmlp`` and every script of examples/, benchmarks/ and tools/ that runs as a
    program (has a ``__main__`` block); the modules beside them that scripts import are left out."""
    scripts = [pytest.param(["-m", "cmlp"], id="python -m cmlp")]
    for folder in ("examples", "benchmarks", "tools"):
        for path in sorted((ROOT / folder).glob("*.py")):
            if "__main__" in path.read_text(encoding="utf-8"):
                scripts.append(pytest.param([str(path)], id=f"{folder}/{path.name}"))
    return scripts


def _tree(*folders):
    """Every file under the folders with its size and modification time: what a script could write."""
    return {path: (stat.st_size, stat.st_mtime_ns) for folder in folders
            for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts
            for stat in [path.stat()]}


@pytest.mark.spawns_python
@pytest.mark.parametrize("script", _runnable_scripts())
def test_every_runnable_script_takes_help_and_does_nothing_else(script, tmp_path):
    watched = [ROOT / folder for folder in ("examples", "benchmarks", "tools")]
    before = _tree(*watched)
    done = subprocess.run([sys.executable, *script, "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", done.stderr)
    if done.returncode and missing:
        # A benchmark of an optional engine (Dask, scikit-learn) needs its extra installed
        # to start at all; the one that says so is installed where it runs.
        pytest.skip(f"{script[-1]} needs {missing.group(1)}, not installed here")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and len(done.stdout.splitlines()) > 5, done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written
    assert _tree(*watched) == before


def test_test_extra_and_test_group_list_the_same_requirements():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["optional-dependencies"]["test"] == \
        pyproject["dependency-groups"]["test"]


def test_pre_commit_runs_the_linters_at_the_lint_groups_pins():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    hooks = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    pinned = re.findall(r'additional_dependencies: \["([^"]+)"\]', hooks)
    assert pinned and set(pinned) <= set(pyproject["dependency-groups"]["lint"])
