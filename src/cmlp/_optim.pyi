"""Types of the compiled optimizers (see _optim.pyx)."""
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import disjoint_base

@disjoint_base
class _Optimizer:
    params: NDArray[np.floating[Any]]
    grads: NDArray[np.floating[Any]]
    steps: int
    lr: float
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, ArrayLike | int]) -> None: ...
    def step(self) -> None: ...

@disjoint_base
class SGD(_Optimizer):
    momentum_buffer: NDArray[np.floating[Any]]
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    def __init__(self, params: NDArray[np.floating[Any]], grads: NDArray[np.floating[Any]],
                 lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None: ...

@disjoint_base
class Adam(_Optimizer):
    exp_avg: NDArray[np.floating[Any]]
    exp_avg_sq: NDArray[np.floating[Any]]
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled_weight_decay: bool
    @property
    def betas(self) -> tuple[float, float]: ...
    def __init__(self, params: NDArray[np.floating[Any]], grads: NDArray[np.floating[Any]],
                 lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False) -> None: ...
