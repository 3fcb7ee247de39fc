"""Input checks shared by the compiled engine and the Python API.

Each function turns what a user may pass (lists, ints, any strides or byte
order) into exactly what the kernels accept -- a C-contiguous array of the
network's dtype and the expected shape -- or raises an exception that names
what was expected. Nothing unchecked reaches compiled code.
"""
import math
import numbers
import operator
import sys

import numpy as np

#: dtype kinds that cast to floating point without losing meaning
_REAL_KINDS = "biuf"


#: the most samples in a batch and units in a layer: BLAS counts rows and columns in a C int
MAX_BLAS_SIZE = 2**31 - 1
#: the largest buffer (in bytes) an engine allocates: a quarter of the address
#: space, so that no sum of offsets into one can overflow a C index
MAX_BUFFER_BYTES = sys.maxsize // 4


def parameter_count(sizes):
    """Weights and biases of a network of layer widths ``sizes`` (exact Python ints)."""
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))


def check_parameter_bytes(sizes, dtype):
    """ValueError, naming the sizes, unless the parameters of ``sizes`` can be addressed."""
    n_params = parameter_count(sizes)
    nbytes = n_params * np.dtype(dtype).itemsize
    per_sample = (2 * sum(sizes) + 2 * sizes[-1]) * np.dtype(dtype).itemsize
    if nbytes > MAX_BUFFER_BYTES or per_sample > MAX_BUFFER_BYTES:
        raise ValueError(f"layer_sizes {list(sizes)} make a network of {n_params} parameters "
                         f"({nbytes} bytes); at most {MAX_BUFFER_BYTES} bytes can be addressed")
    return n_params


def check_architecture(sizes, codes, dtype, known_codes):
    """``(sizes, codes, dtype, n_params)`` for the compiled engine, all checked.

    The engine checks its arguments itself (it is reachable from Python):
    at least two widths, each an int from 1 to MAX_BLAS_SIZE; one activation
    code of ``known_codes`` per layer; float32 or float64; buffers that fit.
    """
    try:
        sizes = tuple(operator.index(s) for s in sizes)
        codes = tuple(operator.index(c) for c in codes)
    except TypeError:
        raise TypeError("sizes and codes must be sequences of ints") from None
    check_widths(sizes, "sizes")
    if len(codes) != len(sizes) - 1 or any(c not in known_codes for c in codes):
        raise ValueError(f"codes must hold one activation code of {sorted(known_codes)} per "
                         f"layer, {len(sizes) - 1} in all, got {list(codes)[:10]}")
    dtype = check_float_dtype(dtype)
    return sizes, codes, dtype, check_parameter_bytes(sizes, dtype)


def check_widths(sizes, name):
    """ValueError unless ``sizes`` (ints) holds at least two widths, each from 1 to MAX_BLAS_SIZE."""
    if len(sizes) < 2 or min(sizes) < 1 or max(sizes) > MAX_BLAS_SIZE:
        raise ValueError(f"{name} must hold at least two widths, each from 1 to {MAX_BLAS_SIZE}, "
                         f"got {list(sizes)[:10]}")


def check_float_dtype(dtype):
    """``dtype`` as a :class:`numpy.dtype`; TypeError unless it is float32 or float64."""
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError):  # NumPy parses strings: "f8,," is a SyntaxError
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def as_real_array(value, dtype, name):
    """``value`` as an array of ``dtype``; TypeError unless it is real numeric."""
    return _kernel_ready(_numeric_array(value, name), dtype)


def _numeric_array(value, name):
    """``value`` as an array, not yet copied; TypeError unless it is real numeric.

    A masked array is refused: :func:`numpy.asarray` would drop its mask, and
    the masked entries would count as data.
    """
    _refuse_masked(value, name)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} must be a real numeric array: {error}") from None
    if array.dtype.kind not in _REAL_KINDS:
        raise TypeError(
            f"{name} must be a real numeric array (bool, int or float), "
            f"got dtype {array.dtype}")
    return array


def _refuse_masked(value, name):
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array, whose mask would be ignored: pass "
                        f"{name}.filled(value), or only the unmasked rows")


