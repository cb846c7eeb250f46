"""Building blocks of the DMN networks and the paper's baselines: conv stacks from
``(filters, kernel, stride, relu)`` specs, weight init, the border-aware constant maps of tiled
pose channels, pose coordinates, and channels-last flattening."""
import torch
from torch import nn
import torch.nn.functional as F


def conv_layer(cin, cout, k, s):
    return nn.Conv2d(cin, cout, k, stride=s, padding=1 if k == 3 else 0)


def conv_stack(specs, cin):
    """A conv stack from ``(filters, kernel, stride, relu)`` specs."""
    layers = []
    for cout, k, s, relu in specs:
        conv = conv_layer(cin, cout, k, s)
        conv.is_relu = relu
        layers.append(conv)
        if relu:
            layers.append(nn.ReLU())
        cin = cout
    return nn.Sequential(*layers)


TRUNK = [(32, 2, 2, True), (32, 3, 1, True), (64, 2, 2, True)]


def init_weights(module, last_layer, last_layer_scale):
    """He init for relu layers (``is_relu``, the default), unit gain for linear ones, zero
    biases; ``last_layer``'s weight then scaled by ``last_layer_scale``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            relu = getattr(m, 'is_relu', True)
            nn.init.kaiming_normal_(m.weight, nonlinearity='relu' if relu else 'linear')
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        last_layer.weight.mul_(last_layer_scale)


def constant_channel_maps(weight, h, w):
    """The conv (3x3, zero padding 1, no bias) of an h x w map that is 1 in one input channel
    and 0 elsewhere, for each input channel of ``weight`` (C, J, 3, 3): (J, C, h, w). Exact
    border-aware maps for tiled (spatially constant) input channels."""
    J = weight.shape[1]
    ones = torch.eye(J, dtype=weight.dtype, device=weight.device)[:, :, None, None]
    return F.conv2d(ones.expand(J, J, h, w), weight, padding=1)


def pose_coords(poses, scale):
    """Metric poses (..., 3) -> (x/L, y/L, sin yaw, cos yaw) (..., 4) with L = ``scale``."""
    return torch.stack([poses[..., 0] / scale, poses[..., 1] / scale,
                        torch.sin(poses[..., 2]), torch.cos(poses[..., 2])], dim=-1)


def full_precision(device):
    """A context in which autocast is off, for the attention: under bf16 autocast the
    attention stays in the map's fp32. It is memory-bound, so bf16 saves it little, while
    autocast's casts of the (particles, contexts, P) activations and its bf16 matrix-vector
    products cost more than that (with the cached bf16 FC1 kernel, an update at K = 256 and
    16 contexts took 19.1 instead of 22.3 ms on a Zen 4 CPU); the convolutions after it still
    run in bf16."""
    return torch.autocast(device.type, enabled=False)


def hwc_rows(x):
    """(M, C, h, w) -> (M, h*w*C): each map flattened in (row, column, channel) order."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def hwc_view(rows, channels, h, w):
    """(M, h*w*C) rows from :func:`hwc_rows` -> (M, C, h, w), a channels-last view (no copy)."""
    return rows.view(-1, h, w, channels).permute(0, 3, 1, 2)
