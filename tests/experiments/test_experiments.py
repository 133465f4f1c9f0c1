"""Every registered experiment runs its tiny preset, plots from the table and derives claims."""

import dataclasses
import math

import pandas as pd
import pytest

from implicitlab.experiments import Claim, experiments
from implicitlab.data import DataError, load_cifar10
from implicitlab.sweep import Store
from implicitlab.experiments.poggio2018.fig7 import Fig7Config
from implicitlab.experiments.poggio2018.fig7 import claims as fig7_claims
from implicitlab.experiments.poggio2018.fig7 import run as fig7_run

EXPS = experiments()


@pytest.mark.parametrize("name", list(EXPS))
def test_tiny_preset_runs_plots_and_claims(name, tmp_path):
    exp = EXPS[name]
    assert {"tiny", "quick", "full"} <= set(exp.presets)
    if hasattr(exp.presets["tiny"], "data_dir"):
        try:  # the CIFAR experiments read real data: shared/ sits beside the clone in CI
            load_cifar10(None, "test")
        except DataError as exc:
            pytest.skip(f"real CIFAR-10 not available here ({exc}); tests/experiments/test_poggio_cifar.py "
                        "covers these experiments on generated fixtures")
    fractions = []
    cfg = exp.presets["tiny"]
    # a view trains nothing: it derives its table from its source's table for the same config
    source_table = EXPS[exp.view_of].run(cfg) if exp.view_of is not None else None
    table, claims = exp.execute(cfg, device="cpu", progress=fractions.append, source_table=source_table)
    assert isinstance(table, pd.DataFrame) and len(table) > 0
    assert claims and all(isinstance(c, Claim) for c in claims)
    for c in claims:
        assert c.source and c.statement and c.basis
        assert c.verdict in ("holds", "refuted", "uninformative", "no data")
        # a prediction says how it could have failed: a control, or why it has none
        if c.kind == "prediction":
            assert c.control is not None or c.control_reason, f"{name}: prediction {c.name!r} has no control"
        if c.verdict == "no data":
            assert c.no_data_reason, f"{name}: {c.name!r} has no data and no reason"
    fig = exp.plot(table)
    assert len(fig.axes) >= 1
    # `check` and the report read tables back from the store: claims and plot must survive the trip
    store = Store(tmp_path / "s.sqlite")
    run_id = store.write_run(experiment=name, preset="tiny", config={}, config_hash="h", status="ok",
                             environment={}, wall_time_s=0.0, table=table)
    back = store.table(run_id)
    again = exp.claims(back)
    assert [(c.name, c.verdict) for c in again] == [(c.name, c.verdict) for c in claims]
    for a, b in zip(again, claims):
        assert a.measured == pytest.approx(b.measured, rel=1e-9, nan_ok=True)
    exp.plot(back)
    assert fractions and fractions[-1] == pytest.approx(1.0)


def test_claim_verdicts():
    assert Claim("a", "s", "src", 0.5, "<=", 1.0).verdict == "holds"
    assert Claim("a", "s", "src", 1.5, "<=", 1.0).verdict == "refuted"
    assert Claim("a", "s", "src", math.nan, "<=", 1.0).verdict == "no data"
    assert not Claim("a", "s", "src", math.inf, ">=", 1.0).holds


def test_fig7_gd_follows_corrected_ode_and_refutes_printed_eq57():
    # The corrected flow matches GD to well under 1%; the printed K² factor is off by several %.
    cfg = Fig7Config(depths=(1, 2), gd_steps=4000, num_probes=12, ode_points=60, ode_t_max=1e20)
    found = {c.name: c for c in fig7_claims(fig7_run(cfg))}
    assert found["K=2: GD follows the ODE"].measured < 1e-3
    assert found["K=1: GD follows the ODE"].measured < 1e-4
    printed = found["K=2: printed Eq. 57 (li⁻¹(f̃K²t + C)) matches GD"]
    assert printed.verdict == "refuted" and printed.measured > 0.02
    assert found["K=2: ODE = closed form"].measured < 1e-8


def test_sweep_demo_control_large_init_refutes_near_min_norm():
    # sweep-demo's prediction holds from a small init and is refuted from a large one (its control point)
    demo = EXPS["sweep-demo"]
    small = {c.name: c for c in demo.claims(demo.run(demo.presets["tiny"]))}
    large_cfg = dataclasses.replace(demo.presets["tiny"], init_scale=0.5)  # (3.0 diverges: no data)
    large = {c.name: c for c in demo.claims(demo.run(large_cfg))}
    assert small["near_min_norm"].verdict == "holds"
    assert large["near_min_norm"].verdict == "refuted", large["near_min_norm"].measured
