"""The command line: ``implicitlab list | run | check | sweep | runs | export | measure``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .config import ConfigError, apply_overrides, resolve_device, with_data_dir
from .experiments import Claim, experiments, get
from .sweep import BACKENDS
from .sweep.store import StoreError, check_store, store_path

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure where gradient descent goes.")
console = Console()
err_console = Console(stderr=True)


def _check_data_dir(data_dir: Path | None) -> str | None:
    """``--data-dir`` (or $IMPLICITLAB_DATA, read by the option) as an absolute path; it reaches the
    loaders through the ``data_dir`` field of the configs that load data (:func:`with_data_dir`)."""
    if data_dir is None:
        return None
    if not data_dir.is_dir():
        _fail(f"--data-dir {data_dir}: not a directory")
    return str(data_dir.resolve())


def _check_store(out: Path) -> None:
    """A file at OUT/implicitlab.sqlite that is not a store: one line, exit 2 (read-only; nothing written)."""
    try:
        check_store(store_path(out))
    except StoreError as exc:
        _fail(str(exc))


def available_bytes(device) -> int | None:
    """Memory free for a run on ``device``: the GPU's free memory, else the machine's available RAM
    (``MemAvailable`` of /proc/meminfo, else ``os.sysconf`` pages); None where neither can be read."""
    import os

    if getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(plans, device) -> None:
    """Refuse (one line, exit 2) a config whose estimated memory exceeds what is available."""
    free = available_bytes(device)
    if free is None:
        return
    for exp, cfg in plans:
        need = exp.needed_bytes(cfg)
        if need is not None and need > free:
            _fail(f"{exp.name}: this config needs about {need / 1e9:.1f} GB ({exp.memory_note(cfg)}) but "
                  f"{free / 1e9:.1f} GB are available on {device}; lower the fields named, or pass "
                  "--no-memory-check to try anyway")


def _check_data(plans) -> None:
    """Read the data files the experiments load (CIFAR-10, cached once decoded; MNIST) before anything is written."""
    from .data import DataError

    for exp, cfg in plans:
        source = exp if exp.view_of is None else get(exp.view_of)
        if "cifar10" in source.tags:
            from .experiments.poggio2018.cifar import load_arrays

            try:
                load_arrays(getattr(cfg, "data_dir", None))
            except DataError as exc:
                _fail(f"{exp.name}: {str(exc).splitlines()[0]} (pass --data-dir with the CIFAR-10 data)")
        if "mnist" in source.tags:
            from .data import load_mnist, resolve_data_root

            try:
                root = resolve_data_root(getattr(cfg, "data_dir", None))
                for split in ("train", "test"):
                    load_mnist(root, split)
            except DataError as exc:
                _fail(f"{exp.name}: {str(exc).splitlines()[0]} (pass --data-dir with the MNIST data)")


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command("list")
def list_experiments() -> None:
    """List experiments, one line each, with their presets."""
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("experiment")
    table.add_column("presets")
    table.add_column("what")
    for name, exp in experiments().items():
        table.add_row(name, ", ".join(exp.presets), exp.title)
    console.print(table)


VERDICT_COLOURS = {"holds": "green", "refuted": "red", "uninformative": "dark_orange", "no data": "cyan"}
KIND_LABELS = {"prediction": "prediction", "identity": "check", "observation": "observation"}


def claims_table(title: str, claims: list[Claim] | list[dict]) -> Table:
    """The claims, predictions first, then consistency checks (identities), then observations, with
    the verdicts in colour — uninformative (the control holds too) in orange, no data in cyan — and a
    prediction's control: its verdict under the same rule (refuted, as it should be, in green), its
    measured value and its setting."""
    from .experiments.claims import KINDS

    rows = [c.to_dict() if isinstance(c, Claim) else c for c in claims]
    rows.sort(key=lambda c: KINDS.index(c.get("kind", "prediction")))
    # a narrow terminal leaves the seeds, the source and the control's setting to the page (and
    # claims.json); a wide one shows them cut short
    wide = console.width >= 120
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("kind")
    table.add_column("claim", min_width=min(20 if wide else 16, max((len(c["name"]) for c in rows), default=5)))
    table.add_column("measured", justify="right")
    table.add_column("bound", justify="right")
    table.add_column("verdict", min_width=7)
    if wide:
        table.add_column("seeds", justify="right")
    table.add_column("control")
    if wide:
        table.add_column("source")

    def num(x) -> str:
        return "nan" if x is None else (f"{x:.4g}" if isinstance(x, (int, float)) else str(x))

    def short(text: str, n: int) -> str:
        return escape(text if len(text) <= n else text[:n - 1] + "…")

    for c in rows:
        ctl = c.get("control")
        if ctl:
            # the control refuted is what a prediction needs (green); holding too makes it uninformative
            colour = {"refuted": "green", "holds": "dark_orange"}.get(ctl["verdict"], "cyan")
            control = f"[{colour}]{ctl['verdict']}[/]" + (f" ({num(ctl['measured'])}) {short(ctl['setting'], 24)}"
                                                          if wide else "")
        else:
            control = "no control" if c.get("kind", "prediction") == "prediction" else ""
        verdict = c["verdict"]
        table.add_row(
            KIND_LABELS.get(c.get("kind", "prediction"), c.get("kind", "")), escape(c["name"]), num(c["measured"]),
            f"{c['relation']} {num(c['bound'])}", f"[{VERDICT_COLOURS.get(verdict, 'cyan')}]{verdict}[/]",
            *([str(c.get("seeds", 1)), control, short(c["source"], 28)] if wide else [control]),
        )
    return table


@app.command("run")
def run(
    experiment: Annotated[str, typer.Argument(help="an experiment name (see `implicitlab list`), or 'all'")],
    preset: Annotated[str, typer.Option(help="tiny | quick | full")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: key=value")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    threads: Annotated[int, typer.Option(help="torch CPU threads (small batched ops run fastest on 1)")] = 1,
    data_dir: Annotated[Path | None, typer.Option(envvar="IMPLICITLAB_DATA", help="data root (CIFAR-10, MNIST); "
                                                  "default ../shared/data, else ./data")] = None,
    memory_check: Annotated[bool, typer.Option(help="refuse a config whose estimated memory exceeds what "
                                               "is available")] = True,
) -> None:
    """Run an experiment's preset: store the run, write figure + table + claims, print the claims."""
    import torch

    from .runner import run_experiment

    # Everything is validated before anything runs or is written.
    try:
        # 'all' means the papers' experiments; demo experiments (tag "demo") run only by name.
        names = ([n for n, e in experiments().items() if "demo" not in e.tags] if experiment == "all"
                 else [get(experiment).name])
        dev = resolve_device(device)
        root = _check_data_dir(data_dir)
        plans = []
        for name in names:
            exp = get(name)
            cfg = exp.preset(preset)
            if set_:
                if experiment == "all":
                    raise ConfigError("--set needs a single experiment, not 'all'")
                cfg = apply_overrides(cfg, set_)
            plans.append((exp, with_data_dir(cfg, root)))
    except ConfigError as exc:
        _fail(str(exc))
    if threads < 1:
        _fail(f"--threads must be ≥ 1, got {threads}")
    _check_store(out)
    if memory_check:
        _check_memory(plans, dev)
    _check_data(plans)
    torch.set_num_threads(threads)

    outcomes = []
    for exp, cfg in plans:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), console=err_console, transient=False,
        ) as bar:
            task = bar.add_task(f"{exp.name} ({preset})", total=1.0)
            outcome = run_experiment(
                exp, cfg, preset=preset, out=out, device=dev,
                progress=lambda f, t=task: bar.update(t, completed=min(max(f, 0.0), 1.0)),
            )
            bar.update(task, completed=1.0)
        console.print(claims_table(f"{exp.name} — {exp.paper}  [{outcome.wall_time_s:.1f} s]", outcome.claims))
        console.print(f"  figure, table, claims: {outcome.out_dir}/", highlight=False)
        if exp.view_of is not None:  # a view trains nothing: say whose runs it read
            src = outcome.source
            made = (f"run {src} from the store" if isinstance(src, int)
                    else f"run {src.run_id}, made now [{src.wall_time_s:.1f} s]: {src.out_dir}/")
            console.print(f"  a view of the runs of {exp.view_of}: {made}", highlight=False)
        outcomes.append(outcome)
    if len(outcomes) > 1:
        from .runner import write_summary

        path = write_summary(outcomes, out / f"report-{preset}.md")
        console.print(f"summary of every claim: {path}", highlight=False)
    from .experiments.claims import headline

    everything = [c.to_dict() for o in outcomes for c in o.claims]
    console.print(headline(everything), highlight=False)
    if any(c["verdict"] == "refuted" and c["kind"] != "observation" for c in everything):
        console.print("[yellow]some predictions or consistency checks are refuted (see the tables above)[/]")


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:>6.0f}/{task.total:.0f}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
    )


