"""The weight matrices of a model in forward order, and whether the model is positively homogeneous.

``LayeredNet`` and ``Ensemble`` expose ``layer_weights()`` (bias-free chains, first layer first; an
ensemble's matrices carry a leading run dimension). Any other ``nn.Module`` is traced once with
``torch.fx`` (symbolically: no data, no change to the model) and its parameters with two or more
dimensions are taken **in the order the forward pass first uses them** — not registration order,
which a module defining ``self.c`` before ``self.a`` would get wrong. A convolution's kernel
``(out, in, k, k)`` is kept as stored by :func:`named_layer_weights` and flattened to
``(out, in·k·k)`` by :func:`layer_weights`. A module that ``torch.fx`` cannot trace (Python control
flow on tensor values) is refused when it has more than one weight: pass the weights as a list, in
forward order.

Biases are not layers. Whether they (or batch norm, residual connections, non-homogeneous
activations) break positive homogeneity f(cθ; x) = c^L f(θ; x) is read from the same trace by
:func:`homogeneity`; the quantities whose meaning needs it warn with :class:`NotHomogeneousWarning`.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn


class NotHomogeneousWarning(UserWarning):
    """A quantity whose meaning needs a positively homogeneous model was asked of one that is not."""


def _is_chain(model) -> bool:
    """A module that lists its own layers (``LayeredNet``, ``Ensemble``): its fast path, as before."""
    return isinstance(model, nn.Module) and hasattr(model, "layer_weights")


def _trace(model: nn.Module) -> fx.GraphModule:
    """The symbolic trace of ``model`` (no data, the model untouched), or a one-line refusal."""
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, RuntimeError… on control flow
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"cannot find the layers of {type(model).__name__} in forward order: torch.fx could not trace "
            f"its forward ({first}); pass its weight tensors as a list, first layer first"
        ) from None


def _forward_order(model: nn.Module, gm: fx.GraphModule) -> list[str]:
    """Names of the parameters with ≥ 2 dimensions, in the order the traced forward first uses them."""
    named = dict(model.named_parameters())
    order: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            prefix = f"{node.target}."
            candidates = [prefix + n for n, _ in model.get_submodule(node.target).named_parameters()]
        elif node.op == "get_attr":
            candidates = [node.target]
        else:
            continue
        for name in candidates:
            if name in named and named[name].ndim >= 2 and name not in order:
                order.append(name)
    return order


def named_layer_weights(model: nn.Module | Sequence[torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """``(name, weight)`` of every layer in forward order, weights as stored.

    Names are parameter names (``"features.0.weight"``) for a plain module, ``"layer k"`` (k from 1)
    for a list, a ``LayeredNet`` or an ``Ensemble``. A convolution's kernel keeps its shape
    ``(out, in, k, k)``; a list's entries and a chain's matrices are ``(…, out, in)``.
    """
    if isinstance(model, (list, tuple)):
        ws = [(f"layer {k + 1}", w) for k, w in enumerate(model)]
    elif _is_chain(model):
        ws = [(f"layer {k + 1}", w) for k, w in enumerate(model.layer_weights())]
    elif isinstance(model, nn.Module):
        named = dict(model.named_parameters())
        heavy = [n for n, p in named.items() if p.ndim >= 2]
        order = heavy if len(heavy) <= 1 else _forward_order(model, _trace(model))
        ws = [(n, named[n]) for n in order]
    else:
        raise TypeError(f"expected an nn.Module or a list of weight tensors, got {type(model).__name__}")
    if not ws:
        raise ValueError("the model has no weight matrices (parameters with ≥ 2 dimensions)")
    return ws


def layer_weights(model: nn.Module | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Layer matrices ``(…, out, in)`` in forward order; a leading run dimension is kept for ensembles.

    A plain module's weights are flattened to ``(out, -1)`` (a convolution's kernel becomes
    out_channels × (in_channels·k·k)); biases are not layers (:func:`homogeneity` says whether they
    matter).
    """
    ws = named_layer_weights(model)
    if isinstance(model, nn.Module) and not _is_chain(model):
        return [w.reshape(w.shape[0], -1) for _, w in ws]
    return [w for _, w in ws]


