"""The vector kernels' C, compiled here on its own: every variant, and the
plain C that compilers without vector extensions (MSVC) build, write the same
bits (tests/c/vector_kernels_agree.c). The program runs only the variants the
processor runs, as the library does. Needs a C compiler; skipped without.

Under user-mode emulation (.ci/run) CMLP_TEST_EMULATOR names the emulator
command the program must run under (a child process would otherwise run on
the host's processor) and CMLP_TEST_CC the compiler for the emulated one."""
import os
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from cmlp import _kernels

ROOT = Path(__file__).resolve().parents[1]
HEADER_DIR = ROOT / "src" / "cmlp"
SOURCE = ROOT / "tests" / "c" / "vector_kernels_agree.c"
# The variants' files and the dispatch table, as setup.py builds them into _maths.
VARIANT_SOURCES = [HEADER_DIR / f"_vector_{v}.c" for v in ("baseline", "avx2", "avx512", "dispatch")]


def c_compiler():
    if os.environ.get("CMLP_TEST_CC"):
        return os.environ["CMLP_TEST_CC"]
    configured = (sysconfig.get_config_var("CC") or "").split()
    for candidate in ([configured[0]] if configured else []) + ["cc", "gcc", "clang"]:
        if shutil.which(candidate):
            return candidate
    return None


@pytest.mark.skipif(os.name == "nt" or c_compiler() is None, reason="needs a Unix C compiler")
def test_every_variant_and_the_plain_c_write_the_same_bits(tmp_path):
    hashes = set()
    for name, extra in (("vectors", []), ("plain", ["-DCMLP_NO_VECTOR_EXTENSIONS"])):
        program = tmp_path / name
        subprocess.run([c_compiler(), "-O2", "-ffp-contract=off", "-std=c99", *extra,
                        f"-I{HEADER_DIR}", str(SOURCE), *map(str, VARIANT_SOURCES),
                        "-o", str(program), "-lm"],
                       check=True, capture_output=True, text=True)
        emulator = shlex.split(os.environ.get("CMLP_TEST_EMULATOR", ""))
        lines = subprocess.run([*emulator, str(program)], check=True, capture_output=True,
                               text=True).stdout.splitlines()
        ran = [line.split()[0] for line in lines if "hash=" in line]
        # The C program and the installed library agree on what this processor runs.
        assert ran == _kernels.vector_variants(), lines
        hashes |= {line.split("hash=")[1] for line in lines if "hash=" in line}
    assert len(hashes) == 1, hashes
