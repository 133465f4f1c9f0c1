"""`implicitlab check`: resumable, a refuted claim shows red and sets the exit code (unless told not to)."""

from dataclasses import dataclass

import pandas as pd
import pytest
from typer.testing import CliRunner

from implicitlab.cli import app
import implicitlab.experiments
from implicitlab.experiments import Claim, Experiment
from implicitlab.plots import figure

runner = CliRunner()
CALLS = {"n": 0}


@dataclass(frozen=True)
class FailingConfig:
    value: float = 2.0


def _run(cfg, *, device=None, progress=None):
    CALLS["n"] += 1
    return pd.DataFrame({"x": [0.0, 1.0], "y": [cfg.value, cfg.value]})


def _plot(table):
    fig, axes = figure()
    axes[0, 0].plot(table.x, table.y)
    return fig


def _claims(table):
    return [Claim("deliberately failing", "y stays below 1", "a test", float(table.y.max()), "<=", 1.0,
                  "a test experiment's claim that the numbers refute")]


@pytest.fixture
def failing_experiment(monkeypatch):
    name = "test-deliberately-failing"
    exp = Experiment(name, "a test experiment", "Test paper", FailingConfig, {"tiny": FailingConfig()},
                     _run, _plot, _claims, tags=("demo",))
    monkeypatch.setattr(implicitlab.experiments, "EXPERIMENTS", implicitlab.experiments.EXPERIMENTS + (exp,))
    return name


def test_refuted_claim_is_red_sets_exit_code_and_reruns_reuse_the_store(tmp_path, failing_experiment):
    out = tmp_path / "results"
    CALLS["n"] = 0
    result = runner.invoke(app, ["check", "--preset", "tiny", "--only", failing_experiment, "--out", str(out)],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "refuted" in result.output and "0 of 1 claims hold" in result.output
    page = (out / "report.html").read_text()
    assert "<tr class='refuted'><td class='claim'>deliberately failing" in page and ">2<" in page
    assert (out / "claims.json").exists()
    again = runner.invoke(app, ["check", "--preset", "tiny", "--only", failing_experiment, "--out", str(out),
                                "--no-fail-on-refuted"], env={"COLUMNS": "250"})
    assert again.exit_code == 0, again.output
    assert "reused" in again.output and CALLS["n"] == 1  # the second call trained nothing


def test_check_bad_input(tmp_path):
    for args, message in ((["--only", "no-such-*"], "no experiment matches"), (["--preset", "huge"], "no preset")):
        result = runner.invoke(app, ["check", *args, "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and message in result.output
        assert not (tmp_path / "r").exists()


def test_runs_made_by_other_code_are_flagged_and_fresh_reruns(tmp_path, failing_experiment, monkeypatch):
    import implicitlab.check as check_module
    import implicitlab.environment as environment_module
    from implicitlab.sweep import backends

    out = tmp_path / "results"
    args = ["check", "--preset", "tiny", "--only", failing_experiment, "--out", str(out), "--no-fail-on-refuted"]
    CALLS["n"] = 0
    first = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert first.exit_code == 0 and CALLS["n"] == 1 and "other code" not in first.output
    for module in (check_module, environment_module):  # "edit the code": another fingerprint
        monkeypatch.setattr(module, "code_fingerprint", lambda: "edited-code")
    backends._environment.cache_clear()  # a process's environment is cached: the code it imported
    stale = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert stale.exit_code == 0 and CALLS["n"] == 1  # reused …
    assert "made by other code" in stale.output and "--fresh" in stale.output  # … and flagged
    assert "made by other code than the current" in (out / "report.html").read_text()
    fresh = runner.invoke(app, [*args, "--fresh"], env={"COLUMNS": "250"})
    assert fresh.exit_code == 0 and CALLS["n"] == 2 and "other code" not in fresh.output
    again = runner.invoke(app, args, env={"COLUMNS": "250"})  # the newest run is the one reused
    assert again.exit_code == 0 and CALLS["n"] == 2 and "reused" in again.output and "other code" not in again.output
    backends._environment.cache_clear()