def matrix_layers(model: nn.Module | Sequence[torch.Tensor], quantity: str) -> list[torch.Tensor]:
    """The layer matrices of :func:`layer_weights`, refusing a plain module's kernels of > 2 dimensions.

    ``quantity`` (``"balancedness"``, ``"alignment"``) names what is refused: products of consecutive
    layers' matrices are defined for fully connected layers; between a convolution and its
    neighbour (a reshaped kernel is not the layer's linear map) they are not.
    """
    ws = named_layer_weights(model)
    if isinstance(model, nn.Module) and not _is_chain(model):
        for name, w in ws:
            if w.ndim > 2:
                raise ValueError(
                    f"{quantity} is defined between consecutive fully connected layers; layer {name!r} is a "
                    f"kernel of shape {tuple(w.shape)} (a convolution): pass the fully connected weights as a list"
                )
    return layer_weights(model)


def param_norm(model: nn.Module | Sequence[torch.Tensor]) -> torch.Tensor:
    """‖θ‖ = (Σ_p ‖p‖²)^{1/2} over all parameters of a plain module (biases, batch norm included),
    over the listed weights for a list, per run over the matrices for a chain (which has no other)."""
    if isinstance(model, nn.Module) and not _is_chain(model):
        params = list(model.parameters())
        if not params:
            raise ValueError("the model has no parameters")
        return torch.sqrt(sum(p.detach().pow(2).sum() for p in params))
    fro = torch.stack([torch.linalg.matrix_norm(W, ord="fro") for W in layer_weights(model)], dim=-1)
    return fro.pow(2).sum(-1).sqrt()


# ------------------------------------------------------------------------------ homogeneity ---
_KEEP_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # f(c·h) = c·f(h) for c > 0: the degree passes through
_WEIGHTED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)
_KEEP_FUNCTIONS = {
    torch.relu, F.relu, F.leaky_relu, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
    torch.transpose, torch.permute, torch.sum, torch.mean, F.dropout, F.max_pool1d, F.max_pool2d,
    F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, operator.neg, operator.getitem,
}
_KEEP_METHODS = {
    "relu", "view", "reshape", "flatten", "permute", "transpose", "t", "squeeze", "unsqueeze",
    "contiguous", "sum", "mean", "neg", "clone", "expand", "__getitem__",
}
_PRODUCT = {operator.mul, torch.mul, operator.matmul, torch.matmul, torch.mm, torch.bmm, "mul", "matmul", "mm", "bmm"}
_SUM = {operator.add, operator.sub, torch.add, torch.sub, torch.cat, torch.stack, "add", "sub"}
_CONST = "const"  # a node without a degree: sizes, shapes, Python numbers


