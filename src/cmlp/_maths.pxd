# The network's maths on flat buffers, for the other compiled modules to cimport.
# What each function computes, and where every 1/n lives: _maths.pyx.
from cython cimport floating

# Activation codes; network.py spells them by name (cmlp._maths.ACTIVATIONS).
cdef enum:
    IDENTITY = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    SOFTMAX = 4

# Loss codes (cmlp._maths.LOSSES).
cdef enum:
    MSE = 0
    HALF_SSE = 1
    BCE = 2
    CROSS_ENTROPY = 3

# What a pass on a sparse batch computes (sparse_pass).
cdef enum:
    PREDICT = 0     # the forward pass
    FORWARD = 1     # the forward pass, the output's logits kept (for a loss after)
    LOSS_ONLY = 2   # forward and loss
    GRADIENTS = 3   # forward, loss and gradients
    TRAIN = 4       # forward, loss, gradients and the SGD update
    BACKWARD = 5    # loss and gradients from the kept forward pass


ctypedef struct Layer:
    # Layer l maps A^(l) (n, n_in) to A^(l+1) (n, n_out) by f(A^(l) W^T + b).
    Py_ssize_t n_in, n_out
    Py_ssize_t w, b     # where W (n_out, n_in) and b (n_out,) start in params (and grads)
    Py_ssize_t a_in     # where A^(l) starts in A, per sample: n * a_in for a batch of n
    Py_ssize_t a_out    # where A^(l+1) starts in A, per sample
    Py_ssize_t d        # where delta^(l+1) starts in D, per sample
    int f               # the activation's code


ctypedef struct Net:
    # The architecture as the kernels read it; the caller owns the array of layers.
    const Layer* layers
    Py_ssize_t L            # layers
    Py_ssize_t n_params     # entries of params (and grads)
    Py_ssize_t width        # entries of A per sample: sizes[0] + ... + sizes[L]
    Py_ssize_t width_d      # entries of D per sample: sizes[1] + ... + sizes[L]
    bint logits             # the output is a softmax: a pass keeps its z for the loss


cdef inline floating descend(floating p, floating lr, floating g) noexcept nogil:
    # The SGD update of one entry, p - lr g: sgd_entries makes this pass over a
    # buffer (vectorised, the same bits), the optimizers with their own g per entry.
    return p - lr * g


cdef int net_init(Net* net, Layer* layers, const Py_ssize_t* sizes, const int* codes,
                  Py_ssize_t L) noexcept nogil

cdef void forward(const Net* net, Py_ssize_t n, floating[::1] params, floating[::1] A,
                  floating[::1] Z, bint keep_logits) noexcept nogil
cdef double output_delta(int loss, floating[::1] A, Py_ssize_t a0, const floating[::1] Y,
                         floating[::1] D, Py_ssize_t d0, floating[::1] Z, int code,
                         Py_ssize_t n, Py_ssize_t k) noexcept nogil
cdef double forward_loss(const Net* net, Py_ssize_t n, floating[::1] A, floating[::1] D,
                         floating[::1] Z, const floating[::1] Y, int loss,
                         Py_ssize_t a_skip) noexcept nogil
cdef double weighted_output_delta(const Net* net, Py_ssize_t n, floating[::1] A,
                                  floating[::1] D, floating[::1] Z, const floating[::1] Y,
                                  const double[::1] w, int loss, Py_ssize_t a_skip) noexcept nogil
cdef void backward(const Net* net, Py_ssize_t n, floating[::1] params, floating[::1] grads,
                   floating[::1] A, floating[::1] D, bint update, floating lr) noexcept nogil
cdef void sgd(floating[::1] params, const floating[::1] grads, floating lr,
              Py_ssize_t start, Py_ssize_t stop) noexcept nogil
cdef void sgd_by_layer(const Net* net, floating[::1] params, const floating[::1] grads,
                       floating lr) noexcept nogil
cdef void sgd_entries(floating* params, const floating* grads, floating lr,
                      Py_ssize_t count) noexcept nogil
cdef double add_weight_penalty(const Net* net, const floating[::1] params, floating[::1] grads,
                               floating scale) noexcept nogil

cdef double train_step(const Net* net, Py_ssize_t n, floating[::1] params, floating[::1] grads,
                       floating[::1] A, floating[::1] D, floating[::1] Z,
                       const floating[::1] Y, int loss, floating lr) noexcept nogil
cdef double loss_and_backward(const Net* net, Py_ssize_t n, floating[::1] params,
                              floating[::1] grads, floating[::1] A, floating[::1] D,
                              floating[::1] Z, const floating[::1] Y, int loss) noexcept nogil
cdef double weighted_loss_and_backward(const Net* net, Py_ssize_t n, floating[::1] params,
                                       floating[::1] grads, floating[::1] A, floating[::1] D,
                                       floating[::1] Z, const floating[::1] Y,
                                       const double[::1] w, int loss) noexcept nogil

cdef double sparse_pass(const Net* net, Py_ssize_t n, floating[::1] params,
                        floating[::1] grads, floating[::1] A, floating[::1] D, floating[::1] Z,
                        const floating[::1] Y, const double[::1] w, bint weighted, int loss,
                        int mode, floating lr, const floating[::1] data, const int[::1] indices,
                        const Py_ssize_t[::1] indptr) noexcept nogil

cdef bint all_finite(const floating[::1] v) noexcept nogil


cdef class Views:
    # The views of one network's buffers and the passes on them, for an owner
    # (the engine) that checks and sizes the buffers and holds the lock: the
    # subclasses Views64 and Views32 hold the typed views, and their passes
    # are generated from _views.pxi.tp. net is the owner's, and outlives this.
    cdef const Net* net
    cdef int bind(self, object params, object grads) except -1
    cdef int bind_work(self, object A, object D, object Z, object Y) except -1
    cdef int bind_predict(self, object P) except -1
    cdef void forward_pass(self, Py_ssize_t n, bint keep_logits, bint predict) noexcept nogil
    cdef double backward_pass(self, Py_ssize_t n, int code) noexcept nogil
    cdef double weighted_backward_pass(self, Py_ssize_t n, int code,
                                       const double[::1] w) noexcept nogil
    cdef double train(self, Py_ssize_t n, int code, double step) noexcept nogil
    cdef void sgd_pass(self, double step) noexcept nogil
    cdef double weight_penalty(self, double scale) noexcept nogil
    cdef bint params_finite(self) noexcept nogil
    cdef bint outputs_finite(self, Py_ssize_t start, Py_ssize_t stop) noexcept nogil


cdef class Views64(Views):
    cdef double[::1] p, g, A, D, Z, Y, P   # params, grads; work buffers; predict's activations


cdef class Views32(Views):
    cdef float[::1] p, g, A, D, Z, Y, P
