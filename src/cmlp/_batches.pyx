"""Epochs: batching, shuffling, prefetching, and the random generator.

An epoch runs in compiled code from start to end: each batch's rows are
gathered from the data set (read in place, in the order of an index array)
into the engine's work buffers, the rows of the next batch are prefetched,
and the batch takes _maths.train_step (or the forward pass and the loss
alone). A sparse (CSR) data set has its own gathering, into CSR buffers the
engine owns, checked entry by entry as it is copied. shuffled_order draws an
epoch's order from a generator of its own, seeded from the caller's NumPy
Generator.

Left out: the maths (_maths.pyx), the buffers, the lock and the checks of
the arrays' types and shapes (_kernels.pyx).
"""
from cython cimport floating
from cpython.pycapsule cimport PyCapsule_GetPointer
from numpy.random cimport bitgen_t
from libc.math cimport isfinite
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

cimport numpy as cnp
import numpy as np

from cmlp._maths cimport (LOSS_ONLY, TRAIN, Net, add_weight_penalty, all_finite, forward,
                          forward_loss, loss_and_backward, sparse_pass, train_step,
                          weighted_loss_and_backward)
from cmlp._optim cimport Update, apply_update

cnp.import_array()

# Rows of at most this many entries are gathered by a loop, longer ones by memcpy.
cdef Py_ssize_t SHORT_ROW = 32

# The order of an epoch that takes the samples as they come: no indices at all
# (an epoch always holds at least one sample, so empty is never a real order).
IN_ORDER = np.empty(0, dtype=np.intp)


cdef extern from *:
    """
    /* Ask the cache for the lines of a row that a later batch will copy: every
       64 bytes, and the last byte (a row need not start on a line). */
    static CYTHON_INLINE void cmlp_prefetch_row(const char *row, Py_ssize_t nbytes) {
    #if defined(__GNUC__) || defined(__clang__)
        for (Py_ssize_t k = 0; k < nbytes; k += 64) __builtin_prefetch(row + k);
        __builtin_prefetch(row + nbytes - 1);
    #else
        (void)row; (void)nbytes;
    #endif
    }
    """
    void cmlp_prefetch_row(const char* row, Py_ssize_t nbytes) noexcept nogil


cdef void _prefetch_batch(const floating[:, ::1] X, const floating[:, ::1] Y,
                          const Py_ssize_t[::1] order, Py_ssize_t start,
                          Py_ssize_t m) noexcept nogil:
    """Start loading the rows of the batch at position start of order, to be
    gathered after the current batch's step: rows in a shuffled order are
    cache misses that no hardware prefetcher sees coming."""
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1], i, row
    cdef const char* x0 = <const char*>&X[0, 0]
    cdef const char* y0 = <const char*>&Y[0, 0]
    for i in range(m):
        row = order[start + i]
        if row >= 0 and row < n:   # a prefetch never faults, but only X's rows are wanted
            cmlp_prefetch_row(x0 + row * n_in * sizeof(floating), n_in * sizeof(floating))
            cmlp_prefetch_row(y0 + row * n_out * sizeof(floating), n_out * sizeof(floating))


cdef bint _gather_batch(const floating[:, ::1] X, const floating[:, ::1] Y,
                        const Py_ssize_t[::1] order, Py_ssize_t start, Py_ssize_t m,
                        floating[::1] A, floating[::1] T) noexcept nogil:
    """OUT A^(0) (the front of A) and the targets T of one batch: the m samples
    that order lists from position start on (samples start .. start+m-1 when
    order is empty). False, with the batch unfinished, if an index lies outside
    X: the caller checked them all, but another thread may write into order."""
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1], i, row
    if order.shape[0] == 0:
        memcpy(&A[0], &X[start, 0], m * n_in * sizeof(floating))
        memcpy(&T[0], &Y[start, 0], m * n_out * sizeof(floating))
        return True
    for i in range(m):
        row = order[start + i]   # read once: checked and used as the same value
        if row < 0 or row >= n:
            return False
        _copy_row(&A[i * n_in], &X[row, 0], n_in)
        _copy_row(&T[i * n_out], &Y[row, 0], n_out)
    return True


cdef inline void _copy_row(floating* out, const floating* row, Py_ssize_t count) noexcept nogil:
    # A short row is copied in place: a call to memcpy would cost more than the copy.
    cdef Py_ssize_t j
    if count > SHORT_ROW:
        memcpy(out, row, count * sizeof(floating))
        return
    for j in range(count):
        out[j] = row[j]


