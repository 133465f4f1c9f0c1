"""Run one experiment on a config: time it, write its files, record it in the store.

Files, under ``out/EXPERIMENT/PRESET/``: ``config.json``, ``table.csv``, ``claims.json``,
``figure.png`` and ``figure.svg``. The store (``out/implicitlab.sqlite`` by default) gets the run
with its config, hash, environment, wall time, table and claims, in one transaction.

A view (``Experiment.view_of``) trains nothing: its table is derived from its source's table for
the same config — the newest ``ok`` run of that config in the store made by the current code
(:func:`stored_run`), or else a run of the source made now (stored, with its own files). The view's
environment names the source run (``view_of``, ``source_run_id``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import ConfigError, config_hash, config_to_dict
from .environment import code_fingerprint, environment
from .experiments import Claim, Experiment, get
from .experiments import Progress
from .plots import save
from .train import fused_chain
from .sweep.store import Store, store_path


@dataclass
class RunOutcome:
    experiment: str
    preset: str | None
    run_id: int
    out_dir: Path
    table: pd.DataFrame
    claims: list[Claim]
    wall_time_s: float
    source: RunOutcome | int | None = None  # a view: its source's run, made now (an outcome) or reused (a run id)


def stored_run(store: Store, experiment: str, cfg_hash: str) -> int | None:
    """The newest ``ok`` run of ``experiment`` with config hash ``cfg_hash`` made by the current code
    (same :func:`~implicitlab.environment.code_fingerprint`), or None."""
    current = code_fingerprint()
    for rec in reversed(store.records(status="ok", experiment=experiment)):
        if rec["config_hash"] == cfg_hash:
            env = store.run_record(rec["id"]).get("environment") or {}
            if env.get("code_fingerprint") == current:
                return rec["id"]
    return None


def run_experiment(
    exp: Experiment,
    cfg: Any,
    *,
    preset: str | None,
    out: Path,
    device: torch.device,
    store: Store | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Execute ``exp`` on ``cfg`` and persist everything (see module docstring; a view runs or
    reuses its source first)."""
    store = store or Store(store_path(out))
    env = {**environment(device), "chain_kernel": fused_chain.status()}  # which path small chains took
    cfg_dict = config_to_dict(cfg)
    h = config_hash(cfg)
    source, source_table = None, None
    if exp.view_of is not None:
        source = stored_run(store, exp.view_of, h)
        if source is None:
            source = run_experiment(get(exp.view_of), cfg, preset=preset, out=out, device=device, store=store,
                                    progress=progress)
            source_table = source.table
        else:
            source_table = store.table(source)
        env = {**env, "view_of": exp.view_of,
               "source_run_id": source.run_id if isinstance(source, RunOutcome) else source}
    start = time.perf_counter()
    try:
        table, claims = exp.execute(cfg, device=device, progress=progress, source_table=source_table)
    except Exception as exc:  # a failed run is recorded, then re-raised
        store.write_run(
            experiment=exp.name, preset=preset, config=cfg_dict, config_hash=h, status="failed",
            environment=env, wall_time_s=time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}",
        )
        raise
    wall = time.perf_counter() - start

    out_dir = out / exp.name / (preset or f"custom-{h}")
    out_dir.mkdir(parents=True, exist_ok=True)
    claim_dicts = [c.to_dict() for c in claims]
    (out_dir / "config.json").write_text(
        json.dumps({"experiment": exp.name, "preset": preset, "config_hash": h, "config": cfg_dict,
                    "environment": env, "wall_time_s": wall}, indent=2)
    )
    table.to_csv(out_dir / "table.csv", index=False)
    (out_dir / "claims.json").write_text(json.dumps(claim_dicts, indent=2))
    save(exp.plot(table), out_dir / "figure")
    run_id = store.write_run(
        experiment=exp.name, preset=preset, config=cfg_dict, config_hash=h, status="ok",
        environment=env, wall_time_s=wall, table=table, claims=claim_dicts, out_dir=str(out_dir),
    )
    return RunOutcome(exp.name, preset, run_id, out_dir, table, claims, wall, source)


def write_summary(outcomes: list[RunOutcome], path: Path) -> Path:
    """A Markdown summary: the headline (predictions counted apart), then per experiment its figure
    and its claims split by kind — predictions with their control (or why none), consistency checks
    (identities), observations — and its threshold table."""
    from .experiments.claims import KINDS, headline

    def num(x) -> str:
        return "—" if x is None else (f"{x:.4g}" if isinstance(x, (int, float)) else str(x))

    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    sections = {"prediction": "Predictions", "identity": "Consistency checks (identities: checks of our code)",
                "observation": "Observations (ours)"}
    everything = [c.to_dict() for o in outcomes for c in o.claims]
    lines = ["# implicitlab — claims", "", headline(everything) + ".", "",
             "A prediction whose control (the same measurement and rule where it should not hold) holds too is "
             "**uninformative**: it could not have failed.", ""]
    for o in outcomes:
        rel = o.out_dir.relative_to(path.parent) if o.out_dir.is_relative_to(path.parent) else o.out_dir
        lines += [f"## {o.experiment} ({o.preset}, {o.wall_time_s:.1f} s)", "", f"![figure]({rel}/figure.svg)", ""]
        claims = [c.to_dict() for c in o.claims]
        for kind in KINDS:
            of_kind = [c for c in claims if c["kind"] == kind]
            if not of_kind:
                continue
            head = ["claim", "measured", "bound", "seeds · rule"] + (["control"] if kind == "prediction" else []) + [
                "verdict", "source"]
            lines += [f"### {sections[kind]}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for c in of_kind:
                verdict = c["verdict"] if c["verdict"] == "holds" else f"**{c['verdict']}**"
                if c["verdict"] == "no data":
                    verdict += f" ({c['no_data_reason']})"
                row = [c["name"], num(c["measured"]), f"{c['relation']} {num(c['bound'])}",
                       f"{c['seeds']} · {c['rule']}"]
                if kind == "prediction":
                    k = c.get("control")
                    row.append(f"{k['setting']}: {num(k['measured'])} → {k['verdict']}" if k
                               else f"none: {c['control_reason']}")
                row += [verdict, c["source"]]
                lines.append("| " + " | ".join(cell(x) for x in row) + " |")
            lines.append("")
        try:
            thresholds = get(o.experiment).thresholds
        except ConfigError:  # an experiment no longer listed: its claims still stand
            thresholds = {}
        if thresholds:
            lines += ["### Thresholds", "", "| threshold | value | source |", "|---|---|---|"]
            lines += [f"| {cell(name)} | {num(t.value)} | {cell(t.source)} |" for name, t in thresholds.items()]
            lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
