"""Sweeps in process and on a process pool: resume, retry, ensemble batching, runs and export."""

import sqlite3

import pandas as pd
import pytest
from typer.testing import CliRunner

from implicitlab.cli import app
from implicitlab.experiments import get
from implicitlab.experiments import Experiment
from implicitlab.sweep import Store, expand, parse_spec, plan_tasks, points_for, run_sweep, tidy_table

runner = CliRunner()


def _points(spec: dict):
    return expand(parse_spec(spec))


def _ok_rows(out):
    con = sqlite3.connect(out / "implicitlab.sqlite")
    try:
        return con.execute("SELECT experiment, config_hash FROM runs WHERE status='ok'").fetchall()
    finally:
        con.close()


def test_rerun_skips_what_is_stored(tmp_path):
    points = _points({"experiment": "test-worker", "grid": {"x": [1.0, 2.0, 3.0]}, "seeds": [0, 1]})
    seen = []
    first = run_sweep(points, out=tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert (first.ok, first.failed, first.skipped) == (6, 0, 0)
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    again = run_sweep(points, out=tmp_path)
    assert (again.ok, again.skipped, again.tasks) == (0, 6, 0)
    assert again.run_ids == first.run_ids
    rows = _ok_rows(tmp_path)
    assert len(rows) == 6 and len(set(rows)) == 6
    # A bigger sweep over the same store runs only the new points.
    more = run_sweep(_points({"experiment": "test-worker", "grid": {"x": [1.0, 2.0, 3.0, 4.0]}, "seeds": [0, 1]}),
                     out=tmp_path)
    assert (more.ok, more.skipped) == (2, 6) and len(_ok_rows(tmp_path)) == 8


def test_failed_points_rerun_only_when_asked(tmp_path):
    flag = tmp_path / "flag"
    points = _points({"experiment": "test-worker", "set": {"fail_unless": str(flag)}, "seeds": [0, 1, 2]})
    failed = run_sweep(points, out=tmp_path)
    assert (failed.ok, failed.failed) == (0, 3)
    assert all("is missing" in e for e in failed.errors.values())
    flag.touch()
    skipped = run_sweep(points, out=tmp_path)
    assert (skipped.ok, skipped.failed, skipped.skipped, skipped.skipped_failed) == (0, 0, 3, 3)
    assert not skipped.complete
    retried = run_sweep(points, out=tmp_path, retry_failed=True)
    assert (retried.ok, retried.failed) == (3, 0) and retried.complete
    statuses = Store(tmp_path / "implicitlab.sqlite").runs().status.tolist()
    assert statuses == ["failed"] * 3 + ["ok"] * 3  # history kept; each point ok once


def test_store_keeps_one_ok_run_per_key(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    args = dict(experiment="e", preset=None, config={"a": 1}, config_hash="h", environment={}, wall_time_s=1.0)
    a = store.write_run(status="ok", unique_ok=True, table=pd.DataFrame({"x": [1]}), **args)
    b = store.write_run(status="ok", unique_ok=True, table=pd.DataFrame({"x": [2]}), **args)
    assert a == b and len(store.runs()) == 1 and store.table(a)["x"].tolist() == [1]
    store.write_run(status="failed", unique_ok=True, error="boom", **args)
    assert store.statuses("e") == {"h": "ok"}


def test_ensemble_batching_matches_one_run_at_a_time(tmp_path):
    spec = {"experiment": "sweep-demo", "preset": "tiny",
            "grid": {"init_scale": [0.01, 0.1], "lr": [0.05, 0.1], "depth": [1, 2]}, "seeds": [0, 1]}
    points = _points(spec)
    batched = run_sweep(points, out=tmp_path / "a", batch=True)
    single = run_sweep(points, out=tmp_path / "b", batch=False)
    assert (batched.ok, batched.tasks) == (16, 2)  # depth is not batchable: one ensemble per depth
    assert (single.ok, single.tasks) == (16, 16)
    key = ["depth", "init_scale", "lr", "seed", "step"]
    ta = batched.table().drop(columns="run_id").sort_values(key).reset_index(drop=True)
    tb = single.table().drop(columns="run_id").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(ta, tb, rtol=1e-12, atol=0)
    env = Store(tmp_path / "a" / "implicitlab.sqlite").run_record(1)["environment"]
    assert env["batched_runs"] == 8


def test_merged_tuple_fields_batch_and_split_back(tmp_path):
    spec = {"experiment": "test-tuple-batch", "grid": {"lrs": [[0.1], [0.2], [0.3]], "seeds": [[0], [1, 2]]}}
    points = _points(spec)
    batched = run_sweep(points, out=tmp_path / "a")
    single = run_sweep(points, out=tmp_path / "b", batch=False)
    assert (batched.tasks, single.tasks, batched.ok) == (1, 6, 6)
    for p in points:
        a = batched.store.table(batched.run_ids[p.key])
        b = single.store.table(single.run_ids[p.key])
        pd.testing.assert_frame_equal(a, b)
        assert set(a["lr"]) == set(p.config.lrs) and set(a["seed"]) == set(p.config.seeds)


def test_batches_split_evenly_and_independently_of_workers():
    points = _points({"experiment": "sweep-demo", "preset": "tiny", "seeds": {"start": 0, "stop": 7}})
    sizes = [len(t.configs) for t, _ in plan_tasks(points, device="cpu", batch_size=3)]
    assert sizes == [2, 3, 2]
    assert [len(t.configs) for t, _ in plan_tasks(points, device="cpu", batch=False)] == [1] * 7


def test_experiment_declares_batching_consistently():
    demo = get("sweep-demo")
    with pytest.raises(ValueError, match="together"):
        Experiment(**{**demo.__dict__, "name": "x", "run_batch": None})
    with pytest.raises(ValueError, match="not config fields"):
        Experiment(**{**demo.__dict__, "name": "x", "batch_fields": ("colour",)})


def test_process_pool_restarts_after_a_worker_is_killed(tmp_path):
    marker = tmp_path / "killed-once"
    points = _points({"experiment": "test-worker", "grid": {"kill_once": ["", str(marker)]}, "seeds": [0, 1]})
    report = run_sweep(points, out=tmp_path, backend="process", workers=1)
    assert marker.exists()  # a worker did die
    assert (report.ok, report.failed) == (4, 0), report.errors
    assert len(set(_ok_rows(tmp_path))) == 4


def test_python_api_points_for_configs(tmp_path):
    from sweep_helpers import WorkerConfig

    points = points_for("test-worker", [WorkerConfig(seed=s) for s in (0, 1, 1)])
    assert len(points) == 2
    assert run_sweep(points, out=tmp_path).ok == 2


def test_runs_and_export(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("experiment: test-worker\ngrid: {x: [1.0, 2.0]}\nseeds: [0, 1]\n")
    out = tmp_path / "results"
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 points: 0 already stored, 4 ran ok, 0 failed" in result.output
    again = runner.invoke(app, ["sweep", str(spec), "--out", str(out)])
    assert "4 points: 4 already stored, 0 ran ok" in again.output

    listing = runner.invoke(app, ["runs", "--out", str(out)], env={"COLUMNS": "200"})
    assert listing.exit_code == 0, listing.output
    assert "seed=1 x=2" in listing.output and "4 runs (4 ok, 0 failed)" in listing.output
    assert "sleep=" not in listing.output  # only the fields that vary are shown

    csv = tmp_path / "tidy.csv"
    done = runner.invoke(app, ["export", str(csv), "--out", str(out), "--metrics", "step,value",
                               "--spec", str(spec)])
    assert done.exit_code == 0, done.output
    tidy = pd.read_csv(csv)
    assert list(tidy.columns[:3]) == ["run_id", "experiment", "seed"]
    assert list(tidy.columns[-2:]) == ["step", "value"] and len(tidy) == 4 * 3
    assert tidy.groupby(["x", "seed"]).size().tolist() == [3, 3, 3, 3]

    bad = runner.invoke(app, ["export", str(csv), "--out", str(out), "--metrics", "loss"], env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "has no column 'loss'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1

    pytest.importorskip("pyarrow")
    pq = tmp_path / "tidy.parquet"
    done = runner.invoke(app, ["export", str(pq), "--out", str(out), "--metrics", "step,value"])
    assert done.exit_code == 0, done.output
    expected = tidy_table(Store(out / "implicitlab.sqlite"), metrics=["step", "value"])
    pd.testing.assert_frame_equal(pd.read_parquet(pq), expected, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(csv)[["x", "value"]], expected[["x", "value"]])


def test_a_failing_sweep_exits_1_with_the_first_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"experiment: test-worker\nset: {{fail_unless: {tmp_path / 'nope'}}}\nseeds: [0]\n")
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "r")], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "1 points failed" in result.output and "is missing" in result.output and "--retry-failed" in result.output
    again = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "r")], env={"COLUMNS": "300"})
    assert again.exit_code == 1 and "1 points failed before" in again.output  # still incomplete
