"""Loading saved networks, and moving networks to and from PyTorch.

:func:`save` writes a network as one ``.npz`` archive; :func:`load` reads it
back without ever unpickling (the format is described in ``cmlp._archive``).

PyTorch is never imported at module level: :func:`to_torch` imports it when
called, and state dicts (of the notebook's model or of an ``nn.Sequential``)
are read through :func:`numpy.asarray`.
"""
import os
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from cmlp._archive import read, save
from cmlp._optional import require
from cmlp.network import MLP, layer_state_dict

if TYPE_CHECKING:
    import torch

__all__ = ["save", "load", "to_torch", "from_torch", "layer_state_dict"]


def load(path: str | bytes | os.PathLike | BinaryIO) -> MLP:
    """Read a network written by :func:`save` (or :meth:`cmlp.MLP.save`).

    Parameters
    ----------
    path : str, os.PathLike or binary file object

    Returns
    -------
    cmlp.MLP

    Raises
    ------
    ValueError
        The file is not a cmlp model (not an archive, members missing or of
        the wrong type), is truncated or corrupted, or was written by a newer
        format version. Nothing is ever unpickled: a member holding Python
        objects is refused before it is read.
    FileNotFoundError, PermissionError
        As :func:`open` raises them.
    """
    sizes, activation, params = read(path)
    net = MLP(sizes, activation=activation, dtype=params.dtype.newbyteorder("="))
    net._restore_params(np.ascontiguousarray(params, dtype=net.dtype))
    return net


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------

#: cmlp activation -> torch.nn module class name
_TORCH_MODULES = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU", "softmax": "Softmax",
                  "identity": None}
_CMLP_ACTIVATIONS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "ReLU": "relu", "Softmax": "softmax",
                     "Identity": "identity"}


def to_torch(net: MLP) -> "torch.nn.Sequential":
    """The equivalent :class:`torch.nn.Sequential`, with copies of ``net``'s parameters.

    ``Linear`` layers (of the network's dtype) each followed by the layer's
    activation module (``Sigmoid``, ``Tanh``, ``ReLU``, ``Softmax(dim=-1)``;
    nothing for identity), so its keys are ``0.weight``, ``0.bias``,
    ``2.weight``, ... and its outputs equal :meth:`cmlp.MLP.predict`'s up to
    rounding. PyTorch is imported here, not before.
    """
    torch = require("torch", "cmlp.to_torch")

    dtype = {np.float32: torch.float32, np.float64: torch.float64}[net.dtype.type]
    modules = []
    state = net.state_dict()   # copies taken in one step, as a save takes them
    for l, name in enumerate(net.activation):
        W, b = state[f"layer{l}.weight"], state[f"layer{l}.bias"]
        linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if name == "softmax":
            modules.append(torch.nn.Softmax(dim=-1))
        elif _TORCH_MODULES[name] is not None:
            modules.append(getattr(torch.nn, _TORCH_MODULES[name])())
    return torch.nn.Sequential(*modules)


def from_torch(model: "torch.nn.Module") -> MLP:
    """A :class:`cmlp.MLP` equal to a ``torch.nn.Sequential`` of ``Linear`` and activation modules.

    Each ``Linear`` (with a bias) may be followed by one of ``Sigmoid``,
    ``Tanh``, ``ReLU``, ``Identity`` or ``Softmax`` (over the last dimension);
    a ``Linear`` followed by another has the identity activation. The dtype
    is the first weight's (float32 or float64). PyTorch itself is not
    imported: the modules are read by their class names and attributes.
    """
    layers, activation = [], []
    for module in model.children():
        kind = type(module).__name__
        if kind == "Linear":
            if module.bias is None:
                raise ValueError("cmlp layers have biases: a Linear(bias=False) cannot be converted")
            layers.append(module)
            activation.append("identity")
        elif kind in _CMLP_ACTIVATIONS and layers and activation[-1] == "identity":
            if kind == "Softmax" and module.dim not in (-1, 1):
                raise ValueError(f"only a softmax over the features converts, not dim={module.dim}")
            activation[-1] = _CMLP_ACTIVATIONS[kind]
        elif kind != "Identity":
            raise ValueError(f"cannot convert {kind} at this place: cmlp takes Linear layers, "
                             f"each followed by at most one of {sorted(_CMLP_ACTIVATIONS)}")
    if not layers:
        raise ValueError("the model holds no Linear layer")
    weights = [layer.weight.detach().cpu().numpy() for layer in layers]
    for l, (W, layer) in enumerate(zip(weights, layers)):
        bias_shape = tuple(layer.bias.shape)
        if W.ndim != 2 or bias_shape != (W.shape[0],):
            raise ValueError(f"Linear layer {l} has a weight of shape {W.shape} and a bias of "
                             f"shape {bias_shape}: a Linear layer's weight is (n_out, n_in) and "
                             "its bias (n_out,)")
    sizes = [weights[0].shape[1]] + [W.shape[0] for W in weights]
    net = MLP(sizes, activation=activation, dtype=weights[0].dtype)
    net.load_state_dict({f"layer{l}.{kind}": getattr(layer, kind).detach().cpu().numpy()
                         for l, layer in enumerate(layers) for kind in ("weight", "bias")})
    return net
