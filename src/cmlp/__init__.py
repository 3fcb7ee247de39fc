"""cmlp: a small, compiled multilayer perceptron.

Forward pass, delta backpropagation and SGD run in Cython kernels over one
flat parameter buffer; :class:`MLP` is the Python face of them.
"""
from cmlp._version import __version__
from cmlp.network import MLP

__all__ = ["MLP", "__version__"]
