"""The SQLite store: one transaction per run, tables round-trip, failures recorded."""

import numpy as np
import pandas as pd
import pytest

import implicitlab.sweep.store as store_module
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


def test_tables_round_trip_bit_for_bit(tmp_path):
    """float64 values come back as the same doubles (pandas' JSON writer keeps 15 digits)."""
    store = Store(tmp_path / "s.sqlite")
    floats = [0.1 + 0.2, 1 / 3, 5e-324, 1.0000000000000002, float("nan"), float("inf"), -float("inf"), -0.0]
    table = pd.DataFrame({
        "f": floats,
        "i": np.arange(8, dtype=np.int64) * 10**15 + 1,
        "b": [True, False] * 4,
        "s": list("abcdefgh"),
        "o": [None, "x", 1.5, None, "y", 2, "z", None],
        "f32": np.float32([1.1] * 8),
    })
    back = store.table(_write(store, table=table))
    pd.testing.assert_frame_equal(back, table)
    assert np.array_equal(back["f"].to_numpy().view(np.int64), table["f"].to_numpy().view(np.int64))


def test_tables_of_older_stores_still_read(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run_id = _write(store)
    legacy = pd.DataFrame({"x": [1, 2], "y": [0.5, 0.25]}).to_json(orient="split", index=False, double_precision=15)
    store._connect().execute("INSERT INTO tables (run_id, name, data) VALUES (?,?,?)", (run_id, "results", legacy))
    pd.testing.assert_frame_equal(store.table(run_id), pd.DataFrame({"x": [1, 2], "y": [0.5, 0.25]}))


def test_a_failed_table_write_leaves_no_run(tmp_path, monkeypatch):
    store = Store(tmp_path / "s.sqlite")

    def broken(table):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_module, "encode_table", broken)
    with pytest.raises(RuntimeError):
        _write(store, table=pd.DataFrame({"x": [1]}))
    assert store.runs().empty  # the run row was rolled back with the table


def test_config_hash_is_stable_and_sensitive():
    a, b = Fig7Config(), Fig7Config()
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(Fig7Config(gd_steps=7))


def test_code_fingerprint_follows_the_sources(tmp_path):
    from implicitlab.environment import code_fingerprint, environment

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = code_fingerprint(tmp_path)
    assert code_fingerprint(tmp_path) == before  # deterministic
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    edited = code_fingerprint(tmp_path)
    assert edited != before
    (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py")  # same bytes, another module
    assert code_fingerprint(tmp_path) != edited
    renamed = code_fingerprint(tmp_path)
    (tmp_path / "sub" / "kernel.c").write_text("int f(void) { return 1; }\n")  # the C kernel's sources count too
    with_c = code_fingerprint(tmp_path)
    assert with_c != renamed
    (tmp_path / "sub" / "kernel.c").write_text("int f(void) { return 2; }\n")
    assert code_fingerprint(tmp_path) != with_c
    assert environment()["code_fingerprint"] == code_fingerprint()


def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path):
    import sqlite3

    from implicitlab.sweep.store import StoreError

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not SQLite at all " * 64)
    with pytest.raises(StoreError, match=r"garbage.sqlite: not an implicitlab results store \(SQLite says: file is "
                                         r"not a database\); move it away or choose another --out"):
        Store(garbage)
    assert garbage.read_bytes() == b"not SQLite at all " * 64
    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE runs (id INTEGER, name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=r"table 'runs' lacks the columns \['experiment'"):
        Store(foreign)
    # an empty file and an empty database are stores yet to be made
    (tmp_path / "empty.sqlite").write_bytes(b"")
    sqlite3.connect(tmp_path / "blank.sqlite").close()
    for name in ("empty.sqlite", "blank.sqlite"):
        store = Store(tmp_path / name)
        assert _write(store) == 1
        store.close()
    # a store made by Store passes its own check on reopening
    again = Store(tmp_path / "empty.sqlite")
    assert list(again.runs().experiment) == ["e"]
