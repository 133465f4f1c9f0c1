"""Weight perturbations during training at exact iterations, on the exact GD fast-forward.

Poggio et al. 2018 (Sec. 6, Figs 4 and 5) perturb the weights every P iterations up to an
iteration T_p and let GD run in between. :func:`perturbed_gd` does this on a
:class:`~implicitlab.train.quadratic.QuadraticGD`: between two events (a probe or a perturbation)
it advances the iterate exactly, so the cost depends on the number of events, not of iterations.

Semantics: a perturbation "at step s" is added to the iterate after its s-th GD update; the probe
at s is taken before it (``after_perturbation=False``) and, at every perturbation step, once more
after it (``after_perturbation=True``), so the table shows both the end of a GD phase and the
jump. ``explicit=True`` steps GD one update at a time instead (the reference, for tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .quadratic import QuadraticGD

__all__ = ["PerturbationSchedule", "gaussian_perturbations", "perturbed_gd"]


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
