"""The results store: one SQLite file, one transaction per run.

Tables
------
``runs``: id, experiment, preset, config_hash, config (JSON), status (``ok`` | ``failed``),
environment (JSON), wall_time_s, created_at (UTC ISO), out_dir, claims (JSON), error.
``tables``: run_id, name, data (the tidy results table as JSON records, split orient).

WAL journaling lets readers look while a sweep writes; one writer (the driver) writes.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

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


class Store:
    """An SQLite results store at ``path`` (created with its folder when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

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
    ) -> int:
        """Insert a run and its table in one transaction; return the run id."""
        con = self._connect()
        try:
            with con:  # one transaction: all or nothing
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
                        (run_id, "results", table.to_json(orient="split", index=False, double_precision=15)),
                    )
        finally:
            con.close()
        return run_id

    def runs(self) -> pd.DataFrame:
        """All runs (without their tables), newest last."""
        con = self._connect()
        try:
            return pd.read_sql_query(
                "SELECT id, experiment, preset, config_hash, status, wall_time_s, created_at, out_dir"
                " FROM runs ORDER BY id",
                con,
            )
        finally:
            con.close()

    def table(self, run_id: int, name: str = "results") -> pd.DataFrame:
        con = self._connect()
        try:
            row = con.execute("SELECT data FROM tables WHERE run_id=? AND name=?", (run_id, name)).fetchone()
        finally:
            con.close()
        if row is None:
            raise KeyError(f"run {run_id} has no table {name!r}")
        from io import StringIO

        return pd.read_json(StringIO(row[0]), orient="split")

    def run_record(self, run_id: int) -> dict[str, Any]:
        con = self._connect()
        con.row_factory = sqlite3.Row
        try:
            row = con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        finally:
            con.close()
        if row is None:
            raise KeyError(f"no run {run_id}")
        rec = dict(row)
        for key in ("config", "environment", "claims"):
            if rec.get(key):
                rec[key] = json.loads(rec[key])
        return rec
