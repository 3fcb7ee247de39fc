# The single-model kernels that _ensemble runs on each model's slice of its
# stacked buffers: the same functions MLP's engine calls, so each model of an
# ensemble gets the bits it would get alone. A stand-in until the maths move
# into _maths.pxd.
from cython cimport floating


cdef double _train_step(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                        floating[::1] params, floating[::1] grads,
                        floating[::1] A, floating[::1] D, floating[::1] Z,
                        const floating[::1] Y, int loss, floating lr) noexcept nogil

cdef void _forward(const Py_ssize_t[::1] sizes, const int[::1] codes, Py_ssize_t n,
                   floating[::1] params, floating[::1] A,
                   floating[::1] Z, bint keep_logits) noexcept nogil

cdef Py_ssize_t _epoch(const Py_ssize_t[::1] sizes, const int[::1] codes,
                       floating[::1] params, floating[::1] grads, floating[::1] storage,
                       const floating[:, ::1] X, const floating[:, ::1] Y,
                       const Py_ssize_t[::1] order, Py_ssize_t batch_size, int loss,
                       bint train, floating lr, double[::1] losses, bint* bad_row) noexcept nogil
