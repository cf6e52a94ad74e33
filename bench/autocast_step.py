"""A training step of the default MLP under CPU autocast (bfloat16), hand vs native.

    python bench/autocast_step.py [--device cuda]   # float16 on CUDA

The same step as bench/step.py (forward, backward, SGD update), with the forward pass under
``torch.autocast``: the affine layers compute in the lower dtype, the losses and the penalty in
float32. The ratio hand / native is what to compare between two versions of handgrad.
"""

from step import run

if __name__ == "__main__":
    run(__doc__, "autocast-step", autocast=True)
