"""Marion & Chizat 2024: one experiment per module, and Fig. 3 as a view of Fig. 1's runs.

Fig. 3 is derived exactly from Fig. 1's table and never trains: the runner, ``check`` and the
command line run (or reuse) Fig. 1 once and derive Fig. 3 from it; a sweep refuses the view.
"""

import ast
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

import implicitlab.experiments
import implicitlab.runner
from implicitlab.check import check
from implicitlab.cli import app
from implicitlab.config import ConfigError
from implicitlab.experiments import Experiment, experiments
from implicitlab.experiments.experiment import check_views
from implicitlab.experiments.marion_chizat2024 import common, fig1, fig3
from implicitlab.runner import RunOutcome, run_experiment
from implicitlab.sweep import Store
from implicitlab.sweep.grid import SpecError, points_for

runner = CliRunner()
PACKAGE = Path(fig1.__file__).parent
TINY = fig1.PRESETS["tiny"]


@pytest.fixture(autouse=True)
def fixed_code(monkeypatch):
    """One code fingerprint for the whole test: a source run is reused only when made by the current
    code, and other edits to the package while the tests run must not change what "current" is."""
    import importlib

    from implicitlab.sweep import backends

    for name in ("implicitlab.environment", "implicitlab.runner", "implicitlab.check"):
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "code_fingerprint", lambda: "this-code")
    backends._environment.cache_clear()
    yield
    backends._environment.cache_clear()


@pytest.fixture(scope="module")
def fig1_tiny() -> pd.DataFrame:
    return fig1.run(TINY)


@pytest.fixture
def fig1_runs(monkeypatch) -> list:
    """Counts the trainings of Fig. 1: its record in EXPERIMENTS is replaced by one whose run counts."""
    calls = []

    def counted(cfg, **kwargs):
        calls.append(cfg)
        return fig1.run(cfg, **kwargs)

    counting = dataclasses.replace(fig1.EXPERIMENT, run=counted)
    listed = tuple(counting if e is fig1.EXPERIMENT else e for e in implicitlab.experiments.EXPERIMENTS)
    monkeypatch.setattr(implicitlab.experiments, "EXPERIMENTS", listed)
    return calls


def test_fig3_is_exactly_the_grid_of_fig1_also_read_back_from_the_store(tmp_path, fig1_tiny):
    grid = common.run_grid(TINY)
    assert_frame_equal(fig3.derive(fig1_tiny, TINY), grid, check_exact=True)
    store = Store(tmp_path / "s.sqlite")
    run_id = store.write_run(experiment="mc2024-fig1", preset="tiny", config={}, config_hash="h", status="ok",
                             environment={}, wall_time_s=0.0, table=fig1_tiny)
    assert_frame_equal(fig3.derive(store.table(run_id), TINY), grid, check_exact=True)


def test_runner_runs_the_source_once_then_reuses_it(tmp_path, fig1_runs):
    out = tmp_path / "results"
    first = run_experiment(fig3.EXPERIMENT, TINY, preset="tiny", out=out, device=torch.device("cpu"))
    assert len(fig1_runs) == 1 and isinstance(first.source, RunOutcome)
    assert first.source.experiment == "mc2024-fig1" and (out / "mc2024-fig1" / "tiny" / "table.csv").exists()
    assert_frame_equal(first.table, fig3.derive(first.source.table, TINY), check_exact=True)
    again = run_experiment(fig3.EXPERIMENT, TINY, preset="tiny", out=out, device=torch.device("cpu"))
    assert len(fig1_runs) == 1 and again.source == first.source.run_id  # read from the store, not trained
    assert [(c.name, c.measured) for c in again.claims] == [(c.name, c.measured) for c in first.claims]
    record = Store(out / "implicitlab.sqlite").run_record(again.run_id)
    assert record["environment"]["view_of"] == "mc2024-fig1"
    assert record["environment"]["source_run_id"] == first.source.run_id


def test_runner_does_not_reuse_a_source_run_made_by_other_code(tmp_path, fig1_runs, monkeypatch):
    out = tmp_path / "results"
    run_experiment(fig3.EXPERIMENT, TINY, preset="tiny", out=out, device=torch.device("cpu"))
    monkeypatch.setattr(implicitlab.runner, "code_fingerprint", lambda: "edited-code")
    run_experiment(fig3.EXPERIMENT, TINY, preset="tiny", out=out, device=torch.device("cpu"))
    assert len(fig1_runs) == 2


