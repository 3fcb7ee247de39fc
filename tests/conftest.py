import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property-based tests run a bounded, fixed set of examples (a run must not
# fail at random): 30 each on a contributor's machine, 60 in CI (CI set);
# HYPOTHESIS_PROFILE=long explores a hundred times more, freshly drawn on
# every run.
_PATIENT = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("quick", max_examples=30, derandomize=True, **_PATIENT)
settings.register_profile("ci", max_examples=60, derandomize=True, **_PATIENT)
settings.register_profile("long", max_examples=6000, **_PATIENT)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "quick"))


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def dtype(request):
    return request.param