def _kernel_ready(array, dtype):
    # C order, aligned, native byte order: what the kernels can read directly.
    return np.require(array, dtype=dtype, requirements=["C", "A"])


def as_samples(X, n_features, dtype, name="X"):
    """Return ``(X2, single)``: X as ``(n, n_features)``; single if X was 1-D.

    The shape is checked before anything is copied, so a huge broadcast view
    of the wrong shape is refused without being materialised.
    """
    X = _numeric_array(X, name)
    if X.ndim == 1 and X.shape[0] == n_features:
        X, single = X.reshape(1, n_features), True
    elif X.ndim == 2 and X.shape[1] == n_features:
        single = False
    else:
        raise ValueError(
            f"{name} must have shape ({n_features},) or (n, {n_features}), got {X.shape}")
    check_batch_rows(X.shape[0], name)
    return _kernel_ready(X, dtype), single


def as_targets(Y, n, n_outputs, dtype, single, class_indices_allowed):
    """Return Y as ``(n, n_outputs)`` of ``dtype``.

    Accepted: the output's own shape, ``(n_outputs,)`` after a 1-D input,
    ``(n,)`` when there is one output column, and for cross-entropy integer
    class indices of shape ``(n,)`` (or a scalar after a 1-D input), which
    become one-hot rows.
    """
    _refuse_masked(Y, "Y")
    if class_indices_allowed:
        raw = np.asarray(Y)
        if raw.dtype.kind in "iu" and (raw.shape == (n,) or (single and raw.shape == ())):
            return _one_hot(raw.reshape(n), n_outputs, dtype)
    Y = _numeric_array(Y, "Y")
    if Y.shape == (n, n_outputs):
        return _kernel_ready(Y, dtype)
    if (single and Y.shape == (n_outputs,)) or (n_outputs == 1 and Y.shape == (n,)):
        return _kernel_ready(Y.reshape(n, n_outputs), dtype)
    expected = f"({n_outputs},)" if single else f"({n}, {n_outputs})"
    if n_outputs == 1 and not single:
        expected += f" or ({n},)"
    if class_indices_allowed:
        expected += f", or integer class indices of shape ({n},)"
    raise ValueError(f"Y must have shape {expected}, got {Y.shape}")


def _one_hot(indices, n_classes, dtype):
    if indices.size and (indices.min() < 0 or indices.max() >= n_classes):
        raise ValueError(
            f"class indices in Y must lie in [0, {n_classes}), "
            f"got values from {indices.min()} to {indices.max()}")
    Y = np.zeros((indices.shape[0], n_classes), dtype=dtype)
    Y[np.arange(indices.shape[0]), indices] = 1
    return Y


def as_output(out, shape, dtype):
    """Check a caller's output array: exactly ``shape`` and ``dtype``, C-contiguous, aligned, writable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    # The base class's view of the same memory: a subclass may override shape,
    # dtype or flags, and what the kernels write by must be the truth.
    out = np.asarray(out)
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out must have shape {shape} and dtype {np.dtype(dtype)}, "
            f"got shape {out.shape} and dtype {out.dtype}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise ValueError("out must be C-contiguous, aligned and writable")
    return out


def check_learning_rate(lr):
    """``lr`` as a float; ValueError unless it is a finite number >= 0."""
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a real number, got {type(lr).__name__}")
    try:
        lr = float(lr)
    except OverflowError:  # an int or Fraction beyond the float range
        lr = math.inf
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    return lr


def check_batch_rows(n, name="X"):
    """Refuse a batch of more samples than BLAS can count."""
    if n > MAX_BLAS_SIZE:
        raise ValueError(f"{name} holds {n} samples; a batch holds at most "
                         f"{MAX_BLAS_SIZE}: split it")


def check_count(name, value, minimum):
    """``value`` as an int >= ``minimum``.

    TypeError unless it is an integer (a bool is not); ValueError if it is smaller.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def is_sparse(X):
    """Whether ``X`` is a ``scipy.sparse`` matrix or array.

    Without importing SciPy: a sparse matrix cannot exist before
    ``scipy.sparse`` was imported, so dense input pays one dict lookup.
    """
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


