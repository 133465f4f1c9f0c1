"""`implicitlab check`: resumable, a refuted claim shows red and sets the exit code (unless told not to);
the exit code fires on a refuted prediction or identity or a failed run, not on an uninformative
prediction; the headline counts predictions; claims.json carries each experiment's thresholds."""

import json

from dataclasses import dataclass

import pandas as pd
import pytest
from typer.testing import CliRunner

from implicitlab.cli import app
import implicitlab.experiments
from implicitlab.experiments import Claim, Control, Experiment, Threshold
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
                  "a test experiment's claim that the numbers refute", control=Control("y doubled", 4.0))]


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
    assert "refuted" in result.output and "0 of 1 predictions hold, 1 refuted" in result.output
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


def _experiment(monkeypatch, name, claims, run=_run, thresholds=None):
    exp = Experiment(name, "a test experiment", "Test paper", FailingConfig, {"tiny": FailingConfig()},
                     run, _plot, claims, tags=("demo",), thresholds=thresholds or {})
    monkeypatch.setattr(implicitlab.experiments, "EXPERIMENTS", implicitlab.experiments.EXPERIMENTS + (exp,))
    return name


def _check(tmp_path, name):
    out = tmp_path / "results"
    result = runner.invoke(app, ["check", "--preset", "tiny", "--only", name, "--out", str(out)],
                           env={"COLUMNS": "250"})
    return result, json.loads((out / "claims.json").read_text())


def _claim(kind="prediction", measured=0.5, control=None, **kw):
    return Claim(f"a {kind}", "y stays below 1", "a test", measured, "<=", 1.0, "max of y", kind=kind,
                 control=control, **kw)


def test_uninformative_prediction_is_flagged_but_does_not_fail_the_check(tmp_path, monkeypatch):
    name = _experiment(monkeypatch, "test-uninformative", lambda t: [
        _claim(control=Control("y halved", 0.25)),  # the control holds too: uninformative
        _claim(kind="identity", measured=0.0),
        _claim(kind="observation", measured=2.0),  # a refuted observation is ours: no exit code
    ], thresholds={"bound": Threshold(1.0, "ours: a test bound")})
    result, records = _check(tmp_path, name)
    assert result.exit_code == 0, result.output
    assert ("0 of 1 predictions hold, 1 uninformative (their control holds too); consistency checks: 1 of 1 hold; "
            "observations: 0 of 1 hold") in result.output
    assert "uninformative" in result.output and "holds (0.25) y halved" in result.output
    assert "check" in result.output and "observation" in result.output  # the kind column
    (rec,) = records
    assert rec["thresholds"] == {"bound": {"value": 1.0, "source": "ours: a test bound"}}
    by_kind = {c["kind"]: c for c in rec["claims"]}
    assert by_kind["prediction"]["verdict"] == "uninformative" and by_kind["prediction"]["uninformative"] is True
    assert by_kind["prediction"]["control"] == {"setting": "y halved", "measured": 0.25, "verdict": "holds",
                                                "note": ""}
    for c in rec["claims"]:
        assert {"kind", "verdict", "measured", "bound", "seeds", "rule"} <= set(c)
    page = (tmp_path / "results" / "report.html").read_text()
    assert "<tr class='uninformative'><td class='claim'>a prediction" in page


def test_refuted_prediction_sets_the_exit_code(tmp_path, monkeypatch):
    name = _experiment(monkeypatch, "test-refuted-prediction", lambda t: [
        _claim(measured=2.0, control=Control("y halved", 0.25)),
        _claim(kind="identity", measured=0.0),
    ])
    result, _ = _check(tmp_path, name)
    assert result.exit_code == 1, result.output
    assert "0 of 1 predictions hold, 1 refuted; consistency checks: 1 of 1 hold" in result.output


def test_refuted_identity_sets_the_exit_code(tmp_path, monkeypatch):
    name = _experiment(monkeypatch, "test-refuted-identity", lambda t: [
        _claim(control=Control("y doubled", 4.0)),
        _claim(kind="identity", measured=2.0),  # a bug in our code
    ])
    result, _ = _check(tmp_path, name)
    assert result.exit_code == 1, result.output
    assert "1 of 1 predictions hold; consistency checks: 0 of 1 hold" in result.output


def test_prediction_without_data_keeps_its_place_and_a_failed_run_fails(tmp_path, monkeypatch):
    name = _experiment(monkeypatch, "test-no-data", lambda t: [
        _claim(measured=float("nan"), control_reason="no contrast", no_data_reason="no run converged")])
    result, records = _check(tmp_path, name)
    assert result.exit_code == 0, result.output
    assert "0 of 1 predictions hold, 1 without data" in result.output
    assert records[0]["claims"][0]["no_data_reason"] == "no run converged"

    def boom(cfg, *, device=None, progress=None):
        raise RuntimeError("the run blew up")

    broken = _experiment(monkeypatch, "test-broken", _claims, run=boom)
    result, records = _check(tmp_path / "b", broken)
    assert result.exit_code == 1, result.output
    (placeholder,) = records[0]["claims"]
    assert placeholder["kind"] == "identity" and placeholder["verdict"] == "no data"
    assert "the run blew up" in placeholder["no_data_reason"] and "the run blew up" in records[0]["error"]
