# Epochs in compiled code, for the engine (_kernels.pyx) to cimport: see _batches.pyx.
from cython cimport floating

from cmlp._maths cimport Net
from cmlp._optim cimport Update


cdef inline void work_bounds(Py_ssize_t m, Py_ssize_t width_sum, Py_ssize_t n_in,
                             Py_ssize_t n_out, bint logits, Py_ssize_t* ends) noexcept nogil:
    """OUT ends[0..3]: where A, D, the kept logits Z and the targets of m samples
    end in the work storage, each block starting where the one before ends."""
    ends[0] = m * width_sum
    ends[1] = ends[0] + m * (width_sum - n_in)
    ends[2] = ends[1] + (m * n_out if logits else 0)
    ends[3] = ends[2] + m * n_out


cdef Py_ssize_t epoch(const Net* net, floating[::1] params, floating[::1] grads,
                      floating[::1] storage, const floating[:, ::1] X, const floating[:, ::1] Y,
                      const Py_ssize_t[::1] order, Py_ssize_t batch_size, int loss,
                      bint train, floating lr, double[::1] losses, bint* bad_row) noexcept nogil
cdef Py_ssize_t stepped_epoch(const Net* net, floating[::1] params, floating[::1] grads,
                              floating[::1] storage, const floating[:, ::1] X,
                              const floating[:, ::1] Y, const double[::1] weights,
                              double[::1] batch_weights, const Py_ssize_t[::1] order,
                              Py_ssize_t batch_size, int loss, double alpha,
                              const Update* update, double lr, floating[::1] first_state,
                              floating[::1] second_state, Py_ssize_t* steps,
                              double[::1] losses, double[::1] shares,
                              bint* bad_row) noexcept nogil
cdef double numpy_sum(const double* a, Py_ssize_t n) noexcept nogil
cdef Py_ssize_t sparse_epoch(const Net* net, floating[::1] params, floating[::1] grads,
                             floating[::1] storage, const floating[::1] data,
                             const int[::1] indices, const Py_ssize_t[::1] indptr,
                             const floating[:, ::1] Y, const Py_ssize_t[::1] order,
                             Py_ssize_t batch_size, int loss, bint train, floating lr,
                             double[::1] losses, floating[::1] bdata, int[::1] bindices,
                             Py_ssize_t[::1] bindptr, bint* bad_row) noexcept nogil
cdef bint gather_csr(const floating[::1] data, const int[::1] indices,
                     const Py_ssize_t[::1] indptr, const Py_ssize_t[::1] order,
                     Py_ssize_t start, Py_ssize_t m, Py_ssize_t n_in,
                     floating[::1] bdata, int[::1] bindices,
                     Py_ssize_t[::1] bindptr) noexcept nogil
cdef bint gather_rows(const floating[:, ::1] Y, const Py_ssize_t[::1] order, Py_ssize_t start,
                      Py_ssize_t m, floating[::1] T) noexcept nogil
cdef Py_ssize_t csr_batch_nonzeros(const Py_ssize_t[::1] indptr, const Py_ssize_t[::1] order,
                                   Py_ssize_t start, Py_ssize_t stop, Py_ssize_t batch_size,
                                   Py_ssize_t nnz) noexcept
cdef bint predictions_finite(const Net* net, floating[::1] params, floating[::1] P,
                             floating[::1] Z, const floating[:, ::1] X,
                             Py_ssize_t batch_size) noexcept nogil
cdef object check_order(object order, Py_ssize_t n)
cdef int check_losses(object losses, Py_ssize_t n_batches) except -1
cdef int check_epoch_views(const floating[:, ::1] X, const floating[:, ::1] Y,
                           const Py_ssize_t[::1] order, Py_ssize_t n_in,
                           Py_ssize_t n_out) except -1
