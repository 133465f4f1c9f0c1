"""poggio2018-fig6: the tiny preset's table and claims (the high-precision solver is tested in
tests/references/test_min_norm_exact.py); the overfitting statistic can fail."""

import numpy as np
import pandas as pd

from implicitlab.experiments.poggio2018.fig6 import EXPERIMENT, PRESETS, claims, run


def test_tiny_preset_claims():
    table = run(PRESETS["tiny"])
    found = {c.name: c for c in claims(table)}
    assert found["the high-precision reference is certified"].verdict == "holds"
    assert found["monomial_exact: the computed solution interpolates (p ≥ n)"].verdict == "holds"
    assert found["chebyshev: the computed solution interpolates (p ≥ n)"].verdict == "holds"
    loss = table[table.section == "loss"]
    assert set(loss.method) == {"monomial_exact", "monomial_float64", "chebyshev", "legendre"}
    assert (loss[loss.method == "chebyshev"].condition < 10).all()


def _flat_table(wiggle: float) -> pd.DataFrame:
    """A min-norm curve at the rounding floor past n = 10, with a rounding wiggle at the largest p."""
    p = np.arange(1, 31)
    test = np.where(p < 10, 0.3, 1e-30)
    test[-1] *= 1.0 + wiggle
    return pd.DataFrame({"section": "loss", "method": "chebyshev", "p": p, "test_mse": test,
                         "train_mse": np.where(p < 10, 0.2, 1e-30), "num_train": 10, "target_mean_square": 0.5,
                         "rank": np.minimum(p, 10), "full_rank": np.minimum(p, 10)})


def test_a_rounding_wiggle_is_not_overfitting():
    """Bug (issue 15): 'eventually overfits' was test(p_max) ÷ min over p ≥ n of test > 1 with p_max inside the
    minimum: ≥ 1 by construction, > 1 for any wiggle (it held for a curve flat at 1e-30). It is now the rise
    over the minimum of the *other* sizes, in units of the targets' mean square, beyond a stated margin."""
    c = {c.name: c for c in claims(_flat_table(1e-3))}["chebyshev: the min-norm solution eventually overfits"]
    assert c.verdict == "refuted", c.measured
    rising = _flat_table(0.0)
    rising.loc[rising.index[-1], "test_mse"] = 0.1
    c = {c.name: c for c in claims(rising)}["chebyshev: the min-norm solution eventually overfits"]
    assert c.verdict == "holds"
    assert c.control_verdict == "refuted"  # the training points: flat at the floor


def test_thresholds_table():
    assert set(EXPERIMENT.thresholds) >= {"overfit_rise", "interpolation", "float64_vs_exact", "certified"}
