"""The vector kernels' C, compiled here on its own: every variant, and the
plain C that compilers without vector extensions (MSVC) build, write the same
bits (tests/c/vector_kernels_agree.c). Needs a C compiler; skipped without."""
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER_DIR = ROOT / "src" / "cmlp"
SOURCE = ROOT / "tests" / "c" / "vector_kernels_agree.c"


def c_compiler():
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
                        f"-I{HEADER_DIR}", str(SOURCE), "-o", str(program), "-lm"],
                       check=True, capture_output=True, text=True)
        lines = subprocess.run([str(program)], check=True, capture_output=True,
                               text=True).stdout.splitlines()
        assert lines and lines[0].startswith("baseline"), lines
        hashes |= {line.split("hash=")[1] for line in lines}
    assert len(hashes) == 1, hashes
