"""Data-parallel curvature on 2 torchrun ranks (gloo, loopback only) against one process.

The ranks run ``distributed_worker.py`` on a float64 MLP with 17 examples split 5 / 12 (unequal shards):
every quantity must equal the one-process value to 1e-10 and agree bit for bit across the ranks; the
penalty is counted once (exact shift of every eigenvalue by 2·0.05); the sum-reduced sharpness is
N = 17 times the mean-reduced one; the determinism probe names the rank whose shard moves; every socket
the job listens on is bound to 127.0.0.1; a rank killed (SIGKILL) or raising mid-Lanczos ends the job
with an error naming rank 1 well within the process group's timeout; a rank that stops without exiting
ends it after that timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distributed_worker as worker
from implicitlab.diagnostics.distributed import (
    DistributedError,
    ShardGroup,
    free_port,
    loopback_launch,
    resolve_group,
    shard_bounds,
)

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "distributed_worker.py")
JOB_LIMIT_S = 240  # a guard against a hang of the whole job (the assertions below are far tighter)


def launch(tmp: Path, scenario: str) -> tuple[subprocess.Popen, list[str]]:
    """torchrun on 2 ranks running the worker through ``loopback_launch``: a file rendezvous instead of
    torchrun's TCP agent store (which listens on every interface), rank 0's store on 127.0.0.1 and gloo
    on lo, so every socket of the job is on 127.0.0.1 (asserted below)."""
    (tmp / "rdzv").touch()
    cmd, env = loopback_launch(2, ["unused"], str(tmp / "rdzv"))
    cmd = cmd[: cmd.index("-m", 2)] + [WORKER, str(tmp), scenario]
    assert "--local-addr=127.0.0.1" in cmd and "--master_addr=127.0.0.1" in cmd
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["GLOO_SOCKET_IFNAME"] == "lo"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    return proc, cmd


def finish(proc: subprocess.Popen) -> tuple[int, str, float]:
    """(exit code, output, time it ended); the whole process group is killed if it overruns."""
    try:
        out, _ = proc.communicate(timeout=JOB_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the torchrun job hung past {JOB_LIMIT_S} s:\n{out[-3000:]}")
    return proc.returncode, out, time.time()


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_compute")
    proc, _ = launch(tmp, "compute")
    code, out, _ = finish(proc)
    assert code == 0, out[-4000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    model, X, y = worker.problem()
    reference = worker.diagnostics(model, X, y, distributed=False)
    return {"ranks": ranks, "reference": reference, "tmp": tmp, "torchrun_pid": proc.pid}


def test_two_ranks_equal_one_process_and_each_other_bit_for_bit(computed):
    r0, r1 = (c["result"] for c in computed["ranks"])
    ref = computed["reference"]
    assert set(r0) == set(ref)
    for name, expected in ref.items():
        a, b = r0[name], r1[name]
        assert a.dtype == b.dtype and a.shape == b.shape == expected.shape, name
        assert torch.equal(a, b), f"{name}: ranks differ, max |Δ| = {float((a.double() - b.double()).abs().max())}"
        diff = (a.double() - expected.double()).abs()
        bound = 1e-10 * (1 + expected.double().abs())
        bad = (diff > bound).nonzero().tolist()
        assert not bad, f"{name}: entries {bad[:5]} differ from one process by up to {float(diff.max()):.2e}"
    assert int(r0["num_examples"]) == worker.NUM_EXAMPLES  # N from the unequal shards 5 + 12


def test_penalty_counted_once_and_sum_reduction(computed):
    r = computed["ranks"][0]["result"]
    # P = 0.05‖θ‖² adds 0.1·I: every eigenvalue moves by exactly 0.1 (twice that if counted per rank)
    assert abs(float(r["sharpness_penalty"][0] - r["sharpness_mean"][0]) - 0.1) < 1e-10
    # the explicit (torch.func.hessian) data-parallel Hessian with the penalty: same top eigenvalue
    top = float(torch.linalg.eigvalsh(r["explicit"])[-1])
    assert abs(top - float(r["sharpness_penalty"][0])) < 1e-10
    # a sum over the 17 examples is 17 times their mean
    assert abs(float(r["sharpness_sum"][0]) - worker.NUM_EXAMPLES * float(r["sharpness_mean"][0])) < 1e-9
    # Hutch++ with s = D sketch probes is exact: the trace of the explicit sum-Hessian
    H = r["explicit"] - 0.1 * torch.eye(r["explicit"].shape[0], dtype=torch.float64)  # the data term (mean)
    assert abs(float(r["hutchpp_exact"][0]) - worker.NUM_EXAMPLES * float(torch.trace(H))) < 1e-9


def test_determinism_probe_names_the_rank_whose_shard_moves(computed):
    for c in computed["ranks"]:
        message = c["probe"]
        assert "failed on rank [1] of 2" in message, message
        assert "rank 1: NondeterministicHessianError" in message and "rank 0:" not in message


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2) to list listening sockets")
def test_every_listening_socket_of_the_job_is_on_loopback(computed):
    tmp = computed["tmp"]
    pids = {int((tmp / f"pid{r}").read_text()) for r in (0, 1)} | {computed["torchrun_pid"]}
    ours = []
    for line in (tmp / "sockets.txt").read_text().splitlines():
        found = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if found & pids:
            ours.append(line.split()[3])  # Local Address:Port
    assert ours, "the job listed no listening socket of its own (the store and gloo must listen somewhere)"
    assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in ours), ours


def test_a_killed_raising_or_hung_rank_ends_the_job_with_an_error_within_the_timeout(tmp_path):
    jobs = {}
    for scenario in ("kill", "raise", "hang"):
        (tmp_path / scenario).mkdir()
        # all at once (the test's time is the slowest job's), each on the loopback launch
        jobs[scenario] = launch(tmp_path / scenario, scenario)[0]
    for scenario, proc in jobs.items():
        code, out, ended = finish(proc)
        failed_at = float((tmp_path / scenario / "failed_at").read_text())
        took = ended - failed_at
        assert code != 0, out[-3000:]
        assert not (tmp_path / scenario / "rank0.pt").exists()
        if scenario == "hang":
            # rank 0 waits the process group's timeout, then fails naming itself and the collective;
            # torchrun ends the hung rank (SIGTERM) and reports both
            assert worker.HANG_TIMEOUT_S * 0.9 < took < worker.HANG_TIMEOUT_S + 12, f"hang: ended after {took:.1f} s"
            assert "rank 0 of 2: the Hessian-product collective failed" in out, out[-3000:]
            assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-15", out), out[-3000:]
            continue
        assert took < worker.TIMEOUT_S, f"{scenario}: ended {took:.1f} s after the failure"
        # torchrun's summary names the failed rank; the survivor's error names itself and the collective
        assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", out), out[-3000:]
        if scenario == "kill":
            assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", out), out[-3000:]
        else:
            assert "injected failure on rank 1" in out, out[-3000:]


# ------------------------------------------------------------------------- in-process ---
def test_shard_bounds_are_contiguous_and_cover_the_data():
    for n, w in [(17, 2), (10, 3), (5, 5), (1000, 7)]:
        bounds = [shard_bounds(n, w, r) for r in range(w)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="cannot be split"):
        shard_bounds(2, 3, 0)


def test_the_knob_without_a_process_group():
    assert resolve_group(None) is None and resolve_group(False) is None
    with pytest.raises(ValueError, match="not initialised"):
        resolve_group(True)
    model, X, y = worker.problem()
    from implicitlab.diagnostics import HessianOperator

    with pytest.raises(ValueError, match="not initialised"):
        HessianOperator(model, "ce", X, y, distributed=True)


def test_backend_and_device_checked_before_any_product():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    with pytest.raises(DistributedError, match="NCCL"):
        ShardGroup(None, 0, 2, "nccl").comm_device(cpu)
    assert ShardGroup(None, 0, 2, "gloo").comm_device(cpu) == cpu
    assert ShardGroup(None, 0, 2, "gloo").comm_device(cuda) == cpu  # gloo stages CUDA tensors on the CPU
    assert ShardGroup(None, 0, 2, "nccl").comm_device(cuda) == cuda
    assert ShardGroup(None, 0, 2, "cpu:gloo,cuda:nccl").comm_device(cuda) == cuda
    assert ShardGroup(None, 0, 2, "cpu:gloo,cuda:nccl").comm_device(cpu) == cpu


@pytest.fixture
def one_rank_group(tmp_path):
    """A one-process gloo group (file store), destroyed afterwards so that no other test sees it."""
    dist = torch.distributed
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_one_rank_is_one_process_bit_for_bit_and_auto_follows_the_group(one_rank_group):
    import implicitlab as il

    model, X, y = worker.problem()
    alone = il.sharpness(model, "ce", X, y, k=2, tol=1e-10, distributed=False)
    auto = il.sharpness(model, "ce", X, y, k=2, tol=1e-10)  # None: the initialised default group
    assert torch.equal(alone.values, auto.values) and torch.equal(alone.residuals, auto.residuals)
    H = il.HessianOperator(model, "ce", X, y, check_determinism=False)
    assert H.group is not None and H.group.world_size == 1 and H.shard_sizes == [worker.NUM_EXAMPLES]
    with pytest.raises(ValueError, match="train_batchnorm"):
        il.HessianOperator(model, "ce", X, y, mode="train_batchnorm")
    with pytest.raises(ValueError, match="rank 0: ValueError: X contains 3 NaN"):  # named, before any product
        il.HessianOperator(model, "ce", X.clone().index_fill_(0, torch.tensor([2]), float("nan")), y)


def test_float32_products_and_loss_gradient_through_a_one_rank_group(one_rank_group):
    """The float32 path (metadata gathered apart from the products) and the gradient: one rank = one process."""
    import implicitlab as il

    model, X, y = worker.problem()
    model = model.float()
    X = X.float()
    v = torch.randn(26, generator=torch.Generator().manual_seed(2))
    grouped = il.HessianOperator(model, "ce", X, y, penalty=worker.penalty)
    alone = il.HessianOperator(model, "ce", X, y, penalty=worker.penalty, distributed=False)
    assert grouped.group is not None and alone.group is None
    assert torch.equal(grouped @ v, alone @ v)
    V = torch.randn(26, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(grouped @ V, alone @ V)
    (lg, gg), (la, ga) = grouped.loss_and_gradient(), alone.loss_and_gradient()
    assert abs(lg - la) <= 1e-6 * abs(la) and torch.allclose(gg, ga, rtol=1e-5, atol=1e-7)
