"""cmlp: a small, compiled multilayer perceptron.

Forward pass, delta backpropagation and SGD run in Cython kernels over one
flat parameter buffer; :class:`MLP` is the Python face of them.
"""
from cmlp._config import show_config
from cmlp._version import __version__
from cmlp.io import load, to_torch
from cmlp.ensemble import EnsembleHistory, MLPEnsemble
from cmlp.network import MLP
from cmlp.training import LBFGS, SGD, Adam, History, TrainingDivergedError

__all__ = ["MLP", "MLPEnsemble", "EnsembleHistory", "SGD", "Adam", "LBFGS", "History",
           "TrainingDivergedError", "load", "to_torch", "show_config", "__version__"]

# Submodules whose optional dependencies are imported only when the submodule is
# first used: `import cmlp` stays fast and needs only NumPy and SciPy.
_LAZY_SUBMODULES = ("plot", "sklearn")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f"cmlp.{name}")
    raise AttributeError(f"module 'cmlp' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY_SUBMODULES])
