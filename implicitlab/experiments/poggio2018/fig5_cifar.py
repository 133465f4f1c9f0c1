"""``poggio2018-fig5``: perturbing the weights at a zero of the training error, every P epochs of full-batch GD.

Poggio et al. 2018, Fig. 5 and Sec. 6, on real CIFAR-10: the Fig. 5 net (four 3×3 stride-2
convolutions with 16, 32, 64, 128 channels and a fully connected layer; ``poggio_fig5_net``) is
trained with gradient descent on the cross-entropy. "After it reaches 0 training classification
error (after roughly 1800 epochs of GD), a perturbation is applied to the weights of every layer …
a Gaussian noise with standard deviation being 1/4 of that of the weights of the corresponding
layer. From this point, random Gaussian noises with such standard deviations are added to every
layer after every 100 training epochs … After 7500 epochs the perturbation is stopped." A control
run is never perturbed. Plotted: classification error, cross-entropy and the L2 norm of the weights
vs epoch. Claimed: "The empirical risk goes back to the original level after the perturbation, but
the expected risk grows increasingly higher. As expected, the L2-norm of the weights increases after
each perturbation step"; and (Sec. 6) repeated perturbations "will not increase the training error
but will … increase norms … and increase the associated test error", the weights growing "even
without perturbations, though more slowly" for the cross-entropy.

How it is run: full-batch GD (one step per epoch, the mean cross-entropy over all n examples) until
the first epoch E0 whose weights have training error ≤ ``start_error`` (0: none misclassified).
There the run forks: the *control* continues plain GD; the *perturbed* copy gets a perturbation at
E0, E0 + P, … ≤ ``perturb_until``, each parameter tensor (every layer's weight and, separately, its
bias) plus N(0, (``perturb_scale``·std)²) noise with std the standard deviation of that tensor's
entries at that moment. Both run to ``epochs``. Sharing the GD run up to E0 is exact: GD from the
same initialisation is deterministic, so the paper's separate control run would follow the same
path up to E0. Evaluations: every ``eval_every`` epochs, at every E0 + j·P (the end of each cycle),
and right after each perturbation (training set only). The L2 norm is that of all parameters.

What the paper leaves open, and our choice: n (``full``: all 50,000 training images; "GD" on CIFAR),
the step size (``lr=0.1`` on the mean loss), the initialisation (He-normal), the end of training
(``full``: 10,000 epochs, 2,500 past the last perturbation), and whether biases are perturbed (yes,
each with its own std). ``quick`` keeps the schedule's shape on 500 images: fit (≈ 110 epochs),
perturb every 25 epochs up to epoch 475, run to 600.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...config import dtype_of, require, require_positive
from ...models.convnet import num_params, poggio_fig5_net
from ...seeds import derive_seed
from ...train.minibatch import evaluate, full_batch_gradient, make_optimizer, run_epoch
from ...train.perturb import perturb_parameters_
from ..claims import Claim
from ..experiment import Experiment
from .cifar import (
    check_training_fields,
    CIFAR_TRAIN,
    Z,
    binomial_se,
    build_model,
    load_arrays,
    param_norm,
    prepare,
)

SOURCE = "Poggio et al. 2018"
CPU = torch.device("cpu")
BRANCHES = ("fit", "perturbed", "control")


@dataclass(frozen=True)
class Fig5Config:
    n: int = 50_000  # training examples (class-balanced subset; 50,000: the whole training split)
    lr: float = 0.1  # full-batch GD step on the mean cross-entropy (not stated in the paper)
    epochs: int = 10_000  # GD steps in all, one per epoch
    perturb_every: int = 100  # epochs between perturbations (the paper)
    perturb_until: int = 7_500  # last epoch at which a perturbation may happen (the paper)
    perturb_scale: float = 0.25  # noise std / std of the perturbed tensor's entries (the paper: ¼)
    start_error: float = 0.0  # perturbations start at the first epoch with training error ≤ this (the paper: 0)
    eval_every: int = 50  # epochs between evaluations (plus every cycle end and every perturbation)
    chunk_size: int = 10_000  # examples per forward/backward pass of the full-batch gradient (memory only)
    init: str = "kaiming"  # "kaiming" | "default"
    n_test: int | None = None  # class-balanced test subset; None: all 10,000 test images
    data_dir: str | None = None  # data root; None: the loaders' default (../shared/data, else ./data); --data-dir sets it
    seed: int = 0  # subset, init and perturbations
    dtype: str = "float32"

    def __post_init__(self) -> None:
        require(10 <= self.n <= CIFAR_TRAIN, f"n must lie in [10, {CIFAR_TRAIN}], got {self.n}")
        check_training_fields(self, sgd=False)
        require_positive("perturb_scale", self.perturb_scale)
        for name in ("epochs", "perturb_every", "perturb_until", "eval_every", "chunk_size"):
            require(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")
        require(self.perturb_until + self.perturb_every <= self.epochs,
                "perturb_until + perturb_every must be ≤ epochs (the last perturbation gets a full cycle of GD)")
        require(0.0 <= self.start_error < 1.0, f"start_error must lie in [0, 1), got {self.start_error}")


PRESETS = {
    "tiny": Fig5Config(n=20, lr=0.1, epochs=40, perturb_every=5, perturb_until=30, eval_every=5, n_test=20),
    "quick": Fig5Config(n=500, epochs=600, perturb_every=25, perturb_until=475, eval_every=25, n_test=5_000),
    "full": Fig5Config(),
}


def run(cfg: Fig5Config, *, device: torch.device = CPU, progress=None) -> pd.DataFrame:
    dtype = dtype_of(cfg.dtype)
    data = prepare(load_arrays(cfg.data_dir), cfg.n, n_test=cfg.n_test, seed=cfg.seed, dtype=dtype, device=device)
    model = build_model(poggio_fig5_net, derive_seed(cfg.seed, "init"), init=cfg.init, dtype=dtype, device=device)
    rows: list[dict] = []

    def record(branch: str, epoch: int, net: nn.Module, done: int, *, after: bool = False) -> None:
        train = evaluate(net, data.x, data.y)
        test = None if after else evaluate(net, data.x_test, data.y_test)
        rows.append({
            "branch": branch, "epoch": epoch, "after_perturbation": after, "perturbations": done,
            "train_error": train.error, "train_loss": train.loss,
            "test_error": test.error if test else math.nan, "test_loss": test.loss if test else math.nan,
            "test_loss_sd": test.loss_sd if test else math.nan, "n_test": data.n_test, "norm": param_norm(net),
        })

    # 1. full-batch GD until the training error reaches start_error (at most until perturb_until)
    optimizer = make_optimizer(model, cfg.lr)
    start = None
    for epoch in range(cfg.perturb_until + 1):
        state = full_batch_gradient(model, data.x, data.y, chunk_size=cfg.chunk_size)  # θ_epoch's error, ∇L in .grad
        if state.error <= cfg.start_error:
            start = epoch
            break
        if epoch % cfg.eval_every == 0:
            record("fit", epoch, model, 0)
        optimizer.step()
        if progress:
            progress(epoch / (2 * cfg.epochs - epoch))  # the work left, were the fit to end now
    if start is None:  # never fitted: nothing to perturb; the claims report it
        table = pd.DataFrame(rows)
        table["start_epoch"], table["n"], table["num_params"] = math.nan, cfg.n, num_params(model)  # no E0
        if progress:
            progress(1.0)
        return table
    record("fit", start, model, 0)

    # 2. fork: the perturbed run and the control, from the same weights at E0
    cycle_ends = set(range(start, cfg.epochs + 1, cfg.perturb_every))
    probes = cycle_ends | set(range(0, cfg.epochs + 1, cfg.eval_every)) | {cfg.epochs}
    total = 2 * cfg.epochs - start
    control = copy.deepcopy(model)
    for b, (branch, net) in enumerate((("perturbed", model), ("control", control))):
        optimizer = make_optimizer(net, cfg.lr)
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "perturbation"))
        perturb_at = set(range(start, cfg.perturb_until + 1, cfg.perturb_every)) if branch == "perturbed" else set()
        done = 0
        for epoch in range(start, cfg.epochs + 1):
            if epoch in probes and epoch > start:
                record(branch, epoch, net, done)
            if epoch in perturb_at:
                perturb_parameters_(net, cfg.perturb_scale, generator)
                done += 1
                record(branch, epoch, net, done, after=True)
            if epoch == cfg.epochs:
                break
            run_epoch(net, optimizer, data.x, data.y, batch_size=None, chunk_size=cfg.chunk_size)
            if progress:
                progress((start + b * (cfg.epochs - start) + epoch + 1 - start) / total)
    table = pd.DataFrame(rows)
    table["start_epoch"], table["n"], table["num_params"] = start, cfg.n, num_params(model)
    if progress:
        progress(1.0)
    return table


# ------------------------------------------------------------------------------------ claims

_CLAIMS = (
    ("training error returns to zero after each perturbation",
     "the training error goes back to zero after each perturbation and the GD that follows"),
    ("empirical risk returns to its level at the first perturbation",
     "the empirical risk goes back to the original level after the perturbation"),
    ("test error grows over the perturbations",
     "repeated perturbations increase the test error"),
    ("test error above the control's",
     "the perturbed run's test error ends above the never-perturbed control's"),
    ("test cross-entropy grows over the perturbations",
     "the expected risk grows increasingly higher"),
    ("test cross-entropy above the control's",
     "the perturbed run's expected risk ends above the never-perturbed control's"),
    ("the norm grows over every perturbation cycle",
     "the L2 norm of the weights increases after each perturbation step"),
    ("the norm grows faster than the control's",
     "for the cross-entropy the weights increase even without perturbations, though more slowly"),
)


def _no_data(basis: str) -> list[Claim]:
    return [Claim(name=name, statement=statement, source=f"{SOURCE}, Fig. 5 and Sec. 6", measured=math.nan,
                  relation="<=", bound=math.nan, basis=basis) for name, statement in _CLAIMS]


def claims(table: pd.DataFrame) -> list[Claim]:
    if table.start_epoch.isna().all():
        last = int(table.epoch.max())
        return _no_data(f"zero training error (≤ start_error) was not reached by epoch {last}: nothing was perturbed")
    start = int(table.start_epoch.iloc[0])
    pert = table[(table.branch == "perturbed")]
    ctrl = table[(table.branch == "control") & ~table.after_perturbation]
    at_start = table[(table.branch == "fit") & (table.epoch == start)].iloc[0]
    jumps = pert[pert.after_perturbation]
    if jumps.empty:
        return _no_data("no perturbation happened (E0 > perturb_until)")
    every = int(np.diff(jumps.epoch).min()) if len(jumps) > 1 else int(table.epoch.max()) - int(jumps.epoch.iloc[0])
    pre = pert[~pert.after_perturbation].set_index("epoch")
    ends = [e + every for e in jumps.epoch]  # the end of each cycle: P epochs of GD after its perturbation
    ends = [e for e in ends if e in pre.index]
    end_rows = pre.loc[ends]
    last = int(ends[-1])
    final = pre.loc[last]
    c_final = ctrl.set_index("epoch").loc[last]
    src = f"{SOURCE}, Fig. 5 (caption) and Sec. 6"
    out: list[Claim] = []

    worst = int(end_rows.train_error.idxmax())
    where = f"worst at epoch {worst}" if end_rows.train_error.max() > 0 else "all zero"
    out.append(Claim(
        name=_CLAIMS[0][0], statement=_CLAIMS[0][1], source=src,
        measured=float(end_rows.train_error.max()), relation="<=", bound=float(at_start.train_error),
        basis=f"largest training error at the end of the {len(ends)} cycles ({every} epochs of GD after each "
              f"perturbation; {where}) against its level when the perturbations began (epoch "
              f"E0 = {start}: {at_start.train_error:.4g}). Right after a perturbation it is "
              f"{jumps.train_error.mean():.3f} on average (max {jumps.train_error.max():.3f}); the control's "
              f"largest after E0: {ctrl.train_error.max():.4g}",
    ))
    ratio = end_rows.train_loss / at_start.train_loss
    out.append(Claim(
        name=_CLAIMS[1][0], statement=_CLAIMS[1][1], source=src,
        measured=float(ratio.max()), relation="<=", bound=1.0,
        basis=f"largest training cross-entropy at a cycle end over its value at E0 = {start} "
              f"({at_start.train_loss:.4g}); right after a perturbation it is {jumps.train_loss.mean():.3g} on "
              f"average; control at epoch {last}: {c_final.train_loss:.4g}",
    ))
    se = math.hypot(binomial_se(final.test_error, int(final.n_test)), binomial_se(at_start.test_error, int(at_start.n_test)))
    out.append(Claim(
        name=_CLAIMS[2][0], statement=_CLAIMS[2][1], source=src,
        measured=float(final.test_error - at_start.test_error), relation=">", bound=Z * se,
        basis=f"test error at the end of the last cycle (epoch {last}, after {len(jumps)} perturbations: "
              f"{final.test_error:.4f}) minus at E0 = {start} ({at_start.test_error:.4f}); must exceed {Z:g} binomial "
              f"SEs of the difference (m = {int(final.n_test)}, unpaired: conservative)",
    ))
    se = math.hypot(binomial_se(final.test_error, int(final.n_test)), binomial_se(c_final.test_error, int(c_final.n_test)))
    out.append(Claim(
        name=_CLAIMS[3][0], statement=_CLAIMS[3][1], source=f"{SOURCE}, Fig. 5 (bottom vs top row)",
        measured=float(final.test_error - c_final.test_error), relation=">", bound=Z * se,
        basis=f"perturbed minus control test error at epoch {last} ({final.test_error:.4f} vs {c_final.test_error:.4f}); "
              f"must exceed {Z:g} binomial SEs of the difference",
    ))
    se_loss = math.hypot(final.test_loss_sd, at_start.test_loss_sd) / math.sqrt(int(final.n_test))
    out.append(Claim(
        name=_CLAIMS[4][0], statement=_CLAIMS[4][1], source=src,
        measured=float(final.test_loss - at_start.test_loss), relation=">", bound=Z * se_loss,
        basis=f"test cross-entropy at epoch {last} ({final.test_loss:.3f}) minus at E0 ({at_start.test_loss:.3f}); must "
              f"exceed {Z:g} SEs (per-example sd / √m). The control's rose too, to {c_final.test_loss:.3f} (the "
              f"cross-entropy's slow growth without perturbation)",
    ))
    se_loss = math.hypot(final.test_loss_sd, c_final.test_loss_sd) / math.sqrt(int(final.n_test))
    out.append(Claim(
        name=_CLAIMS[5][0], statement=_CLAIMS[5][1], source=f"{SOURCE}, Fig. 5 (bottom vs top row)",
        measured=float(final.test_loss - c_final.test_loss), relation=">", bound=Z * se_loss,
        basis=f"perturbed minus control test cross-entropy at epoch {last} ({final.test_loss:.3f} vs "
              f"{c_final.test_loss:.3f}); must exceed {Z:g} SEs (per-example sd / √m, unpaired)",
    ))
    norms = np.concatenate([[at_start.norm], end_rows.norm.to_numpy()])
    steps = np.diff(norms)
    out.append(Claim(
        name=_CLAIMS[6][0], statement=_CLAIMS[6][1], source=src,
        measured=float(steps.min()), relation=">", bound=0.0,
        basis=f"smallest change of ‖θ‖₂ from one cycle end to the next over {len(steps)} cycles (from "
              f"{norms[0]:.3f} at E0 to {norms[-1]:.3f}; mean step {steps.mean():.3f})",
    ))
    growth_p, growth_c = float(final.norm - at_start.norm), float(c_final.norm - at_start.norm)
    out.append(Claim(
        name=_CLAIMS[7][0], statement=_CLAIMS[7][1], source=f"{SOURCE}, Sec. 6 and Fig. 5",
        measured=growth_p - growth_c, relation=">", bound=0.0,
        basis=f"growth of ‖θ‖₂ from E0 = {start} to epoch {last}: perturbed {growth_p:+.4f}, control {growth_c:+.4f} "
              f"(measured: their difference)",
    ))
    return out


# ------------------------------------------------------------------------------------ figure


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=3, nrows=2, width=3.4, height=2.6)
    fit = table[table.branch == "fit"]
    for row, branch in enumerate(("control", "perturbed")):
        g = pd.concat([fit, table[table.branch == branch]]).sort_values(["epoch", "after_perturbation"], kind="stable")
        t = g[~g.after_perturbation]  # the test set is evaluated before perturbations only
        ax_e, ax_l, ax_n = axes[row]
        ax_e.plot(g.epoch, g.train_error, lw=0.9, label="training")
        ax_e.plot(t.epoch, t.test_error, lw=1.0, label="test")
        ax_l.plot(g.epoch, g.train_loss, lw=0.9, label="training")
        ax_l.plot(t.epoch, t.test_loss, lw=1.0, label="test")
        ax_n.plot(g.epoch, g.norm, lw=1.0, color="C2")
        jumps = g[g.after_perturbation]
        if len(jumps):
            ax_e.plot(jumps.epoch, jumps.train_error, "v", ms=2.5, color="C0", label="just after a perturbation")
            ax_n.plot(jumps.epoch, jumps.norm, "v", ms=2.5, color="C2")
        ax_e.set(xlabel="epoch", ylabel="classification error", title=f"{branch}: error")
        ax_l.set(xlabel="epoch", ylabel="cross-entropy", title=f"{branch}: cross-entropy")
        ax_n.set(xlabel="epoch", ylabel="‖θ‖₂", title=f"{branch}: L2 norm of the weights")
        ax_e.legend()
        ax_l.legend()
        if table.start_epoch.notna().any():
            for ax in (ax_e, ax_l, ax_n):
                ax.axvline(int(table.start_epoch.iloc[0]), color="grey", ls=":", lw=0.8)
    return fig


EXPERIMENT = Experiment(
    name="poggio2018-fig5",
    title="CIFAR-10: perturbations every P epochs of GD at zero training error, and a control (Fig. 5)",
    paper=SOURCE,
    config_type=Fig5Config,
    presets=PRESETS,
    run=run,
    plot=plot,
    claims=claims,
    description=__doc__ or "",
    tags=("cifar10",),
)
