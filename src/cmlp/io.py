"""Saving and loading networks, and moving them to and from PyTorch.

A saved network is one ``.npz`` archive (NumPy's zip of ``.npy`` arrays, left
uncompressed) with five members: ``format`` (the string ``"cmlp"``),
``format_version``, ``layer_sizes``, ``activation`` and ``params`` (the flat
parameter buffer, in the network's dtype). :func:`save` writes it atomically;
:func:`load` reads it without ever unpickling, checks every header before it
allocates anything, and turns a truncated, corrupted or foreign file into a
``ValueError`` that says so.

PyTorch is never imported at module level: :func:`to_torch` imports it when
called, and state dicts (of the notebook's model or of an ``nn.Sequential``)
are read through :func:`numpy.asarray`.
"""
import os
import re
import secrets
import zipfile

import numpy as np

from cmlp.network import MLP

__all__ = ["save", "load", "to_torch", "from_torch", "layer_state_dict"]

FORMAT_NAME = "cmlp"
#: the version :func:`save` writes and the newest :func:`load` reads
FORMAT_VERSION = 1
# Sanity bounds for the small members; the params member is bounded by the
# file's own size (members are stored uncompressed).
_MAX_LAYERS = 10_000
_MAX_NAME_LENGTH = 64
_MAX_HEADER = 10_000  # bytes of a .npy header, NumPy's own default limit


# ---------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------