class SparseSamples:
    """A CSR data set as the compiled kernels read it (:func:`as_sparse_samples`).

    ``data`` (the network's dtype), ``indices`` (int32) and ``indptr``
    (intp), 1-D and C-contiguous; ``shape`` is ``(rows, n_features)``, the
    rows counted from ``indptr`` itself.
    """

    __slots__ = ("data", "indices", "indptr", "shape")

    def __init__(self, data, indices, indptr, n_features):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (indptr.shape[0] - 1, n_features)

    @property
    def parts(self):
        """``(data, indices, indptr)``, the arguments of the engine's sparse passes."""
        return self.data, self.indices, self.indptr

    @property
    def nbytes(self):
        return self.data.nbytes + self.indices.nbytes + self.indptr.nbytes

    def most_nonzeros(self, batch_size):
        """The most nonzeros a batch of ``batch_size`` rows can hold in any order:
        the sum of the ``batch_size`` longest rows."""
        lengths = np.diff(self.indptr)
        if batch_size >= lengths.shape[0]:
            return int(lengths.sum())
        return int(np.partition(lengths, lengths.shape[0] - batch_size)[-batch_size:].sum())

    def copy(self):
        return SparseSamples(self.data.copy(), self.indices.copy(), self.indptr.copy(),
                             self.shape[1])

    def to_scipy(self):
        """A ``scipy.sparse.csr_array`` over the same arrays."""
        from scipy.sparse import csr_array

        return csr_array((self.data, self.indices, self.indptr), shape=self.shape)


def as_sparse_samples(X, n_features, dtype, name="X"):
    """A ``scipy.sparse`` matrix or array as :class:`SparseSamples`, checked.

    CSR (``csr_matrix``, ``csr_array``) is read as it is, its arrays cast
    only where their dtype is not the kernels' (data to ``dtype``, indices to
    int32, indptr to intp); every other format (CSC, COO, ...) is converted
    to CSR once by SciPy, a copy of the nonzeros, never a dense array. The
    entries of a row may come in any order and a column may repeat: the
    kernels sum a row's entries, as densifying it would. Checked here, on the
    arrays themselves (never on attributes a subclass may override): two
    dimensions, ``n_features`` columns, real numeric data, row pointers that
    never fall and lie within the stored entries, column indices in
    ``[0, n_features)``.
    """
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"a sparse {name} must be 2-D, got shape {shape}")
    if shape[1] != n_features:
        raise ValueError(f"{name} must have shape (n, {n_features}), got {shape}")
    if getattr(X, "format", None) != "csr":
        X = X.tocsr()
    data = np.asarray(X.data)
    indices = np.asarray(X.indices)
    indptr = np.asarray(X.indptr)
    if data.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name} must be real numeric (bool, int or float), got dtype {data.dtype}")
    if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        raise TypeError(f"{name}'s indices and indptr must be integers, got {indices.dtype} "
                        f"and {indptr.dtype}")
    if data.ndim != 1 or indices.ndim != 1 or indptr.ndim != 1 or indptr.shape[0] < 1:
        raise ValueError(f"{name} is not a valid CSR matrix: data, indices and indptr must be "
                         "1-D, indptr of rows + 1 entries")
    if data.shape[0] != indices.shape[0]:
        raise ValueError(f"{name} is not a valid CSR matrix: {data.shape[0]} stored values "
                         f"but {indices.shape[0]} column indices")
    nnz = data.shape[0]
    if indptr[0] < 0 or indptr[-1] > nnz or (indptr.shape[0] > 1
                                             and (np.diff(indptr) < 0).any()):
        raise ValueError(f"{name} is not a valid CSR matrix: its row pointers (indptr) must "
                         f"not fall, and lie within [0, {nnz}]")
    if nnz and (indices.min() < 0 or indices.max() >= n_features):
        raise ValueError(f"{name} is not a valid CSR matrix: its column indices must lie in "
                         f"[0, {n_features}), got {indices.min()} to {indices.max()}")
    check_batch_rows(indptr.shape[0] - 1, name)
    return SparseSamples(_kernel_ready(data, dtype), _kernel_ready(indices, np.intc),
                         _kernel_ready(indptr, np.intp), n_features)
