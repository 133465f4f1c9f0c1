"""``poggio2018-fig2``: test error and test cross-entropy vs the number of parameters, at fixed n.

Poggio et al. 2018, Fig. 2 and Sec. 2, on real CIFAR-10: "The DNN is the same as in Figure 1";
"the number of neurons is increased in each layer without changing the multilayer architecture".
(a) the expected (test) classification error, (b) the test cross-entropy, vs the number of
parameters. The claims: "the unregularized classification error on the test set does not get worse
when the number of parameters increases well beyond the size of the training set", while "there is
some 'overfitting' in the expected risk" (the cross-entropy) — "the classification error is more
robust than the loss".

The width family is ``poggio_fig1_net(width)`` (``round(16·width)`` channels in each of the five
layers; 754 parameters at width ¼, 9,898 at 1, 2.37M at 16), each trained as in Fig. 1 (SGD,
batch 100, 70 epochs, cross-entropy, no augmentation or regularisation) on the same class-balanced
training subset of n examples, ``repetitions`` times (repetition r: init from
``derive_seed(seed, "init", r)``, batch order from ``derive_seed(seed, "batches", r)``). The paper gives neither n nor the widths: ``full`` trains on all 50,000 images with
widths ¼ … 16 (754 to 2.37M parameters, so the family spans P < n to P ≈ 47·n). Step size, momentum
and init as in ``poggio2018-fig1`` (see there).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of, require, require_positive
from ...models.convnet import (
    poggio_fig1_channels,
    poggio_fig1_net,
    poggio_fig1_num_params,
)
from ...seeds import derive_seed
from ...train.minibatch import evaluate, fit
from ..claims import Claim
from ..experiment import Experiment
from .cifar import (
    check_training_fields,
    CIFAR_TRAIN,
    FIT_ERROR,
    Z,
    binomial_se,
    build_model,
    load_arrays,
    prepare,
)

SOURCE = "Poggio et al. 2018"
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Fig2Config:
    n: int = 50_000  # training examples (class-balanced subset; 50,000: the whole training split)
    widths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # channels = round(16·width)
    repetitions: int = 1  # trainings per width (repetition r: its own init and batch-order streams)
    epochs: int = 70  # as in Fig. 1
    batch_size: int = 100  # as in Fig. 1
    lr: float = 0.02  # SGD step on the mean batch cross-entropy (as poggio2018-fig1)
    momentum: float = 0.9
    init: str = "kaiming"  # "kaiming" | "default"
    n_test: int | None = None  # class-balanced test subset; None: all 10,000 test images
    data_dir: str | None = None  # data root; None: the loaders' default (../shared/data, else ./data); --data-dir sets it
    seed: int = 0  # the training subset; first init / batch-order seed
    dtype: str = "float32"

    def __post_init__(self) -> None:
        require(10 <= self.n <= CIFAR_TRAIN, f"n must lie in [10, {CIFAR_TRAIN}], got {self.n}")
        require(len(self.widths) >= 2, "widths needs at least two values")
        require_positive("widths", self.widths)
        channels = [poggio_fig1_channels(w)[0] for w in self.widths]
        require(channels == sorted(set(channels)),
                f"widths must give strictly increasing channel counts, got {channels} channels for {self.widths}")
        require(self.repetitions >= 1, "repetitions must be ≥ 1")
        check_training_fields(self)


PRESETS = {
    "tiny": Fig2Config(n=40, widths=(0.25, 0.5, 1.0), epochs=3, batch_size=10, n_test=20),
    "quick": Fig2Config(n=1_000, widths=(0.25, 0.5, 1.0, 2.0, 4.0), repetitions=3),
    "full": Fig2Config(),
}


def run(cfg: Fig2Config, *, device: torch.device = CPU, progress=None) -> pd.DataFrame:
    dtype = dtype_of(cfg.dtype)
    data = prepare(load_arrays(cfg.data_dir), cfg.n, n_test=cfg.n_test, seed=cfg.seed, dtype=dtype, device=device)
    jobs = [(w, r) for w in cfg.widths for r in range(cfg.repetitions)]
    cost = np.cumsum([0.0] + [poggio_fig1_num_params(w) + 1e4 for w, _ in jobs])  # ~ parameters, plus overhead
    cost = cost / cost[-1]
    rows = []
    for i, (width, rep) in enumerate(jobs):
        seed = derive_seed(cfg.seed, "init", rep)
        model = build_model(functools.partial(poggio_fig1_net, width), seed, init=cfg.init, dtype=dtype, device=device)
        share = (lambda f, i=i: progress(cost[i] + f * (cost[i + 1] - cost[i]))) if progress else None
        fit(model, data.x, data.y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
            seed=derive_seed(cfg.seed, "batches", rep), progress=share)
        train, test = evaluate(model, data.x, data.y), evaluate(model, data.x_test, data.y_test)
        rows.append({
            "width": width, "channels": poggio_fig1_channels(width)[0], "num_params": poggio_fig1_num_params(width),
            "repetition": rep, "seed": seed, "n": cfg.n, "train_error": train.error, "train_loss": train.loss,
            "test_error": test.error, "test_loss": test.loss, "test_loss_sd": test.loss_sd, "n_test": test.m,
            "epochs": cfg.epochs, "steps": cfg.epochs * math.ceil(cfg.n / cfg.batch_size), "lr": cfg.lr,
            "momentum": cfg.momentum,
        })
    if progress:
        progress(1.0)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ claims


def _by_size(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over repetitions per width, sorted by the number of parameters."""
    return (table.groupby("num_params", as_index=False)
            .agg(train_error=("train_error", "mean"), test_error=("test_error", "mean"),
                 test_error_sd=("test_error", "std"),
                 train_loss=("train_loss", "mean"), test_loss=("test_loss", "mean"),
                 test_loss_sd=("test_loss_sd", "max"), n_test=("n_test", "min"), n=("n", "first"),
                 repetitions=("repetition", "count"))
            .sort_values("num_params", ignore_index=True))


