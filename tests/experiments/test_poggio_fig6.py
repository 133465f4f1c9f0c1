"""poggio2018-fig6: the tiny preset's table and claims (the high-precision solver is tested in
tests/references/test_min_norm_exact.py)."""

from implicitlab.experiments.poggio2018.fig6 import PRESETS, claims, run


def test_tiny_preset_claims():
    table = run(PRESETS["tiny"])
    found = {c.name: c for c in claims(table)}
    assert found["the high-precision reference is certified"].verdict == "holds"
    assert found["monomial_exact: the computed solution interpolates (p ≥ n)"].verdict == "holds"
    assert found["chebyshev: the computed solution interpolates (p ≥ n)"].verdict == "holds"
    loss = table[table.section == "loss"]
    assert set(loss.method) == {"monomial_exact", "monomial_float64", "chebyshev", "legendre"}
    assert (loss[loss.method == "chebyshev"].condition < 10).all()
