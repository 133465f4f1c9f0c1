"""A sweep on a real two-node Ray cluster on this machine's loopback, the second node's workers
killed mid-sweep: every point is stored once, a rerun resumes, every Ray socket is on 127.0.0.1 and
no Ray process outlives the test.

The cluster is started the way a user would start one (the README's recipe, these exact commands):
a head, then a second node joining it, each by Ray's own ``ray start`` run through ``implicitlab
ray-start`` (:func:`implicitlab.sweep.backends.ray_start`) — plain ``ray start`` (Ray 2.60) rewrites
``--node-ip-address=127.0.0.1`` to this machine's routable address and then listens on every
interface. Each node has its own ports and ``--temp-dir``; the cluster uses token authentication with
a token of its own. Every process of the cluster carries a tag in its environment (``ray start``'s
children inherit it), which is how the test finds, checks and stops exactly its own processes:
``ray stop`` would stop every Ray process on the machine, other sessions' included.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from implicitlab.sweep import expand, load_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray (the ray extra)"),
]

TAG_VAR = "IMPLICITLAB_RAY_CLUSTER_TEST"  # value: "<cluster id>/<role>" in every process of the cluster
IMPLICITLAB = str(Path(sys.executable).with_name("implicitlab"))  # the venv's console script
RAY_START = (IMPLICITLAB, "ray-start")  # `implicitlab ray-start`: Ray's `ray start`, 127.0.0.1 kept
NUM_POINTS = 6
SPEC = """experiment: sweep-demo
preset: tiny
set: {{num_steps: 8000}}  # ~1 s a point on an idle core: a kill lands while points run
seeds: {seeds}
"""


# --------------------------------------------------------------------------- processes and sockets


def _tags() -> dict[int, str]:
    """pid → role of every live process whose environment carries a cluster tag."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        for item in env:
            if item.startswith(TAG_VAR.encode() + b"="):
                found[int(entry.name)] = item.split(b"=", 1)[1].decode()
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _tcp_sockets(pids: set[int]) -> list[tuple[int, str, int, bool]]:
    """(pid, local address, local port, listening) of every TCP socket the ``pids`` hold."""
    owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[9] not in owner:
                continue
            hexip, hexport = parts[1].split(":")
            raw = bytes.fromhex(hexip)
            ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out.append((owner[parts[9]], str(ip), int(hexport, 16), parts[3] == "0A"))  # 0A: LISTEN
    return out


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, f"ray start exited ({proc.returncode}) before its GCS listened on {port}"
        assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port} after {timeout_s} s"
        time.sleep(0.2)


# --------------------------------------------------------------------------- the cluster


