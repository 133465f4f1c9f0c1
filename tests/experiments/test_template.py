"""Adding an experiment is one new module plus one line: the template, run end to end, and the list.

``implicitlab/experiments/template.py`` is the module a newcomer copies. These tests run its tiny
preset through :func:`implicitlab.runner.run_experiment` and the command line, show that a copy
becomes an experiment of every command by one added entry of ``EXPERIMENTS``, and check in a fresh
interpreter that every experiment module's ``EXPERIMENT`` is listed exactly once.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import implicitlab.experiments
from implicitlab.check import select
from implicitlab.config import ConfigError
from implicitlab.cli import app
from implicitlab.experiments import Claim, experiments, template
from implicitlab.runner import run_experiment
from implicitlab.sweep import Store

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def test_template_tiny_runs_through_the_runner(tmp_path):
    out = tmp_path / "results"
    outcome = run_experiment(template.EXPERIMENT, template.PRESETS["tiny"], preset="tiny", out=out,
                             device=torch.device("cpu"))
    assert outcome.claims and all(isinstance(c, Claim) and c.verdict == "holds" for c in outcome.claims)
    for name in ("config.json", "table.csv", "claims.json", "figure.png", "figure.svg"):
        assert (outcome.out_dir / name).stat().st_size > 0, name
    stored = Store(out / "implicitlab.sqlite").table(outcome.run_id)
    assert [(c.name, c.measured) for c in template.claims(stored)] == [(c.name, c.measured) for c in outcome.claims]


def test_template_run_is_pure_and_its_config_validates():
    cfg = template.PRESETS["tiny"]
    assert template.run(cfg).equals(template.run(cfg))  # same config, same table
    assert {"tiny", "quick", "full"} <= set(template.PRESETS)
    with pytest.raises(ConfigError, match="n > d"):
        template.TemplateConfig(n=3, d=5)


def test_template_is_a_demo_that_check_and_run_all_skip():
    assert "demo" in template.EXPERIMENT.tags
    assert "template" in experiments()
    assert "template" not in [e.name for e in select(None)]


def test_a_copy_with_one_more_line_is_an_experiment_of_every_command(tmp_path, monkeypatch):
    copy = dataclasses.replace(template.EXPERIMENT, name="my-new-experiment")
    monkeypatch.setattr(implicitlab.experiments, "EXPERIMENTS", implicitlab.experiments.EXPERIMENTS + (copy,))
    listed = runner.invoke(app, ["list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "my-new-experiment" in listed.output
    out = tmp_path / "results"
    ran = runner.invoke(app, ["run", "my-new-experiment", "--preset", "tiny", "--out", str(out), "--device", "cpu"],
                        env={"COLUMNS": "250"})
    assert ran.exit_code == 0, ran.output
    assert "GD converges below the step 2/S" in ran.output
    assert (out / "my-new-experiment" / "tiny" / "figure.svg").exists()
    checked = runner.invoke(app, ["check", "--preset", "tiny", "--only", "my-new-experiment", "--out", str(out)],
                            env={"COLUMNS": "250"})
    assert checked.exit_code == 0, checked.output
    assert "1 of 1 predictions hold" in checked.output and "consistency checks: 1 of 1 hold" in checked.output


# What a fresh interpreter finds: every module of implicitlab.experiments that defines EXPERIMENT,
# and the names in EXPERIMENTS (by identity: the module's record itself is listed, not a copy).
_SCAN = """
import importlib, json, pkgutil
import implicitlab.experiments as pkg
from implicitlab.experiments import EXPERIMENTS, Experiment
found = {}
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    module = importlib.import_module(info.name)
    exp = getattr(module, "EXPERIMENT", None)
    if isinstance(exp, Experiment):
        found[info.name] = [exp.name, sum(e is exp for e in EXPERIMENTS)]
print(json.dumps({"modules": found, "listed": [e.name for e in EXPERIMENTS]}))
"""


def _fresh(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "250"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_experiment_module_is_listed_once_in_a_fresh_interpreter():
    scan = json.loads(_fresh("-c", _SCAN))
    modules, listed = scan["modules"], scan["listed"]
    assert "implicitlab.experiments.template" in modules
    not_once = {m: n for m, (name, n) in modules.items() if n != 1}
    assert not not_once, f"modules whose EXPERIMENT is not listed exactly once in EXPERIMENTS: {not_once}"
    assert sorted(name for name, _ in modules.values()) == sorted(listed), "EXPERIMENTS lists a record of no module"
    shown = _fresh("-m", "implicitlab.cli", "list")
    first_words = [line.split()[0] for line in shown.splitlines()[1:] if line.strip()]
    assert sorted(first_words) == sorted(listed), shown


def test_template_prediction_holds_and_its_control_is_refuted():
    # the pattern every prediction follows: it holds, and the same statistic where it should not
    # hold (the runs above 2/S) is refuted — so the verdict could have failed
    from implicitlab.experiments import template

    table = template.run(template.PRESETS["tiny"])
    found = {c.name: c for c in template.claims(table)}
    pred = found["GD converges below the step 2/S"]
    assert pred.kind == "prediction" and pred.verdict == "holds" and pred.control_verdict == "refuted"
    assert found["below 2/S, GD reaches the least-squares solution"].kind == "identity"
    assert set(template.EXPERIMENT.thresholds) == {"fraction of runs below 2/S whose loss shrank", "distance to w_ls"}
