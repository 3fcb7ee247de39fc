"""cmlp: a small, compiled multilayer perceptron.

Forward pass, delta backpropagation and SGD run in Cython kernels over one
flat parameter buffer; :class:`MLP` is the Python face of them.
"""
from cmlp._version import __version__
from cmlp.io import load, to_torch
from cmlp.network import MLP
from cmlp.training import SGD, Adam, History, TrainingDivergedError

__all__ = ["MLP", "SGD", "Adam", "History", "TrainingDivergedError", "load", "to_torch",
           "__version__"]
