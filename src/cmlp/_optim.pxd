# The optimizers' update rules, for the ensemble's compiled epochs to cimport: see _optim.pyx.
from cython cimport floating


cdef enum UpdateKind:
    SGD_UPDATE = 0
    ADAM_UPDATE = 1


cdef struct Update:
    # An optimizer's hyperparameters, the learning rate apart.
    int kind
    double momentum, keep, weight_decay    # SGD; keep = 1 - dampening
    bint nesterov
    double beta1, beta2, eps               # Adam (weight_decay too)
    bint decoupled


cdef void apply_update(const Update* update, floating[::1] params, const floating[::1] grads,
                       floating[::1] first_state, floating[::1] second_state,
                       Py_ssize_t steps, double lr) noexcept nogil
cdef Update sgd_update(double momentum, double dampening, bint nesterov,
                       double weight_decay) noexcept
cdef Update adam_update(double beta1, double beta2, double eps, double weight_decay,
                        bint decoupled) noexcept