def _name(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def homogeneity(model: nn.Module) -> tuple[int | None, str]:
    """``(L, "")`` when f(cθ; x) = c^L f(θ; x) for every c > 0, else ``(None, reason)``.

    Read from the structure (no data): a ``LayeredNet``/``Ensemble`` is homogeneous of degree L (its
    depth) with the identity or ReLU between layers, not with GELU or the smooth ReLU. A plain module
    is traced with ``torch.fx`` and the degree followed through the graph: a parameter has degree 1,
    inputs and buffers 0; a bias-free linear or convolution layer, a product or a matmul adds degrees;
    ReLU, pooling, reshapes keep them; a sum needs equal degrees on both sides. What breaks it is named
    in ``reason``: a bias, batch/layer norm, a residual connection (a sum of different degrees), an
    activation that is not positively homogeneous, or anything the trace cannot vouch for.
    """
    if _is_chain(model) and hasattr(model, "arch"):
        act = model.arch.activation
        if act in ("none", "relu"):
            return len(model.layer_weights()), ""
        return None, f"activation {act!r} between the layers is not positively homogeneous"
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:
        return None, f"torch.fx could not trace {type(model).__name__} to check ({type(err).__name__})"
    params = dict(model.named_parameters())
    degree: dict[fx.Node, object] = {}
    reasons: list[str] = []

    def deg(a):
        return degree.get(a, _CONST) if isinstance(a, fx.Node) else _CONST

    def broken(why: str):
        if why not in reasons:
            reasons.append(why)
        return None

    for node in gm.graph.nodes:
        args = [deg(a) for a in node.args]
        # an input already broken: the node is too, but its own causes are still named
        poisoned = any(d is None for d in args)
        args = [0 if d is None else d for d in args]
        tensors = [d for d in args if d is not _CONST]
        first = tensors[0] if tensors else _CONST
        if node.op == "placeholder":
            degree[node] = 0
        elif node.op == "get_attr":
            degree[node] = 1 if node.target in params else 0
        elif node.op == "output":
            degree[node] = first
        elif node.op == "call_module":
            mod = model.get_submodule(node.target)
            if isinstance(mod, _WEIGHTED_MODULES):
                degree[node] = broken(f"bias of {node.target!r}") if mod.bias is not None else first + 1
            elif isinstance(mod, _KEEP_MODULES):
                degree[node] = first
            elif isinstance(mod, _NORM_MODULES):
                degree[node] = broken(f"normalization layer {node.target!r} ({type(mod).__name__})")
            else:
                degree[node] = broken(f"{type(mod).__name__} {node.target!r}")
        elif node.target is getattr:
            degree[node] = first if node.args[1] in ("T", "mT", "H", "mH", "data") else _CONST
        elif node.target in ("size", "dim"):
            degree[node] = _CONST
        elif node.target in _KEEP_FUNCTIONS or node.target in _KEEP_METHODS:
            degree[node] = first
        elif node.target in (F.linear, F.conv1d, F.conv2d, F.conv3d):
            bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            degree[node] = broken(f"bias in {node.name!r}") if bias is not None else sum(tensors)
        elif node.target in _PRODUCT:
            degree[node] = sum(tensors) if tensors else _CONST
        elif node.target in (operator.truediv, torch.div, "div") and deg(node.args[1]) is _CONST:
            degree[node] = first
        elif node.target in _SUM:
            flat = tensors if node.target not in (torch.cat, torch.stack) else [deg(a) for a in node.args[0]]
            flat = [d for d in flat if d is not _CONST]
            if any(d is None for d in flat):
                poisoned = True
            elif node.target not in (torch.cat, torch.stack) and len(flat) < len(args):
                degree[node] = broken(f"constant added in {node.name!r}")
            elif len(set(flat)) > 1:
                degree[node] = broken(
                    f"residual connection {node.name!r} adds terms of degrees {sorted(set(flat))}"
                )
            else:
                degree[node] = flat[0] if flat else _CONST
        else:
            degree[node] = broken(f"{node.op} {_name(node.target)!r} in {node.name!r}")
        if poisoned:
            degree[node] = None
    out = degree[next(n for n in gm.graph.nodes if n.op == "output")]
    if reasons or not isinstance(out, int):
        return None, "; ".join(reasons[:3]) + ("; …" if len(reasons) > 3 else "") or "output has no degree"
    return out, ""


def warn_if_not_homogeneous(model: nn.Module | Sequence[torch.Tensor], quantity: str) -> int | None:
    """Degree L of a homogeneous model, or None after one :class:`NotHomogeneousWarning` naming the cause.

    A list of matrices is taken as a bias-free linear chain (degree: its length).
    """
    if isinstance(model, (list, tuple)):
        return len(model)
    L, reason = homogeneity(model)
    if L is None:
        warnings.warn(
            f"{quantity} assumes a positively homogeneous model (f(cθ) = c^L f(θ)), and "
            f"{type(model).__name__} is not: {reason}",
            NotHomogeneousWarning,
            stacklevel=3,
        )
    return L


def split_finite(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W with non-finite matrices zeroed, mask ``(…)`` of the finite ones).

    SVD-based diagnostics fail on a NaN matrix; a diverged run of an ensemble must give NaN for
    that run only, not an error for all.
    """
    ok = torch.isfinite(W).flatten(-2).all(-1)
    return torch.where(ok[..., None, None], W, torch.zeros_like(W)), ok


def nan_where_not(ok: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` with NaN where ``ok`` is False (``ok`` broadcasts over trailing dims)."""
    while ok.ndim < values.ndim:
        ok = ok.unsqueeze(-1)
    return torch.where(ok, values, torch.full_like(values, float("nan")))