@app.command("sweep")
def sweep(
    spec: Annotated[Path, typer.Argument(help="a sweep spec: YAML (.yaml/.yml) or TOML (.toml)")],
    out: Annotated[Path, typer.Option(help="results folder (store: OUT/implicitlab.sqlite)")] = Path("results"),
    backend: Annotated[str | None, typer.Option(help="local | process | ray (default: local for 1 worker, "
                                                "else process; ray with --ray-address)")] = None,
    workers: Annotated[int, typer.Option(help="worker processes, or CPUs of a local Ray")] = 1,
    ray_address: Annotated[str | None, typer.Option(help="join this Ray cluster (e.g. HEAD_IP:6379)")] = None,
    retry_failed: Annotated[bool, typer.Option(help="rerun points whose runs failed")] = False,
    batch: Annotated[bool, typer.Option(help="train points that differ only in batchable fields as ensembles")] = True,
    batch_size: Annotated[int, typer.Option(help="most runs in one ensemble")] = 256,
    device: Annotated[str, typer.Option(help="cpu | cuda[:N] | auto, for every run")] = "cpu",
    max_retries: Annotated[int | None, typer.Option(help="re-executions of a task whose worker died "
                                                    "(default: 3 on Ray, 1 pool restart)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads of the local backend (default: "
                                                "torch's; pool and Ray workers use 1)")] = None,
    dry_run: Annotated[bool, typer.Option(help="validate and count the points, run nothing")] = False,
    memory_check: Annotated[bool, typer.Option(help="refuse points whose estimated memory exceeds what is "
                                               "available")] = True,
) -> None:
    """Run an experiment over a grid; every point is stored once, rerunning resumes."""
    from .sweep import expand, load_spec, run_sweep
    from .sweep.backends import ray_available

    # Everything is validated before anything runs or is written.
    try:
        points = expand(load_spec(spec))
        if backend is not None and backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if workers < 1:
            raise ConfigError(f"--workers must be ≥ 1, got {workers}")
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be ≥ 1, got {batch_size}")
        if ray_address is not None and backend not in (None, "ray"):
            raise ConfigError("--ray-address needs --backend ray")
        if (backend == "ray" or ray_address is not None) and not ray_available():
            raise ConfigError("the ray backend needs Ray: pip install -c constraints.txt 'implicitlab[ray]'")
        resolve_device(device)
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be ≥ 1, got {threads}")
        check_store(store_path(out))
    except ConfigError as exc:
        _fail(str(exc))
    if memory_check:  # per point (one run); an ensemble of batched points needs more
        _check_memory([(p.experiment, p.config) for p in points], resolve_device(device))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    name = points[0].experiment.name
    if dry_run:
        console.print(f"{len(points)} points of {name}; nothing run", highlight=False)
        return
    try:
        with _bar() as bar:
            task = bar.add_task(f"{name} ({len(points)} points)", total=len(points))
            report = run_sweep(
                points, out=out, backend=backend, workers=workers, ray_address=ray_address,
                retry_failed=retry_failed, batch=batch, batch_size=batch_size, device=device,
                max_retries=max_retries, progress=lambda done, total: bar.update(task, completed=done),
            )
    except KeyboardInterrupt:
        err_console.print("interrupted: the runs stored so far are kept; rerun the same command to resume",
                          highlight=False)
        raise typer.Exit(code=130) from None
    console.print(
        f"{report.total} points: {report.skipped} already stored, {report.ok} ran ok, {report.failed} failed "
        f"({report.tasks} tasks, {report.wall_time_s:.1f} s) — store: {report.store.path}", highlight=False,
    )
    if report.failed:
        first = next(iter(report.errors.values()))
        console.print(f"[yellow]{report.failed} points failed[/] (first error: {first}); "
                      "rerun with --retry-failed", highlight=False)
    if report.skipped_failed:
        console.print(f"[yellow]{report.skipped_failed} points failed before[/] and were skipped; "
                      "rerun with --retry-failed (`implicitlab runs --status failed` shows why)", highlight=False)
    if not report.complete:
        raise typer.Exit(code=1)


