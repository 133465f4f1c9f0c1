"""Config plumbing: the stable hash, command-line overrides, dtype/device maps, validation, data_dir."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest
import torch

from implicitlab.config import (
    ConfigError,
    apply_overrides,
    config_hash,
    config_to_dict,
    dtype_of,
    require_positive,
    resolve_device,
    with_data_dir,
)


@dataclass(frozen=True)
class Toy:
    steps: int = 10
    lr: float = 0.1
    flag: bool = False
    name: str = "toy"
    loss: Literal["exp", "logistic"] = "exp"
    depth_choice: Literal[1, 2, 4] = 2
    lrs: tuple[float, ...] = (0.1, 0.2)
    widths: tuple[int, ...] = ()
    budget: int | None = None
    scale: Optional[float] = 1.0  # typing.Optional: a typing.Union, not a types.UnionType
    label: str | None = None
    count_or_name: int | str = 0
    number: int | float = 1

    def __post_init__(self) -> None:
        require_positive("lr", self.lr)


@dataclass(frozen=True)
class ToyTwin:  # the same fields as Toy's first two, another type
    steps: int = 10
    lr: float = 0.1


@dataclass(frozen=True)
class WithData:
    num_steps: int = 5
    data_dir: str | None = None


@dataclass(frozen=True)
class WithDict:
    options: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------------ config_hash ---
def test_config_hash_is_pinned():
    # the hash names stored runs: it must not change between processes, sessions or versions
    assert config_hash(ToyTwin()) == "2790dc96de2ca5ec"
    assert config_hash(ToyTwin(), extra={"preset": "tiny"}) == "f981a82d0e1ae589"


def test_config_hash_is_sha256_of_the_canonical_json():
    # the documented recipe, spelled out: {"type", "config", **extra}, sorted keys, no spaces
    payload = {"type": "Toy", "config": config_to_dict(Toy()), "preset": "tiny"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert config_hash(Toy(), extra={"preset": "tiny"}) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert config_to_dict(Toy())["lrs"] == [0.1, 0.2]  # tuples as JSON lists


def test_config_hash_is_stable_across_equal_configs():
    a = Toy(lrs=(0.1, 0.2), budget=3)
    b = apply_overrides(Toy(), ["budget=3"])
    assert a is not b and a == b
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and all(c in "0123456789abcdef" for c in config_hash(a))


@pytest.mark.parametrize(
    "change",
    [
        dict(steps=11),
        dict(lr=math.nextafter(0.1, 1.0)),  # the adjacent double: JSON keeps every bit
        dict(flag=True),
        dict(name="toy2"),
        dict(loss="logistic"),
        dict(lrs=(0.2, 0.1)),  # order matters
        dict(lrs=(0.1, 0.2, 0.3)),
        dict(budget=0),  # 0 is not None
        dict(label=""),  # "" is not None
        dict(count_or_name="0"),  # "0" is not 0
    ],
    ids=lambda c: next(iter(c)),
)
def test_config_hash_sees_every_field(change):
    assert config_hash(dataclasses.replace(Toy(), **change)) != config_hash(Toy())


def test_config_hash_sees_the_type_and_the_extras():
    assert config_hash(ToyTwin()) != config_hash(ToyTwin(), extra={"preset": "tiny"})
    assert config_to_dict(ToyTwin()) == {"steps": 10, "lr": 0.1}

    @dataclass(frozen=True)
    class Other:  # same field names and values as ToyTwin, another type name
        steps: int = 10
        lr: float = 0.1

    assert config_to_dict(Other()) == config_to_dict(ToyTwin())
    assert config_hash(Other()) != config_hash(ToyTwin())


# ---------------------------------------------------------------------------- apply_overrides ---
@pytest.mark.parametrize(
    "assignment, field, value",
    [
        ("steps=25", "steps", 25),
        ("lr=2.5e-3", "lr", 2.5e-3),
        ("lr=3", "lr", 3.0),
        ("flag=true", "flag", True),
        ("flag=Yes", "flag", True),
        ("flag=1", "flag", True),
        ("flag=no", "flag", False),
        ("flag=0", "flag", False),
        ("name=a=b", "name", "a=b"),  # split at the first '=' only
        ("  steps =  7 ", "steps", 7),  # whitespace around key and value
        ("loss=logistic", "loss", "logistic"),
        ("depth_choice=4", "depth_choice", 4),  # a Literal of ints gives the int, not "4"
        ("lrs=[0.5, 1e-2]", "lrs", (0.5, 0.01)),
        ("lrs=(3,4)", "lrs", (3.0, 4.0)),
        ("lrs=0.25", "lrs", (0.25,)),
        ("lrs=[]", "lrs", ()),
        ("widths=1,2,3", "widths", (1, 2, 3)),
        ("budget=None", "budget", None),
        ("budget=null", "budget", None),
        ("budget=12", "budget", 12),
        ("scale=none", "scale", None),  # typing.Optional
        ("scale=0.5", "scale", 0.5),
        ("label=hello", "label", "hello"),
        ("label=None", "label", None),  # None wins over the string "None"
        ("count_or_name=5", "count_or_name", 5),  # Union: the first member that parses
        ("count_or_name=five", "count_or_name", "five"),
        ("number=5", "number", 5),
        ("number=5.5", "number", 5.5),
    ],
)
def test_override_types(assignment, field, value):
    cfg = apply_overrides(Toy(), [assignment])
    got = getattr(cfg, field)
    assert got == value and type(got) is type(value), (got, value)
    if isinstance(value, tuple):
        assert all(type(a) is type(b) for a, b in zip(got, value))


def test_overrides_return_a_new_config_and_apply_in_order():
    base = Toy()
    cfg = apply_overrides(base, ["steps=3", "lr=0.5", "steps=4"])
    assert (cfg.steps, cfg.lr) == (4, 0.5)
    assert base == Toy()  # the original is untouched
    assert apply_overrides(base, []) == base


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("colour=red", "unknown config key 'colour' for Toy; known: budget, count_or_name"),
        ("steps", "key=value"),
        ("steps=ten", "steps: expected an integer, got 'ten'"),
        ("steps=2.5", "expected an integer"),
        ("lr=fast", "lr: expected a number"),
        ("flag=maybe", "flag: expected true/false"),
        ("loss=hinge", "loss: 'hinge' is not one of ['exp', 'logistic']"),
        ("depth_choice=3", "is not one of [1, 2, 4]"),
        ("lrs=[0.1, x]", "lrs: expected a number"),
        ("budget=lots", "budget: expected an integer"),  # Optional: the non-None member's error
        ("number=abc", "number: expected an integer"),  # Union: the first member's error
        ("lr=-1", "lr must be positive and finite"),  # the config's own __post_init__
        ("lr=nan", "lr must be positive and finite"),
    ],
)
def test_bad_overrides_raise_config_error(assignment, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Toy(), [assignment])
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_field_of_an_unsupported_type_cannot_be_set():
    with pytest.raises(ConfigError, match="cannot set a field of type"):
        apply_overrides(WithDict(), ["options={}"])


# ------------------------------------------------------------------------------ with_data_dir ---
def test_with_data_dir_sets_the_field(tmp_path):
    cfg = with_data_dir(WithData(), tmp_path)
    assert cfg.data_dir == str(tmp_path) and isinstance(cfg.data_dir, str)
    assert cfg.num_steps == 5
    assert with_data_dir(WithData(), str(tmp_path)) == cfg
    assert config_hash(cfg) != config_hash(WithData())  # recorded with the run


def test_with_data_dir_leaves_other_configs_unchanged(tmp_path):
    cfg = Toy()
    assert with_data_dir(cfg, tmp_path) is cfg  # no data_dir field
    plain = WithData()
    assert with_data_dir(plain, None) is plain  # nothing given


def test_with_data_dir_agrees_with_or_refuses_a_value_already_set(tmp_path):
    cfg = WithData(data_dir=str(tmp_path))
    assert with_data_dir(cfg, tmp_path) == cfg
    # the same path spelled differently is no conflict (the new spelling is kept)
    assert Path(with_data_dir(cfg, str(tmp_path) + "/").data_dir) == tmp_path
    assert with_data_dir(cfg, None) is cfg
    with pytest.raises(ConfigError, match="data_dir is set twice"):
        with_data_dir(cfg, tmp_path / "elsewhere")


# --------------------------------------------------------------------------- dtype and device ---
def test_dtype_of():
    assert dtype_of("float64") is torch.float64
    assert dtype_of("float32") is torch.float32
    with pytest.raises(ConfigError, match=r"unknown dtype 'float16'; choose one of \['float32', 'float64'\]"):
        dtype_of("float16")
    with pytest.raises(ConfigError, match="unknown dtype"):
        dtype_of("torch.float64")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device() == resolve_device("auto")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu", ""):
        with pytest.raises(ConfigError, match="unknown device"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_resolve_device_cuda_without_a_gpu_is_an_error(name):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resolve_device_cuda():
    assert resolve_device("cuda:0") == torch.device("cuda:0")


# ----------------------------------------------------------------------------- require_positive ---
@pytest.mark.parametrize("value", [1, 0.5, 1e-300, 7.0, (1, 2.5), ()])
def test_require_positive_accepts(value):
    require_positive("x", value)


@pytest.mark.parametrize("value", [0, 0.0, -1, -1e-300, float("nan"), float("inf"), (1.0, 0.0), (2, float("nan")),
                                   "1", None])
def test_require_positive_refuses(value):
    with pytest.raises(ConfigError, match="x must be positive and finite"):
        require_positive("x", value)
