"""What this installation of cmlp runs: :func:`show_config`."""
import os
import platform
from typing import Any, Literal

import numpy as np
import scipy

from cmlp import _kernels
from cmlp._version import __version__

__all__ = ["show_config"]


def show_config(mode: Literal["stdout", "dicts"] = "stdout") -> dict[str, dict[str, Any]] | None:
    """Print (or return) what cmlp runs on this machine, as ``numpy.show_config``.

    The version; the variant of the vector kernels in use, those the processor
    runs, and what chose it (the widest the processor runs, or the environment
    variable ``CMLP_VECTOR_VARIANT``, set before ``import cmlp``, which forces a
    lower one); the BLAS library that the larger matrix products go to
    (SciPy's, through ``scipy.linalg.cython_blas``), its kernels and threads.

    Parameters
    ----------
    mode : {"stdout", "dicts"}
        ``"stdout"`` prints a report; ``"dicts"`` returns the same facts as a
        dict of dicts and prints nothing.

    Returns
    -------
    dict or None

    Examples
    --------
    >>> import cmlp
    >>> config = cmlp.show_config(mode="dicts")
    >>> config["vector kernels"]["in use"] in config["vector kernels"]["processor runs"]
    True
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    config = {
        "cmlp": {"version": __version__},
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "system": platform.system(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "vector kernels": {
            "in use": _kernels.vector_variant(),
            "processor runs": _kernels.vector_variants(),
            "chosen by": _chosen_by(),
            "products below": f"{_kernels.blas_min_work()} multiply-adds (larger ones go to BLAS)",
            "GIL released": f"for passes of {_kernels.gil_release_min_work()} multiply-adds or more",
        },
        "blas": _blas(),
    }
    if mode == "dicts":
        return config
    print(_report(config))
    return None


def _chosen_by():
    asked = _kernels.VARIANT_ASKED_AT_IMPORT
    if asked:
        return f"CMLP_VECTOR_VARIANT={asked}"
    return "the widest the processor runs (CMLP_VECTOR_VARIANT is not set)"


def _blas():
    """The BLAS that scipy.linalg.cython_blas calls, as threadpoolctl finds it
    among the libraries loaded into this process."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library cmlp calls)

    found = {"through": "scipy.linalg.cython_blas"}
    found["built with"] = _scipy_build_blas()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        found["threads"] = "unknown: pip install threadpoolctl to see them"
        return found
    loaded = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    scipy_dir = os.path.dirname(os.path.abspath(scipy.__file__))
    # SciPy's wheels put their BLAS beside the package (scipy.libs) or inside
    # it (.dylibs, on macOS); elsewhere (conda, Debian) it is the only one.
    own = [lib for lib in loaded
           if os.path.abspath(lib["filepath"]).startswith((scipy_dir, scipy_dir + ".libs"))]
    if own or len(loaded) == 1:
        lib = (own or loaded)[0]
        found.update({
            "library": f"{lib.get('internal_api')} {lib.get('version') or ''}".strip(),
            "kernels": lib.get("architecture") or "unknown",
            "threads": lib.get("num_threads"),
            "threading layer": lib.get("threading_layer") or "unknown",
            "file": lib.get("filepath"),
        })
    else:
        found["threads"] = "unknown: SciPy's BLAS is not among the loaded libraries"
    return found


def _scipy_build_blas():
    """The BLAS SciPy was built against, as it reports it (SciPy 1.11 and later)."""
    try:
        build = scipy.show_config(mode="dicts")
    except TypeError:  # SciPy before 1.11 only prints its configuration
        return "unknown: SciPy before 1.11 does not report it"
    blas = build.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()


def _report(config):
    python = config["python"]
    lines = [
        f"cmlp {config['cmlp']['version']}",
        f"  {'python':15s} {python['version']} ({python['implementation']}), "
        f"{python['machine']} {python['system']}",
        f"  {'numpy, scipy':15s} {python['numpy']}, {python['scipy']}",
        "vector kernels",
    ]
    lines += [f"  {key:15s} {', '.join(value) if isinstance(value, list) else value}"
              for key, value in config["vector kernels"].items()]
    lines.append("blas")
    lines += [f"  {key:15s} {value}" for key, value in config["blas"].items()]
    return "\n".join(lines)