@dataclass
class LoopbackCluster:
    """A head and a second node on 127.0.0.1, started with :func:`ray_start` (see module docstring)."""

    root: Path
    cluster_id: str = field(default_factory=lambda: secrets.token_hex(6))
    address: str = ""

    def env(self, role: str) -> dict[str, str]:
        return {**os.environ, TAG_VAR: f"{self.cluster_id}/{role}", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.root / "auth_token")}

    def start(self) -> None:
        (self.root / "auth_token").write_text(secrets.token_hex(32))
        (self.root / "auth_token").chmod(0o600)
        gcs, client, agent, agent2, dash_metrics, autoscaler_metrics = _free_ports(6)
        self.address = f"127.0.0.1:{gcs}"
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000",
                  "--disable-usage-stats"]
        head = [*RAY_START, "--head", f"--port={gcs}", f"--temp-dir={self.root / 'head'}", *common,
                "--include-dashboard=false", f"--ray-client-server-port={client}",
                f"--dashboard-agent-listen-port={agent}"]
        node2 = [*RAY_START, f"--address={self.address}", f"--temp-dir={self.root / 'node2'}", *common,
                 f"--dashboard-agent-listen-port={agent2}"]
        # The head's two metrics servers have fixed default ports and no flag: they take these from
        # the environment (the same two variables in every process is harmless).
        head_env = {**self.env("head"), "DASHBOARD_METRIC_PORT": str(dash_metrics),
                    "AUTOSCALER_METRIC_PORT": str(autoscaler_metrics)}
        # The second node may start once the head's GCS answers; the head's `ray start` meanwhile
        # brings up the rest of the head (this overlap saves the second interpreter's start-up).
        started = {}
        for role, cmd, env in (("head", head, head_env), ("node2", node2, self.env("node2"))):
            log = open(self.root / f"ray-start-{role}.log", "w")
            started[role] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root), log)
            if role == "head":
                _wait_for_port(gcs, started["head"][0], timeout_s=90)
        for role, (proc, log) in started.items():
            try:
                rc = proc.wait(timeout=90)
            finally:
                log.close()
            text = (self.root / f"ray-start-{role}.log").read_text()
            assert rc == 0, f"ray start ({role}) failed:\n{text[-3000:]}"

    def processes(self) -> dict[int, str]:
        """pid → role (head, node2, driver) of this cluster's live processes."""
        return {pid: tag.split("/", 1)[1] for pid, tag in _tags().items()
                if tag.split("/", 1)[0] == self.cluster_id}

    def raylet(self, role: str) -> tuple[int, str]:
        """(pid, node id) of the raylet of ``role``."""
        for pid, r in self.processes().items():
            cmd = _cmdline(pid)
            if r == role and "/raylet " in cmd:
                return pid, cmd.split("--node_id=", 1)[1].split()[0]
        raise AssertionError(f"no raylet for {role}: {self.processes()}")

    def stop(self, grace_s: float = 6.0) -> dict[int, str]:
        """Stop the cluster in ``ray stop``'s order — the raylets, then the other processes, then the
        GCS; each group SIGTERM, then SIGKILL after ``grace_s / 3`` — but only this cluster's
        processes. Return what still lives after that (pid → command line): should be nothing."""

        def group(pid: int) -> int:
            cmd = _cmdline(pid)
            return 0 if "/raylet " in cmd else 2 if "/gcs_server " in cmd else 1

        for g in (0, 1, 2, None):  # None: whatever is left (e.g. a worker started meanwhile)
            for sig, wait_s in ((signal.SIGTERM, grace_s / 3), (signal.SIGKILL, 5.0)):
                pids = [p for p in self.processes() if g is None or group(p) == g]
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + wait_s
                while set(pids) & set(self.processes()) and time.monotonic() < deadline:
                    time.sleep(0.1)
        return {pid: _cmdline(pid)[:120] for pid in self.processes()}


@pytest.fixture
def loopback_cluster():
    # Short: Ray's Unix sockets live ~60 characters below --temp-dir (107-byte limit).
    root = Path(tempfile.mkdtemp(prefix="ilrc-"))
    cluster = LoopbackCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


# --------------------------------------------------------------------------- the test


def _stored(out: Path) -> list[tuple[str, str, dict]]:
    """(config_hash, status, environment) of every stored run."""
    path = out / "implicitlab.sqlite"
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=30)
    try:
        rows = con.execute("SELECT config_hash, status, environment FROM runs").fetchall()
    except sqlite3.OperationalError:  # the schema is not written yet
        return []
    finally:
        con.close()
    return [(h, s, json.loads(e)) for h, s, e in rows]


def _sweep_command(spec: Path, out: Path, address: str) -> list[str]:
    return [IMPLICITLAB, "sweep", str(spec), "--out", str(out),
            "--backend", "ray", "--ray-address", address, "--no-batch"]