def _key_fields(records: list[dict]) -> dict[str, list[str]]:
    """Per experiment, the config fields whose values differ between its runs."""
    from .sweep.export import ordered_config

    by_exp: dict[str, list[dict]] = {}
    for r in records:
        by_exp.setdefault(r["experiment"], []).append(ordered_config(r["experiment"], r["config"]))
    out = {}
    for exp, configs in by_exp.items():
        names = list(dict.fromkeys(k for c in configs for k in c))
        out[exp] = [k for k in names if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    return out


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


@app.command("ray-start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                             "help_option_names": []})
def ray_start_command(ctx: typer.Context) -> None:
    """Ray's own `ray start` with every flag passed through, 127.0.0.1 kept as given (needs the ray extra).

    Plain `ray start` (Ray 2.60) replaces --node-ip-address=127.0.0.1 by the machine's routable address and
    then listens on every interface; this is the same command with loopback kept, for a cluster on one
    machine (see the README's recipe). `implicitlab ray-start --help` prints `ray start`'s own help.
    """
    from .sweep.backends import ray_start

    try:
        code = ray_start(list(ctx.args))
    except ConfigError as exc:
        _fail(str(exc))
    raise typer.Exit(code=code)


@app.command("runs")
def runs(
    out: Annotated[Path, typer.Option(help="results folder (store: OUT/implicitlab.sqlite)")] = Path("results"),
    experiment: Annotated[str | None, typer.Option(help="only this experiment")] = None,
    status: Annotated[str | None, typer.Option(help="only ok | failed")] = None,
    limit: Annotated[int | None, typer.Option(help="only the last N")] = None,
) -> None:
    """List stored runs: id, experiment, status, wall time, the config fields that vary."""
    from .sweep import Store

    path = store_path(out)
    if not path.is_file():
        _fail(f"no store at {path} (run `implicitlab run` or `implicitlab sweep` first)")
    if status not in (None, "ok", "failed"):
        _fail(f"--status must be ok or failed, got {status!r}")
    _check_store(out)
    records = Store(path).records(status=status, experiment=experiment)
    keys = _key_fields(records)
    if limit is not None:
        records = records[-limit:] if limit > 0 else []
    table = Table(header_style="bold", box=None)
    for col, justify in (("id", "right"), ("experiment", "left"), ("preset", "left"), ("status", "left"),
                         ("wall s", "right"), ("created (UTC)", "left"), ("config", "left")):
        table.add_column(col, justify=justify)
    for r in records:
        colour = "green" if r["status"] == "ok" else "red"
        fields = " ".join(f"{k}={_short(r['config'].get(k))}" for k in keys[r["experiment"]])
        if r["status"] != "ok" and r["error"]:
            fields = (fields + "  " if fields else "") + f"[red]{r['error'][:80]}[/]"
        wall = f"{r['wall_time_s']:.2f}" if r["wall_time_s"] is not None else "—"
        table.add_row(str(r["id"]), r["experiment"], r["preset"] or "—", f"[{colour}]{r['status']}[/]", wall,
                      r["created_at"], fields or "—")
    console.print(table)
    n_ok = sum(r["status"] == "ok" for r in records)
    console.print(f"{len(records)} runs ({n_ok} ok, {len(records) - n_ok} failed)", highlight=False)


@app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="the file to write (.csv or .parquet)")],
    out: Annotated[Path, typer.Option(help="results folder (store: OUT/implicitlab.sqlite)")] = Path("results"),
    metrics: Annotated[str | None, typer.Option(help="comma-separated table columns (default: all)")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="csv | parquet (default: from FILE)")] = None,
    experiment: Annotated[str | None, typer.Option(help="only this experiment's runs")] = None,
    spec: Annotated[Path | None, typer.Option(help="only the runs of this sweep spec")] = None,
) -> None:
    """Write a tidy table of the ok runs: run id, config fields, the chosen metric columns."""
    from .sweep import Store, expand, load_spec, tidy_table, write_table

    path = store_path(out)
    try:
        fmt = format_ or ("parquet" if file.suffix == ".parquet" else "csv")
        if fmt not in ("csv", "parquet"):
            raise ConfigError(f"--format must be csv or parquet, got {fmt!r}")
        if not path.is_file():
            raise ConfigError(f"no store at {path}")
        check_store(path)
        keys = {p.key for p in expand(load_spec(spec))} if spec is not None else None
        cols = [c.strip() for c in metrics.split(",") if c.strip()] if metrics else None
        tidy = tidy_table(Store(path), metrics=cols, experiment=experiment, keys=keys)
        if tidy.empty:
            raise ConfigError("no ok runs match; nothing written")
        written = write_table(tidy, file, fmt)
    except ConfigError as exc:
        _fail(str(exc))
    console.print(f"{len(tidy)} rows × {len(tidy.columns)} columns from {tidy['run_id'].nunique()} runs "
                  f"→ {written}", highlight=False)


