"""Clusters of a particle cloud and the heaviest one's pose: the estimate AMCL publishes.

A particle falls in a cell of a grid over (x, y, yaw); occupied cells that touch (the 26
neighbours, yaw wrapping around) form a cluster. The pose estimate is the weighted mean of the
cluster holding the most weight, so particles spread over the map while the belief converges,
or a second mode, do not pull it off the mode the weight backs (nav2 AMCL's cells are 0.5 m
and 10 deg, as the defaults here). Pure torch, one filter at a time.
"""
import math

import torch

from dmn_localizer.filter.particle_filter import weighted_mean

_OFFSETS = [(dx, dy, dw) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dw in (-1, 0, 1)]


def cluster_labels(particles, cell_xy=0.5, cell_yaw=math.radians(10.0)):
    """Cluster index (K,) of each particle of ``particles`` (K, 3), 0 .. clusters - 1.

    Two particles share a cluster when a chain of occupied grid cells, each touching the next
    (faces, edges or corners; yaw wraps), joins their cells.
    """
    if cell_xy <= 0 or cell_yaw <= 0:
        raise ValueError('cluster cells must be positive')
    p = particles.detach()
    n_yaw = max(1, int(math.ceil(2 * math.pi / cell_yaw - 1e-9)))
    ix = torch.floor(p[:, 0] / cell_xy).long()
    iy = torch.floor(p[:, 1] / cell_xy).long()
    iw = torch.floor(torch.remainder(p[:, 2], 2 * math.pi) / cell_yaw).long() % n_yaw
    # shifted by one so a neighbour's index is never negative
    ix = ix - ix.min() + 1
    iy = iy - iy.min() + 1
    span_y = int(iy.max()) + 2

    def key(x, y, w):
        return (x * span_y + y) * n_yaw + w

    cells, member = torch.unique(key(ix, iy, iw), sorted=True, return_inverse=True)
    cx, cy, cw = cells // (span_y * n_yaw), (cells // n_yaw) % span_y, cells % n_yaw
    itself = torch.arange(len(cells), device=p.device)
    neighbours = []
    for dx, dy, dw in _OFFSETS:
        k = key(cx + dx, cy + dy, (cw + dw) % n_yaw)
        j = torch.searchsorted(cells, k).clamp_(max=len(cells) - 1)
        neighbours.append(torch.where(cells[j] == k, j, itself))
    neighbours = torch.stack(neighbours, 1)                     # (cells, 27), self if none
    label = itself
    while True:                                                 # min-label propagation
        new = label[neighbours].min(1).values
        new = new[new]                                          # pointer jumping
        if torch.equal(new, label):
            break
        label = new
    _, label = torch.unique(label, return_inverse=True)
    return label[member]


def heaviest_cluster_mean(particles, log_weights, cell_xy=0.5, cell_yaw=math.radians(10.0)):
    """(pose (3,), weight share of its cluster): the weighted mean (circular in yaw) of the
    cluster of :func:`cluster_labels` holding the most weight. ``particles`` (K, 3),
    ``log_weights`` (K,) (normalised or not)."""
    label = cluster_labels(particles, cell_xy, cell_yaw)
    w = torch.softmax(log_weights.detach().float(), -1)
    mass = torch.zeros(int(label.max()) + 1, device=w.device).index_add_(0, label, w)
    best = int(torch.argmax(mass))
    inside = label == best
    pose = weighted_mean(particles[inside][None], log_weights[inside][None])[0]
    return pose, float(mass[best])
