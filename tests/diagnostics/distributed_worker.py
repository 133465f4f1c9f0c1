"""One rank of the data-parallel tests (run by torchrun from ``test_distributed.py``; not a test itself).

``python -m torch.distributed.run ... distributed_worker.py OUT SCENARIO``: every rank builds the same
float64 model (seeded) and takes its contiguous shard of the data, unequal on purpose (rank 0 holds
``SHARD_0`` examples, rank 1 the rest), computes the diagnostics and writes them to ``OUT/rank<r>.pt``.
SCENARIO ``compute``: the results (and rank 0 lists the listening sockets); ``kill``: rank 1 kills
itself (SIGKILL) at its 5th product; ``raise``: rank 1 raises at its 5th product; ``hang``: rank 1
stops at its 5th product without exiting (the process group's timeout ends the job).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

NUM_EXAMPLES = 17
SHARD_0 = 5  # rank 0's examples; rank 1 holds the other 12
TIMEOUT_S = 20.0  # the process group's timeout in these tests
HANG_TIMEOUT_S = 8.0  # the process group's timeout of the "hang" scenario (its test waits that long)


def problem():
    """The model and the whole data set (float64, seeded): the same on every rank and in the test."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(torch.float64)
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(NUM_EXAMPLES, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (NUM_EXAMPLES,), generator=gen)
    return model, X, y


def penalty(params):
    return 0.05 * sum((w**2).sum() for w in params.values())


def sum_loss(outputs, targets):  # a callable that sums over the batch (detected as a sum)
    return nn.functional.cross_entropy(outputs, targets, reduction="sum")


def diagnostics(model, X, y, distributed) -> dict[str, torch.Tensor]:
    """Everything the test compares, as tensors (the same code on one process and on the ranks)."""
    import implicitlab as il

    opts = dict(distributed=distributed)
    out = {}
    mean = il.sharpness(model, "ce", X, y, k=2, tol=1e-10, **opts)
    out["sharpness_mean"] = mean.values
    out["sharpness_residuals"] = mean.residuals
    out["sharpness_sum"] = il.sharpness(model, sum_loss, X, y, k=1, tol=1e-10, **opts).values
    out["sharpness_penalty"] = il.sharpness(model, "ce", X, y, k=1, tol=1e-10, penalty=penalty, **opts).values
    hut = il.hutchinson_trace(model, "ce", X, y, num_matvecs=6, seed=3, **opts)
    out["hutchinson"] = torch.tensor([hut.value, hut.stderr], dtype=torch.float64)
    exact = il.hutchpp_trace(model, sum_loss, X, y, num_matvecs=3 * 26, seed=4, **opts)  # s = D: exact
    out["hutchpp_exact"] = torch.tensor([exact.value], dtype=torch.float64)
    dens = il.slq_spectral_density(model, "ce", X, y, num_probes=3, num_steps=8, seed=5, **opts)
    out["slq_nodes"], out["slq_weights"] = dens.nodes, dens.weights
    out["explicit"] = il.explicit_hessian(model, "ce", X, y, penalty=penalty, **opts)
    tracker = il.SharpnessTracker(model, "ce", X, y, tol=1e-10, **opts)
    out["tracker"] = torch.stack([tracker(0).values, tracker(1).values])
    H = il.HessianOperator(model, "ce", X, y, check_determinism=False, **opts)
    loss, grad = H.loss_and_gradient()
    out["loss_grad"] = torch.cat([torch.tensor([loss], dtype=torch.float64), grad])
    out["num_examples"] = torch.tensor([H.num_examples])
    return out


class Drifting:
    """A re-iterable loader whose data move on every pass: not one data set."""

    def __init__(self, X, y):
        self.X, self.y, self.passes = X, y, 0

    def __iter__(self):
        self.passes += 1
        yield self.X + 1e-3 * self.passes, self.y


@record
def main() -> None:
    out_dir, scenario = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    from implicitlab.diagnostics import HessianOperator
    from implicitlab.diagnostics.distributed import init_from_env

    group = init_from_env(timeout_s=HANG_TIMEOUT_S if scenario == "hang" else TIMEOUT_S)
    rank = group.rank
    (out_dir / f"pid{rank}").write_text(str(os.getpid()))
    model, X, y = problem()
    start, stop = (0, SHARD_0) if rank == 0 else (SHARD_0, NUM_EXAMPLES)
    Xr, yr = X[start:stop], y[start:stop]
    if scenario in ("kill", "raise", "hang") and rank == 1:
        products = HessianOperator._local_products
        calls = [0]

        def failing(self, V, reuse=True):
            calls[0] += 1
            if calls[0] == 5:
                (out_dir / "failed_at").write_text(repr(time.time()))
                if scenario == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if scenario == "hang":
                    time.sleep(600)
                raise RuntimeError("injected failure on rank 1")
            return products(self, V, reuse)

        HessianOperator._local_products = failing
    result = diagnostics(model, Xr, yr, None)
    # the determinism probe across ranks: rank 1's shard changes between passes
    from implicitlab.diagnostics import NondeterministicHessianError

    loader = Drifting(Xr, yr) if rank == 1 else [(Xr, yr)]
    try:
        HessianOperator(model, "ce", loader)
        probe = "no error"
    except NondeterministicHessianError as exc:
        probe = str(exc)
    torch.save({"result": result, "probe": probe}, out_dir / f"rank{rank}.pt")
    torch.distributed.barrier()
    if rank == 0:  # every listening socket, while all ranks are still up
        listing = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        (out_dir / "sockets.txt").write_text(listing)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
