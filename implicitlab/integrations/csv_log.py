"""Tracker results to a CSV file, one row per ``log`` call."""

from __future__ import annotations

import csv
from pathlib import Path

from .metrics import as_scalars


class CSVLogger:
    """Append tracker results to the CSV file ``path`` (created with its folder; an existing file is replaced).

    Columns: ``step``, then every name logged so far in first-seen order (:func:`as_scalars`); a
    row leaves the names it did not log empty. When a call brings a new name the file is rewritten
    with the wider header, so the file is a valid table after every call (read it with
    ``pandas.read_csv``). Floats are written with ``repr`` and read back exactly.

    Example::

        with CSVLogger("run/curvature.csv") as log:
            log.log(step, tracker(step))          # sharpness, sharpness_residual, ...
            log.log(step, margins(step))          # normalized_margin, param_norm, ...
            log.log(step, {"train_loss": loss.item()})
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = ["step"]
        self.rows: list[dict[str, float | int]] = []
        self.path.write_text(",".join(self.columns) + "\n")

    def log(self, step: int, result, prefix: str = "sharpness") -> dict[str, float]:
        """Write one row: ``step`` and the numbers of ``result`` (see :func:`as_scalars`); returns them."""
        values = as_scalars(result, prefix=prefix)
        row = {"step": int(step), **values}
        self.rows.append(row)
        new = [c for c in values if c not in self.columns]
        if new:
            self.columns += new
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)
        return values

    def close(self) -> None:
        """Nothing is held open between calls; here for symmetry with the other loggers."""

    def __enter__(self) -> CSVLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
