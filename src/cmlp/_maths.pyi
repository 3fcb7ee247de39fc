"""Types of the maths module's Python-visible part (see _maths.pyx)."""
from typing_extensions import disjoint_base

ACTIVATIONS: dict[str, int]
LOSSES: dict[str, int]
LOSS_NEEDS: dict[str, str]
VARIANT_ASKED_AT_IMPORT: str

def vector_variants() -> list[str]: ...
def vector_variant() -> str: ...
def blas_min_work() -> int: ...

# The typed views of a network's buffers and the passes on them: for the
# engine's compiled code, which reaches them through _maths.pxd; nothing to
# call from Python.
@disjoint_base
class Views: ...
@disjoint_base
class Views64(Views): ...
@disjoint_base
class Views32(Views): ...
