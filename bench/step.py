"""A full training step of the default MLP, hand vs native: python bench/step.py [--device cuda]"""

import contextlib

import torch
from common import interleaved, parser, ratio, ratio_spread, sync, table, write

from handgrad.functional import get_ops
from models.mlp import MLP


def make_step(kind: str, batch: int, device: str, hidden, autocast: bool = False):
    """One forward, backward and SGD update; with ``autocast`` the forward runs under torch.autocast
    (bfloat16 on CPU, float16 on CUDA)."""
    torch.manual_seed(0)
    model = MLP(get_ops(kind), hidden=hidden, weight_decay=5e-4, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 784, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    device_type = device.split(":")[0]
    low = torch.bfloat16 if device_type == "cpu" else torch.float16

    def step():
        with torch.autocast(device_type, dtype=low) if autocast else contextlib.nullcontext():
            total, _, _ = model.objective(x, y)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sync(device)

    return step


def run(doc: str, name: str, autocast: bool = False) -> None:
    """Hand and native steps side by side at batch 128 and 512; writes bench/results/<name>-<device>."""
    args = parser(doc).parse_args()
    batches = [128, 512] if not args.smoke else [8]
    hidden = [256, 128] if not args.smoke else [16]
    rounds, min_time = (1, 0.01) if args.smoke else (15, 0.3)
    rows, payload = [], {}
    for batch in batches:
        fns = {k: make_step(k, batch, args.device, hidden, autocast) for k in ("hand", "native")}
        for f in fns.values():
            for _ in range(5):
                f()  # warm-up
        times = interleaved(fns, rounds, min_time)
        r, (q1, q3) = ratio(times), ratio_spread(times)
        h, n = min(times["hand"]) * 1e3, min(times["native"]) * 1e3
        rows.append([batch, args.device, h, n, r, f"{q1:.3f}-{q3:.3f}"])
        payload[str(batch)] = {"hand_ms": h, "native_ms": n, "ratio": r, "ratio_quartiles": [q1, q3],
                               "rounds": rounds}
    write(f"{name}-{args.device.split(':')[0]}", args, {"results": payload},
          table(["batch", "device", "hand ms/step", "native ms/step", "hand / native", "middle half of rounds"], rows))


if __name__ == "__main__":
    run(__doc__, "step")
