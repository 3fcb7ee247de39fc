"""Input checks shared by the compiled engine and the Python API.

Each function turns what a user may pass (lists, ints, any strides or byte
order) into exactly what the kernels accept -- a C-contiguous array of the
network's dtype and the expected shape -- or raises an exception that names
what was expected. Nothing unchecked reaches compiled code.
"""
import math
import numbers

import numpy as np

#: dtype kinds that cast to floating point without losing meaning
_REAL_KINDS = "biuf"


#: rows a batch may hold: BLAS counts them in a C int
MAX_BATCH = 2**31 - 1


def as_real_array(value, dtype, name):
    """``value`` as an array of ``dtype``; TypeError unless it is real numeric."""
    return _kernel_ready(_numeric_array(value, name), dtype)


def _numeric_array(value, name):
    """``value`` as an array, not yet copied; TypeError unless it is real numeric."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} must be a real numeric array: {error}") from None
    if array.dtype.kind not in _REAL_KINDS:
        raise TypeError(
            f"{name} must be a real numeric array (bool, int or float), "
            f"got dtype {array.dtype}")
    return array


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
    if X.shape[0] > MAX_BATCH:
        raise ValueError(f"{name} holds {X.shape[0]} samples; a batch holds at most "
                         f"{MAX_BATCH}: split it")
    return _kernel_ready(X, dtype), single


def as_targets(Y, n, n_outputs, dtype, single, class_indices_allowed):
    """Return Y as ``(n, n_outputs)`` of ``dtype``.

    Accepted: the output's own shape, ``(n_outputs,)`` after a 1-D input,
    ``(n,)`` when there is one output column, and for cross-entropy integer
    class indices of shape ``(n,)`` (or a scalar after a 1-D input), which
    become one-hot rows.
    """
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