def test_sweep_on_two_loopback_nodes_survives_killed_workers(loopback_cluster, tmp_path):
    cluster = loopback_cluster
    head_raylet, head_id = cluster.raylet("head")
    node2_raylet, node2_id = cluster.raylet("node2")
    assert head_id != node2_id

    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC.format(seeds=list(range(NUM_POINTS))))
    out = tmp_path / "results"
    expected = {p.config_hash for p in expand(load_spec(spec))}
    assert len(expected) == NUM_POINTS

    # The sweep, from the command line, as a driver of the cluster; node2's workers killed mid-sweep.
    log = tmp_path / "sweep.log"
    sockets: set[tuple[str, str, int, bool]] = set()  # (role, address, port, listening)
    killed_busy: list[str] = []  # command lines (ray::<task>) of node2 workers killed while running one
    with open(log, "w") as sink:
        sweep = subprocess.Popen(_sweep_command(spec, out, cluster.address), stdout=sink, stderr=subprocess.STDOUT,
                                 env=cluster.env("driver"), cwd=tmp_path)
    deadline = time.monotonic() + 150  # a bound for a hang, not a speed test: ~25-60 s here under load
    try:
        while sweep.poll() is None:
            assert time.monotonic() < deadline, "the sweep did not finish in time:\n" + log.read_text()[-3000:]
            procs = cluster.processes()
            sockets |= {(procs[pid], ip, port, listen) for pid, ip, port, listen in _tcp_sockets(set(procs))}
            if not killed_busy:
                workers = [p for p, role in procs.items() if role == "node2" and _ppid(p) == node2_raylet
                           and "Agent" not in _cmdline(p)]  # node2's worker processes (not its agents)
                busy = [_cmdline(p) for p in workers if "execute_task" in _cmdline(p)]
                stored = len(_stored(out))
                if busy and 0 < stored < NUM_POINTS:
                    for p in workers:
                        os.kill(p, signal.SIGKILL)
                    killed_busy = busy
            time.sleep(0.25)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    text = log.read_text()
    assert sweep.returncode == 0, text[-3000:]
    assert killed_busy, "no task of node2 was running while some points were stored: the kill never landed"
    assert f"{NUM_POINTS} points: 0 already stored, {NUM_POINTS} ran ok, 0 failed" in text, text[-3000:]

    # Every point stored once, ok; both nodes ran points.
    runs = _stored(out)
    assert sorted(h for h, _, _ in runs) == sorted(expected), "a point is missing or stored twice"
    assert {s for _, s, _ in runs} == {"ok"}
    nodes = {env.get("ray_node_id") for _, _, env in runs}
    assert nodes <= {head_id, node2_id} and node2_id in nodes and head_id in nodes, (nodes, head_id, node2_id)

    # Every socket of every Ray process — both nodes' servers and workers, and the driver — is on
    # 127.0.0.1 (listening ones and connected ones alike).
    listening = {(role, ip, port) for role, ip, port, listen in sockets if listen}
    assert {role for role, _, _ in listening} == {"head", "node2", "driver"}, sorted(listening)
    assert {ip for _, ip, _ in listening} == {"127.0.0.1"}, sorted(listening)
    assert {ip for _, ip, _, _ in sockets} == {"127.0.0.1"}, sorted(s for s in sockets if s[1] != "127.0.0.1")

    # A rerun with two more seeds runs only those two: stored points are skipped, none is duplicated.
    spec.write_text(SPEC.format(seeds=list(range(NUM_POINTS + 2))))
    rerun = subprocess.run(_sweep_command(spec, out, cluster.address), capture_output=True, text=True,
                           env=cluster.env("driver"), cwd=tmp_path, timeout=120)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"{NUM_POINTS + 2} points: {NUM_POINTS} already stored, 2 ran ok, 0 failed" in rerun.stdout, rerun.stdout
    runs = _stored(out)
    assert len(runs) == len({h for h, _, _ in runs}) == NUM_POINTS + 2

    # Both nodes are still up; stopping the cluster leaves no process behind.
    procs = cluster.processes()
    assert procs.get(head_raylet) == "head" and procs.get(node2_raylet) == "node2"
    assert not cluster.stop()


def test_ray_start_reports_bad_flags_like_ray_start():
    from implicitlab.sweep.backends import ray_start

    # click's usage error, before anything starts: exit status 2, as `ray start --no-such-flag` gives
    assert ray_start(["--no-such-flag"]) == 2
