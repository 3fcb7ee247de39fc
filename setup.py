"""Builds the compiled extensions; all metadata lives in pyproject.toml.

Set CMLP_DEBUG=1 for a debug build: bounds, wraparound and initialisation
checks back on in the kernels, no optimisation, and C asserts enabled.
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CMLP_DEBUG", "") not in ("", "0")
FP_FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off"]

directives = {
    "language_level": 3,
    "binding": True,
    "embedsignature": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}


# The vector kernels (_vector_kernels.c), one file per variant, each of which
# sets its own target; _maths calls them through _vector_dispatch.c's table.
VECTOR_KERNELS = [f"src/cmlp/_vector_{v}.c" for v in ("baseline", "avx2", "avx512", "dispatch")]
VECTOR_DEPENDS = ["src/cmlp/_vector_kernels.h", "src/cmlp/_vector_kernels.c"]


def extension(name, c_sources=(), depends=()):
    """One compiled module of the package, built with the shared settings."""
    return Extension(
        f"cmlp.{name}",
        [f"src/cmlp/{name}.pyx", *c_sources],
        depends=list(depends),
        include_dirs=[np.get_include()],
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            # Wheels built against NumPy 2 then run on every NumPy from 1.23 on,
            # the floor declared in pyproject.toml.
            ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION"),
        ],
        # No contraction of a * b + c into one FMA: the kernels round the same
        # on every processor, and a product never depends on the code path.
        extra_compile_args=(["-O0", "-UNDEBUG"] if DEBUG else ["-O3"]) + FP_FLAGS,
    )


def generate_from_templates():
    """Write each src/cmlp/*.tp's output beside it (Tempita, as scikit-learn
    does for its *.pyx.tp): the views and passes of each dtype. The outputs
    are build products, never committed."""
    from Cython import Tempita

    for template in glob.glob("src/cmlp/*.tp"):
        target = template[:-len(".tp")]
        with open(template, encoding="utf-8") as f:
            text = Tempita.sub(f.read())
        try:
            with open(target, encoding="utf-8") as f:
                if f.read() == text:
                    continue   # unchanged: cythonize need not rebuild
        except FileNotFoundError:
            pass
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)


generate_from_templates()

# The maths (with the vector kernels linked in), the epochs, the engine, the
# optimizers; the last three cimport _maths.pxd (and the engine _batches.pxd).
setup(ext_modules=cythonize([extension("_maths", VECTOR_KERNELS, [*VECTOR_DEPENDS, "src/cmlp/_views.pxi"]),
                             extension("_batches"),
                             extension("_kernels", depends=["src/cmlp/_passes.pxi"]),
                             extension("_optim")],
                            include_path=["src"],
                            compiler_directives=directives))
