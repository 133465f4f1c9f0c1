"""CIFAR-10 training throughput: our SGD loop vs a plain ``DataLoader`` + ``TensorDataset`` loop, same process.

Setting of Poggio et al. 2018, Fig. 1 (issue #9): the 5-layer all-convolutional net (9,898
parameters, :func:`~implicitlab.models.convnet.poggio_fig1_net`), He-normal init from one seed,
SGD (lr 0.02, momentum 0.9, the ``poggio2018-fig1`` defaults) on the mean cross-entropy, batch 100,
float32, on ``--n`` real CIFAR-10 training images (read with ``implicitlab.data.load_cifar10``, cached).

Loops, each timed over whole epochs from a fresh model (same seed, same optimizer settings):

- **plain** (the baseline): what a user writes, ``for xb, yb in DataLoader(TensorDataset(x, y),
  batch_size=100, shuffle=True): opt.zero_grad(); F.cross_entropy(model(xb), yb).backward();
  opt.step()``, with the standardised images as an ordinary ``(N, 3, 32, 32)`` tensor, default
  ``num_workers=0`` and ``torch.optim.SGD``'s defaults;
- **ours**: :func:`implicitlab.train.minibatch.run_epoch` on the tensors of
  :func:`~implicitlab.experiments.poggio2018.cifar.prepare` (on the CPU: stored channels-last;
  batches by one ``index_select`` of a seeded permutation; foreach SGD; our exact log-domain
  cross-entropy);

and, to show where the difference comes from (``--no-breakdown`` skips them):

- **ours, NCHW data**: the same loop on images in PyTorch's default layout (the loop alone);
- **plain, channels-last model**: the plain loop after ``model.to(memory_format=torch.channels_last)``
  (what a user gets from the one-line layout change).

The loops are interleaved (their order alternates from repeat to repeat) after a warm-up epoch
each, so a slow spell of the machine hits all of them. Reported: the median images/s of each with
its interquartile range, and the median and range of the per-repeat ratio to the plain loop measured
in the same repeat. Nothing here is a timed test. One torch thread unless ``--threads``.

    .venv/bin/python benchmarks/cifar.py [--data-dir ../shared/data] [--device cpu] [--n 5000]
        [--batch-size 100] [--epochs 1] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from implicitlab.experiments.poggio2018.cifar import (
    build_model,
    load_arrays,
    prepare,
)
from implicitlab.models.convnet import num_params, poggio_fig1_net
from implicitlab.train.minibatch import make_optimizer, run_epoch

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LR, MOMENTUM = 0.02, 0.9  # poggio2018-fig1's defaults


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def plain_epoch(model, opt, x, y, batch_size: int) -> None:
    for xb, yb in DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()


def quartiles(v: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=5_000, help="training images (class-balanced subset)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed repeat")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-breakdown", action="store_true", help="time only the plain loop and ours")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    t0 = time.perf_counter()
    arrays = load_arrays(args.data_dir)
    data = prepare(arrays, args.n, n_test=10, seed=args.seed, device=device)  # our layout for this device
    nchw = data.x.contiguous()  # the same images in PyTorch's default layout
    load_s = time.perf_counter() - t0

    def ours(x: torch.Tensor) -> Callable[[int], Callable[[], None]]:
        def start(repeat: int) -> Callable[[], None]:
            model = build_model(poggio_fig1_net, args.seed, dtype=torch.float32, device=device)
            opt, gen = make_optimizer(model, LR, MOMENTUM), torch.Generator().manual_seed(repeat)
            return lambda: run_epoch(model, opt, x, data.y, batch_size=args.batch_size, generator=gen)
        return start

    def plain(memory_format: torch.memory_format) -> Callable[[int], Callable[[], None]]:
        def start(repeat: int) -> Callable[[], None]:
            model = build_model(poggio_fig1_net, args.seed, dtype=torch.float32, device=device)
            model = model.to(memory_format=memory_format)
            opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            torch.manual_seed(repeat)  # the DataLoader's shuffle draws from the global generator
            return lambda: plain_epoch(model, opt, nchw, data.y, args.batch_size)
        return start

    loops = {"plain DataLoader loop": plain(torch.contiguous_format), "ours (run_epoch)": ours(data.x)}
    if not args.no_breakdown:
        loops["ours, NCHW data"] = ours(nchw)
        loops["plain, channels-last model"] = plain(torch.channels_last)

    def timed(start: Callable[[int], Callable[[], None]], repeat: int) -> float:
        epoch = start(repeat)
        sync(device)
        t = time.perf_counter()
        for _ in range(args.epochs):
            epoch()
        sync(device)
        return args.n * args.epochs / (time.perf_counter() - t)

    for start in loops.values():  # warm-up: allocator, oneDNN primitive caches, lazy initialisation
        timed(start, -1)
    speed: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            speed[name].append(timed(loops[name], r))

    model = build_model(poggio_fig1_net, args.seed, dtype=torch.float32, device=device)
    print(f"Poggio Fig. 1 net ({num_params(model):,} parameters), n = {args.n} CIFAR-10 images, batch {args.batch_size}, "
          f"SGD lr {LR} momentum {MOMENTUM}, float32, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); data loaded and prepared in {load_s:.1f} s (not timed below)")
    print(f"{args.repeats} interleaved repeats of {args.epochs} epoch(s) each; images/s median [IQR], "
          f"ratio to the plain loop of the same repeat: median [IQR] (min–max)")
    base = speed[names[0]]
    for name in names:
        v = speed[name]
        ratios = [a / b for a, b in zip(v, base, strict=True)]
        lo, hi = quartiles(v)
        rlo, rhi = quartiles(ratios)
        print(f"  {name:28s} {statistics.median(v):8,.0f} img/s [{lo:,.0f}, {hi:,.0f}]   "
              f"x{statistics.median(ratios):.2f} [{rlo:.2f}, {rhi:.2f}] ({min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()
