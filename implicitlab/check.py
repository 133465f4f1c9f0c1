"""``implicitlab check``: every experiment's preset through the sweep machinery, one report.

Runs are resumable: each experiment's preset is a sweep point keyed by its config hash in
``out/implicitlab.sqlite``, so a second call reuses what is stored and only runs what is missing
(or failed, with ``retry_failed``). Claims and figures are derived afresh from the stored tables
(``claims`` and ``plot`` read only the table), so the page always reflects the current claim code.
The config hash does not see the code that made a table: a reused run whose stored code
fingerprint (:func:`implicitlab.environment.code_fingerprint`) differs from the current one is
flagged as stale on the page and in the result, and ``fresh=True`` (``--fresh``) runs everything
again (the old runs stay in the store; the newest run of a key is the one used).

A view (``Experiment.view_of``) is no sweep point: its source's point is (once, also when only the
view is selected), and the view's table is derived from the source's stored table, each time —
nothing trains twice, and nothing of the view is stored.

Claims say what kind of evidence they are (:mod:`implicitlab.experiments.claims`): the result
counts them per kind (``counts``) and its headline counts predictions (``headline``). ``claims.json``
holds, per experiment, the claim records (kind, verdict, measured, bound, seeds, rule, a
prediction's control or control_reason) and the threshold table (``{name: {value, source}}``).
``ok`` — what sets the exit code of ``implicitlab check`` — is false when a prediction or a
consistency check (an identity) is refuted, or a run failed: a refuted prediction is a finding
against the paper (or our reproduction of it), a refuted identity a bug in our code. An
uninformative prediction, a claim without data and an observation do not set it: the page and
the headline show them.
"""

from __future__ import annotations

import fnmatch
import io
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, with_data_dir
from .environment import code_fingerprint
from .experiments import Claim, Experiment, experiments, get
from .experiments.claims import count, headline
from .report import ReportEntry, thresholds_table, write_report
from .sweep.store import Store, store_path
from .sweep.driver import run_sweep
from .sweep.grid import points_for


@dataclass
class CheckResult:
    entries: list[ReportEntry]
    report: Path
    claims_json: Path
    wall_time_s: float

    @property
    def claims(self) -> list[dict]:
        return [c for e in self.entries for c in e.claims]

    @property
    def stale(self) -> list[str]:
        """Experiments whose reused run was made by other code than the current."""
        return [e.experiment for e in self.entries if e.stale]

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {verdict: n}}`` over every claim (:func:`implicitlab.experiments.claims.count`)."""
        return count(self.claims)

    @property
    def headline(self) -> str:
        """One line counting predictions first (:func:`implicitlab.experiments.claims.headline`)."""
        return headline(self.claims)

    @property
    def failed(self) -> list[str]:
        """Experiments whose run failed (no table: one placeholder claim without data)."""
        return [e.experiment for e in self.entries if e.error]

    @property
    def refuted(self) -> list[tuple[str, dict]]:
        """(experiment, claim) for every refuted prediction or identity (a refuted identity is a bug)."""
        return [(e.experiment, c) for e in self.entries for c in e.claims
                if c["verdict"] == "refuted" and c.get("kind", "prediction") in ("prediction", "identity")]

    @property
    def ok(self) -> bool:
        """No prediction or identity is refuted and every run ran. Uninformative predictions, claims
        without data and observations do not count against it (the page and headline show them)."""
        return not self.refuted and not self.failed

    @property
    def all_hold(self) -> bool:
        """Every prediction holds or is uninformative, every identity holds, every run ran: ``ok``."""
        return self.ok


def select(only: str | None) -> list[Experiment]:
    """Experiments whose name matches the glob ``only`` (all but demos when None); an error when none do."""
    exps = [e for name, e in experiments().items()
            if (fnmatch.fnmatch(name, only) if only is not None else "demo" not in e.tags)]
    if not exps:
        raise ConfigError(f"no experiment matches {only!r}; known: {', '.join(experiments())}")
    return exps


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def check(
    preset: str = "quick",
    *,
    only: str | None = None,
    out: Path = Path("results"),
    device: str = "cpu",
    backend: str | None = None,
    workers: int = 1,
    retry_failed: bool = False,
    fresh: bool = False,
    data_dir: str | None = None,
    progress=None,
) -> CheckResult:
    """Run (or reuse) every selected experiment's ``preset``; write ``report.html`` and ``claims.json``.

    ``data_dir`` (the data root of the experiments that load data sets) goes into the ``data_dir``
    field of those experiments' configs; None keeps the presets' own (the loaders' default root).
    """
    start = time.perf_counter()
    exps = select(only)
    unique, point_of = {}, {}  # point_of: experiment name → the point whose run it reads (a view: its source's)
    for e in exps:
        trained = get(e.view_of) if e.view_of is not None else e
        (p,) = points_for(trained, [with_data_dir(e.preset(preset), data_dir)], preset=preset)  # validates presets
        point_of[e.name] = unique.setdefault(p.key, p)
    points = list(unique.values())
    before = Store(store_path(out))
    stored = {p.key for p in points if before.statuses(p.experiment.name).get(p.config_hash) == "ok"}
    before.close()
    sweep = run_sweep(points, out=out, backend=backend, workers=workers, device=device, retry_failed=retry_failed,
                      fresh=fresh, progress=progress)
    current_code = code_fingerprint()
    store = sweep.store
    entries = []
    for exp in exps:
        p = point_of[exp.name]
        run_id = sweep.run_ids.get(p.key)
        if run_id is None:
            error = sweep.errors.get(p.key, "the run failed (see `implicitlab runs`)")
            failed = Claim("experiment ran", "the experiment runs to completion", "implicitlab", float("nan"), ">=",
                           1.0, "no stored result (see `implicitlab runs`)", kind="identity",
                           no_data_reason=f"the run failed: {error}")
            entries.append(ReportEntry(exp.name, exp.title, exp.paper, preset, [failed.to_dict()], "<svg></svg>",
                                       {}, {}, 0.0, exp.description, thresholds=thresholds_table(exp.thresholds),
                                       error=str(error)))
            continue
        record = store.run_record(run_id)
        env = record.get("environment") or {}
        wall = float(record.get("wall_time_s") or 0.0)
        table = store.table(run_id)
        if exp.view_of is not None:
            derived = time.perf_counter()
            table = exp.derive(table, p.config)
            env = {**env, "view_of": exp.view_of, "source_run_id": run_id}
            wall = time.perf_counter() - derived
        claims = [c.to_dict() for c in exp.claims(table)]
        entries.append(ReportEntry(
            experiment=exp.name, title=exp.title, paper=exp.paper, preset=preset, claims=claims,
            figure_svg=_svg(exp.plot(table)), config=record.get("config") or {},
            environment=env, wall_time_s=wall,
            description=exp.description, reused=p.key in stored and not fresh,
            thresholds=thresholds_table(exp.thresholds),
            stale=p.key in stored and not fresh and env.get("code_fingerprint") != current_code,
        ))
    page, claims_json = write_report(entries, Path(out))
    return CheckResult(entries, page, claims_json, time.perf_counter() - start)
