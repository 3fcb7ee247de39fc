"""Types of the epochs module's Python-visible part (see _batches.pyx)."""
import numpy as np
from numpy.typing import NDArray

IN_ORDER: NDArray[np.intp]

def shuffled_order(order: NDArray[np.intp], rng: np.random.Generator) -> None: ...