def test_check_trains_the_source_once_and_derives_the_view(tmp_path, fig1_runs):
    out = tmp_path / "results"
    result = check("tiny", only="mc2024-fig[13]", out=out)
    assert len(fig1_runs) == 1
    assert [e.experiment for e in result.entries] == ["mc2024-fig1", "mc2024-fig3"]
    store = Store(out / "implicitlab.sqlite")
    assert [r["experiment"] for r in store.records()] == ["mc2024-fig1"]  # the view stores nothing
    source_table = store.table(store.records()[0]["id"])
    expected = [c.to_dict() for c in fig3.claims(fig3.derive(source_table, TINY))]
    view = result.entries[1]
    assert view.claims == expected and view.environment["view_of"] == "mc2024-fig1"
    alone = check("tiny", only="mc2024-fig3", out=out)  # only the view: its source is reused
    assert len(fig1_runs) == 1 and [e.experiment for e in alone.entries] == ["mc2024-fig3"]
    assert alone.entries[0].reused and alone.entries[0].claims == expected


def test_check_of_a_view_alone_trains_its_source(tmp_path, fig1_runs):
    result = check("tiny", only="mc2024-fig3", out=tmp_path / "results")
    assert len(fig1_runs) == 1 and [e.experiment for e in result.entries] == ["mc2024-fig3"]
    assert not result.entries[0].reused


def test_cli_run_says_whose_runs_a_view_read(tmp_path, fig1_runs):
    args = ["run", "mc2024-fig3", "--preset", "tiny", "--out", str(tmp_path / "results"), "--device", "cpu"]
    first = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert first.exit_code == 0, first.output
    assert "a view of the runs of mc2024-fig1: run 1, made now" in first.output
    again = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert again.exit_code == 0 and "a view of the runs of mc2024-fig1: run 1 from the store" in again.output
    assert len(fig1_runs) == 1


def test_a_sweep_refuses_a_view_with_one_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("experiment: mc2024-fig3\npreset: tiny\nseeds: [0, 1]\n")
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "mc2024-fig3 is a view of the runs of mc2024-fig1" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    with pytest.raises(SpecError, match="sweep mc2024-fig1"):
        points_for("mc2024-fig3", [TINY])


def test_a_view_is_declared_consistently():
    view = fig3.EXPERIMENT
    assert view.is_view and not fig1.EXPERIMENT.is_view
    for bad in ({"run": fig1.run}, {"derive": None}, {"view_of": None}, {"view_of": "mc2024-fig3"}):
        with pytest.raises(ValueError):
            dataclasses.replace(view, **bad)
    with pytest.raises(ValueError, match="source_table"):
        view.execute(TINY)
    with pytest.raises(ValueError, match="not a view"):
        fig1.EXPERIMENT.execute(TINY, source_table=pd.DataFrame())
    exps = experiments()
    with pytest.raises(ValueError, match="not listed"):
        check_views({"mc2024-fig3": view})
    with pytest.raises(ValueError, match="config type and presets"):
        check_views({**exps, "mc2024-fig3": dataclasses.replace(view, presets={"tiny": TINY})})
    with pytest.raises(ValueError, match="itself a view"):
        check_views({**exps, "other": dataclasses.replace(view, name="other", view_of="mc2024-fig3")})


def test_fig1_config_is_the_grid_config_of_plain_linear_nets():
    assert isinstance(TINY, common.GridConfig)
    with pytest.raises(ConfigError, match="plain deep linear"):
        dataclasses.replace(TINY, kind="residual")


MODULES = ("fig1", "fig3", "resnet", "fig2", "fig6", "gelu", "alignment")


@pytest.mark.parametrize("name", MODULES)
def test_one_experiment_per_module_importing_only_common(name):
    path = PACKAGE / f"{name}.py"
    siblings = [node.module for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level == 1]
    assert set(siblings) <= {"common"}, f"{name}.py imports {siblings}: experiments import only common.py"
    module = getattr(__import__("implicitlab.experiments.marion_chizat2024", fromlist=[name]), name)
    records = [v for v in vars(module).values() if isinstance(v, Experiment)]
    assert records == [module.EXPERIMENT]
    assert module.PRESETS is module.EXPERIMENT.presets and callable(module.plot) and callable(module.claims)
    assert callable(module.derive if module.EXPERIMENT.is_view else module.run)
    assert module.EXPERIMENT in implicitlab.experiments.EXPERIMENTS
