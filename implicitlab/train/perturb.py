"""Weight perturbations during training: on the exact GD fast-forward, their exact law, and on a module.

Poggio et al. 2018 (Sec. 6, Figs 4 and 5) perturb the weights every P iterations up to an
iteration T_p and let GD run in between. Three things here:

- :func:`perturbed_gd` does this on a :class:`~implicitlab.train.quadratic.QuadraticGD` (Fig. 4):
  between two events (a probe or a perturbation) it advances the iterate exactly, so the cost
  depends on the number of events, not of iterations. Semantics: a perturbation "at step s" is
  added to the iterate after its s-th GD update; the probe at s is taken before it
  (``after_perturbation=False``) and, at every perturbation step, once more after it
  (``after_perturbation=True``), so the table shows both the end of a GD phase and the jump.
  ``explicit=True`` steps GD one update at a time instead (the reference, for tests). Its noise
  comes from :func:`gaussian_perturbations` (numpy, one generator per run).
- :func:`perturbed_gd_moments`: the exact mean and standard deviation of what :func:`perturbed_gd`
  measures (test MSE, ‖P_null w‖²) under N(0, σ²I) perturbations, given the initial weights: the
  perturbations pass through the linear part of the GD map, P_null + V diag(q^k) Vᵀ, so the state
  is Gaussian (Sec. 6: the null-space component takes a random walk).
- :func:`perturb_parameters_` (Fig. 5): every parameter tensor of an ``nn.Module`` plus Gaussian
  noise scaled to that tensor's own spread, drawn from a CPU ``torch.Generator``. It is not
  :func:`gaussian_perturbations` in another shape: the noise scale depends on the weights and the
  draws come from torch, not numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .quadratic import QuadraticGD

__all__ = [
    "PerturbationSchedule",
    "gaussian_perturbations",
    "perturb_parameters_",
    "perturbed_gd",
    "perturbed_gd_moments",
]


@dataclass(frozen=True)
class PerturbationSchedule:
    """Perturb every ``every`` iterations, at steps every, 2·every, … ≤ ``until``.

    Attributes:
        every: iterations between perturbations (≥ 1).
        until: the last step at which a perturbation may happen (inclusive); None: never stop.
        std: standard deviation of each weight's Gaussian perturbation (mean 0).
    """

    every: int
    until: int | None
    std: float

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be ≥ 1, got {self.every}")
        if self.until is not None and self.until < 0:
            raise ValueError(f"until must be ≥ 0 or None, got {self.until}")
        if not (np.isfinite(self.std) and self.std >= 0):
            raise ValueError(f"std must be ≥ 0 and finite, got {self.std}")

    def steps(self, num_steps: int) -> np.ndarray:
        """Perturbation steps within [1, num_steps] (a perturbation at num_steps itself is kept)."""
        last = num_steps if self.until is None else min(self.until, num_steps)
        return np.arange(self.every, last + 1, self.every, dtype=np.int64)


def gaussian_perturbations(schedule: PerturbationSchedule, num_steps: int, seeds: Sequence[int],
                           dim: int) -> np.ndarray:
    """N(0, std²) perturbations ``(M, R, dim)`` for the M scheduled steps, run r drawn from its
    own ``numpy.random.default_rng(seeds[r])`` (so a run's noise does not depend on R)."""
    M = len(schedule.steps(num_steps))
    out = np.empty((M, len(seeds), dim))
    for r, seed in enumerate(seeds):
        out[:, r, :] = schedule.std * np.random.default_rng(int(seed)).standard_normal((M, dim))
    return out


def perturbed_gd(
    gd: QuadraticGD,
    w0: np.ndarray,
    num_steps: int,
    probe_steps: Sequence[int] | np.ndarray,
    perturb_steps: Sequence[int] | np.ndarray = (),
    perturbations: np.ndarray | None = None,
    probe: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    *,
    explicit: bool = False,
    progress: Callable[[float], None] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Run GD from ``w0`` ``(R, d)`` for ``num_steps`` with perturbations; probe on a schedule.

    Args:
        gd: the quadratic problem and step size.
        w0: ``(R, d)`` initial weights of R runs.
        num_steps: total GD iterations.
        probe_steps: steps in [0, num_steps] at which ``probe`` is called (perturbation steps are
            always probed, before and after).
        perturb_steps: increasing steps in [1, num_steps] at which ``perturbations[j]`` is added.
        perturbations: ``(M, R, d)``, one per perturbation step.
        probe: ``w (R, d) -> {name: (R,) array}``; default: the training loss.
        explicit: step one update at a time (reference) instead of the exact fast-forward.
        progress: called with the fraction of events done.

    Returns:
        (table, w_final): the table has columns ``run, step, after_perturbation,
        num_perturbations`` and the probe's; ``w_final`` is ``(R, d)``.
    """
    w = np.array(w0, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"w0 must be (R, d), got shape {w.shape}")
    R = w.shape[0]
    pert_steps = np.asarray(perturb_steps, dtype=np.int64).reshape(-1)
    if pert_steps.size:
        if perturbations is None or perturbations.shape[:2] != (pert_steps.size, R):
            raise ValueError(f"perturbations must be ({pert_steps.size}, {R}, d)")
        if np.any(np.diff(pert_steps) <= 0) or pert_steps[0] < 1 or pert_steps[-1] > num_steps:
            raise ValueError("perturb_steps must increase within [1, num_steps]")
    probes = np.asarray(probe_steps, dtype=np.int64).reshape(-1)
    if probes.size and (probes.min() < 0 or probes.max() > num_steps):
        raise ValueError(f"probe steps must lie in [0, {num_steps}]")
    probe = probe or (lambda v: {"loss": gd.loss(v)})
    events = np.union1d(probes, pert_steps)
    pert_index = {int(s): j for j, s in enumerate(pert_steps)}

    rows: list[dict[str, np.ndarray]] = []

    def record(step: int, after: bool, count: int) -> None:
        row = {"run": np.arange(R), "step": np.full(R, step, dtype=np.int64),
               "after_perturbation": np.full(R, after), "num_perturbations": np.full(R, count, dtype=np.int64)}
        row.update({k: np.asarray(v, dtype=np.float64).reshape(R) for k, v in probe(w).items()})
        rows.append(row)

    current, count = 0, 0
    for i, s in enumerate(events):
        s = int(s)
        w = gd.step(w, s - current) if explicit else gd.advance(w, s - current)
        current = s
        record(s, False, count)
        if s in pert_index:
            w = w + perturbations[pert_index[s]]
            count += 1
            record(s, True, count)
        if progress is not None:
            progress((i + 1) / len(events))
    if current < num_steps:
        w = gd.step(w, num_steps - current) if explicit else gd.advance(w, num_steps - current)
    table = pd.DataFrame({k: np.concatenate([r[k] for r in rows]) for k in rows[0]}) if rows else pd.DataFrame()
    return table, w


def perturbed_gd_moments(
    gd: QuadraticGD,
    A_test: np.ndarray,
    y_test: np.ndarray,
    w0: np.ndarray,
    steps: Sequence[int] | np.ndarray,
    perturb_steps: Sequence[int] | np.ndarray,
    std: float,
) -> pd.DataFrame:
    """Exact E and SD (over the perturbations, given each run's w₀) of the mean over R runs of the
    test MSE and of ‖P_null w‖², at each of ``steps``, for :func:`perturbed_gd` with independent
    N(0, std²·I) perturbations at ``perturb_steps``.

    After m perturbations at steps s_j ≤ t, w(t) ~ N(μ(t), C(t)) with μ the unperturbed trajectory
    and C = σ² m P_null + V diag(σ² Σ_j q_i^{2(t − s_j)}) Vᵀ (q_i = :attr:`QuadraticGD.contraction`).
    With e = A_test μ − y_test and S = A_test C A_testᵀ, the test MSE Q = ‖A_test w − y_test‖²/n_t has
    E Q = (‖e‖² + tr S)/n_t and Var Q = (2 tr S² + 4 eᵀSe)/n_t² (a Gaussian quadratic form);
    ‖P_null w‖² has E = ‖P_null w₀‖² + mσ² d_null and Var = 2m²σ⁴ d_null + 4mσ²‖P_null w₀‖²
    (d_null = dim null(A)).
    Runs are independent: the SD of the mean over runs is √(Σ_r Var_r)/R.

    Args:
        gd: the quadratic problem and step size.
        A_test: ``(n_t, d)`` test features; y_test: ``(n_t,)`` test targets.
        w0: ``(R, d)`` initial weights.
        steps: non-decreasing steps ≥ 0 at which to evaluate (a perturbation at s counts at s).
        perturb_steps: the perturbation steps.
        std: σ, each weight's perturbation std (0: no perturbation, the SDs are 0).

    Returns:
        One row per step: ``step, expected_test_mse, expected_test_mse_sd, expected_null_norm2,
        expected_null_norm2_sd, unperturbed_test_mse`` (the last: mean over runs of the test MSE of μ).
    """
    perturb_steps = np.asarray(perturb_steps)
    R = w0.shape[0]
    nt = A_test.shape[0]
    Vr = gd.Vt[gd.s > 0]  # (r, p)
    P_null = np.eye(gd.A.shape[1]) - Vr.T @ Vr
    B_null = A_test @ P_null  # (n_t, p)
    B_row = A_test @ Vr.T  # (n_t, r)
    q = gd.contraction[gd.s > 0]
    d_null = gd.A.shape[1] - Vr.shape[0]
    null_gram = B_null @ B_null.T  # (n_t, n_t)
    rows = []
    current, w = 0, w0.copy()
    for t in steps:
        w = gd.advance(w, int(t) - current)  # the unperturbed trajectory μ_r(t)
        current = int(t)
        past = perturb_steps[perturb_steps <= t]
        m = len(past)
        c_row = std**2 * np.array([np.sum(qi ** (2.0 * (t - past))) for qi in q]) if m else np.zeros_like(q)
        # test covariance S = A_t C A_tᵀ with C = σ² m P_null + V diag(c_row) Vᵀ
        S = std**2 * m * null_gram + (B_row * c_row) @ B_row.T  # (n_t, n_t)
        e = w @ A_test.T - y_test  # (R, n_t)
        mean_q = ((e**2).sum(-1) + np.trace(S)) / nt  # (R,)
        var_q = (2.0 * np.sum(S * S) + 4.0 * np.einsum("ri,ij,rj->r", e, S, e)) / nt**2
        p0 = (gd.null_space_component(w0) ** 2).sum(-1)  # (R,)
        null_mean = p0 + m * std**2 * d_null
        null_var = 2.0 * m**2 * std**4 * d_null + 4.0 * m * std**2 * p0
        rows.append({"step": int(t), "expected_test_mse": mean_q.mean(),
                     "expected_test_mse_sd": math.sqrt(var_q.sum()) / R,
                     "expected_null_norm2": null_mean.mean(), "expected_null_norm2_sd": math.sqrt(null_var.sum()) / R,
                     "unperturbed_test_mse": ((e**2).sum(-1) / nt).mean()})
    return pd.DataFrame(rows)


@torch.no_grad()
def perturb_parameters_(model: nn.Module, scale: float, generator: torch.Generator) -> None:
    """Add N(0, (scale·std(p))²) to every parameter tensor p, in place (Poggio et al. 2018, Fig. 5:
    "Gaussian noise with standard deviation being 1/4 of that of the weights of the corresponding
    layer"; each weight and each bias tensor is its own "layer" here).

    Args:
        model: the module whose ``parameters()`` are perturbed, in their order.
        scale: noise std ÷ the standard deviation of the tensor's entries at this moment.
        generator: a CPU generator; the noise is drawn on the CPU in float64 (so the same
            perturbations on any device and in any dtype), then cast and moved to the parameter.
    """
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        p.add_((noise * (scale * float(p.detach().double().std()))).to(device=p.device, dtype=p.dtype))
