"""Types of the compiled core (see _kernels.pyx)."""
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

ACTIVATIONS: dict[str, int]
LOSSES: dict[str, int]
GIL_RELEASE_MIN_WORK: int

class Engine:
    dtype: np.dtype[Any]
    params: NDArray[np.floating[Any]]
    grads: NDArray[np.floating[Any]]
    activations_buffer: NDArray[np.floating[Any]]
    deltas_buffer: NDArray[np.floating[Any]]
    batch_size: int
    has_forward: bool
    def __init__(self, sizes: ArrayLike, codes: ArrayLike, dtype: Any) -> None: ...
    def forward(self, X: ArrayLike, out: NDArray[np.floating[Any]] | None = None, *,
                keep: bool = True) -> NDArray[np.floating[Any]]: ...
    def backward(self, Y: ArrayLike, loss: str = "mse") -> float: ...
    def sgd_step(self, lr: float) -> None: ...
    def train_step(self, X: ArrayLike, Y: ArrayLike, lr: float, loss: str = "mse") -> float: ...
    def loss_and_grads(self, X: ArrayLike, Y: ArrayLike, loss: str = "mse") -> float: ...
    def train_epoch(self, X: NDArray[np.floating[Any]], Y: NDArray[np.floating[Any]],
                    order: NDArray[np.intp] | None, batch_size: int, lr: float, loss: str,
                    losses: NDArray[np.float64]) -> tuple[int, float]: ...
    def params_finite(self) -> bool: ...

def shuffled_order(order: NDArray[np.intp], uniforms: NDArray[np.float64]) -> None: ...
