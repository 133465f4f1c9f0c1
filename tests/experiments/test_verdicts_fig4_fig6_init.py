"""Issue 15, item 7, for poggio2018-fig4, -fig6 and -init-independence: (a) the tiny preset's verdict per claim,
kind by kind; (b) each prediction fed a table from its control setting is refuted there."""

import dataclasses

import numpy as np
import pytest

from implicitlab.experiments.poggio2018 import fig6

# ----------------------------------------------------------------------------- fig6


@pytest.fixture(scope="module")
def fig6_tiny():
    table = fig6.run(fig6.PRESETS["tiny"])
    return table, {c.name: c for c in fig6.claims(table)}


FIG6_TINY = {  # name: (kind, verdict, control verdict)
    "monomial_float64: the min-norm solution eventually overfits": ("prediction", "holds", "refuted"),
    "monomial_float64: the computed solution interpolates (p ≥ n)": ("observation", "holds", None),
    "chebyshev: the min-norm solution eventually overfits": ("prediction", "holds", "refuted"),
    "chebyshev: the computed solution interpolates (p ≥ n)": ("identity", "holds", None),
    "legendre: the min-norm solution eventually overfits": ("prediction", "holds", "refuted"),
    "legendre: the computed solution interpolates (p ≥ n)": ("identity", "holds", None),
    "monomial_exact: the min-norm solution eventually overfits": ("prediction", "holds", "refuted"),
    "monomial_exact: the computed solution interpolates (p ≥ n)": ("identity", "holds", None),
    "float64 monomials reproduce the exact min-norm curve": ("prediction", "holds", None),
    "the high-precision reference is certified": ("identity", "holds", None),
}


def test_fig6_tiny_verdicts(fig6_tiny):
    _, found = fig6_tiny
    assert set(found) == set(FIG6_TINY)
    for name, (kind, verdict, control) in FIG6_TINY.items():
        c = found[name]
        assert (c.kind, c.verdict, c.control_verdict) == (kind, verdict, control), name
        if c.kind == "prediction":
            assert c.control is not None or c.control_reason, name


def test_fig6_overfitting_is_refuted_on_the_control_setting(fig6_tiny):
    # the control setting: the loss on the training points, where the min-norm interpolant cannot get worse
    table, _ = fig6_tiny
    control = table.copy()
    control["test_mse"] = control["train_mse"]
    for c in fig6.claims(control):
        if c.name.endswith("eventually overfits"):
            assert c.verdict == "refuted", (c.name, c.measured)
