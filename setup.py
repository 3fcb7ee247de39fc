"""Builds the compiled extensions; all metadata lives in pyproject.toml.

Set CMLP_DEBUG=1 for a debug build: bounds, wraparound and initialisation
checks back on in the kernels, no optimisation, and C asserts enabled.
"""
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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
# sets its own target; _kernels calls them through _vector_dispatch.c's table.
VECTOR_KERNELS = [f"src/cmlp/_vector_{v}.c" for v in ("baseline", "avx2", "avx512", "dispatch")]
VECTOR_DEPENDS = ["src/cmlp/_vector_kernels.h", "src/cmlp/_vector_kernels.c"]


# The modules whose prange loops run on OpenMP's threads when the compiler has it.
OPENMP_MODULES = {"cmlp._ensemble"}


def extension(name, c_sources=(), depends=()):
    """One compiled module of the package, built with the shared settings."""
    ext = Extension(
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
    return ext


class BuildExt(build_ext):
    """Adds OpenMP to the extensions that ask for it when the compiler has it
    (as scikit-learn does, a test program first); without it (Apple's Clang
    without libomp, CMLP_NO_OPENMP=1) they build as they are and run serially:
    Cython's prange is then an ordinary loop."""

    def build_extensions(self):
        flags = self._openmp_flags()
        for ext in self.extensions:
            if ext.name in OPENMP_MODULES and flags:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
        super().build_extensions()

    def _openmp_flags(self):
        if os.environ.get("CMLP_NO_OPENMP", "") not in ("", "0"):
            return None
        if self.compiler.compiler_type == "msvc":
            return ["/openmp"], []
        import shutil
        import tempfile
        tmp = tempfile.mkdtemp()
        try:
            src = os.path.join(tmp, "omp.c")
            with open(src, "w") as f:
                f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
            objects = self.compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            self.compiler.link_executable(objects, os.path.join(tmp, "omp"),
                                          extra_postargs=["-fopenmp"])
        except Exception:  # noqa: BLE001 -- any failure means: no OpenMP here
            print("cmlp: no OpenMP with this compiler; the ensemble runs its models serially")
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ["-fopenmp"], ["-fopenmp"]


# The ensemble's kernel for tiny networks, once per variant (_ensemble_tiny.c).
ENSEMBLE_DEPENDS = ["src/cmlp/_ensemble_tiny.h", "src/cmlp/_ensemble_tiny_body.c",
                    "src/cmlp/_kernels.pxd", *VECTOR_DEPENDS]

setup(ext_modules=cythonize([extension("_kernels", VECTOR_KERNELS, VECTOR_DEPENDS),
                             extension("_optim"),
                             extension("_ensemble", ["src/cmlp/_ensemble_tiny.c"],
                                       ENSEMBLE_DEPENDS)],
                            compiler_directives=directives),
      cmdclass={"build_ext": BuildExt})