cdef Py_ssize_t epoch(const Net* net, floating[::1] params, floating[::1] grads,
                      floating[::1] storage, const floating[:, ::1] X, const floating[:, ::1] Y,
                      const Py_ssize_t[::1] order, Py_ssize_t batch_size, int loss,
                      bint train, floating lr, double[::1] losses, bint* bad_row) noexcept nogil:
    """The batches of one epoch, each gathered into the work buffers. With
    train, each takes _maths.train_step (the numbers of train_step on each batch in
    turn), and the epoch stops after the first batch whose loss is not
    finite; without, each takes the forward pass and the loss alone.

    IN X (rows, n_in), Y (rows, n_out), order (see _gather_batch): the
    epoch's samples are the rows order lists (any number of them, rows
    repeated or left out: an ensemble's bootstrap samples of a shared X), or
    every row in turn when it is empty; INOUT params; OUT losses[b]: the
    loss of batch b; the work buffers, laid out in storage as Engine._resize
    lays them out for the batch's size (the last batch of an epoch may be
    smaller). Stops before a batch with an index outside X (setting
    bad_row). Returns the number of batches run.
    """
    cdef Py_ssize_t n = order.shape[0] if order.shape[0] != 0 else X.shape[0]
    cdef Py_ssize_t k = net.layers[net.L - 1].n_out
    cdef Py_ssize_t start = 0, m, m_views = 0, batch = 0
    cdef Py_ssize_t ends[4]
    cdef bint logits = net.logits
    cdef floating[::1] A, D, Z, T
    cdef double value
    while start < n:
        m = min(batch_size, n - start)
        if m != m_views:
            work_bounds(m, net.width, net.layers[0].n_in, k, logits, ends)
            A = storage[:ends[0]]
            D = storage[ends[0]:ends[1]]
            Z = storage[ends[1]:ends[2]]
            T = storage[ends[2]:ends[3]]
            m_views = m
        if not _gather_batch(X, Y, order, start, m, A, T):
            bad_row[0] = True
            break
        if order.shape[0] != 0 and start + m < n:
            _prefetch_batch(X, Y, order, start + m, min(batch_size, n - start - m))
        if train:
            value = train_step(net, m, params, grads, A, D, Z, T, loss, lr)
        else:
            forward(net, m, params, A, Z, logits)
            value = forward_loss(net, m, A, D, Z, T, loss, 0)
        losses[batch] = value
        batch += 1
        start += m
        if train and not isfinite(value):
            break
    return batch


cdef Py_ssize_t stepped_epoch(const Net* net, floating[::1] params, floating[::1] grads,
                              floating[::1] storage, const floating[:, ::1] X,
                              const floating[:, ::1] Y, const double[::1] weights,
                              double[::1] batch_weights, const Py_ssize_t[::1] order,
                              Py_ssize_t batch_size, int loss, double alpha,
                              const Update* update, double lr, floating[::1] first_state,
                              floating[::1] second_state, Py_ssize_t* steps,
                              double[::1] losses, double[::1] shares,
                              bint* bad_row) noexcept nogil:
    """The batches of one epoch, each followed by an optimizer's update: the
    numbers of MLP.fit's epoch with any optimizer (training.py's stepped
    epoch: the gradients of the batch's mean loss, or of its weighted mean
    with weights, plus scikit-learn's penalty with alpha, then the step), in
    one call.

    IN X, Y, order as epoch takes them; weights (rows,): each row's weight,
    or empty: none; update, lr: the optimizer. INOUT params; the optimizer's
    state and its step count. OUT losses[b], shares[b]: batch b's loss (with
    the penalty) and its samples (with weights, their summed weight, summed
    as NumPy sums); batch_weights, grads, storage: work. Stops after the
    first batch whose loss is not finite, before its update, and before a
    batch with an index outside X (setting bad_row). Returns the number of
    batches run.
    """
    cdef Py_ssize_t n = order.shape[0] if order.shape[0] != 0 else X.shape[0]
    cdef Py_ssize_t k = net.layers[net.L - 1].n_out
    cdef Py_ssize_t start = 0, m, m_views = 0, batch = 0, i
    cdef Py_ssize_t ends[4]
    cdef bint logits = net.logits, weighted = weights.shape[0] != 0
    cdef floating[::1] A, D, Z, T
    cdef double value, share, scale
    while start < n:
        m = min(batch_size, n - start)
        if m != m_views:
            work_bounds(m, net.width, net.layers[0].n_in, k, logits, ends)
            A = storage[:ends[0]]
            D = storage[ends[0]:ends[1]]
            Z = storage[ends[1]:ends[2]]
            T = storage[ends[2]:ends[3]]
            m_views = m
        if not _gather_batch(X, Y, order, start, m, A, T):
            bad_row[0] = True
            break
        if order.shape[0] != 0 and start + m < n:
            _prefetch_batch(X, Y, order, start + m, min(batch_size, n - start - m))
        forward(net, m, params, A, Z, logits)
        if weighted:
            for i in range(m):
                batch_weights[i] = weights[order[start + i] if order.shape[0] != 0 else start + i]
            value = weighted_loss_and_backward(net, m, params, grads, A, D, Z, T,
                                               batch_weights[:m], loss)
            share = numpy_sum(&batch_weights[0], m)
        else:
            value = loss_and_backward(net, m, params, grads, A, D, Z, T, loss)
            share = <double>m
        if alpha > 0 and share > 0:
            scale = alpha / share
            value += 0.5 * scale * add_weight_penalty(net, params, grads, <floating>scale)
        losses[batch] = value
        shares[batch] = share
        batch += 1
        start += m
        if not isfinite(value):   # MLP.fit makes no update after such a batch
            break
        apply_update(update, params, grads, first_state, second_state, steps[0], lr)
        steps[0] += 1
    return batch


