"""Typed configs: validation, overrides from the command line, a stable hash, dtype/device maps.

Experiment configs are frozen dataclasses. This module holds what every config shares:

- ``DTYPES`` — the one place a dtype string becomes a ``torch.dtype``;
- ``resolve_device`` — ``"auto" | "cpu" | "cuda" | "cuda:N"`` to a ``torch.device`` (never hard-coded);
- ``apply_overrides`` — ``key=value`` strings checked against the field types *before* any compute;
- ``config_hash`` — a stable SHA-256 of the canonical JSON of a config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import hashlib
import json
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin

import torch

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
}


class ConfigError(ValueError):
    """An invalid configuration: raised before any compute, with a one-line message."""


def dtype_of(name: str) -> torch.dtype:
    """Map a dtype name (``"float64"``, ``"float32"``) to a ``torch.dtype``."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None


# --------------------------------------------------------------------------- overrides


def field_types(cls: type) -> dict[str, Any]:
    """Field name → resolved type annotation of the config dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def first_match(args: tuple, convert, fallback: str) -> Any:
    """``convert(arg)`` for the first non-None member of a Union that accepts the value.

    Raises the first member's :class:`ConfigError` when none does (``fallback`` if there is none).
    """
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(arg)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else fallback)


def coerce_text(text: str, tp: Any, key: str) -> Any:
    """Parse ``text`` as a value of type ``tp`` (int, float, bool, str, Literal, tuple, Optional)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        return first_match(args, lambda arg: coerce_text(text, arg, key), f"{key}: cannot parse {text!r}")
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if str(c) == text:
                return c
        raise ConfigError(f"{key}: {text!r} is not one of {list(choices)}")
    if origin is tuple:
        args = get_args(tp)
        inner = args[0] if args else str
        body = text.strip()
        if body.startswith(("[", "(")) and body.endswith(("]", ")")):
            body = body[1:-1]
        parts = [p.strip() for p in body.split(",") if p.strip()]
        return tuple(coerce_text(p, inner, key) for p in parts)
    if tp is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if tp is str:
        return text
    raise ConfigError(f"{key}: cannot set a field of type {tp!r} from the command line")


def apply_overrides(cfg: Any, assignments: list[str] | tuple[str, ...]) -> Any:
    """Return a copy of the frozen dataclass ``cfg`` with ``key=value`` assignments applied.

    Unknown keys, malformed assignments and values of the wrong type raise :class:`ConfigError`;
    the new config's own ``__post_init__`` validation then runs (e.g. a negative step size).
    """
    types_ = field_types(type(cfg))
    changes: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in types_:
            raise ConfigError(
                f"unknown config key {key!r} for {type(cfg).__name__}; "
                f"known: {', '.join(sorted(types_))}"
            )
        changes[key] = coerce_text(value, types_[key], key)
    return dataclasses.replace(cfg, **changes)


def with_data_dir(cfg: Any, data_dir: str | Path | None) -> Any:
    """``cfg`` with its ``data_dir`` field set to ``data_dir`` (a config without one, or None: unchanged).

    This is how ``--data-dir`` reaches the loaders: as a config value (recorded with the run), never
    through the environment. Where the field is already set (a ``--set data_dir=...``), an
    explicit ``data_dir`` that disagrees is an error.
    """
    if data_dir is None or "data_dir" not in {f.name for f in dataclasses.fields(cfg)}:
        return cfg
    current = getattr(cfg, "data_dir")
    if current is not None and Path(current) != Path(data_dir):
        raise ConfigError(f"data_dir is set twice: {current!r} in the config and {str(data_dir)!r} by --data-dir")
    return dataclasses.replace(cfg, data_dir=str(data_dir))


# --------------------------------------------------------------------------- validation helpers


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def require_positive(name: str, value: float | tuple[float, ...]) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be positive and finite, got {v!r}")


# --------------------------------------------------------------------------- hashing


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-able dict of a dataclass config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg: Any, extra: dict[str, Any] | None = None) -> str:
    """Stable SHA-256 (hex, 16 chars) of the canonical JSON of a config and optional extras."""
    payload = {"type": type(cfg).__name__, "config": config_to_dict(cfg), **(extra or {})}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
