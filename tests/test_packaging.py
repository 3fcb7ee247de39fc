"""What users install: the wheel's file list, the build matrix, one version.

The wheel under test is ``$CMLP_WHEEL`` when set (``tools/wheels.py`` sets it
to the wheel it just installed), else one built here from a copy of the
sources without build isolation (when Cython and setuptools are at hand).
The build matrix is what cibuildwheel prints for each platform, checked
against the list below; those tests skip where cibuildwheel is not installed.
"""
import importlib.metadata
import importlib.util
import os
import platform as host
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cmlp

ROOT = Path(__file__).resolve().parents[1]


def _load_wheels_tool():
    spec = importlib.util.spec_from_file_location("wheels_tool", ROOT / "tools" / "wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheels_tool = _load_wheels_tool()

# The intended builds: every CPython from requires-python (3.10) to the newest
# cibuildwheel knows (3.15); no free-threaded builds yet (see pyproject.toml).
CPYTHONS = ("cp310", "cp311", "cp312", "cp313", "cp314", "cp315")
INTENDED_BUILDS = {
    "linux": ("x86_64,aarch64", {f"{cp}-{libc}_{arch}" for cp in CPYTHONS
                                 for libc in ("manylinux", "musllinux")
                                 for arch in ("x86_64", "aarch64")}),
    "macos": ("x86_64,arm64", {f"{cp}-macosx_{arch}" for cp in CPYTHONS
                               for arch in ("x86_64", "arm64")}),
    # NumPy has Windows-on-ARM wheels from CPython 3.11 on.
    "windows": ("AMD64,ARM64", {f"{cp}-win_amd64" for cp in CPYTHONS}
                | {f"{cp}-win_arm64" for cp in CPYTHONS[1:]}),
}


# --- the build matrix -------------------------------------------------------

@pytest.mark.parametrize("platform", sorted(INTENDED_BUILDS))
def test_cibuildwheel_builds_exactly_the_intended_wheels(platform):
    pytest.importorskip("cibuildwheel")
    archs, intended = INTENDED_BUILDS[platform]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    printed = subprocess.run(
        [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers",
         "--platform", platform, "--archs", archs, str(ROOT)],
        capture_output=True, text=True, env=env, check=True).stdout.split()
    assert sorted(printed) == sorted(intended)


def test_a_runner_builds_for_its_own_architecture_only():
    """No emulated or 32-bit builds: what each native runner of wheels.yml does."""
    pytest.importorskip("cibuildwheel")
    platform = {"linux": "linux", "darwin": "macos", "win32": "windows"}[sys.platform]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    printed = subprocess.run(
        [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers",
         "--platform", platform, str(ROOT)],
        capture_output=True, text=True, env=env, check=True).stdout.split()
    machine = host.machine().lower()
    intended = INTENDED_BUILDS[platform][1]
    assert sorted(printed) == sorted(b for b in intended if b.lower().endswith(machine))


def test_requires_python_classifiers_and_builds_agree():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10" and CPYTHONS[0] == "cp310"
    prefix = "Programming Language :: Python :: 3."
    minors = [c[len(prefix):] for c in project["classifiers"] if c.startswith(prefix)]
    assert [f"cp3{m}" for m in minors] == list(CPYTHONS)
    # The runtime NumPy floor is the C-API version setup.py compiles for.
    [numpy_floor] = [d.removeprefix("numpy>=") for d in project["dependencies"]
                     if d.startswith("numpy>=")]
    target = f"NPY_{numpy_floor.replace('.', '_')}_API_VERSION"
    assert re.search(rf"NPY_TARGET_VERSION\W+{target}", (ROOT / "setup.py").read_text())


def test_musllinux_tests_install_the_test_extra_less_scikit_learn_and_matplotlib():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    test_extra = pyproject["project"]["optional-dependencies"]["test"]
    [musl] = [o for o in pyproject["tool"]["cibuildwheel"]["overrides"]
              if o["select"] == "*-musllinux_*"]
    assert musl["test-extras"] == []
    assert musl["test-requires"] == [r for r in test_extra
                                     if not r.startswith(("scikit-learn", "matplotlib"))]


# --- one version, everywhere ------------------------------------------------

def test_one_version_everywhere(tmp_path):
    assert importlib.metadata.version("cmlp") == cmlp.__version__ == wheels_tool.source_version()
    printed = subprocess.run([sys.executable, "-m", "cmlp", "--version"], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout
    assert printed == f"cmlp {cmlp.__version__}\n"


# --- the wheel's file list --------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if os.environ.get("CMLP_WHEEL"):
        return Path(os.environ["CMLP_WHEEL"])
    for module in ("pip", "Cython", "setuptools", "numpy", "scipy"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"set CMLP_WHEEL, or install {module} to build a wheel here")
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, tree)
    leftovers = shutil.ignore_patterns("*.so", "*.pyd", "*.html", "*.egg-info", "__pycache__")

    def ignore(folder, names):  # what a build leaves, and Cython's C (a .c beside a .pyx)
        return set(leftovers(folder, names)) | {
            n for n in names if n.endswith(".c") and n[:-2] + ".pyx" in names}

    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(tree)],
                   env=wheels_tool.build_environment(), check=True)
    return next(out.glob("*.whl"))