cdef double numpy_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """sum(a[:n]) with NumPy's bits: its pairwise summation (eight running
    sums over blocks of at most 128 entries, halves above), which
    ``numpy.sum`` of a contiguous float64 array takes."""
    cdef Py_ssize_t i, j, half
    cdef double r[8]
    cdef double res
    if n < 8:
        res = 0.
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        for j in range(8):
            r[j] = a[j]
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[i]
            i += 1
        return res
    half = n // 2
    half -= half % 8
    return numpy_sum(a, half) + numpy_sum(a + half, n - half)


cdef bint gather_csr(const floating[::1] data, const int[::1] indices,
                     const Py_ssize_t[::1] indptr, const Py_ssize_t[::1] order,
                     Py_ssize_t start, Py_ssize_t m, Py_ssize_t n_in,
                     floating[::1] bdata, int[::1] bindices,
                     Py_ssize_t[::1] bindptr) noexcept nogil:
    """OUT the batch CSR (bdata, bindices, bindptr[0..m]): rows order[start ..
    start+m-1] of the data set (start .. start+m-1 when order is empty).
    False, the batch unfinished, at a row outside the data set, a row range
    not within [0, nnz] and increasing, a column outside [0, n_in), or more
    nonzeros than the buffers hold: the caller checked them, but another
    thread may write into the arrays."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, nnz = min(data.shape[0], indices.shape[0])
    cdef Py_ssize_t room = min(bdata.shape[0], bindices.shape[0])
    cdef Py_ssize_t i, k, row, lo, hi, total = 0
    cdef int col
    if bindptr.shape[0] < m + 1 or (order.shape[0] != 0 and order.shape[0] < start + m):
        return False
    bindptr[0] = 0
    for i in range(m):
        row = start + i if order.shape[0] == 0 else order[start + i]
        if row < 0 or row >= n:
            return False
        lo = indptr[row]
        hi = indptr[row + 1]
        if lo < 0 or hi < lo or hi > nnz or hi - lo > room - total:
            return False
        for k in range(lo, hi):
            col = indices[k]
            if col < 0 or col >= n_in:
                return False
            bindices[total] = col
            bdata[total] = data[k]
            total += 1
        bindptr[i + 1] = total
    return True


cdef bint gather_rows(const floating[:, ::1] Y, const Py_ssize_t[::1] order, Py_ssize_t start,
                      Py_ssize_t m, floating[::1] T) noexcept nogil:
    """OUT T: rows order[start .. start+m-1] of Y (start .. when order is
    empty), False at a row outside Y."""
    cdef Py_ssize_t n = Y.shape[0], k = Y.shape[1], i, row
    if T.shape[0] < m * k or (order.shape[0] != 0 and order.shape[0] < start + m):
        return False
    for i in range(m):
        row = start + i if order.shape[0] == 0 else order[start + i]
        if row < 0 or row >= n:
            return False
        _copy_row(&T[i * k], &Y[row, 0], k)
    return True


cdef Py_ssize_t sparse_epoch(const Net* net, floating[::1] params, floating[::1] grads,
                             floating[::1] storage, const floating[::1] data,
                             const int[::1] indices, const Py_ssize_t[::1] indptr,
                             const floating[:, ::1] Y, const Py_ssize_t[::1] order,
                             Py_ssize_t batch_size, int loss, bint train, floating lr,
                             double[::1] losses, floating[::1] bdata, int[::1] bindices,
                             Py_ssize_t[::1] bindptr, bint* bad_row) noexcept nogil:
    """epoch for a CSR data set (data, indices, indptr; Y its targets): each
    batch gathered into the batch CSR buffers and the targets' buffer, then
    _maths.sparse_pass (TRAIN, or LOSS_ONLY without train). Stops, setting bad_row,
    before a batch that cannot be gathered."""
    cdef Py_ssize_t n = Y.shape[0], k = net.layers[net.L - 1].n_out
    cdef Py_ssize_t start = 0, m, m_views = 0, batch = 0
    cdef Py_ssize_t ends[4]
    cdef bint logits = net.logits
    cdef floating[::1] A, D, Z, T
    cdef double value
    while start < n:
        m = min(batch_size, n - start)
        if m != m_views:
            work_bounds(m, net.width_d, 0, k, logits, ends)
            A = storage[:ends[0]]
            D = storage[ends[0]:ends[1]]
            Z = storage[ends[1]:ends[2]]
            T = storage[ends[2]:ends[3]]
            m_views = m
        if not (gather_csr(data, indices, indptr, order, start, m, net.layers[0].n_in,
                           bdata, bindices, bindptr)
                and gather_rows(Y, order, start, m, T)):
            bad_row[0] = True
            break
        value = sparse_pass(net, m, params, grads, A, D, Z, T, losses, False, loss,
                            TRAIN if train else LOSS_ONLY, lr, bdata, bindices, bindptr)
        losses[batch] = value
        batch += 1
        start += m
        if train and not isfinite(value):
            break
    return batch


cdef Py_ssize_t csr_batch_nonzeros(const Py_ssize_t[::1] indptr, const Py_ssize_t[::1] order,
                                   Py_ssize_t start, Py_ssize_t stop, Py_ssize_t batch_size,
                                   Py_ssize_t nnz) noexcept:
    """The most nonzeros of any batch of batch_size rows (order[start:stop],
    or start .. stop-1 when order is empty), or -1 at a row outside the data
    set or a row range not within [0, nnz] and increasing."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, most = 0, total, i, end, row, lo, hi
    if order.shape[0] != 0 and order.shape[0] < stop:
        return -1
    while start < stop:
        end = min(start + batch_size, stop)
        total = 0
        for i in range(start, end):
            row = i if order.shape[0] == 0 else order[i]
            if row < 0 or row >= n:
                return -1
            lo = indptr[row]
            hi = indptr[row + 1]
            if lo < 0 or hi < lo or hi > nnz:
                return -1
            total += hi - lo
        most = max(most, total)
        start = end
    return most


