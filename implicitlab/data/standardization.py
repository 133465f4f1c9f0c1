"""Per-channel standardisation of image arrays into float tensors ``(N, C, H, W)`` for torch: statistics
computed on one split (exactly, from uint8 histograms) and applied to another."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Standardized", "standardize"]


def _per_channel(v) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    return torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(-1)


class Standardized(NamedTuple):
    """``standardize``'s result: images ``(N, C, H, W)``, and the per-channel ``mean``, ``std`` ``(C,)``
    on the [0, 1] pixel scale (float64, CPU, whatever the images' dtype) to apply to another split."""

    images: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def _channel_stats_uint8(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and population std on the [0, 1] scale, from 256-bin histograms
    (integer sums: no float64 copy of the set, no rounding before the final division)."""
    c = images.shape[-1]
    flat = np.ascontiguousarray(images).reshape(-1)
    values = np.arange(256, dtype=np.int64)
    count = flat.size // c
    mean, var = [], []
    for k in range(c):
        hist = np.bincount(flat[k::c], minlength=256).astype(np.int64)
        s1, s2 = int(hist @ values), int(hist @ (values * values))
        mean.append(s1 / count / 255.0)
        var.append((s2 * count - s1 * s1) / count**2 / 255.0**2)  # exact integer numerator
    return np.array(mean), np.sqrt(np.array(var))


def standardize(
    images,
    mean=None,
    std=None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Standardized:
    """Per-channel standardisation to a float tensor ``(N, C, H, W)``.

    Pixels are first scaled to [0, 1] (uint8 / 255; float input is taken as already on that
    scale), then ``(x − mean_c) / std_c``. With ``mean``/``std`` None they are computed from
    ``images`` (population std, exactly, in float64): compute them on the training split and pass
    them for the test split.

    Args:
        images: ``(N, H, W, C)`` (CIFAR) or ``(N, H, W)`` (MNIST, one channel), uint8 or float,
            numpy or torch.
        mean, std: ``(C,)`` per-channel statistics on the [0, 1] scale, or None.
        dtype: output dtype. device: output device (None: where the input is; numpy → CPU).

    Returns:
        ``Standardized(images, mean, std)``: images ``(N, C, H, W)`` in ``dtype`` on ``device``
        (contiguous); mean and std ``(C,)`` float64 on the CPU, so passing them on loses nothing.
    """
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, torch.Tensor):
        x = images
    else:
        raise TypeError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(-1)  # (N, H, W, 1)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) or (N, H, W), got shape {tuple(x.shape)}")
    is_uint8 = x.dtype == torch.uint8
    if not is_uint8 and not x.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got {x.dtype}")
    device = x.device if device is None else torch.device(device)
    if mean is None or std is None:
        if is_uint8:
            m, s = _channel_stats_uint8(x.cpu().numpy())
        else:
            xd = x.to(torch.float64)
            m, s = xd.mean(dim=(0, 1, 2)).cpu().numpy(), xd.std(dim=(0, 1, 2), correction=0).cpu().numpy()
        mean = m if mean is None else mean
        std = s if std is None else std
    mean64, std64 = _per_channel(mean), _per_channel(std)
    c = x.shape[-1]
    if mean64.numel() != c or std64.numel() != c:
        raise ValueError(f"mean and std must have one value per channel ({c}), got {mean64.numel()} and {std64.numel()}")
    if not bool((std64 > 0).all()):
        raise ValueError(f"std must be positive per channel, got {std64.tolist()} (a constant channel?)")
    # out = x · a − b with a = 1 / (255·std) (uint8) or 1 / std, and b = mean / std
    scale = (1.0 / ((255.0 if is_uint8 else 1.0) * std64)).to(device=device, dtype=dtype).view(1, c, 1, 1)
    shift = (mean64 / std64).to(device=device, dtype=dtype).view(1, c, 1, 1)
    out = x.to(device=device).permute(0, 3, 1, 2)  # (N, C, H, W), moved before the cast (uint8 is 4× smaller)
    out = out.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    out.mul_(scale).sub_(shift)
    return Standardized(out, mean64, std64)
