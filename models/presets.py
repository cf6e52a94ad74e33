"""Training presets: named values for train.py's flags; a flag given on the command line wins.

Every preset names the same keys (argparse destinations), so the table reads across and
``--preset default`` is exactly the flags' own defaults (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PRESETS", "Preset", "as_flags"]

KEYS = ("hidden", "activation", "loss", "bias", "batch_size", "epochs", "lr", "momentum",
        "schedule", "weight_decay")


@dataclass(frozen=True)
class Preset:
    summary: str
    values: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "default": Preset(
        "784-256-128-10, ReLU, softmax cross-entropy",
        dict(hidden=[256, 128], activation="relu", loss="ce", bias=True, batch_size=128, epochs=5,
             lr=0.1, momentum=0.9, schedule="onecycle", weight_decay=5e-4)),
    "seed001": Preset(
        "seed 001's network: sigmoid neurons throughout, squared error against the one-hot target, minibatch SGD",
        dict(hidden=[256, 128], activation="sigmoid", loss="mse", bias=True, batch_size=64, epochs=10,
             lr=3.0, momentum=0.9, schedule="onecycle", weight_decay=0.0)),
    "seed004": Preset(
        "seed 004's network: one hidden layer, no biases, J = L + λ/2 (‖W1‖² + ‖W2‖²)",
        dict(hidden=[512], activation="relu", loss="ce", bias=False, batch_size=128, epochs=8,
             lr=0.1, momentum=0.9, schedule="onecycle", weight_decay=5e-4)),
}


def _flag(key: str, value) -> str:
    if key == "bias":
        return "--bias" if value else "--no-bias"
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float) else f"--{key.replace('_', '-')} {value}"


def as_flags(values: dict) -> str:
    """The command-line flags that set ``values``: ``{"lr": 0.1, "bias": False}`` -> ``--lr 0.1 --no-bias``."""
    return " ".join(_flag(k, values[k]) for k in KEYS if k in values)
