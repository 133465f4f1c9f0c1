"""Sweeps: a grid of configs of any experiment, run on a backend, each point stored once.

```python
from implicitlab.sweep import load_spec, expand, run_sweep
points = expand(load_spec("sweep.yaml"))           # validated, before anything runs
report = run_sweep(points, out="results", workers=2)   # skips what is stored; process pool
report.table(metrics=["step", "loss"])             # tidy: run id, config fields, metrics
```
"""

from .backends import BACKENDS, PointResult, Task, execute_task
from .driver import SweepReport, plan_tasks, run_sweep
from .export import tidy_table, write_table
from .grid import Point, SpecError, SweepSpec, expand, load_spec, parse_spec, points_for
from .store import STORE_NAME, Store, store_path

__all__ = [
    "BACKENDS",
    "STORE_NAME",
    "Point",
    "PointResult",
    "SpecError",
    "Store",
    "SweepReport",
    "SweepSpec",
    "Task",
    "execute_task",
    "expand",
    "load_spec",
    "parse_spec",
    "plan_tasks",
    "points_for",
    "run_sweep",
    "store_path",
    "tidy_table",
    "write_table",
]
