"""PNG plots of evaluation results (matplotlib without pyplot, atomic writes)."""
import logging
import math

import numpy as np

from dmn_localizer.util.figures import figure as _figure, save_png

logger = logging.getLogger(__name__)


def _save(fig, path):
    save_png(fig, path, dpi=100)
    logger.info('wrote %s', path)


def plot_success_vs_t(results, path):
    """Global success rate vs step t for every method."""
    fig = _figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for m, r in results.items():
        s = r.get('success_by_t')
        if s:
            ax.plot(range(1, len(s) + 1), [100 * x for x in s], marker='o', label=m)
    ax.set_xlabel('time step t')
    ax.set_ylabel('global success rate (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_sweep(values, xlabel, path, logx=False):
    """DMN global success vs a swept quantity (``{x: success}``)."""
    fig = _figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    xs = sorted(values)
    ax.plot(xs, [100 * values[x] for x in xs], marker='o', label='dmn')
    if logx:
        ax.set_xscale('log', base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('global success rate at last step (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _arrow(ax, pose, color, length=2.0, **kw):
    x, y, a = (float(v) for v in pose)
    ax.arrow(x, y, length * math.cos(a), length * math.sin(a), color=color, width=0.25,
             head_width=1.0, length_includes_head=True, **kw)


def plot_likelihood_map(grid, extent, episode, n_contexts, path, layout=None,
                        layout_resolution_m=1.0, t=0, clip_nats=10.0):
    """Paper Fig. 5 style: the log-likelihood relative to its maximum (max over yaw, clipped
    at ``-clip_nats``) on the top-down layout, contexts (green) and the true query pose
    (blue); the images above."""
    fig = _figure(figsize=(7, 8.5))
    n_img = n_contexts + 1
    gs = fig.add_gridspec(2, n_img, height_ratios=[1, n_img * 0.9])
    for i in range(n_img):
        ax = fig.add_subplot(gs[0, i])
        img = episode.query_images[t] if i == 0 else episode.context_images[i - 1]
        ax.imshow(img)
        ax.set_title('query' if i == 0 else f'C{i}', fontsize=8,
                     color='tab:blue' if i == 0 else 'tab:green')
        ax.axis('off')
    ax = fig.add_subplot(gs[1, :])
    if layout is not None:
        g = layout.shape[0] * layout_resolution_m
        ax.imshow(np.asarray(layout, float), origin='lower', extent=(0, g, 0, g), cmap='Greys',
                  vmin=0, vmax=1.5)
    rel = np.maximum(grid - grid.max(), -clip_nats)
    im = ax.imshow(rel, origin='lower', extent=extent, cmap='viridis', alpha=0.65,
                   vmin=min(rel.min(), -1e-3), vmax=0)
    fig.colorbar(im, ax=ax, shrink=0.7, label='log-likelihood - max (nats)')
    for i in range(n_contexts):
        _arrow(ax, episode.context_poses[i], 'tab:green')
        ax.annotate(f'C{i + 1}', episode.context_poses[i][:2], color='tab:green', fontsize=8,
                    xytext=(3, 3), textcoords='offset points')
    _arrow(ax, episode.query_poses[t], 'tab:blue')
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect('equal')
    ax.set_title('DMN log-likelihood (max over yaw); green: contexts, blue: true query pose',
                 fontsize=9)
    _save(fig, path)
