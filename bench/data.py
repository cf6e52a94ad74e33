"""One epoch of data handling: handgrad's tensor path vs a torchvision DataLoader.

    python bench/data.py --data-dir ../shared/data

The DataLoader path is the classic one: ToTensor + Normalize per sample, batch 128, shuffled.
"""

import time

import torch
import torchvision
from common import parser, table, write
from torchvision import transforms

from handgrad.data import MEAN, STD, load_mnist


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    limit = 2000 if args.smoke else None
    t0 = time.perf_counter()
    data = load_mnist(args.data_dir, download=False, fallback=args.smoke, limit_train=limit)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for _x, y in data.batches(128, epoch=0, seed=0):
        n += y.numel()
    ours = time.perf_counter() - t0

    # NOTE: torchvision reads only its own layout, <root>/MNIST/raw; other layouts time the transform alone
    torchvision_layout = data.location is not None and data.location.parts[-2:] == ("MNIST", "raw")
    if torchvision_layout:
        root = str(data.location.parent.parent)
        ds = torchvision.datasets.MNIST(root, train=True, download=False, transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]))
        if limit:
            ds = torch.utils.data.Subset(ds, range(limit))
        loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=0)
        t0 = time.perf_counter()
        m = sum(y.numel() for _, y in loader)
        classic = time.perf_counter() - t0
        assert m == n
    else:  # the smoke run on a machine without MNIST (or another layout): time the per-sample transform
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
        images = (data.train_x * STD + MEAN).mul(255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
        t0 = time.perf_counter()
        for img in images:
            tf(img)
        classic = time.perf_counter() - t0
    rows = [["handgrad (tensors, normalized once)", n, ours, f"+ {load_s:.2f} s once at start"],
            ["DataLoader + ToTensor + Normalize", n, classic, ""],
            ["speed-up", "", classic / ours, ""]]
    write("data", args, {"images": n, "handgrad_s": ours, "handgrad_load_s": load_s, "dataloader_s": classic,
                         "speedup": classic / ours},
          table(["path", "images", "seconds per epoch", "note"], rows))


if __name__ == "__main__":
    main()
