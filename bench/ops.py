"""Per op, forward + backward, hand vs native, small and large: python bench/ops.py"""

import torch
from common import interleaved, parser, ratio, sync, table, write

from handgrad.functional import get_ops

HAND, NATIVE = get_ops("hand"), get_ops("native")


def cases(n: int, device: str):
    g = torch.Generator(device="cpu").manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g).to(device).requires_grad_()

    x, y = t(n, 256), t(n, 256)
    w, b = t(256, 256), t(256)
    target = torch.randint(0, 256, (n,), generator=g).to(device)
    return {
        "add": lambda ops: ops.add(x, y),
        "add (broadcast)": lambda ops: ops.add(x, b),
        "mul": lambda ops: ops.mul(x, y),
        "maximum": lambda ops: ops.maximum(x, y),
        "relu": lambda ops: ops.relu(x),
        "sigmoid": lambda ops: ops.sigmoid(x),
        "affine": lambda ops: ops.affine(x, w, b),
        "l2_penalty": lambda ops: ops.l2_penalty([w, x], 1e-3),
        "cross_entropy": lambda ops: ops.cross_entropy(x, target),
        "mse_loss": lambda ops: ops.mse_loss(x, y),
    }


def main():
    args = parser(__doc__).parse_args()
    sizes = {"small": 8, "large": 4096} if not args.smoke else {"small": 2}
    rounds, min_time = (1, 0.01) if args.smoke else (5, 0.2)
    rows, payload = [], {}
    for label, n in sizes.items():
        for op, f in cases(n, args.device).items():
            def run(ops, f=f):
                out = f(ops)
                out.backward(torch.ones_like(out))
                sync(args.device)
            times = interleaved({"hand": lambda: run(HAND), "native": lambda: run(NATIVE)}, rounds, min_time)
            r = ratio(times)
            h, nat = min(times["hand"]) * 1e6, min(times["native"]) * 1e6
            rows.append([op, f"{label} ({n}x256)", h, nat, r])
            payload[f"{op}/{label}"] = {"hand_us": h, "native_us": nat, "ratio": r}
    write("ops", args, {"results": payload},
          table(["op", "size", "hand µs", "native µs", "hand / native"], rows))


if __name__ == "__main__":
    main()