cdef bint predictions_finite(const Net* net, floating[::1] params, floating[::1] P,
                             floating[::1] Z, const floating[:, ::1] X,
                             Py_ssize_t batch_size) noexcept nogil:
    """Whether the forward pass gives a finite output for every row of X, taken
    batch_size rows at a time through P (room for batch_size samples)."""
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], k = net.layers[net.L - 1].n_out
    cdef Py_ssize_t width_sum = net.width, start = 0, m
    while start < n:
        m = min(batch_size, n - start)
        memcpy(&P[0], &X[start, 0], m * n_in * sizeof(floating))
        forward(net, m, params, P, Z, False)
        if not all_finite(P[m * (width_sum - k):m * width_sum]):
            return False
        start += m
    return True


cdef object check_order(object order, Py_ssize_t n):
    """order as epoch reads it: n indices in [0, n), intp, C-contiguous."""
    cdef Py_ssize_t bad
    if order is None:
        return IN_ORDER
    if not cnp.PyArray_Check(order) or cnp.PyArray_TYPE(order) != cnp.NPY_INTP:
        got = order.dtype if cnp.PyArray_Check(order) else type(order).__name__
        raise TypeError(f"order must be None or a numpy array of dtype intp, got {got}")
    order = np.asarray(order)   # the base class: nothing a subclass overrides is used
    if cnp.PyArray_NDIM(order) != 1 or cnp.PyArray_DIM(order, 0) != n:
        raise ValueError(f"order must hold one index per sample, shape ({n},), "
                         f"got {order.shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(order) and cnp.PyArray_ISBEHAVED_RO(order)):
        raise ValueError("order must be C-contiguous, aligned and in native byte order")
    bad = _first_outside(order, n)
    if bad >= 0:
        raise ValueError(f"order must hold indices in [0, {n}), got order[{bad}] = {order[bad]}")
    return order


cdef int check_losses(object losses, Py_ssize_t n_batches) except -1:
    """losses can take one float64 for each of n_batches batches."""
    if not cnp.PyArray_Check(losses) or cnp.PyArray_TYPE(losses) != cnp.NPY_DOUBLE:
        got = losses.dtype if cnp.PyArray_Check(losses) else type(losses).__name__
        raise TypeError(f"losses must be a numpy array of dtype float64, got {got}")
    if cnp.PyArray_NDIM(losses) != 1 or cnp.PyArray_DIM(losses, 0) < n_batches:
        raise ValueError(f"losses must be 1-D with room for the {n_batches} batches, "
                         f"got shape {losses.shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(losses) and cnp.PyArray_ISBEHAVED(losses)):
        raise ValueError("losses must be C-contiguous, aligned and writable")
    return 0


cdef Py_ssize_t _first_outside(const Py_ssize_t[::1] order, Py_ssize_t n) noexcept:
    """The position of the first index of order outside [0, n), or -1."""
    cdef Py_ssize_t i
    for i in range(order.shape[0]):
        if order[i] < 0 or order[i] >= n:
            return i
    return -1


cdef int check_epoch_views(const floating[:, ::1] X, const floating[:, ::1] Y,
                           const Py_ssize_t[::1] order, Py_ssize_t n_in,
                           Py_ssize_t n_out) except -1:
    """The shapes epoch indexes by, read from the buffers themselves: the
    arrays checked before the lock was taken may have been reshaped since."""
    if (X.shape[1] != n_in or Y.shape[1] != n_out or Y.shape[0] != X.shape[0]
            or (order.shape[0] != 0 and order.shape[0] != X.shape[0])):
        raise ValueError("X, Y and order changed shape while the epoch was starting")
    return 0


cdef double TWO_TO_MINUS_53 = 1.0 / 9007199254740992.0


def shuffled_order(cnp.ndarray order, rng):
    """OUT order: a random permutation of 0 .. n-1, drawn from rng.

    rng is a ``numpy.random.Generator``, and gives one number:
    ``s = rng.integers(2**64, dtype=numpy.uint64)``. SplitMix64 spreads s
    into the state of a xoshiro256** generator (Blackman and Vigna's
    recommended seeding), whose outputs x give the uniforms
    u = (x >> 11) 2^-53, and the inside-out Fisher-Yates shuffle takes one
    each: for i = 0, 1, ..., n - 1, with j = min(floor(u * (i + 1)), i),
    ``order[i] = order[j]`` then ``order[j] = i``: a generator of its own,
    cheaper per uniform than NumPy's. What users are promised is only that
    one seed gives one order on every machine and in every version of the
    same major release (tests/test_same_bits_everywhere.py). order is a
    writable C-contiguous intp array.
    """
    if not (cnp.PyArray_TYPE(order) == cnp.NPY_INTP and order.ndim == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(order) and cnp.PyArray_ISWRITEABLE(order)):
        raise ValueError("order must be a writable 1-D C-contiguous intp array")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    bit_generator = rng.bit_generator
    cdef bitgen_t* bitgen = <bitgen_t*>PyCapsule_GetPointer(bit_generator.capsule,
                                                            "BitGenerator")
    cdef uint64_t seed
    cdef uint64_t state[4]
    cdef Py_ssize_t[::1] out = order
    cdef Py_ssize_t i, j, n = out.shape[0]
    with bit_generator.lock:   # the lock every Generator method takes
        seed = bitgen.next_uint64(bitgen.state)   # what integers(2**64) draws
    with nogil:
        for i in range(4):
            state[i] = _splitmix64(&seed)
        for i in range(n):
            j = <Py_ssize_t>(<double>(_xoshiro256starstar(state) >> 11) * TWO_TO_MINUS_53
                             * <double>(i + 1))
            if j > i:   # never: u <= 1 - 2^-53 keeps u (i + 1) below i + 1; but
                j = i   # an index past i would write outside order
            out[i] = out[j]
            out[j] = i


cdef inline uint64_t _splitmix64(uint64_t* x) noexcept nogil:
    """The next output of SplitMix64 from state x (Steele, Lea and Flood)."""
    cdef uint64_t z
    x[0] += 0x9E3779B97F4A7C15ULL
    z = x[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _xoshiro256starstar(uint64_t* s) noexcept nogil:
    """The next output of xoshiro256** from state s (Blackman and Vigna)."""
    cdef uint64_t result = _rotl(s[1] * 5, 7) * 9
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result
