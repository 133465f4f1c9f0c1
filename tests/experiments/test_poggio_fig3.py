"""poggio2018-fig3: explicit 2×2 Hessians on the valleys; every claim of the tiny preset holds."""

import dataclasses

import pytest

from implicitlab.config import ConfigError
from implicitlab.experiments.poggio2018.fig3 import PRESETS, Fig3Config, claims, run


def test_tiny_claims_all_hold_with_exact_zero_eigenvalues():
    table = run(PRESETS["tiny"])
    found = {c.name: c for c in claims(table)}
    assert all(c.verdict == "holds" for c in found.values()), [c.name for c in found.values() if not c.holds]
    assert found["product/square: zero Hessian eigenvalue on the valley"].measured < 1e-15
    assert found["product/exp: explicit Hessian = Eq. 32"].measured < 1e-14
    val = table[(table.section == "valley") & (table.model == "product") & (table.loss_name == "exp")]
    # closed form on the balanced floor w = (s, s): eigenvalues e^{−s²}(2s² − 1) and e^{−s²}
    s2 = val.radius**2 / 2
    assert ((val.lam_min / val.lam_max - 1 / (2 * s2 - 1)).abs() < 1e-12).all()


def test_config_rejects_the_saddle_region():
    with pytest.raises(ConfigError, match="saddle"):
        Fig3Config(valley_r_min=0.5)
    dataclasses.replace(PRESETS["tiny"], models=("linear",), valley_r_min=0.5)  # fine for the linear model
