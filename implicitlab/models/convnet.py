"""The convolutional networks of Poggio et al. 2018 (*Theory IIIb*), Figs. 1, 2 and 5.

What the paper says, and what it leaves open (``/work/shared/papers/poggio2018-theory-IIIb.txt``):

- Fig. 1: "a 5-layer convolutional network (i.e., no pooling) with 16 channels per hidden layer.
  ReLU are used as the non-linearities between layers. The resulting architecture has approximately
  10000 parameters." Silent on kernel size, stride, padding, biases, how the last feature map
  reaches the 10 outputs, and initialisation. Our choice (``poggio_fig1_net``): five 3×3
  convolutions 3→16→16→16→16→16, each with stride 2 and padding 1, ReLU after each, so the
  spatial map shrinks 32→16→8→4→2→1 without any pooling; the (N, 16, 1, 1) map is flattened and
  a linear layer maps 16 → 10. With biases that is 448 + 4·2,320 + 170 = **9,898 parameters**,
  "approximately 10000". (Stride 1 with a flattened 32×32 map would put 163,840 weights in the
  linear layer alone; stride 1 with global average pooling gives the same 9,898 but is a pooling.)
  The 3×3 kernel and stride 2 are taken from the Fig. 5 net's description.
- Fig. 2: "the same [net] as in Figure 1", with "the number of neurons … increased in each layer
  without changing the multilayer architecture": ``poggio_fig1_net(width=w)`` has
  ``round(16·w)`` channels in every hidden layer; ``poggio_fig1_num_params`` gives the count
  without building the net. The paper does not list its widths.
- Fig. 5: "4 convolutional layers (filter size 3×3, stride 2) and a fully-connected layer …
  16, 32, 64 and 128" channels. Silent on padding: we use padding 1 as for Fig. 1, so the map
  shrinks 32→16→8→4→2 and the linear layer maps 128·2·2 = 512 → 10; 102,570 parameters with
  biases (``poggio_fig5_net``).

Both are ``ConvNet``: conv → [batch norm] → ReLU blocks, then flatten and one linear layer, with
PyTorch's default initialisation (the paper does not state one). ``bias=False`` and no batch norm
make the network positively 1-homogeneous in each layer's weights (the setting of the theory).
Devices and dtypes are never hard-coded: pass ``device=``/``dtype=`` or move the module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "ConvNet",
    "num_params",
    "poggio_fig1_channels",
    "poggio_fig1_net",
    "poggio_fig1_num_params",
    "poggio_fig5_net",
]

FIG1_CHANNELS = (16, 16, 16, 16, 16)  # five 3×3 convolutions, stride 2, padding 1
FIG5_CHANNELS = (16, 32, 64, 128)  # four 3×3 convolutions, stride 2, padding 1


def _conv_out(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


class ConvNet(nn.Module):
    """Plain convolutional classifier: ``[conv k×k → (batch norm) → ReLU] × L → flatten → linear``.

    Args:
        channels: output channels of each convolution, first layer first.
        kernel_size, stride, padding: of every convolution (3, 2, 1 for the paper's nets).
        in_channels: image channels (3 for CIFAR-10).
        image_size: input height = width, to size the linear layer (32 for CIFAR-10).
        num_classes: outputs of the linear layer.
        batch_norm: a ``BatchNorm2d`` (affine) after each convolution, before the ReLU.
        bias: biases in the convolutions and the linear layer (with batch norm the convolution
            biases are redundant but kept as asked).
        dtype, device: of the parameters (None: PyTorch's defaults).

    ``forward(x)``: x ``(N, in_channels, image_size, image_size)`` → logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        channels: Sequence[int],
        *,
        kernel_size: int = 3,
        stride: int = 2,
        padding: int = 1,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        batch_norm: bool = False,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}")
        factory = {"dtype": dtype, "device": device}
        layers: list[nn.Module] = []
        size, c_in = image_size, in_channels
        for c_out in channels:
            layers.append(nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=bias, **factory))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out, **factory))
            layers.append(nn.ReLU())
            size, c_in = _conv_out(size, kernel_size, stride, padding), c_out
            if size < 1:
                raise ValueError(f"a {image_size}×{image_size} input shrinks to nothing after {len(channels)} convolutions")
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c_in, size, size)  # (C, H, W) of the last feature map
        self.classifier = nn.Linear(c_in * size * size, num_classes, bias=bias, **factory)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (N, C_L, H_L, W_L)
        return self.classifier(h.flatten(1))  # (N, num_classes)


def num_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters; batch-norm running statistics are buffers, not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def poggio_fig1_channels(width: float = 1.0) -> tuple[int, ...]:
    """Channels of the Fig. 1 net scaled by ``width``: ``round(16 · width)`` (at least 1) in each of 5 layers."""
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    return tuple(max(1, round(c * width)) for c in FIG1_CHANNELS)


def poggio_fig1_net(
    width: float = 1.0,
    *,
    batch_norm: bool = False,
    bias: bool = True,
    num_classes: int = 10,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> ConvNet:
    """The Fig. 1 net (width 1: 9,898 parameters) and its width-scaled family for Fig. 2.

    Five 3×3 convolutions, stride 2, padding 1, ``poggio_fig1_channels(width)`` channels, ReLU,
    no pooling (32→16→8→4→2→1), then a linear layer from the 1×1 map to ``num_classes``.
    """
    return ConvNet(
        poggio_fig1_channels(width), num_classes=num_classes, batch_norm=batch_norm, bias=bias, dtype=dtype, device=device
    )


def poggio_fig1_num_params(width: float = 1.0, *, batch_norm: bool = False, bias: bool = True, num_classes: int = 10) -> int:
    """Parameter count of ``poggio_fig1_net(width, …)``, in closed form (nothing is built).

    Per convolution c_in → c: 9·c_in·c weights (+ c biases) (+ 2c batch-norm scale and shift);
    the linear layer: c_last·num_classes (+ num_classes). The last map is 1×1.
    """
    total, c_in = 0, 3
    for c in poggio_fig1_channels(width):
        total += 9 * c_in * c + (c if bias else 0) + (2 * c if batch_norm else 0)
        c_in = c
    return total + c_in * num_classes + (num_classes if bias else 0)


def poggio_fig5_net(
    *,
    batch_norm: bool = False,
    bias: bool = True,
    num_classes: int = 10,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> ConvNet:
    """The Fig. 5 net: four 3×3 convolutions (16, 32, 64, 128 channels), stride 2, padding 1, ReLU,
    then a linear layer 128·2·2 = 512 → ``num_classes`` (102,570 parameters with biases)."""
    return ConvNet(FIG5_CHANNELS, num_classes=num_classes, batch_norm=batch_norm, bias=bias, dtype=dtype, device=device)
