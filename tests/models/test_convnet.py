"""The Poggio et al. 2018 convnets: shapes, parameter counts, options, dtypes."""

import pytest
import torch

from implicitlab.models.convnet import (
    ConvNet,
    num_params,
    poggio_fig1_channels,
    poggio_fig1_net,
    poggio_fig1_num_params,
    poggio_fig5_net,
)


@pytest.fixture(autouse=True)
def _seeded_init():
    """ConvNet draws its initial weights from torch's global generator (it takes no generator):
    seed it for each test and restore the global state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _x(n=4, dtype=torch.float32):
    return torch.randn(n, 3, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(0))


def test_fig1_net_architecture_and_count():
    net = poggio_fig1_net()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert [c.out_channels for c in convs] == [16] * 5
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d)) for m in net.modules())
    assert net.feature_shape == (16, 1, 1)
    # 3·16·9+16 + 4·(16·16·9+16) + 16·10+10: "approximately 10000 parameters"
    assert num_params(net) == 448 + 4 * 2320 + 170 == 9898


def test_fig5_net_architecture_and_count():
    net = poggio_fig5_net()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128]
    assert net.feature_shape == (128, 2, 2)
    assert net.classifier.in_features == 512
    assert num_params(net) == 448 + 4640 + 18496 + 73856 + 5130 == 102570


@pytest.mark.parametrize("make", [poggio_fig1_net, poggio_fig5_net], ids=["fig1", "fig5"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_forward_shapes_and_backward(make, batch_norm):
    net = make(batch_norm=batch_norm)
    out = net(_x())
    assert out.shape == (4, 10) and out.dtype == torch.float32
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == batch_norm


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0, 1.5, 2.0, 4.0])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_width_family_closed_form_count(width, bias, batch_norm):
    net = poggio_fig1_net(width, bias=bias, batch_norm=batch_norm, device="meta")  # nothing allocated
    assert net.channels == poggio_fig1_channels(width) == (round(16 * width),) * 5
    assert num_params(net) == poggio_fig1_num_params(width, bias=bias, batch_norm=batch_norm)


def test_width_family_grows_and_validates():
    counts = [poggio_fig1_num_params(w) for w in (0.5, 1, 2, 4, 8)]
    assert counts == sorted(counts) and counts[1] == 9898
    assert poggio_fig1_channels(0.01) == (1,) * 5
    with pytest.raises(ValueError, match="width"):
        poggio_fig1_channels(0)


def test_bias_off_has_no_biases_and_is_homogeneous_in_the_input(tol):
    net = poggio_fig1_net(bias=False).double()
    assert all(getattr(m, "bias", None) is None for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    x = _x(dtype=torch.float64)
    # ReLU net without biases or batch norm: f(c·x) = c·f(x) for c > 0
    with torch.no_grad():
        expected = 3.0 * net(x)
        torch.testing.assert_close(net(3.0 * x), expected, rtol=tol[torch.float64],
                                   atol=tol[torch.float64] * float(expected.abs().max()))


@pytest.mark.parametrize("make", [poggio_fig1_net, poggio_fig5_net], ids=["fig1", "fig5"])
def test_float64(make):
    net = make(dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    out = net(_x(dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (4, 10)
    net32 = make().to(torch.float64)
    assert net32(_x(dtype=torch.float64)).dtype == torch.float64


def test_generic_convnet_and_errors():
    net = ConvNet((4, 8), stride=1, padding=0, in_channels=1, image_size=28, num_classes=3)
    assert net.feature_shape == (8, 24, 24)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(ValueError, match="channels"):
        ConvNet(())
    with pytest.raises(ValueError, match="shrinks to nothing"):
        ConvNet((4,) * 3, kernel_size=3, stride=1, padding=0, image_size=5)


def test_num_params_counts_only_parameters():
    net = poggio_fig1_net(batch_norm=True)
    for p in net.classifier.parameters():
        p.requires_grad_(False)
    assert num_params(net) == poggio_fig1_num_params(batch_norm=True) - 170
    assert num_params(net, trainable_only=False) == poggio_fig1_num_params(batch_norm=True)
