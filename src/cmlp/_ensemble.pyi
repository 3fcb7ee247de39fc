"""Types of the ensemble's compiled core (see _ensemble.pyx)."""
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray
from typing_extensions import disjoint_base

TINY_LANES: int

def has_openmp() -> bool: ...
def tiny_route(sizes: Any, codes: Any, dtype: DTypeLike, loss: str,
               batch_size: int) -> bool: ...
def work_size(sizes: Any, codes: Any, batch_size: int) -> int: ...
@disjoint_base
class Plan:
    dtype: np.dtype[Any]
    n_params: int
    def __init__(self, sizes: Any, codes: Any, dtype: DTypeLike) -> None: ...
    def tiny(self, loss: int, batch_size: int) -> bool: ...
    def train(self, loss: int, params: NDArray[np.floating[Any]],
              grads: NDArray[np.floating[Any]], storage: NDArray[np.floating[Any]],
              X: NDArray[np.floating[Any]], Y: NDArray[np.floating[Any]],
              order: NDArray[np.intp] | None, batch_size: int, lr: NDArray[np.float64] | None,
              losses: NDArray[np.float64], ran: NDArray[np.intp], totals: NDArray[np.float64],
              n_threads: int) -> None: ...
    def train_with_optimizer(self, loss: int, params: NDArray[np.floating[Any]],
                             grads: NDArray[np.floating[Any]],
                             storage: NDArray[np.floating[Any]], X: NDArray[np.floating[Any]],
                             Y: NDArray[np.floating[Any]], weights: NDArray[np.float64] | None,
                             weighted: NDArray[np.intc] | None,
                             batch_weights: NDArray[np.float64],
                             order: NDArray[np.intp] | None, batch_size: int, alpha: float,
                             optimizer: tuple[Any, ...], lr: NDArray[np.float64],
                             first_state: NDArray[np.floating[Any]],
                             second_state: NDArray[np.floating[Any]], steps: NDArray[np.intp],
                             losses: NDArray[np.float64], shares: NDArray[np.float64],
                             ran: NDArray[np.intp], totals: NDArray[np.float64],
                             n_threads: int) -> None: ...
    def predict(self, params: NDArray[np.floating[Any]], storage: NDArray[np.floating[Any]],
                X: NDArray[np.floating[Any]], out: NDArray[np.floating[Any]],
                n_threads: int) -> None: ...
