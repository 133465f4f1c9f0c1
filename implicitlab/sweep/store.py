"""The results store: one SQLite file, one transaction per run.

Tables
------
``runs``: id, experiment, preset, config_hash, config (JSON), status (``ok`` | ``failed``),
environment (JSON), wall_time_s, created_at (UTC ISO), out_dir, claims (JSON), error.
``tables``: run_id, name, data (the tidy results table as JSON: :func:`encode_table`, exact).

WAL journaling lets readers look while a sweep writes; one writer (the driver) writes.

A sweep keeps one ``ok`` run per (experiment, config_hash): :meth:`Store.write_run` with
``unique_ok=True`` takes the write lock (``BEGIN IMMEDIATE``), looks for an ``ok`` run of the key
and inserts only if there is none, all in one transaction — so a sweep killed at any instant and
rerun ends with each point exactly once. ``implicitlab run`` appends (a rerun is a new run).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ConfigError

STORE_NAME = "implicitlab.sqlite"
"""The store's file name inside a results folder: ``OUT/implicitlab.sqlite`` (the one place it is defined)."""


def store_path(out: str | Path) -> Path:
    """Where the store of the results folder ``out`` lives."""
    return Path(out) / STORE_NAME


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    preset TEXT,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    environment TEXT NOT NULL,
    wall_time_s REAL,
    created_at TEXT NOT NULL,
    out_dir TEXT,
    claims TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_hash ON runs (experiment, config_hash);
CREATE TABLE IF NOT EXISTS tables (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


COLUMNS = {
    "runs": ("id", "experiment", "preset", "config_hash", "config", "status", "environment", "wall_time_s",
             "created_at", "out_dir", "claims", "error"),
    "tables": ("run_id", "name", "data"),
}
"""The columns each table of a store must have (a store may have more)."""


class StoreError(ConfigError):
    """A file at a store's path that is not an implicitlab store (corrupt, or another program's database);
    the message names the file and what to do."""


def _not_a_store(path: Path, why: str) -> StoreError:
    return StoreError(f"{path}: not an implicitlab results store ({why}); move it away or choose another --out")


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", … {len(names) - n} more" if len(names) > n else "")


def check_store(path: str | Path) -> None:
    """Raise :class:`StoreError` unless ``path`` is missing, empty, or an implicitlab store.

    Opens the file read-only and reads only its schema: nothing is created or written.
    """
    path = Path(path)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    if not path.is_file():
        raise _not_a_store(path, "a folder, not a file")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            found = {table: {row[1] for row in con.execute(f"PRAGMA table_info({table})")} for table in COLUMNS}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise _not_a_store(path, f"SQLite says: {exc}") from None
    if not names:  # an empty database: the schema is created on first use
        return
    if not any(found.values()):
        raise _not_a_store(path, f"an SQLite database with the tables {_few(sorted(names))}, none of runs and tables")
    for table, columns in COLUMNS.items():
        missing = [c for c in columns if c not in found[table]]
        if missing:
            raise _not_a_store(path, f"table {table!r} lacks the columns {missing}")


TABLE_FORMAT = "implicitlab-table/1"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values, for ``json.dumps``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in a results table")


def encode_table(table: pd.DataFrame) -> str:
    """A results table as JSON, column by column, with its dtypes — exact for float64.

    Floats are written by Python's ``repr`` (the shortest string that reads back to the same
    double), NaN and ±inf as the ``NaN`` / ``Infinity`` tokens Python's ``json`` reads back — so a
    stored table equals the computed one bit for bit (pandas' own JSON writer keeps at most 15
    significant digits).
    """
    columns = [str(c) for c in table.columns]
    if len(set(columns)) != len(columns):
        raise ValueError(f"a results table needs distinct column names, got {list(table.columns)}")
    body = {
        "format": TABLE_FORMAT,
        "columns": columns,
        "dtypes": {c: str(table[col].dtype) for c, col in zip(columns, table.columns)},
        "data": {c: table[col].tolist() for c, col in zip(columns, table.columns)},
    }
    return json.dumps(body, default=_plain, allow_nan=True)


def decode_table(text: str) -> pd.DataFrame:
    """The table :func:`encode_table` wrote (or an older pandas split-orient JSON table)."""
    body = json.loads(text)
    if not isinstance(body, dict) or body.get("format") != TABLE_FORMAT:
        from io import StringIO

        return pd.read_json(StringIO(text), orient="split", precise_float=True)  # stores written before
    table = pd.DataFrame({c: pd.Series(body["data"][c], dtype=object) for c in body["columns"]},
                         columns=body["columns"])
    for c, dtype in body["dtypes"].items():
        if dtype != "object":
            table[c] = table[c].astype(dtype)
    return table


