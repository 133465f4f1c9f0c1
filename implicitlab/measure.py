"""Diagnostics of a user's own model from files: what ``implicitlab measure`` loads and runs.

A measurement has two halves, kept apart so that every refusal comes before the expensive work:

- :func:`prepare` loads and checks everything — the model (``module:callable`` or
  ``path/to/file.py:callable``, called with no arguments, returning an ``nn.Module``), its
  ``state_dict`` checkpoint (``torch.load(..., weights_only=True)``, keys and shapes compared with the
  model's), the data (a ``.pt`` dict or an ``.npz`` archive with ``X`` and ``y``), the loss and the
  metrics — and runs one forward pass and one loss on two examples. Whatever does not fit raises
  :class:`MeasureError` with one line naming the file or field and the cause.
- :func:`measure` computes the chosen metrics on the prepared problem and returns a plain dict
  (JSON-ready: floats, ints, bools, lists).

The objective is the model in eval mode (dropout off, batch norm on its running statistics), cast to
``dtype`` (float64 by default) with the data, mean loss over the whole data set — the same numbers as
``implicitlab.sharpness(model.eval().to(dtype), loss, X, y)`` and friends.

Data parallel (``torchrun --nproc_per_node=W -m implicitlab measure ...``): every rank prepares the same
problem, :func:`shard_problem` keeps its contiguous shard of the examples (the first N mod W ranks
one more), and the metrics are computed over all shards (:mod:`implicitlab.diagnostics.distributed`):
the same numbers as on one process (to rounding: the shards' sums are added in another order), the
same bits on every rank; the CLI prints rank 0's.

Example::

    problem = prepare("mymodel.py:make_model", "model.pt", "data.npz", "ce", metrics=("sharpness",))
    result = measure(problem)            # result["sharpness"]["value"], ["residual"], ...
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .diagnostics import (
    explicit_hessian,
    hessian_spectrum,
    hutchinson_trace,
    layer_norms,
    min_margin,
    normalized_margin,
    sharpness,
    slq_spectral_density,
    spectrum_counts,
)
from .diagnostics.distributed import ShardGroup, shard_bounds
from .losses import LOSSES

METRICS: tuple[str, ...] = ("sharpness", "spectrum", "trace", "margin", "norms")
"""What ``measure`` can compute, in the order it reports them."""

DTYPES = {"float64": torch.float64, "float32": torch.float32}
SPECTRUM_RTOL = 1e-8
"""Eigenvalues within this fraction of max|λ| of 0 count as zero, not negative or positive (``spectrum_counts``:
an explicit float64 Hessian's exact zeros come out near 1e-15·max|λ|)."""

EXPLICIT_SPECTRUM_MAX_DIM = 2000
"""Up to this many parameters the spectrum is every eigenvalue of the explicit float64 Hessian (D² numbers:
32 MB at 2000); above it, stochastic Lanczos quadrature."""


class MeasureError(ValueError):
    """Bad input to a measurement; the message is one line naming the file or field and the cause."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class Problem:
    """A checked measurement: the model (eval mode, ``dtype``), data, loss, metrics and options."""

    model: nn.Module
    X: Tensor
    y: Tensor
    loss: str
    metrics: tuple[str, ...]
    dtype: torch.dtype
    num_params: int
    sources: dict[str, str] = field(default_factory=dict)  # model, checkpoint, data: what was read
    group: ShardGroup | None = None  # data parallel: the ranks holding the shards (shard_problem)
    shard_sizes: list[int] = field(default_factory=list)  # examples on each rank (data parallel)

    @property
    def distributed(self):
        """The ``distributed=`` knob of the diagnostics: False on one process, else the group."""
        if self.group is None:
            return False
        return True if self.group.group is None else self.group.group


# ------------------------------------------------------------------------------ loading ---
def load_model_factory(spec: str):
    """The callable named by ``module:callable`` or ``path/to/file.py:callable``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise MeasureError(f"MODEL {spec!r}: expected module:callable or path/to/file.py:callable")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise MeasureError(f"MODEL {spec!r}: no file {path}")
        name = f"implicitlab_user_model_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: whatever it raises, one line
            raise MeasureError(f"MODEL {spec!r}: importing {path} failed: {_one_line(exc)}") from None
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        added = str(Path.cwd()) not in sys.path
        if added:
            sys.path.insert(0, str(Path.cwd()))  # `module:callable` relative to where the command runs
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise MeasureError(f"MODEL {spec!r}: cannot import module {target!r}: {_one_line(exc)}") from None
        finally:
            if added:
                sys.path.remove(str(Path.cwd()))
    factory = getattr(module, attr, None)
    if factory is None:
        raise MeasureError(f"MODEL {spec!r}: {target} has no attribute {attr!r}")
    if not callable(factory):
        raise MeasureError(f"MODEL {spec!r}: {attr!r} is a {type(factory).__name__}, not a callable")
    return factory


def build_model(spec: str) -> nn.Module:
    """Call the factory of ``spec`` with no arguments; it must return an ``nn.Module``."""
    factory = load_model_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise MeasureError(f"MODEL {spec!r}: calling it with no arguments failed: {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise MeasureError(f"MODEL {spec!r}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a ``state_dict`` file into ``model`` after checking its keys and shapes."""
    path = Path(path)
    if not path.is_file():
        raise MeasureError(f"--checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MeasureError(f"--checkpoint {path}: not a torch state_dict file ({_one_line(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # e.g. a Lightning checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise MeasureError(f"--checkpoint {path}: expected a state_dict (a dict of tensors, "
                           f"torch.save(model.state_dict(), path)), got a {type(state).__name__}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_few(shapes)}")
    if problems:
        raise MeasureError(f"--checkpoint {path} does not match the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{f', … {len(items) - n} more' if len(items) > n else ''}]"


def load_data(path: str | Path) -> tuple[Tensor, Tensor]:
    """``(X, y)`` from a ``.pt`` file holding a dict with ``X`` and ``y``, or an ``.npz`` archive."""
    path = Path(path)
    if not path.is_file():
        raise MeasureError(f"--data {path}: no such file" + ("" if path.suffix else
                           f", and not a named data set NAME[:SPLIT[:N]] with NAME one of {', '.join(NAMED_DATA)}"))
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                found = {k: archive[k] for k in archive.files}
        except Exception as exc:
            raise MeasureError(f"--data {path}: not a readable .npz archive ({_one_line(exc)})") from None
    elif path.suffix in (".pt", ".pth"):
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise MeasureError(f"--data {path}: not a torch file ({_one_line(exc)})") from None
        if not isinstance(found, dict):
            raise MeasureError(f"--data {path}: expected a dict with keys 'X' and 'y', got a {type(found).__name__}")
    else:
        raise MeasureError(f"--data {path}: expected a .pt file (a dict with X and y) or an .npz archive")
    missing = [k for k in ("X", "y") if k not in found]
    if missing:
        raise MeasureError(f"--data {path}: missing key(s) {missing}; found {sorted(map(str, found))}")
    out = []
    for key in ("X", "y"):
        value = found[key]
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise MeasureError(f"--data {path}: {key} has dtype {value.dtype}; expected numbers")
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, Tensor):
            raise MeasureError(f"--data {path}: {key} is a {type(value).__name__}, not an array/tensor")
        out.append(value)
    X, y = out
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0]:
        raise MeasureError(f"--data {path}: X and y must hold the same number of examples, got shapes "
                           f"{tuple(X.shape)} and {tuple(y.shape)}")
    if X.shape[0] == 0:
        raise MeasureError(f"--data {path}: X holds no examples")
    if not X.is_floating_point():
        X = X.to(torch.float64)
    if not torch.isfinite(X).all():
        raise MeasureError(f"--data {path}: X has non-finite entries (NaN or inf)")
    if y.is_floating_point() and not torch.isfinite(y).all():
        raise MeasureError(f"--data {path}: y has non-finite entries (NaN or inf)")
    return X, y


NAMED_DATA = ("cifar10", "mnist")
"""Data sets ``--data`` may name instead of a file (read from ``--data-dir``, nothing downloaded)."""


def load_named_data(spec: str, data_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """``(X, y)`` of a named data set: ``NAME[:SPLIT[:N]]`` (``cifar10:test:1000``; defaults: the
    test split, 1,000 examples), a class-balanced subset (seed 0) standardised per channel with the
    statistics of that subset: images ``(N, C, H, W)`` float64, labels int64 class indices."""
    from .data import DataError, balanced_subset, load_cifar10, load_mnist, standardize

    parts = spec.split(":")
    name, split, n = parts[0], (parts[1] if len(parts) > 1 else "test"), (parts[2] if len(parts) > 2 else "1000")
    if name not in NAMED_DATA or len(parts) > 3:
        raise MeasureError(f"--data {spec}: not a file, and not NAME[:SPLIT[:N]] with NAME one of {', '.join(NAMED_DATA)}")
    if split not in ("train", "test"):
        raise MeasureError(f"--data {spec}: the split must be train or test, got {split!r}")
    if not n.isdigit() or int(n) < 1:
        raise MeasureError(f"--data {spec}: N must be a positive integer, got {n!r}")
    try:
        images, labels = (load_cifar10 if name == "cifar10" else load_mnist)(data_dir, split)
    except DataError as exc:
        raise MeasureError(f"--data {spec}: {_one_line(exc)}") from None
    if int(n) > len(labels):
        raise MeasureError(f"--data {spec}: N = {n} but the {split} split holds {len(labels)} examples")
    idx = balanced_subset(labels, int(n), seed=0)
    X = standardize(images[idx], dtype=torch.float64).images
    return X, torch.from_numpy(labels[idx]).to(torch.int64)


def parse_metrics(metrics: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"sharpness,trace"`` (or a sequence) as a tuple of known metric names, in :data:`METRICS` order."""
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise MeasureError(f"--metrics: unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    if not names:
        raise MeasureError(f"--metrics: name at least one of {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


def prepare(
    model: str,
    checkpoint: str | Path | None,
    data: str | Path,
    loss: str,
    *,
    metrics: str | tuple[str, ...] = ("sharpness",),
    dtype: str = "float64",
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Problem:
    """Load and check everything (module docstring); raises :class:`MeasureError` on bad input.

    ``data`` is a file (``.pt``/``.npz``) or a named data set ``NAME[:SPLIT[:N]]`` read from
    ``data_dir`` (:func:`load_named_data`); model and data are moved to ``device``."""
    if loss not in LOSSES:
        raise MeasureError(f"--loss: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if dtype not in DTYPES:
        raise MeasureError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    chosen = parse_metrics(metrics)
    named = not Path(data).suffix and str(data).split(":")[0] in NAMED_DATA and not Path(data).exists()
    X, y = load_named_data(str(data), data_dir) if named else load_data(data)
    net = build_model(model)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise MeasureError(f"MODEL {model!r}: the model has no trainable parameters")
    torch_dtype = DTYPES[dtype]
    net = net.eval().to(device=device, dtype=torch_dtype)
    X = X.to(device=device, dtype=torch_dtype)
    y = y.to(device=device, dtype=torch_dtype) if y.is_floating_point() else y.to(device)
    _check_fit(net, X, y, loss, data)
    if "margin" in chosen or "norms" in chosen:
        _check_layers(net, X, y, chosen, model)
    return Problem(net, X, y, loss, chosen, torch_dtype, sum(p.numel() for p in params),
                   {"model": model, "checkpoint": str(checkpoint) if checkpoint else "", "data": str(data)})


def _check_fit(model: nn.Module, X: Tensor, y: Tensor, loss: str, data) -> None:
    """One forward pass and one loss on two examples: the data fit the model and the loss."""
    from .diagnostics.objective import resolve_loss

    try:
        with torch.no_grad():
            out = model(X[:2])
    except Exception as exc:
        raise MeasureError(f"--data {data}: X of shape {tuple(X.shape)} does not fit the model "
                           f"({_one_line(exc)})") from None
    if not isinstance(out, Tensor):
        raise MeasureError(f"the model returned a {type(out).__name__}, not a tensor of outputs")
    if loss == "ce" and y.is_floating_point():
        raise MeasureError(f"--data {data}: loss 'ce' needs integer class labels y, got {y.dtype}")
    if loss == "ce" and y.ndim != 1:
        raise MeasureError(f"--data {data}: loss 'ce' needs labels of shape (n,), got {tuple(y.shape)}")
    if loss in ("exp", "logistic"):
        values = torch.unique(y)
        if not bool(((values == 1) | (values == -1)).all()):
            raise MeasureError(f"--data {data}: loss {loss!r} needs labels in {{-1, +1}}, found "
                               f"{_few([f'{float(v):g}' for v in values[:8]])}")
    try:
        with torch.no_grad():
            value = resolve_loss(loss)(out, y[:2])
    except Exception as exc:
        raise MeasureError(f"--data {data}: loss {loss!r} does not accept outputs {tuple(out.shape)} and "
                           f"targets {tuple(y.shape)} ({_one_line(exc)})") from None
    if value.numel() != 1:
        raise MeasureError(f"loss {loss!r} gave {value.numel()} values, not one")


def _check_layers(model: nn.Module, X: Tensor, y: Tensor, chosen: tuple[str, ...], spec: str) -> None:
    """Margins and norms need layers :func:`layer_norms` can find, and margins need their labels."""
    which = " and ".join(m for m in ("margin", "norms") if m in chosen)
    try:
        layer_norms(model)
    except Exception as exc:
        raise MeasureError(f"--metrics {which}: cannot find the layers of MODEL {spec!r} ({_one_line(exc)})") from None
    if "margin" in chosen:
        try:
            min_margin(model, X[:2], y[:2])
        except Exception as exc:
            raise MeasureError(f"--metrics margin: the outputs and labels give no margin ({_one_line(exc)})") from None


def shard_problem(problem: Problem, group: ShardGroup) -> Problem:
    """``problem`` with this rank's contiguous shard of the examples (:func:`shard_bounds`: the first
    N mod W ranks hold one more); the metrics are then computed over all shards."""
    n = int(problem.X.shape[0])
    if n < group.world_size:
        raise MeasureError(f"--data: {n} examples cannot be split over {group.world_size} ranks (each needs one)")
    start, stop = shard_bounds(n, group.world_size, group.rank)
    sizes = [b - a for a, b in (shard_bounds(n, group.world_size, r) for r in range(group.world_size))]
    return Problem(problem.model, problem.X[start:stop], problem.y[start:stop], problem.loss, problem.metrics,
                   problem.dtype, problem.num_params, dict(problem.sources), group, sizes)


def check_options(problem: Problem, *, k: int, tol: float, trace_matvecs: int, slq_probes: int,
                  slq_steps: int) -> None:
    """The measurement options, checked before any product; raises :class:`MeasureError`."""
    if not 1 <= k <= problem.num_params:
        raise MeasureError(f"--k must be between 1 and the number of parameters ({problem.num_params}), got {k}")
    if not tol > 0:
        raise MeasureError(f"--tol must be > 0, got {tol}")
    if trace_matvecs < 1:
        raise MeasureError(f"--trace-matvecs must be ≥ 1, got {trace_matvecs}")
    if slq_probes < 1 or slq_steps < 1:
        raise MeasureError(f"--slq-probes and --slq-steps must be ≥ 1, got {slq_probes} and {slq_steps}")


# ---------------------------------------------------------------------------- measuring ---
def _floats(t: Tensor) -> list[float]:
    return [float(v) for v in torch.as_tensor(t).reshape(-1)]


def _number(v: float) -> float | None:
    return None if math.isnan(v) else v


def measure(
    problem: Problem,
    *,
    k: int = 1,
    tol: float = 1e-6,
    trace_matvecs: int = 100,
    slq_probes: int = 10,
    slq_steps: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """The chosen metrics of a :class:`Problem`, as a JSON-ready dict (one key per metric, plus ``problem``).

    - ``sharpness``: ``value`` (λ₁), ``residual`` ‖Hv − λv‖, ``error_bound``, ``converged``,
      ``num_matvecs``, and ``values``/``residuals``/``error_bounds`` of all k (:func:`sharpness`);
    - ``trace``: ``value``, ``stderr``, ``num_matvecs`` (:func:`hutchinson_trace`, ``trace_matvecs`` probes);
    - ``spectrum``: for D ≤ :data:`EXPLICIT_SPECTRUM_MAX_DIM`, every eigenvalue of the explicit float64
      Hessian summarised (``method: "explicit"``, ``min``, ``max``, ``trace``, ``num_negative`` and ``num_zero``
      counted relative to max|λ| (``count_rtol``, :data:`SPECTRUM_RTOL`), ``top``: the 10 largest); else SLQ (``method: "slq"``, ``min``/``max`` of the quadrature nodes,
      ``trace`` and ``trace_stderr``, ``num_matvecs``);
    - ``margin``: ``min_margin`` and ``normalized_margin`` (Frobenius product; meaningful for a
      bias-free homogeneous network);
    - ``norms``: per-layer ``frobenius`` and ``spectral`` norms, their products, ``param_norm``.
    """
    check_options(problem, k=k, tol=tol, trace_matvecs=trace_matvecs, slq_probes=slq_probes, slq_steps=slq_steps)
    m, loss, X, y = problem.model, problem.loss, problem.X, problem.y
    group, dist = problem.group, problem.distributed
    num_examples = sum(problem.shard_sizes) if group is not None else int(X.shape[0])
    out: dict[str, Any] = {"problem": {**problem.sources, "loss": loss, "num_examples": num_examples,
                                       "num_params": problem.num_params, "dtype": str(problem.dtype).split(".")[-1],
                                       "mode": "eval"}}
    if group is not None:
        out["problem"]["distributed"] = {"world_size": group.world_size, "backend": group.backend,
                                         "shard_sizes": list(problem.shard_sizes)}
    if "sharpness" in problem.metrics:
        res = sharpness(m, loss, X, y, k=k, tol=tol, seed=seed, distributed=dist)
        out["sharpness"] = {
            "value": float(res.values[0]), "residual": float(res.residuals[0]),
            "error_bound": float(res.error_bounds[0]), "converged": res.all_converged,
            "num_matvecs": int(res.num_matvecs), "tol": tol, "k": k,
            "values": _floats(res.values), "residuals": _floats(res.residuals),
            "error_bounds": _floats(res.error_bounds),
        }
    if "spectrum" in problem.metrics:
        if problem.num_params <= EXPLICIT_SPECTRUM_MAX_DIM:
            eig = hessian_spectrum(explicit_hessian(m, loss, X, y, distributed=dist))  # ascending, float64
            # counted relative to max|λ| (spectrum_counts): an exact zero eigenvalue comes out as ±1e-17·max|λ|,
            # whose sign is rounding; counting eig < 0 made such zeros "negative" (and changed with the shards)
            counts = spectrum_counts(eig, rtol=SPECTRUM_RTOL)
            out["spectrum"] = {
                "method": "explicit", "dim": int(eig.numel()), "min": float(eig[0]), "max": float(eig[-1]),
                "trace": float(eig.sum()), "num_negative": counts.negative, "num_zero": counts.zero,
                "count_rtol": SPECTRUM_RTOL, "top": _floats(eig.flip(0)[:10]),
            }
        else:
            dens = slq_spectral_density(m, loss, X, y, num_probes=slq_probes, num_steps=slq_steps, seed=seed,
                                        distributed=dist)
            live = dens.weights > 0
            tr, tr_err = dens.trace()
            out["spectrum"] = {
                "method": "slq", "dim": dens.dim, "min": float(dens.nodes[live].min()),
                "max": float(dens.nodes[live].max()), "trace": tr, "trace_stderr": _number(tr_err),
                "num_probes": slq_probes, "num_steps": slq_steps, "num_matvecs": dens.num_matvecs,
            }
    if "trace" in problem.metrics:
        est = hutchinson_trace(m, loss, X, y, num_matvecs=trace_matvecs, seed=seed, distributed=dist)
        out["trace"] = {"value": est.value, "stderr": _number(est.stderr), "num_matvecs": est.num_matvecs,
                        "method": est.method}
    if "margin" in problem.metrics:
        local = [float(min_margin(m, X, y)), float(normalized_margin(m, X, y))]
        if group is not None:  # minima over the shards: exact, in any order (the norms hold no data)
            local = [min(values) for values in zip(*group.gather_objects(local, "the margins"))]
        out["margin"] = {"min_margin": local[0], "normalized_margin": local[1], "normalization": "frobenius"}
    if "norms" in problem.metrics:
        norms = layer_norms(m)
        out["norms"] = {"frobenius": _floats(norms.frobenius), "spectral": _floats(norms.spectral),
                        "frobenius_product": float(norms.frobenius_product),
                        "spectral_product": float(norms.spectral_product), "param_norm": float(norms.param_norm)}
    return out
