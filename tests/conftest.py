import os
import warnings

import pytest
import torch
from hypothesis import settings

# NOTE: bounded so that the property tests stay a few seconds; CI runs the same profile.
settings.register_profile("handgrad", max_examples=40, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "handgrad"))

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
