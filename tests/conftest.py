import os
import textwrap
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


def _mnist_dir():
    from pathlib import Path

    for candidate in (os.environ.get("HANDGRAD_DATA"), str(Path(__file__).resolve().parents[2] / "shared" / "data")):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return str(Path(candidate).resolve())
    return None


MNIST_DIR = _mnist_dir()


@pytest.fixture
def mnist_dir():
    """The real MNIST files (../shared/data in CI); tests that need them skip elsewhere."""
    if MNIST_DIR is None:
        pytest.skip("the MNIST files are not here: set HANDGRAD_DATA to the folder holding MNIST/raw")
    return MNIST_DIR


_USER_OPS = textwrap.dedent('''
    import torch

    class MySoftplus(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.sigmoid(x)

    class MyAdd(torch.autograd.Function):
        @staticmethod
        def forward(a, b):
            return a + b

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return grad, grad  # b's gradient is not summed back to b's shape
''')


@pytest.fixture
def user_ops_file(tmp_path):
    """A user's file of Functions, as the command lines load them: MySoftplus (correct, no jvp) and
    MyAdd (its broadcast gradient not summed back)."""
    path = tmp_path / "user_ops.py"
    path.write_text(_USER_OPS)
    return path