@pytest.mark.builds_wheel
def test_wheel_holds_the_package_and_nothing_else(wheel):
    assert wheels_tool.wheel_problems(wheel, ROOT) == []
    names = zipfile.ZipFile(wheel).namelist()
    for pyx in sorted((ROOT / "src" / "cmlp").glob("*.pyx")):
        assert [n for n in names if n.startswith(f"cmlp/{pyx.stem}.")
                and n.endswith((".so", ".pyd"))], f"no compiled module for {pyx.name}"
    assert {"cmlp/__init__.py", "cmlp/py.typed", "cmlp/_kernels.pyi"} <= set(names)
    assert f"cmlp-{cmlp.__version__}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".html", ".pyc"))]


def _fake_wheel(path, names):
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, "")
    return path


def test_wheel_check_names_what_is_missing_and_what_is_left_over(tmp_path):
    sources = wheels_tool.package_sources(ROOT)
    dist_info = f"cmlp-{wheels_tool.source_version(ROOT)}.dist-info/"
    compiled = [s.replace(".pyx", ".cpython-313-x86_64-linux-gnu.so")
                for s in sources if s.endswith(".pyx")]
    complete = [s for s in sources if not s.endswith(".pyx")] + compiled + [
        dist_info + n for n in ("METADATA", "WHEEL", "RECORD", "top_level.txt", "licenses/LICENSE")]
    assert wheels_tool.wheel_problems(_fake_wheel(tmp_path / "ok.whl", complete), ROOT) == []

    # What a repair step vendors: the ensemble's OpenMP runtime and auditwheel's SBOM.
    repaired = complete + ["cmlp.libs/libgomp-f9a9ad78.so.1.0.0", "cmlp/.dylibs/libomp.dylib",
                           dist_info + "sboms/auditwheel.cdx.json"]
    assert wheels_tool.wheel_problems(_fake_wheel(tmp_path / "repaired.whl", repaired), ROOT) == []
    assert wheels_tool.wheel_problems(
        _fake_wheel(tmp_path / "stray.whl", complete + ["cmlp.libs/libfoo.so"]), ROOT) == [
        "unexpected cmlp.libs/libfoo.so"]

    broken = [n for n in complete if n != "cmlp/py.typed"] + ["cmlp/_kernels.c", "cmlp/_kernels.pyx"]
    assert wheels_tool.wheel_problems(_fake_wheel(tmp_path / "bad.whl", broken), ROOT) == [
        "missing cmlp/py.typed", "unexpected cmlp/_kernels.c", "unexpected cmlp/_kernels.pyx"]

    without_module = [n for n in complete if n not in compiled]
    problems = wheels_tool.wheel_problems(_fake_wheel(tmp_path / "nomod.whl", without_module), ROOT)
    assert problems == [f"expected one compiled module for {s}, found []"
                        for s in sources if s.endswith(".pyx")]
