"""Ray backend, on a real local Ray (num_cpus=2): same tables as local and process, loopback only,
temporary files under the results folder, shut down afterwards — also on Ctrl-C — and a worker
killed mid-run has its task retried."""

import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from implicitlab.sweep import expand, parse_spec, run_sweep, tidy_table

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra"),
]


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(entry.name)] = (ppid, cmd)
    return out


def _descendants(root: int) -> set[int]:
    procs = _processes()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in procs.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _listening(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state owned by ``pids``."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(parts[1].split(":")[0])
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(words)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            addresses.append(str(ip))
    return addresses


def test_same_tables_on_local_process_and_ray_and_a_killed_ray_worker_is_retried(tmp_path):
    # One local Ray (num_cpus=2) serves both checks: Ray start-up is the slow part of this suite.
    demo = expand(parse_spec({"experiment": "sweep-demo", "preset": "tiny",
                              "grid": {"init_scale": [0.01, 0.1], "depth": [1, 2]}, "seeds": [0, 1, 2]}))
    marker = tmp_path / "killed-once"  # the first kill_once run SIGKILLs its worker, then leaves this
    killers = expand(parse_spec({"experiment": "test-worker",
                                 "grid": {"kill_once": ["", str(marker)]}, "seeds": [0, 1, 2]}))
    listening: list[str] = []
    ray_pids: set[int] = set()

    def watch(done, total):  # runs in the driver while Ray is up
        if 0 < done < total:
            pids = _descendants(os.getpid()) - before
            ray_pids.update(pids)
            listening.extend(_listening(pids))

    tables = {}
    key = ["depth", "init_scale", "seed", "step"]
    for backend in ("local", "process", "ray"):
        before = _descendants(os.getpid())  # e.g. the resource tracker a process pool leaves
        points = demo + killers if backend == "ray" else demo
        report = run_sweep(points, out=tmp_path / backend, backend=backend, workers=2, batch_size=3,
                           progress=watch if backend == "ray" else None)
        assert (report.ok, report.failed) == (len(points), 0), report.errors
        table = report.table()
        if backend == "ray":
            killed = int(marker.read_text())  # one worker did SIGKILL itself …
            runs = tidy_table(report.store, metrics=["step", "value", "pid"], experiment="test-worker")
            assert len(runs) == 6 * 3 and runs["run_id"].nunique() == 6  # … and its task was retried
            retried = runs[runs["kill_once"] == str(marker)]
            assert len(retried) == 3 * 3 and killed not in set(retried["pid"])
            table = tidy_table(report.store, experiment="sweep-demo")
        tables[backend] = table.drop(columns="run_id").sort_values(key).reset_index(drop=True)
    assert len(tables["local"]) == 12 * 9
    pd.testing.assert_frame_equal(tables["process"], tables["local"], check_exact=True)
    pd.testing.assert_frame_equal(tables["ray"], tables["local"], check_exact=True)

    assert listening, "no Ray sockets seen"
    assert all(ipaddress.ip_address(a).is_loopback for a in listening), listening
    assert list((tmp_path / "ray" / ".ray").glob("session_*/logs"))  # temporary files under results
    import ray

    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in ray_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in ray_pids if _alive(p)]  # Ray's processes are gone


def test_ctrl_c_shuts_local_ray_down(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("experiment: sweep-demo\npreset: tiny\nset: {num_steps: 1000000}\nseeds: [0, 1, 2, 3]\n")
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "implicitlab.cli", "sweep", str(spec), "--out", str(out),
           "--backend", "ray", "--workers", "2", "--no-batch"]
    log = tmp_path / "sweep.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:
        while True:  # wait until a task runs on a Ray worker
            pids = _descendants(proc.pid)
            procs = _processes()
            if any("execute_task" in procs.get(p, (0, ""))[1] for p in pids):
                break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "Ray never ran a task"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # say what the sweep and its processes were doing, then fail
            procs = _processes()
            still = {p: procs.get(p, (0, ""))[1][:100] for p in _descendants(proc.pid)}
            pytest.fail(f"the sweep did not exit within 60 s of Ctrl-C; its log:\n{log.read_text()}\n"
                        f"its processes still running: {still}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)  # reaped here, not left to warn from a later test
    assert proc.returncode != 0, log.read_text()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    procs = _processes()
    alive = {p: procs.get(p, (0, ""))[1][:80] for p in pids if _alive(p)}
    assert not alive, alive  # Ray's processes were shut down with the sweep
