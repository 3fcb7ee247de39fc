"""Types of the maths module's Python-visible part (see _maths.pyx)."""

ACTIVATIONS: dict[str, int]
LOSSES: dict[str, int]
LOSS_NEEDS: dict[str, str]
VARIANT_ASKED_AT_IMPORT: str

def vector_variants() -> list[str]: ...
def vector_variant() -> str: ...
def blas_min_work() -> int: ...
