"""Sweep specs: which experiment, a base config, and the points to run — parsed and validated.

A spec (YAML, read with ``yaml.safe_load``, or TOML, read with ``tomllib``)::

    experiment: sweep-demo
    preset: tiny                  # the base config (default: quick)
    set: {num_steps: 500}         # optional: fixed overrides of the base
    grid:                         # the Cartesian product of these lists …
      init_scale: [0.01, 0.1]
      lr: [0.05, 0.1]
    zip:                          # … crossed with these lists taken together, element by element
      depth: [1, 2]
      num_steps: [300, 600]
    seeds: [0, 1, 2]              # the config's ``seed`` field; or {start: 0, stop: 100}

Points are ordered grid × zip × seeds (seeds fastest). Every value is checked against the config
field's type (``1e-3`` written without a dot arrives from YAML as a string and is parsed as a
number) and every point is built through the config's constructor, so its own validation runs —
all before anything runs or is written. Any problem raises :class:`SpecError` with one line.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from ..config import ConfigError, coerce_text, config_hash, field_types, first_match
from ..experiments import Experiment, get

SPEC_KEYS = ("experiment", "preset", "set", "grid", "zip", "seeds")


class SpecError(ConfigError):
    """An invalid sweep spec (one line, raised before anything runs)."""


@dataclass(frozen=True)
class SweepSpec:
    experiment: str
    preset: str = "quick"
    set: dict[str, Any] = dataclasses.field(default_factory=dict)
    grid: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    zip: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    seeds: list[int] | None = None


@dataclass(frozen=True)
class Point:
    """One run of a sweep: the experiment, its full config, and the store key (config hash)."""

    experiment: Experiment
    config: Any
    config_hash: str
    preset: str | None
    changes: dict[str, Any]  # the fields this point sets on top of the base (for display)

    @property
    def key(self) -> tuple[str, str]:
        return (self.experiment.name, self.config_hash)


# --------------------------------------------------------------------------- reading


def load_spec(path: str | Path) -> SweepSpec:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) spec file; no code is executed."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise SpecError(f"spec {path.name!r}: use a .yaml, .yml or .toml file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise SpecError(f"spec {path.name!r} is malformed: {first}") from None
    return parse_spec(data, source=path.name)


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Check the shape of a spec mapping (types of values come later, in :func:`expand`)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise SpecError(f"{source}: unknown key {unknown[0]!r}; known: {', '.join(SPEC_KEYS)}")
    if not isinstance(data.get("experiment"), str):
        raise SpecError(f"{source}: 'experiment' (a name) is required")
    preset = data.get("preset", "quick")
    if not isinstance(preset, str):
        raise SpecError(f"{source}: 'preset' must be a name")
    sets = data.get("set") or {}
    if not isinstance(sets, dict):
        raise SpecError(f"{source}: 'set' must be a mapping field: value")
    axes = {}
    for part in ("grid", "zip"):
        block = data.get(part) or {}
        if not isinstance(block, dict):
            raise SpecError(f"{source}: '{part}' must be a mapping field: [values]")
        for name, values in block.items():
            if not isinstance(values, list):
                raise SpecError(f"{source}: {part}.{name} must be a list of values, got {values!r}")
            if not values:
                raise SpecError(f"{source}: {part}.{name} is empty (an empty grid has no points)")
        axes[part] = {str(k): v for k, v in block.items()}
    lengths = {len(v) for v in axes["zip"].values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in axes["zip"].items())
        raise SpecError(f"{source}: zip lists must have one length ({sizes})")
    seeds = _parse_seeds(data.get("seeds"), source)
    fields = list(sets) + list(axes["grid"]) + list(axes["zip"]) + (["seed"] if seeds is not None else [])
    dup = next((f for f in fields if fields.count(f) > 1), None)
    if dup is not None:
        raise SpecError(f"{source}: field {dup!r} is set in more than one place (set, grid, zip, seeds)")
    if not axes["grid"] and not axes["zip"] and seeds is None:
        raise SpecError(f"{source}: empty grid: give at least one of grid, zip or seeds")
    return SweepSpec(data["experiment"], preset, dict(sets), axes["grid"], axes["zip"], seeds)


def _parse_seeds(value: Any, source: str) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) - {"start", "stop"} or "stop" not in value:
            raise SpecError(f"{source}: seeds must be a list of integers or {{start: A, stop: B}}")
        value = list(range(value.get("start", 0), value["stop"])) if all(
            _is_int(v) for v in value.values()) else None
        if value is None:
            raise SpecError(f"{source}: seeds start/stop must be integers")
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise SpecError(f"{source}: seeds must be a list of integers or {{start: A, stop: B}}")
    if not value:
        raise SpecError(f"{source}: seeds is empty (an empty grid has no points)")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------- values


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """Check a value read from YAML/TOML against a config field type; return it as that type.

    Strings are parsed as on the command line (``--set``); numbers must be numbers (a float for an
    int field is an error, an int for a float field becomes a float); lists become tuples.
    """
    if isinstance(value, str):
        return coerce_text(value, tp, key)
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        return first_match(args, lambda arg: coerce_value(value, arg, key), f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(c) for c in get_args(tp)}:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(get_args(tp))}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        inner = args[0] if args else str
        return tuple(coerce_value(v, inner, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if _is_int(value):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: cannot set a field of type {tp!r} from a spec")


def _describe(changes: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:g}" if math.isfinite(v) else str(v)
        if isinstance(v, tuple):
            return "(" + ",".join(fmt(x) for x in v) + ")"
        return str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in changes.items())


# --------------------------------------------------------------------------- points


def expand(spec: SweepSpec) -> list[Point]:
    """Every point of the spec, each a validated config; duplicates (same hash) kept once."""
    try:
        exp = get(spec.experiment)
        base = exp.preset(spec.preset)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    _refuse_view(exp)
    types_ = field_types(type(base))

    def typed(part: str, name: str, value: Any) -> Any:
        if name not in types_:
            raise SpecError(
                f"{part}: unknown config field {name!r} for {spec.experiment}; known: {', '.join(sorted(types_))}"
            )
        try:
            return coerce_value(value, types_[name], name)
        except ConfigError as exc:
            raise SpecError(f"{part}.{exc}") from None

    fixed = {k: typed("set", k, v) for k, v in spec.set.items()}
    grid = {k: [typed("grid", k, v) for v in vs] for k, vs in spec.grid.items()}
    zipped = {k: [typed("zip", k, v) for v in vs] for k, vs in spec.zip.items()}
    if spec.seeds is not None and "seed" not in types_:
        raise SpecError(f"seeds: experiment {spec.experiment} has no 'seed' field")
    seeds = [{"seed": s} for s in spec.seeds] if spec.seeds is not None else [{}]
    grid_points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    n_zip = len(next(iter(zipped.values()))) if zipped else 0
    zip_points = [{k: vs[i] for k, vs in zipped.items()} for i in range(n_zip)] or [{}]

    points: list[Point] = []
    seen: set[str] = set()
    for g, z, s in itertools.product(grid_points, zip_points, seeds):
        changes = {**g, **z, **s}
        try:
            cfg = dataclasses.replace(base, **fixed, **changes)
        except (ConfigError, ValueError, TypeError) as exc:
            where = _describe(changes) or "the base config"
            raise SpecError(f"point {len(points) + 1} ({where}): {exc}") from None
        h = config_hash(cfg)
        if h in seen:
            continue
        seen.add(h)
        points.append(Point(exp, cfg, h, spec.preset, changes))
    return points


def _refuse_view(exp: Experiment) -> None:
    if exp.view_of is not None:
        raise SpecError(f"{exp.name} is a view of the runs of {exp.view_of} and trains nothing: sweep "
                        f"{exp.view_of} (`implicitlab run {exp.name}` reads a stored run of it)")


def points_for(experiment: str | Experiment, configs: list[Any], preset: str | None = None) -> list[Point]:
    """Points from configs built in Python (the API's way in); duplicates kept once."""
    exp = get(experiment) if isinstance(experiment, str) else experiment
    _refuse_view(exp)
    points, seen = [], set()
    for cfg in configs:
        if not isinstance(cfg, exp.config_type):
            raise SpecError(f"{exp.name} expects {exp.config_type.__name__} configs, got {type(cfg).__name__}")
        h = config_hash(cfg)
        if h not in seen:
            seen.add(h)
            points.append(Point(exp, cfg, h, preset, {}))
    return points
