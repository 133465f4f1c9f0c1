"""The SQLite store: one transaction per run, tables round-trip, failures recorded."""

import pandas as pd
import pytest

from implicitlab.config import config_hash
from implicitlab.experiments.poggio2018.fig7 import Fig7Config
from implicitlab.sweep import Store


def _write(store, **kw):
    args = dict(experiment="e", preset="tiny", config={"a": 1}, config_hash="h", status="ok",
                environment={"torch": "x"}, wall_time_s=1.5)
    args.update(kw)
    return store.write_run(**args)


def test_round_trip(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    table = pd.DataFrame({"run": [0, 1], "step": [10, 10], "loss": [0.5, float("nan")]})
    run_id = _write(store, table=table, claims=[{"name": "c", "holds": True}])
    back = store.table(run_id)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    rec = store.run_record(run_id)
    assert rec["config"] == {"a": 1} and rec["claims"][0]["name"] == "c"
    assert list(store.runs().experiment) == ["e"]


def test_a_failed_table_write_leaves_no_run(tmp_path):
    store = Store(tmp_path / "s.sqlite")

    class Broken(pd.DataFrame):
        def to_json(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _write(store, table=Broken({"x": [1]}))
    assert store.runs().empty  # the run row was rolled back with the table


def test_config_hash_is_stable_and_sensitive():
    a, b = Fig7Config(), Fig7Config()
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(Fig7Config(gd_steps=7))
