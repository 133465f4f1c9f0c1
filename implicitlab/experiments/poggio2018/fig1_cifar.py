"""``poggio2018-fig1``: training and test error vs the number of training examples, true and random labels.

Poggio et al. 2018, Fig. 1 and Sec. 2, on real CIFAR-10: "a 5-layer convolutional network (i.e.,
no pooling) with 16 channels per hidden layer … approximately 10000 parameters. SGD was used with
batch size = 100 for 70 epochs for each point. Neither data augmentation nor regularization is
performed." (a) true labels, (b) random labels. Sec. 2 reads off the figure: the more training data,
the smaller the test error, even where the training error is zero; the same network reaches zero
training error on random labels; and training error converges to test error as n grows, for both
labelings ("generalization").

For every n (class-balanced, nested subsets of the 50,000 training images) and every labeling, a
fresh net (``poggio_fig1_net``: 9,898 parameters) is trained with SGD for ``epochs`` epochs on the
mean cross-entropy, then evaluated on its training set (against the labels it was trained on) and
on the test set (true labels). Random labels: every training label is redrawn uniformly from the
10 classes (Zhang et al. 2017's convention; about 10% coincide with the true label).

What the paper leaves open, and our choice (config fields): the step size and momentum
(``momentum=0.9``, the usual "SGD" of 2017 CIFAR code — without momentum, 70 epochs at n ≤ 1,000
leave the net far from fitting; ``lr=0.02``, of {0.01, 0.02, 0.05} the one with the lowest mean
training loss over n ≤ 2,000 and both labelings — an optimisation criterion, not a claim; 0.05
is unstable), the initialisation (``init="kaiming"``: He-normal;
PyTorch's default init leaves this narrow 5-layer net at chance for tens of epochs), the n grid
(1-2-5 log-spaced up to 50,000), and the test set (all 10,000 images). Inputs are standardised per
channel with the training subset's statistics.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of, require, require_positive
from ...models.convnet import poggio_fig1_net, poggio_fig1_num_params
from ...seeds import derive_seed
from ...train.minibatch import evaluate, fit
from ..claims import Claim
from ..experiment import Experiment
from .cifar import (
    check_training_fields,
    CHANCE_ERROR,
    CIFAR_TRAIN,
    FIT_ERROR,
    Z,
    binomial_se,
    build_model,
    load_arrays,
    permutation_error_sd,
    prepare,
)

SOURCE = "Poggio et al. 2018"
CPU = torch.device("cpu")
LABEL_KINDS = ("true", "random")
Z_CHANCE = 4.0  # |error − chance| ≤ 4 SEs at every n (two-sided p ≈ 6e-5 each: Bonferroni-safe over ≤ 100 n's)


@dataclass(frozen=True)
class Fig1Config:
    ns: tuple[int, ...] = (100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)  # training set sizes
    label_kinds: tuple[str, ...] = LABEL_KINDS  # "true" (Fig. 1a) and/or "random" (Fig. 1b)
    width: float = 1.0  # channels = round(16·width); 1 is the paper's net
    epochs: int = 70  # per point (the paper)
    batch_size: int = 100  # the paper
    lr: float = 0.02  # SGD step on the mean cross-entropy of a batch (not stated in the paper)
    momentum: float = 0.9  # heavy-ball momentum of the SGD (not stated in the paper)
    init: str = "kaiming"  # "kaiming" (He-normal, zero biases) | "default" (PyTorch's)
    n_test: int | None = None  # class-balanced test subset; None: all 10,000 test images
    data_dir: str | None = None  # data root; None: the loaders' default (../shared/data, else ./data); --data-dir sets it
    seed: int = 0  # subset, labels, init and batch order
    dtype: str = "float32"

    def __post_init__(self) -> None:
        require(len(self.ns) >= 2, "ns needs at least two training set sizes")
        require(all(isinstance(n, int) and 10 <= n <= CIFAR_TRAIN for n in self.ns),
                f"every n must be an integer in [10, {CIFAR_TRAIN}], got {self.ns}")
        require(list(self.ns) == sorted(set(self.ns)), f"ns must be strictly increasing, got {self.ns}")
        require(len(self.label_kinds) >= 1 and set(self.label_kinds) <= set(LABEL_KINDS)
                and len(set(self.label_kinds)) == len(self.label_kinds),
                f"label_kinds must be distinct values from {list(LABEL_KINDS)}, got {self.label_kinds}")
        require_positive("width", self.width)
        check_training_fields(self)


PRESETS = {
    "tiny": Fig1Config(ns=(20, 40), epochs=3, batch_size=10, n_test=20),
    "quick": Fig1Config(ns=(100, 200, 500, 1_000, 2_000, 5_000)),
    "full": Fig1Config(),
}


def run(cfg: Fig1Config, *, device: torch.device = CPU, progress=None) -> pd.DataFrame:
    dtype = dtype_of(cfg.dtype)
    arrays = load_arrays(cfg.data_dir)
    jobs = [(kind, n) for kind in cfg.label_kinds for n in cfg.ns]
    cost = np.cumsum([0] + [n for _, n in jobs]) / sum(n for _, n in jobs)  # work ∝ n (same epochs)
    factory = functools.partial(poggio_fig1_net, cfg.width)
    rows = []
    for i, (kind, n) in enumerate(jobs):
        data = prepare(arrays, n, n_test=cfg.n_test, random_label_fraction=1.0 if kind == "random" else 0.0,
                       seed=cfg.seed, dtype=dtype, device=device)
        model = build_model(factory, derive_seed(cfg.seed, "init"), init=cfg.init, dtype=dtype, device=device)
        share = (lambda f, i=i: progress(cost[i] + f * (cost[i + 1] - cost[i]))) if progress else None
        fit(model, data.x, data.y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
            seed=derive_seed(cfg.seed, "batches"), progress=share)
        train, test = evaluate(model, data.x, data.y), evaluate(model, data.x_test, data.y_test)
        rows.append({
            "labels": kind, "n": n, "train_error": train.error, "train_loss": train.loss,
            "test_error": test.error, "test_loss": test.loss, "test_loss_sd": test.loss_sd, "n_test": test.m,
            "test_error_perm_sd": permutation_error_sd(test.confusion),
            "num_params": poggio_fig1_num_params(cfg.width), "epochs": cfg.epochs,
            "steps": cfg.epochs * math.ceil(n / cfg.batch_size), "batch_size": cfg.batch_size, "lr": cfg.lr,
            "momentum": cfg.momentum, "seed": cfg.seed,
        })
    if progress:
        progress(1.0)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ claims


def _se_diff(a: pd.Series, b: pd.Series) -> float:
    """Standard error of the difference of two test errors (unpaired: conservative on one test set)."""
    return math.hypot(binomial_se(a.test_error, int(a.n_test)), binomial_se(b.test_error, int(b.n_test)))


def _errors(g: pd.DataFrame, column: str) -> str:
    return ", ".join(f"n={int(r.n)}: {getattr(r, column):.3f}" for r in g.itertuples())


def _gap_claim(g: pd.DataFrame, kind: str, figure: str) -> Claim:
    gap = g.test_error - g.train_error
    last = g.iloc[-1]
    earlier = gap.iloc[:-1]
    se = binomial_se(last.test_error, int(last.n_test))
    return Claim(
        name=f"{kind} labels: training error converges to test error as n grows",
        statement="DNNs show generalization: the training error converges to the expected error for "
                  "increasing n, for both normal and random labels",
        source=f"{SOURCE}, Sec. 2 and Fig. {figure}",
        measured=float(earlier.max() - gap.iloc[-1]), relation=">", bound=Z * se,
        basis=f"drop of the gap (test − train error) from its largest value at smaller n ({earlier.max():.3f} at "
              f"n={int(g.n.iloc[int(earlier.to_numpy().argmax())])}) to the largest n={int(last.n)} "
              f"({gap.iloc[-1]:.3f}); must exceed {Z:g} binomial SEs of the test error at n={int(last.n)} "
              f"(m={int(last.n_test)}). Gaps: " + ", ".join(f"n={int(n)}: {v:.3f}" for n, v in zip(g.n, gap)),
    )


def claims(table: pd.DataFrame) -> list[Claim]:
    out: list[Claim] = []
    true = table[table.labels == "true"].sort_values("n")
    if len(true) >= 2:
        first, last = true.iloc[0], true.iloc[-1]
        out.append(Claim(
            name="true labels: test error falls as n grows",
            statement="the more training data, the smaller the test error",
            source=f"{SOURCE}, Sec. 2 and Fig. 1a",
            measured=float(first.test_error - last.test_error), relation=">", bound=Z * _se_diff(first, last),
            basis=f"test error at n={int(first.n)} minus at n={int(last.n)}; must exceed {Z:g} SEs of the "
                  f"difference (binomial, m={int(last.n_test)} test images). Test errors: "
                  + _errors(true, "test_error"),
        ))
        fitted = true[true.train_error <= FIT_ERROR]
        if len(fitted) >= 2:
            a, b = fitted.iloc[0], fitted.iloc[-1]
            measured, bound = float(a.test_error - b.test_error), Z * _se_diff(a, b)
            where = f"between n={int(a.n)} and n={int(b.n)}, the smallest and largest n"
        else:
            measured, bound, where = math.nan, math.nan, "needs two n"
        out.append(Claim(
            name="true labels: test error falls with n while training error is zero",
            statement="the test error decreases for increasing n even when the training error is zero",
            source=f"{SOURCE}, Sec. 2 and Fig. 1a",
            measured=measured, relation=">", bound=bound,
            basis=f"drop of the test error {where} with training error ≤ {FIT_ERROR:g} (our reading of 'zero'); "
                  f"must exceed {Z:g} SEs of the difference. Training errors: " + _errors(true, "train_error"),
        ))
        out.append(_gap_claim(true, "true", "1a"))
    rand = table[table.labels == "random"].sort_values("n")
    if len(rand) >= 2:
        best = rand.iloc[int(rand.train_error.to_numpy().argmin())]
        out.append(Claim(
            name="random labels: the net fits the training set",
            statement="the same network achieves zero training error on randomly labelled CIFAR-10",
            source=f"{SOURCE}, Sec. 2 and Fig. 1b",
            measured=float(best.train_error), relation="<=", bound=FIT_ERROR,
            basis=f"smallest training error over n (at n={int(best.n)}), against the labels trained on; "
                  f"'zero' read as ≤ {FIT_ERROR:g} (ours). Training errors: " + _errors(rand, "train_error"),
        ))
        se = np.hypot(rand.test_error_perm_sd.to_numpy(), [binomial_se(CHANCE_ERROR, int(m)) for m in rand.n_test])
        z = (rand.test_error - CHANCE_ERROR).abs() / se
        k = int(z.to_numpy().argmax())
        worst = rand.iloc[k]
        out.append(Claim(
            name="random labels: test error at chance",
            statement="trained on random labels, the network's test error is that of guessing",
            source=f"{SOURCE}, Fig. 1b",
            measured=float(z.max()), relation="<=", bound=Z_CHANCE,
            basis=f"max over n of |test error − {CHANCE_ERROR:g}| in standard errors (chance on a class-balanced "
                  f"test set); SE² = binomial (p = {CHANCE_ERROR:g}, m test images) + the spread over random "
                  f"assignments of true classes to predicted ones (Hoeffding's permutation variance of the "
                  f"confusion matrix: a net may group a class's images together, at a random class). Worst "
                  f"n={int(worst.n)}: {worst.test_error:.4f} ± {float(se[k]):.4f}. Test errors: "
                  + _errors(rand, "test_error"),
        ))
        out.append(_gap_claim(rand, "random", "1b"))
    return out


# ------------------------------------------------------------------------------------ figure


def plot(table: pd.DataFrame):
    from ...plots import figure

    kinds = [k for k in LABEL_KINDS if (table.labels == k).any()]
    fig, axes = figure(ncols=len(kinds), nrows=1, width=3.6)
    for ax, kind, panel in zip(axes[0], kinds, "ab"):
        g = table[table.labels == kind].sort_values("n")
        ax.semilogx(g.n, g.train_error, "o-", ms=3, label="training")
        ax.semilogx(g.n, g.test_error, "s-", ms=3, label="test")
        ax.axhline(CHANCE_ERROR, color="grey", ls=":", lw=0.8, label="chance")
        ax.set(xlabel="number of training examples n", ylabel="classification error", ylim=(-0.02, 1.0),
               title=f"({panel}) {kind} labels")
        ax.legend()
    return fig


EXPERIMENT = Experiment(
    name="poggio2018-fig1",
    title="CIFAR-10: training and test error vs number of training examples, true and random labels (Fig. 1)",
    paper=SOURCE,
    config_type=Fig1Config,
    presets=PRESETS,
    run=run,
    plot=plot,
    claims=claims,
    description=__doc__ or "",
    tags=("cifar10",),
)