def _series(g: pd.DataFrame, column: str) -> str:
    return ", ".join(f"P={int(r.num_params)}: {getattr(r, column):.3f}" for r in g.itertuples())


def claims(table: pd.DataFrame) -> list[Claim]:
    g = _by_size(table)
    n = int(g.n.iloc[0])
    past = g[g.num_params >= n]
    src = f"{SOURCE}, Sec. 2, Fig. 2 and Appendix 9"
    out: list[Claim] = []
    if len(past) >= 2:
        first = past.iloc[0]
        rise = past.test_error - first.test_error
        worst = past.iloc[int(rise.to_numpy().argmax())]
        se_test = math.hypot(binomial_se(first.test_error, int(first.n_test)),
                             binomial_se(worst.test_error, int(worst.n_test)))
        reps = int(past.repetitions.min())
        if reps >= 2:  # the seed-to-seed spread of the two means (init and batch order)
            se_seed = math.hypot(first.test_error_sd, worst.test_error_sd) / math.sqrt(reps)
            noise = (f"{Z:g} SEs of the difference: test sampling (binomial, m = {int(first.n_test)}) and the "
                     f"spread over the {reps} seeds, √(SE_test² + SE_seed²) = √({se_test:.4f}² + {se_seed:.4f}²)")
        else:
            se_seed = 0.0
            noise = (f"{Z:g} binomial SEs of the difference (m = {int(first.n_test)} test images) — one run per "
                     "net, so the seed-to-seed spread is not in the SE (use repetitions ≥ 2)")
        se = math.hypot(se_test, se_seed)
        out.append(Claim(
            name="test error does not rise as parameters grow past n",
            statement="the unregularized classification error on the test set does not get worse when the number "
                      "of parameters increases well beyond the size of the training set",
            source=src,
            measured=float(rise.max()), relation="<=", bound=Z * se,
            basis=f"largest rise of the test error over the nets with P ≥ n = {n} (P = {int(past.num_params.min())} … "
                  f"{int(past.num_params.max())}, {reps} run(s) each, mean) above the first of "
                  f"them; allowed: {noise}. Test errors: " + _series(g, "test_error"),
        ))
        loss_rise = past.test_loss - first.test_loss
        peak = past.iloc[int(loss_rise.to_numpy().argmax())]
        se_loss = math.hypot(first.test_loss_sd, peak.test_loss_sd) / math.sqrt(int(first.n_test))
        out.append(Claim(
            name="test cross-entropy rises past n (some overfitting of the loss)",
            statement="there is some 'overfitting' in the expected risk (the cross-entropy), unlike the "
                      "classification error",
            source=f"{SOURCE}, Fig. 2b and its caption",
            measured=float(loss_rise.max()), relation=">", bound=Z * se_loss,
            basis=f"largest rise of the mean test cross-entropy over the nets with P ≥ n above the first of them (at "
                  f"P = {int(peak.num_params)}); must exceed {Z:g} SEs (per-example sd / √m, unpaired). Test "
                  f"cross-entropies: " + _series(g, "test_loss"),
        ))
    else:
        for name in ("test error does not rise as parameters grow past n",
                     "test cross-entropy rises past n (some overfitting of the loss)"):
            out.append(Claim(name=name, statement="(needs two nets with P ≥ n)", source=src, measured=math.nan,
                             relation="<=", bound=math.nan,
                             basis=f"only {len(past)} net(s) with P ≥ n = {n}; widen the family"))
    big = g.iloc[-1]
    out.append(Claim(
        name="the largest net fits the training set",
        statement="overparametrised nets reach zero training error (the regime of the puzzle)",
        source=f"{SOURCE}, Sec. 2",
        measured=float(big.train_error), relation="<=", bound=FIT_ERROR,
        basis=f"training error of the largest net (P = {int(big.num_params)}, n = {n}); 'zero' read as ≤ "
              f"{FIT_ERROR:g} (ours). Training errors: " + _series(g, "train_error"),
    ))
    return out


# ------------------------------------------------------------------------------------ figure


def plot(table: pd.DataFrame):
    from ...plots import figure

    g = _by_size(table)
    n = int(g.n.iloc[0])
    fig, axes = figure(ncols=2, nrows=1, width=3.6)
    ax_e, ax_l = axes[0]
    ax_e.semilogx(g.num_params, g.train_error, "o-", ms=3, label="training")
    ax_e.semilogx(g.num_params, g.test_error, "s-", ms=3, label="test")
    ax_l.semilogx(g.num_params, g.train_loss, "o-", ms=3, label="training")
    ax_l.semilogx(g.num_params, g.test_loss, "s-", ms=3, label="test")
    for ax in (ax_e, ax_l):
        ax.axvline(n, color="grey", ls=":", lw=0.9, label=f"P = n = {n}")
        ax.legend()
    ax_e.set(xlabel="number of parameters P", ylabel="classification error", ylim=(-0.02, 1.0),
             title="(a) classification error")
    ax_l.set(xlabel="number of parameters P", ylabel="cross-entropy", title="(b) cross-entropy risk")
    return fig


EXPERIMENT = Experiment(
    name="poggio2018-fig2",
    title="CIFAR-10: test error and cross-entropy vs number of parameters at fixed n (Fig. 2)",
    paper=SOURCE,
    config_type=Fig2Config,
    presets=PRESETS,
    run=run,
    plot=plot,
    claims=claims,
    description=__doc__ or "",
    tags=("cifar10",),
)
