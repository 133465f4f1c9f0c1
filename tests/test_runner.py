"""run_experiment: the ``sweep-demo`` tiny preset end to end into a temporary folder, and a failing run.

What is checked: every file the runner promises, each holding what the run returned (the table
read back from CSV and from the store equals the computed one), the store row, the claims recomputed
from the table, and that a run that raises is stored as failed and re-raised.
"""

import json
from dataclasses import dataclass, replace

import pandas as pd
import pytest
import torch

from implicitlab.config import config_hash, config_to_dict
from implicitlab.experiments import Claim, Experiment, get
from implicitlab.runner import RunOutcome, run_experiment
from implicitlab.sweep.store import Store

CPU = torch.device("cpu")
FILES = ("config.json", "table.csv", "claims.json", "figure.png", "figure.svg")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The tiny preset run once for the module (about a second), with its store and progress calls."""
    exp = get("sweep-demo")
    cfg = exp.preset("tiny")
    out = tmp_path_factory.mktemp("results")
    store = Store(out / "runs.sqlite")
    calls: list[float] = []
    outcome = run_experiment(exp, cfg, preset="tiny", out=out, device=CPU, store=store, progress=calls.append)
    yield exp, cfg, out, store, outcome, calls
    store.close()


def test_outcome_describes_the_run(demo_run):
    exp, cfg, out, _, outcome, calls = demo_run
    assert isinstance(outcome, RunOutcome)
    assert (outcome.experiment, outcome.preset) == ("sweep-demo", "tiny")
    assert outcome.out_dir == out / "sweep-demo" / "tiny"
    assert outcome.wall_time_s > 0
    assert calls and calls[-1] == 1.0 and all(0.0 <= c <= 1.0 for c in calls)
    # run is pure and deterministic: running it again gives the same table
    pd.testing.assert_frame_equal(outcome.table, exp.run(cfg, device=CPU), check_exact=True)
    assert list(outcome.table.columns) == ["step", "loss", "log_loss", "min_norm_distance", "norm_end_to_end",
                                           "diverged"]


def test_files_written_hold_the_run(demo_run):
    exp, cfg, out, _, outcome, _ = demo_run
    folder = outcome.out_dir
    for name in FILES:
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (folder / "figure.svg").read_bytes()[:2000]

    config = json.loads((folder / "config.json").read_text())
    assert config["experiment"] == "sweep-demo" and config["preset"] == "tiny"
    assert config["config"] == config_to_dict(cfg)
    assert config["config_hash"] == config_hash(cfg)
    assert config["wall_time_s"] == outcome.wall_time_s
    assert config["environment"]["torch"] == torch.__version__ and config["environment"]["device"] == "cpu"
    from implicitlab.train import fused_chain

    assert config["environment"]["chain_kernel"] == fused_chain.status()  # which path small chains took

    # CSV floats are written as repr and read back (pandas ≥ 3 parses round-trip) as the same doubles
    table = pd.read_csv(folder / "table.csv")
    pd.testing.assert_frame_equal(table, outcome.table, check_exact=True)

    claims = json.loads((folder / "claims.json").read_text())
    assert claims == [c.to_dict() for c in outcome.claims]


def test_store_row(demo_run):
    exp, cfg, out, store, outcome, _ = demo_run
    records = store.records()
    assert len(records) == 1
    rec = records[0]
    assert rec["id"] == outcome.run_id
    assert (rec["experiment"], rec["preset"], rec["status"]) == ("sweep-demo", "tiny", "ok")
    assert rec["config"] == config_to_dict(cfg) and rec["config_hash"] == config_hash(cfg)
    assert rec["error"] is None and rec["wall_time_s"] == outcome.wall_time_s
    full = store.run_record(outcome.run_id)
    assert full["out_dir"] == str(outcome.out_dir)
    assert full["claims"] == [c.to_dict() for c in outcome.claims]
    assert full["environment"]["git_commit"] == json.loads((outcome.out_dir / "config.json").read_text())[
        "environment"]["git_commit"]
    pd.testing.assert_frame_equal(store.table(outcome.run_id), outcome.table, check_exact=True)  # exact


def test_claims_follow_from_the_table(demo_run):
    exp, cfg, out, _, outcome, _ = demo_run
    claims = {c.name: c for c in outcome.claims}
    assert set(claims) == {"loss_decreases", "near_min_norm"}
    assert all(isinstance(c, Claim) for c in outcome.claims)
    t = outcome.table
    assert claims["loss_decreases"].measured == t["loss"].iloc[-1] / t["loss"].iloc[0]
    assert claims["near_min_norm"].measured == t["min_norm_distance"].iloc[-1]
    # tiny preset: small init (0.01) and a stable step, so both hold — the demo's positive control
    assert all(c.holds and c.verdict == "holds" for c in outcome.claims), [c.to_dict() for c in outcome.claims]


def test_runs_append_and_the_default_store_lives_in_out(tmp_path):
    exp = get("sweep-demo")
    cfg = exp.preset("tiny")
    custom = replace(cfg, num_steps=20, num_probes=4)
    first = run_experiment(exp, custom, preset=None, out=tmp_path, device=CPU)
    second = run_experiment(exp, custom, preset=None, out=tmp_path, device=CPU)
    # no preset: the folder is named by the config hash
    assert first.out_dir == tmp_path / "sweep-demo" / f"custom-{config_hash(custom)}" == second.out_dir
    assert second.run_id > first.run_id
    stores = list(tmp_path.glob("*.sqlite"))
    assert len(stores) == 1
    store = Store(stores[0])
    try:
        assert [r["id"] for r in store.records(status="ok")] == [first.run_id, second.run_id]
        assert all(r["preset"] is None for r in store.records())
    finally:
        store.close()


# ------------------------------------------------------------------------------- a failing run ---
@dataclass(frozen=True)
class BrokenConfig:
    value: float = 1.0


class Boom(RuntimeError):
    pass


def _broken_run(cfg, *, device=None, progress=None):
    raise Boom(f"diverged at value {cfg.value}")


BROKEN = Experiment(
    name="test-broken", title="raises in run", paper="a test", config_type=BrokenConfig,
    presets={"tiny": BrokenConfig()}, run=_broken_run,
    plot=lambda table: pytest.fail("plot must not run after a failed run"),
    claims=lambda table: pytest.fail("claims must not run after a failed run"),
)


def test_a_failing_run_is_recorded_as_failed_then_re_raised(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    try:
        with pytest.raises(Boom, match="diverged at value 2.5"):
            run_experiment(BROKEN, BrokenConfig(2.5), preset="tiny", out=tmp_path, device=CPU, store=store)
        (rec,) = store.records()
        assert (rec["experiment"], rec["preset"], rec["status"]) == ("test-broken", "tiny", "failed")
        assert rec["error"] == "Boom: diverged at value 2.5"
        assert rec["config"] == {"value": 2.5} and rec["config_hash"] == config_hash(BrokenConfig(2.5))
        assert rec["wall_time_s"] >= 0
        assert store.statuses("test-broken") == {config_hash(BrokenConfig(2.5)): "failed"}
        with pytest.raises(KeyError):
            store.table(rec["id"])  # no table for a failed run
        assert not (tmp_path / "test-broken").exists()  # and no files
    finally:
        store.close()


def test_a_run_leaves_no_figure_open(tmp_path):
    import matplotlib.pyplot as plt

    plt.close("all")
    exp = get("sweep-demo")
    run_experiment(exp, replace(exp.preset("tiny"), num_steps=5, num_probes=2), preset=None, out=tmp_path, device=CPU)
    assert plt.get_fignums() == []


def test_summary_splits_claims_by_kind_with_controls_and_thresholds(tmp_path, monkeypatch):
    import implicitlab.experiments
    from implicitlab.experiments import Control, Threshold
    from implicitlab.runner import write_summary

    base = get("sweep-demo")
    exp = replace(base, name="summary-demo", thresholds={"bound | cap": Threshold(1.0, "ours: a test bound")})
    monkeypatch.setattr(implicitlab.experiments, "EXPERIMENTS", implicitlab.experiments.EXPERIMENTS + (exp,))
    claims = [
        Claim("margin grows", "s", "Paper, Thm 3", 0.5, "<=", 1.0, control=Control("square loss", 3.0), seeds=3,
              rule="holds on ≥ 2 of 3 seeds"),
        Claim("loss falls", "s", "Paper", 0.5, "<=", 1.0, control=Control("random labels", 0.2)),
        Claim("converges", "s", "Paper", float("nan"), "<=", 1.0, control_reason="no contrast exists",
              no_data_reason="no run converged"),
        Claim("rank", "s", "Paper, Thm 4", 2.0, "<=", 1e-9, kind="identity"),
        Claim("smooth", "s", "ours", 0.3, "<=", 1.0, kind="observation"),
    ]
    table = pd.DataFrame({"x": [0.0]})
    outcomes = [RunOutcome("summary-demo", "tiny", 1, tmp_path / "summary-demo" / "tiny", table, claims, 1.5),
                RunOutcome("not-listed", "tiny", 2, tmp_path / "not-listed" / "tiny", table, claims[:1], 0.5)]
    text = write_summary(outcomes, tmp_path / "report-tiny.md").read_text()
    lines = text.splitlines()
    assert lines[2] == ("2 of 4 predictions hold, 1 uninformative (their control holds too), 1 without data; "
                        "consistency checks: 0 of 1 hold; observations: 1 of 1 hold.")
    section = text[text.index("## summary-demo"):text.index("## not-listed")]
    order = [section.index(h) for h in ("### Predictions", "### Consistency checks", "### Observations",
                                        "### Thresholds")]
    assert order == sorted(order)
    assert "| claim | measured | bound | seeds · rule | control | verdict | source |" in section
    assert ("| margin grows | 0.5 | <= 1 | 3 · holds on ≥ 2 of 3 seeds | square loss: 3 → refuted | holds | "
            "Paper, Thm 3 |") in section
    assert ("| loss falls | 0.5 | <= 1 | 1 · one run | random labels: 0.2 → holds | **uninformative** | Paper |"
            in section)
    assert "| none: no contrast exists | **no data** (no run converged) |" in section
    predictions = section[:section.index("### Consistency checks")]
    assert "rank" not in predictions and "smooth" not in predictions
    assert "| rank | 2 | <= 1e-09 | 1 · one run | **refuted** | Paper, Thm 4 |" in section  # no control column
    assert "| bound \\| cap | 1 | ours: a test bound |" in section  # a pipe in a cell is escaped
    assert "### Thresholds" not in text[text.index("## not-listed"):]
