"""The command line: ``implicitlab list`` and ``implicitlab run``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import ConfigError, apply_overrides, resolve_device
from .experiments import Claim, experiments, get

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure where gradient descent goes.")
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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


def claims_table(title: str, claims: list[Claim]) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("claim")
    table.add_column("measured", justify="right")
    table.add_column("bound", justify="right")
    table.add_column("verdict")
    table.add_column("source")
    for c in claims:
        colour = {"holds": "green", "refuted": "red"}.get(c.verdict, "yellow")
        table.add_row(
            c.name, f"{c.measured:.4g}", f"{c.relation} {c.bound:.4g}", f"[{colour}]{c.verdict}[/]", c.source
        )
    return table


@app.command("run")
def run(
    experiment: Annotated[str, typer.Argument(help="an experiment name (see `implicitlab list`), or 'all'")],
    preset: Annotated[str, typer.Option(help="tiny | quick | full")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: key=value")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's)")] = None,
) -> None:
    """Run an experiment's preset: store the run, write figure + table + claims, print the claims."""
    import torch

    from .runner import run_experiment

    # Everything is validated before anything runs or is written.
    try:
        names = list(experiments()) if experiment == "all" else [get(experiment).name]
        dev = resolve_device(device)
        plans = []
        for name in names:
            exp = get(name)
            cfg = exp.preset(preset)
            if set_:
                if experiment == "all":
                    raise ConfigError("--set needs a single experiment, not 'all'")
                cfg = apply_overrides(cfg, set_)
            plans.append((exp, cfg))
    except ConfigError as exc:
        _fail(str(exc))
    if threads is not None:
        torch.set_num_threads(threads)

    all_hold = True
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
        all_hold &= all(c.holds for c in outcome.claims)
        outcomes.append(outcome)
    if len(outcomes) > 1:
        from .runner import write_summary

        path = write_summary(outcomes, out / f"report-{preset}.md")
        console.print(f"summary of every claim: {path}", highlight=False)
    if not all_hold:
        console.print("[yellow]some claims do not hold (see the tables above)[/]")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
