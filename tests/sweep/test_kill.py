"""A sweep killed with SIGKILL halfway, then rerun, ends with exactly the full set of runs.

Real processes: ``python -m implicitlab.cli sweep`` runs in a subprocess, is SIGKILLed once some
runs are stored, and the same command is run again.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from implicitlab.sweep import expand, load_spec

SPEC = """
experiment: sweep-demo
preset: quick
grid:
  init_scale: [0.01, 0.02, 0.03]
  lr: [0.04, 0.05]
seeds: [0, 1]
"""
N_POINTS = 12


def _sweep(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "implicitlab.cli", "sweep", str(spec), "--out", str(out), *extra]


def _ok_rows(out: Path) -> list[tuple[str, str]]:
    path = out / "implicitlab.sqlite"
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=30)
    try:
        return con.execute("SELECT experiment, config_hash FROM runs WHERE status='ok'").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        con.close()


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "process"])
def test_sigkill_halfway_then_rerun_stores_each_point_exactly_once(tmp_path, backend):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "results"
    # One point at a time, so the kill lands between (or inside) single-run transactions.
    extra = ["--no-batch", *(["--workers", "2"] if backend == "process" else [])]
    proc = subprocess.Popen(_sweep(spec, out, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while len(_ok_rows(out)) < 3:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no runs stored in time"
            time.sleep(0.05)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = len(_ok_rows(out))
    assert 3 <= stored < N_POINTS, stored

    if backend == "process":  # pool workers notice their driver died and exit (no orphans)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), workers

    rerun = subprocess.run(_sweep(spec, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N_POINTS} points: {stored}" in rerun.stdout.replace("\n", " ")
    rows = _ok_rows(out)
    expected = {p.key for p in expand(load_spec(spec))}
    assert len(rows) == N_POINTS and set(rows) == expected  # none lost, none duplicated