@app.command("check")
def check_command(
    preset: Annotated[str, typer.Option(help="tiny | quick | full")] = "quick",
    only: Annotated[str | None, typer.Option(help="only experiments matching this glob, e.g. 'mc2024-*'")] = None,
    out: Annotated[Path, typer.Option(help="results folder: store, report.html, claims.json")] = Path("results"),
    device: Annotated[str, typer.Option(help="cpu | cuda[:N] | auto")] = "cpu",
    backend: Annotated[str | None, typer.Option(help="local | process | ray (default: local for 1 worker)")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    retry_failed: Annotated[bool, typer.Option(help="rerun experiments whose stored run failed")] = False,
    fresh: Annotated[bool, typer.Option(help="rerun every experiment, even when a run is stored (e.g. after "
                                        "changing the code; stored runs are kept)")] = False,
    fail_on_refuted: Annotated[bool, typer.Option(help="exit 1 when a prediction or a consistency check "
                                                  "is refuted, or a run failed")] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads of the local backend")] = 1,
    data_dir: Annotated[Path | None, typer.Option(envvar="IMPLICITLAB_DATA", help="data root (CIFAR-10, MNIST); "
                                                  "default ../shared/data, else ./data")] = None,
) -> None:
    """Every experiment's preset (resumable), every claim: prints the claims, writes report.html and claims.json."""
    import torch

    from .check import check, select
    from .experiments import get as get_experiment

    try:
        exps = select(only)
        for e in exps:
            e.preset(preset)
        resolve_device(device)
        if workers < 1 or threads < 1:
            raise ConfigError("--workers and --threads must be ≥ 1")
        if backend is not None and backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        check_store(store_path(out))
    except ConfigError as exc:
        _fail(str(exc))
    root = _check_data_dir(data_dir)
    torch.set_num_threads(threads)
    try:
        with _bar() as bar:
            task = bar.add_task(f"check ({preset}, {len(exps)} experiments)", total=len(exps))
            result = check(preset, only=only, out=out, device=device, backend=backend, workers=workers,
                           retry_failed=retry_failed, fresh=fresh, data_dir=root,
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
    except KeyboardInterrupt:
        err_console.print("interrupted: the runs stored so far are kept; rerun the same command to resume",
                          highlight=False)
        raise typer.Exit(code=130) from None
    for e in result.entries:
        reused = (", reused — made by other code, rerun with --fresh" if e.stale
                  else ", reused" if e.reused else "")
        console.print(claims_table(f"{e.experiment} — {get_experiment(e.experiment).paper}  "
                                   f"[{e.wall_time_s:.1f} s{reused}]", e.claims))
    console.print(f"report: {result.report}, claims: {result.claims_json} ({result.wall_time_s:.1f} s)",
                  highlight=False)
    console.print(result.headline, highlight=False)
    if result.stale:
        err_console.print(f"warning: {len(result.stale)} reused runs were made by other code than the current "
                          f"({', '.join(result.stale)}); `implicitlab check --fresh` reruns them", highlight=False)
    if fail_on_refuted and not result.ok:
        raise typer.Exit(code=1)


def _measure_tables(result: dict) -> list[Table]:
    """``implicitlab measure``'s result as one rich table per metric (name, value)."""
    tables = []
    for metric, fields in result.items():
        table = Table(title=metric, header_style="bold", box=None, title_justify="left")
        table.add_column("field")
        table.add_column("value", justify="right")
        for key, value in fields.items():
            if isinstance(value, float):
                shown = f"{value:.10g}"
            elif isinstance(value, list):
                shown = "[" + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value) + "]"
            else:
                shown = str(value)
            if key == "converged":
                shown = "[green]yes[/]" if value else "[red]NO[/]"
            table.add_row(key, shown)
        tables.append(table)
    return tables


@app.command("measure")
def measure_command(
    model: Annotated[str, typer.Argument(help="module:callable or path/to/file.py:callable returning the nn.Module "
                                         "(called with no arguments)")],
    data: Annotated[str, typer.Option(help="a .pt file holding a dict with X and y, an .npz with X and y, or a "
                                      "named data set NAME[:SPLIT[:N]] (cifar10, mnist; default test:1000) "
                                      "read from --data-dir")],
    loss: Annotated[str, typer.Option(help="square | exp | logistic | ce (mean over the data set)")],
    checkpoint: Annotated[Path | None, typer.Option(help="a state_dict file (torch.save(model.state_dict(), "
                                                    "path)); default: the model as built")] = None,
    metrics: Annotated[str, typer.Option(help="comma-separated: sharpness, spectrum, trace, margin, norms")]
    = "sharpness",
    json_: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")] = False,
    k: Annotated[int, typer.Option(help="top Hessian eigenvalues for sharpness")] = 1,
    tol: Annotated[float, typer.Option(help="relative residual at which Lanczos stops")] = 1e-6,
    trace_matvecs: Annotated[int, typer.Option(help="Hutchinson probes for the trace")] = 100,
    dtype: Annotated[str, typer.Option(help="float64 | float32: model and data are cast to it")] = "float64",
    seed: Annotated[int, typer.Option(help="seed of the Lanczos start and the trace probes")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (per process)")] = 1,
    data_dir: Annotated[Path | None, typer.Option(envvar="IMPLICITLAB_DATA", help="data root of a named data "
                                                  "set; default ../shared/data, else ./data")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto: where model and data sit (under torchrun, "
                                        "cuda is the rank's local GPU)")] = "cpu",
    nproc: Annotated[int | None, typer.Option(help="run on this many local processes: launches torchrun on "
                                              "127.0.0.1 (data split across the ranks, one result printed)")]
    = None,
    dist_timeout: Annotated[float, typer.Option(help="data parallel: seconds a rank waits for the others at a "
                                                "collective before it fails")] = 300.0,
) -> None:
    """Sharpness, spectrum, trace, margin or norms of your own model on your own data (eval mode).

    Data parallel: ``torchrun --nproc_per_node=N -m implicitlab measure ...`` (or ``--nproc N``) splits
    the examples across the N ranks (contiguous shards) and prints rank 0's result, the same as on one
    process."""
    import os

    import torch

    from .measure import MeasureError, check_options, measure, prepare, shard_problem

    if threads < 1:
        _fail(f"--threads must be ≥ 1, got {threads}")
    if not dist_timeout > 0:
        _fail(f"--dist-timeout must be > 0 seconds, got {dist_timeout}")
    if nproc is not None:
        if nproc < 1:
            _fail(f"--nproc must be ≥ 1, got {nproc}")
        forwarded = [model, "--data", data, "--loss", loss, "--metrics", metrics, "--k", str(k), "--tol", repr(tol),
                     "--trace-matvecs", str(trace_matvecs), "--dtype", dtype, "--seed", str(seed),
                     "--threads", str(threads), "--device", device, "--dist-timeout", repr(dist_timeout)]
        forwarded += ["--checkpoint", str(checkpoint)] if checkpoint is not None else []
        forwarded += ["--data-dir", str(data_dir)] if data_dir is not None else []
        forwarded += ["--json"] if json_ else []
        raise typer.Exit(code=_launch_measure(nproc, forwarded))
    torch.set_num_threads(threads)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ
    group = None
    try:
        chosen = resolve_device(device)
    except ConfigError as exc:
        _fail(f"--device: {exc}")
    if launched:
        from .diagnostics.distributed import DistributedError, init_from_env

        if chosen.type == "cuda":
            chosen = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(chosen)
        try:
            group = init_from_env(dist_timeout, chosen)
        except (DistributedError, RuntimeError, ValueError) as exc:
            _fail(f"rank {os.environ.get('RANK')}: joining the process group failed: {exc}")
    where = f"rank {group.rank} of {group.world_size}: " if group is not None else ""
    # Everything is loaded and checked before any Hessian product.
    try:
        problem = prepare(model, checkpoint, data, loss, metrics=metrics, dtype=dtype,
                          data_dir=_check_data_dir(data_dir), device=chosen)
        check_options(problem, k=k, tol=tol, trace_matvecs=trace_matvecs, slq_probes=10, slq_steps=30)
        if group is not None:
            problem = shard_problem(problem, group)
    except MeasureError as exc:
        _fail(f"{where}{exc}")
    try:
        result = measure(problem, k=k, tol=tol, trace_matvecs=trace_matvecs, seed=seed)
    except Exception as exc:
        if group is None:
            raise
        _fail(f"{where}{type(exc).__name__}: {exc}")  # torchrun ends the other ranks and names this one
    if group is not None:
        torch.distributed.destroy_process_group()
        if group.rank != 0:
            return
    if json_:
        typer.echo(json.dumps(result, allow_nan=True))
        return
    for table in _measure_tables(result):
        console.print(table)


def _launch_measure(nproc: int, forwarded: list[str]) -> int:
    """``implicitlab measure --nproc N``: torchrun on N local ranks, every socket on 127.0.0.1
    (:func:`~implicitlab.diagnostics.distributed.loopback_launch`); its exit code."""
    import subprocess
    import tempfile

    from .diagnostics.distributed import loopback_launch

    with tempfile.TemporaryDirectory(prefix="implicitlab-rdzv-") as tmp:
        rendezvous = Path(tmp) / "rendezvous"
        rendezvous.touch()
        cmd, env = loopback_launch(nproc, ["implicitlab", "measure", *forwarded], str(rendezvous))
        proc = subprocess.run(cmd, env=env)
    return proc.returncode


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
