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
# sets its own target; _maths calls them through _vector_dispatch.c's table.
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
            # linked as the extensions are (with LDFLAGS, e.g. a sanitizer's runtime)
            self.compiler.link_shared_object(objects, os.path.join(tmp, "omp.so"),
                                             extra_postargs=["-fopenmp"])
        except Exception:  # noqa: BLE001 -- any failure means: no OpenMP here
            print("cmlp: no OpenMP with this compiler; the ensemble runs its models serially")
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ["-fopenmp"], ["-fopenmp"]


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
# optimizers and the ensemble; the others cimport _maths.pxd (the epochs
# _optim.pxd too; the engine and the ensemble _batches.pxd). The ensemble also
# builds its kernel for tiny networks once per variant (_ensemble_tiny.c).
ENSEMBLE_DEPENDS = ["src/cmlp/_ensemble_tiny.h", "src/cmlp/_ensemble_tiny_body.c",
                    "src/cmlp/_maths.pxd", "src/cmlp/_batches.pxd", "src/cmlp/_optim.pxd",
                    *VECTOR_DEPENDS]

setup(ext_modules=cythonize([extension("_maths", VECTOR_KERNELS, [*VECTOR_DEPENDS, "src/cmlp/_views.pxi"]),
                             extension("_batches"),
                             extension("_kernels", depends=["src/cmlp/_passes.pxi"]),
                             extension("_optim"),
                             extension("_ensemble", ["src/cmlp/_ensemble_tiny.c"],
                                       ENSEMBLE_DEPENDS)],
                            include_path=["src"],
                            compiler_directives=directives),
      cmdclass={"build_ext": BuildExt})