def save(net, path):
    """Write ``net`` to ``path`` as a ``.npz`` archive, atomically.

    The archive is written to a temporary file in the same directory, flushed
    to disk, and renamed over ``path`` in one step: a crash at any moment
    leaves either the old file or the new one, whole. ``path`` is used as
    given (no ``.npz`` is appended). A writable binary file object also
    works (then without the atomic rename).
    """
    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "layer_sizes": np.array(net.layer_sizes, dtype=np.int64),
        "activation": np.array(net.activation),
        "params": net.params,
    }
    if hasattr(path, "write"):
        _write_archive(path, arrays)
        return
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any new file.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            _write_archive(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _write_archive(file, arrays):
    """The ``.npz`` layout of :func:`numpy.savez` (stored, not compressed), never pickling."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------

def load(path):
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
    name = getattr(path, "name", path) if hasattr(path, "read") else os.fspath(path)
    file = path if hasattr(path, "read") else open(path, "rb")
    try:
        size = file.seek(0, os.SEEK_END)
        file.seek(0)
        try:
            with zipfile.ZipFile(file) as archive:
                return _read_model(archive, size)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError,
                SyntaxError, NotImplementedError, ValueError, TypeError) as error:
            raise ValueError(f"{name!r} is not a readable cmlp model file: it is truncated, "
                             f"corrupted or not an .npz archive ({error})") from None
        except _FormatError as error:
            raise ValueError(f"{name!r} is not a cmlp model file: {error}") from None
    finally:
        if file is not path:
            file.close()


class _FormatError(Exception):
    """A member is missing or is not what a cmlp file holds."""


def _read_model(archive, size):
    members = {info.filename[:-len(".npy")]: info for info in archive.infolist()
               if info.filename.endswith(".npy")}
    if "format" not in members:
        raise _FormatError(f"it holds {sorted(members)}, not a saved network "
                           "(expected format, format_version, layer_sizes, activation, params)")
    fmt = _read_member(archive, members, "format", "U", (), size)
    if str(fmt) != FORMAT_NAME:
        raise _FormatError(f"its format is {str(fmt)!r}, not {FORMAT_NAME!r}")
    version = int(_read_member(archive, members, "format_version", "iu", (), size))
    if version > FORMAT_VERSION or version < 1:
        raise _FormatError(f"format version {version}; this cmlp reads versions up to "
                           f"{FORMAT_VERSION} (a newer cmlp wrote it: upgrade cmlp)")
    sizes = _read_member(archive, members, "layer_sizes", "iu", None, size)
    if sizes.ndim != 1 or not 2 <= sizes.shape[0] <= _MAX_LAYERS or sizes.min() < 1:
        raise _FormatError(f"layer_sizes {sizes.tolist()[:10]} is not a list of widths >= 1")
    sizes = [int(s) for s in sizes]
    activation = _read_member(archive, members, "activation", "U", (len(sizes) - 1,), size)
    n_params = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))
    params = _read_member(archive, members, "params", "f", (n_params,), size)
    if params.dtype.itemsize not in (4, 8):
        raise _FormatError(f"params must be float32 or float64, got {params.dtype}")
    net = MLP(sizes, activation=[str(a) for a in activation], dtype=params.dtype.newbyteorder("="))
    net.params[...] = params
    return net


def _check_header_length(file, key, length_bytes):
    """Refuse a header longer than NumPy's own limit before anything parses it.

    NumPy >= 1.24 refuses them itself; older NumPy would evaluate a header of
    any length, so the check is ours.
    """
    start = file.tell()
    length = int.from_bytes(file.read(length_bytes), "little")
    if length > _MAX_HEADER:
        raise _FormatError(f"the {key!r} member has a {length}-byte header; "
                           f".npy headers are at most {_MAX_HEADER}")
    file.seek(start)


def _read_member(archive, members, key, kinds, shape, archive_size):
    """One ``.npy`` member, checked against ``kinds`` and ``shape`` before its data is read."""
    if key not in members:
        raise _FormatError(f"the {key!r} member is missing")
    info = members[key]
    if info.compress_type != zipfile.ZIP_STORED:
        raise _FormatError(f"the {key!r} member is compressed; cmlp writes them uncompressed")
    if info.file_size > archive_size:
        raise _FormatError(f"the {key!r} member claims {info.file_size} bytes, more than the file")
    with archive.open(info) as file:
        major, minor = np.lib.format.read_magic(file)
        _check_header_length(file, key, 2 if (major, minor) == (1, 0) else 4)
        if (major, minor) == (1, 0):
            found_shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
        elif (major, minor) == (2, 0):
            found_shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
        else:
            raise _FormatError(f"the {key!r} member has .npy version {major}.{minor}")
        if dtype.hasobject or dtype.kind not in kinds:
            raise _FormatError(f"the {key!r} member has dtype {dtype}, not one cmlp writes "
                               "(Python objects are never unpickled)")
        if kinds == "U" and dtype.itemsize > 4 * _MAX_NAME_LENGTH:
            raise _FormatError(f"the {key!r} member holds strings of {dtype}")
        if shape is not None and found_shape != shape:
            raise _FormatError(f"the {key!r} member has shape {found_shape}, expected {shape}")
        if fortran and len(found_shape) > 1:
            raise _FormatError(f"the {key!r} member is in Fortran order")
        count = int(np.prod(found_shape, dtype=object))
        if shape is None and count > _MAX_LAYERS:
            raise _FormatError(f"the {key!r} member holds {count} values")
        nbytes = count * dtype.itemsize
        if file.tell() + nbytes != info.file_size:
            raise _FormatError(f"the {key!r} member is {info.file_size} bytes, but its header "
                               f"announces {file.tell() + nbytes}: truncated or corrupted")
        data = file.read(nbytes)
        if len(data) != nbytes:
            raise _FormatError(f"the {key!r} member is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(found_shape)


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------

#: cmlp activation -> torch.nn module class name
_TORCH_MODULES = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU", "softmax": "Softmax",
                  "identity": None}
_CMLP_ACTIVATIONS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "ReLU": "relu", "Softmax": "softmax",
                     "Identity": "identity"}
_LAYER_KEY = re.compile(r"layer\d+\.(weight|bias)")


def layer_state_dict(state_dict):
    """Rename a PyTorch-style state dict to cmlp's ``layer{l}.weight`` / ``layer{l}.bias`` keys.

    Accepted: cmlp's own names (returned as they are); the keys of an
    ``nn.Sequential`` of ``Linear`` and activation modules (``0.weight``,
    ``0.bias``, ``2.weight``, ..., possibly under a common prefix such as
    ``net.0.weight``), ordered by index; and any other ``<name>.weight`` /
    ``<name>.bias`` pairs, taken in the mapping's order (a torch
    ``state_dict`` lists modules in the order they were registered).

    Raises
    ------
    ValueError
        A key that is not a ``.weight`` or ``.bias``, or a layer missing one.
    """
    keys = list(state_dict)
    if all(_LAYER_KEY.fullmatch(key) for key in keys):
        return dict(state_dict)
    prefixes = []
    for key in keys:
        prefix, dot, kind = key.rpartition(".")
        if not dot or kind not in ("weight", "bias"):
            raise ValueError(f"unexpected state_dict key {key!r}: a network of Linear layers "
                             "has only '<layer>.weight' and '<layer>.bias' keys")
        if prefix not in prefixes:
            prefixes.append(prefix)
    parents = {prefix.rpartition(".")[0] for prefix in prefixes}
    if len(parents) == 1 and all(prefix.rpartition(".")[2].isdigit() for prefix in prefixes):
        prefixes.sort(key=lambda prefix: int(prefix.rpartition(".")[2]))
    renamed = {}
    for l, prefix in enumerate(prefixes):
        for kind in ("weight", "bias"):
            if f"{prefix}.{kind}" not in state_dict:
                raise ValueError(f"state_dict has no {prefix}.{kind!s}: cmlp layers need both "
                                 "a weight and a bias")
            renamed[f"layer{l}.{kind}"] = state_dict[f"{prefix}.{kind}"]
    return renamed


def to_torch(net):
    """The equivalent :class:`torch.nn.Sequential`, with copies of ``net``'s parameters.

    ``Linear`` layers (of the network's dtype) each followed by the layer's
    activation module (``Sigmoid``, ``Tanh``, ``ReLU``, ``Softmax(dim=-1)``;
    nothing for identity), so its keys are ``0.weight``, ``0.bias``,
    ``2.weight``, ... and its outputs equal :meth:`cmlp.MLP.predict`'s up to
    rounding. PyTorch is imported here, not before.
    """
    import torch

    dtype = {np.float32: torch.float32, np.float64: torch.float64}[net.dtype.type]
    modules = []
    for W, b, name in zip(net.weights, net.biases, net.activation):
        linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.copy()))
            linear.bias.copy_(torch.from_numpy(b.copy()))
        modules.append(linear)
        if name == "softmax":
            modules.append(torch.nn.Softmax(dim=-1))
        elif _TORCH_MODULES[name] is not None:
            modules.append(getattr(torch.nn, _TORCH_MODULES[name])())
    return torch.nn.Sequential(*modules)


def from_torch(model):
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
    sizes = [weights[0].shape[1]] + [W.shape[0] for W in weights]
    net = MLP(sizes, activation=activation, dtype=weights[0].dtype)
    net.load_state_dict({f"layer{l}.{kind}": getattr(layer, kind).detach().cpu().numpy()
                         for l, layer in enumerate(layers) for kind in ("weight", "bias")})
    return net
