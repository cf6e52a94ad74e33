"""Bytes saved for backward in one training step, hand vs native: python bench/memory.py

Counted with torch.autograd.graph.saved_tensors_hooks, so the number is the same on any machine.
A tensor saved twice (or saved by two ops) is counted once, by its storage.
"""

import torch
from common import parser, table, write
from torch.autograd.graph import saved_tensors_hooks

from handgrad.functional import get_ops
from models.mlp import MLP


def saved_bytes(kind: str, batch: int, hidden, activation: str, loss: str) -> tuple[int, int]:
    torch.manual_seed(0)
    model = MLP(get_ops(kind), hidden=hidden, activation=activation, loss=loss, weight_decay=5e-4)
    x = torch.randn(batch, 784)
    y = torch.randint(0, 10, (batch,))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        seen[ptr] = t.untyped_storage().nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        total, _, _ = model.objective(x, y)
    total.backward()
    activations = sum(n for p, n in seen.items() if p not in params and p != x.untyped_storage().data_ptr())
    return activations, sum(seen.values())


def main():
    args = parser(__doc__).parse_args()
    batches = [128, 512] if not args.smoke else [4]
    hidden = [256, 128] if not args.smoke else [8]
    rows, payload = [], {}
    for activation, loss in (("relu", "ce"), ("sigmoid", "ce"), ("relu", "mse")):
        for batch in batches:
            (ha, ht), (na, nt) = (saved_bytes(k, batch, hidden, activation, loss) for k in ("hand", "native"))
            rows.append([f"{activation}/{loss}", batch, ht, nt, ht / nt, ha, na])
            payload[f"{activation}-{loss}/{batch}"] = {"hand_bytes": ht, "native_bytes": nt, "ratio": ht / nt,
                                                       "hand_activation_bytes": ha, "native_activation_bytes": na}
    write("memory", args, {"results": payload},
          table(["model", "batch", "hand bytes", "native bytes", "hand / native", "hand (activations only)",
                 "native (activations only)"], rows))


if __name__ == "__main__":
    main()