class Store:
    """An SQLite results store at ``path`` (created with its folder when missing).

    A file at ``path`` that is not a store (corrupt, or another program's SQLite database) raises
    :class:`StoreError` before anything is written to it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cons: dict[int, sqlite3.Connection] = {}
        check_store(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect().executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection, opened once and kept: closing the last connection to a WAL
        database checkpoints it, which would cost every write a few ms."""
        con = self._cons.get(threading.get_ident())
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # explicit BEGIN/COMMIT
            con.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process being killed at any instant; only an OS
            # crash or power loss can roll back the last commits (their points then simply run again).
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA foreign_keys=ON")
            self._cons[threading.get_ident()] = con
        return con

    def close(self) -> None:
        """Close the connections this store opened (also done when it is garbage-collected)."""
        cons = getattr(self, "_cons", {})  # absent if __init__ failed
        for con in cons.values():
            con.close()
        cons.clear()

    def __del__(self) -> None:
        self.close()

    def write_run(
        self,
        *,
        experiment: str,
        preset: str | None,
        config: dict[str, Any],
        config_hash: str,
        status: str,
        environment: dict[str, Any],
        wall_time_s: float | None,
        table: pd.DataFrame | None = None,
        claims: list[dict] | None = None,
        out_dir: str | None = None,
        error: str | None = None,
        unique_ok: bool = False,
    ) -> int:
        """Insert a run and its table in one transaction; return the run id.

        With ``unique_ok`` and ``status="ok"``, an existing ``ok`` run of the same
        (experiment, config_hash) is kept and the newest one's id returned; nothing is inserted.
        """
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")  # one transaction, write lock held: all or nothing
        try:
            if unique_ok and status == "ok":
                row = con.execute(
                    "SELECT id FROM runs WHERE experiment=? AND config_hash=? AND status='ok' ORDER BY id DESC LIMIT 1",
                    (experiment, config_hash),
                ).fetchone()
                if row is not None:
                    con.execute("ROLLBACK")
                    return int(row[0])
            cur = con.execute(
                "INSERT INTO runs (experiment, preset, config_hash, config, status, environment,"
                " wall_time_s, created_at, out_dir, claims, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    experiment,
                    preset,
                    config_hash,
                    json.dumps(config, sort_keys=True),
                    status,
                    json.dumps(environment, sort_keys=True),
                    wall_time_s,
                    datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    out_dir,
                    json.dumps(claims) if claims is not None else None,
                    error,
                ),
            )
            run_id = int(cur.lastrowid)
            if table is not None:
                con.execute(
                    "INSERT INTO tables (run_id, name, data) VALUES (?,?,?)",
                    (run_id, "results", encode_table(table)),
                )
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return run_id

    def statuses(self, experiment: str) -> dict[str, str]:
        """config_hash → ``"ok"`` if any run of it succeeded, else ``"failed"`` (runs of ``experiment``)."""
        rows = self._connect().execute(
            "SELECT config_hash, MAX(status='ok') FROM runs WHERE experiment=? GROUP BY config_hash",
            (experiment,),
        ).fetchall()
        return {h: ("ok" if ok else "failed") for h, ok in rows}

    def records(self, status: str | None = None, experiment: str | None = None) -> list[dict[str, Any]]:
        """Runs with their config (decoded), oldest first; optionally of one status / experiment."""
        where, args = [], []
        if status is not None:
            where.append("status=?")
            args.append(status)
        if experiment is not None:
            where.append("experiment=?")
            args.append(experiment)
        sql = ("SELECT id, experiment, preset, config_hash, config, status, wall_time_s, created_at, error"
               " FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
        cur = self._connect().cursor()
        cur.row_factory = sqlite3.Row
        rows = [dict(r) for r in cur.execute(sql, args).fetchall()]
        for r in rows:
            r["config"] = json.loads(r["config"])
        return rows

    def runs(self) -> pd.DataFrame:
        """All runs (without their tables), newest last."""
        return pd.read_sql_query(
            "SELECT id, experiment, preset, config_hash, status, wall_time_s, created_at, out_dir"
            " FROM runs ORDER BY id",
            self._connect(),
        )

    def table(self, run_id: int, name: str = "results") -> pd.DataFrame:
        row = self._connect().execute(
            "SELECT data FROM tables WHERE run_id=? AND name=?", (run_id, name)
        ).fetchone()
        if row is None:
            raise KeyError(f"run {run_id} has no table {name!r}")
        return decode_table(row[0])

    def run_record(self, run_id: int) -> dict[str, Any]:
        cur = self._connect().cursor()
        cur.row_factory = sqlite3.Row
        row = cur.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id}")
        rec = dict(row)
        for key in ("config", "environment", "claims"):
            if rec.get(key):
                rec[key] = json.loads(rec[key])
        return rec
