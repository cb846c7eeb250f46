"""The paper's evaluation protocol (Section V) for the DMN and the baselines of this package.

Settings, on held-out test worlds, Nc contexts per episode, T = ``steps`` query steps:

* global localization: initial belief uniform over the world and yaw, K = ``k_global``
  particles; ``success@t`` = share of episodes whose x-y error at step t is < 8.94 m
  (``success@1`` is one-step global localization, ``success@5`` sequential);
* tracking: Gaussian initial belief (6 m, 6 m, 30 deg) whose mean is the first true pose
  perturbed by noise of the same std (PF-net convention), K = ``k_tracking``;
  ``rmse@5`` = sqrt(mean over episodes of the squared x-y error at t = 5).

Methods: ``dmn`` (the particle filter with the DMN observation model, systematic resampling
when ESS < K/2), ``closest_context`` (the context pose nearest to the true query pose: the
paper's upper bound for image-similarity methods), ``uninformed`` (the same filter without
observation updates: the mean of the initial belief moved by the egomotion), and the paper's
ablations ``dmn_no_attention``, ``dmn_no_egocentric``, ``dmn_no_attention_no_egocentric``: the
same filter with a DMN trained with those model options (:data:`DMN_METHODS`), each from its
own model file.

The paper's learned baselines (Section V-B, :mod:`dmn_localizer.model.baselines`), each from its
own model file whose card records the architecture (:data:`BASELINE_METHODS`):

* ``latent_image``: the same filter with the latent image map's observation model (context
  features averaged into one h x w x 96 latent image; context and particle poses concatenated
  in the map frame, no attention, no egocentric transform);
* ``latent_vector``: the same with the latent vector map (conv + dense layers to one
  256-vector per context, averaged);
* ``regression``: no filter; the DMN's networks with one "particle" at the current estimate
  regress the offset of the true pose from it. The first estimate is the mean of the initial
  belief's particles (as ``uninformed``: about the world centre for global localization, the
  belief's mean for tracking); each step applies the egomotion, then the regressed correction
  (:func:`~dmn_localizer.filter.rollout.regression_rollout`). K only sets how many samples
  the initial mean is taken over.

They train with the DMN's training code and budget (``config/train_mazes_latent_image.yaml``,
``..._latent_vector.yaml``, ``..._regression.yaml``); no trained models are shipped yet.

Ours: ``aligned``, the geometry-aligned observation model (:mod:`dmn_localizer.model.aligned`)
in the same filter, and ``aligned_no_warp``, its ablation without the column warp (the model
option ``warp: false``), each from its own model file.

Image-use diagnostic for ``dmn`` and ``aligned``: the same metrics with query images shuffled
across episodes (``*_shuffled_query``) and with context images shuffled
(``*_shuffled_context``); no change means the model ignores the images.
"""
import dataclasses
from dataclasses import dataclass
import logging
import math

import numpy as np
import torch

from dmn_localizer.evaluation.intervals import percent_with_interval
from dmn_localizer.filter import FilterConfig, sample_uniform
from dmn_localizer.filter.rollout import initial_particles, make_batch, rollout

logger = logging.getLogger(__name__)

# DMN methods -> (attention, egocentric) their model must have
DMN_METHODS = {
    'dmn': (True, True),
    'dmn_no_attention': (False, True),
    'dmn_no_egocentric': (True, False),
    'dmn_no_attention_no_egocentric': (False, False),
}
# learned baselines -> the architecture their model must have (the method's name)
BASELINE_METHODS = {'latent_image': 'latent_image', 'latent_vector': 'latent_vector',
                    'regression': 'regression'}
# the geometry-aligned observation model (ours, :mod:`dmn_localizer.model.aligned`) and its
# ablation without the column warp -> the model's ``warp`` option
ALIGNED_METHODS = {'aligned': True, 'aligned_no_warp': False}
# the methods that need a model file
MODEL_METHODS = tuple(DMN_METHODS) + tuple(BASELINE_METHODS) + tuple(ALIGNED_METHODS)
# the methods scored by a learned likelihood with all particles over the map's contexts:
# they take --nearest-contexts and get the image-use twins (query/context images shuffled)
LIKELIHOOD_METHODS = tuple(DMN_METHODS) + tuple(ALIGNED_METHODS)
DIAGNOSTIC_METHODS = ('dmn', 'aligned')
METHODS = MODEL_METHODS + ('closest_context', 'uninformed')


def model_mismatch(method, config):
    """Why a model with ``config`` (DMNConfig) cannot stand for ``method``, or ''."""
    needed = BASELINE_METHODS.get(method, 'aligned' if method in ALIGNED_METHODS else 'dmn')
    if config.architecture != needed:
        return (f'{method} needs a model with architecture {needed!r}, got '
                f'{config.architecture!r}')
    if method in BASELINE_METHODS:
        return ''
    if method in ALIGNED_METHODS:
        if config.warp != ALIGNED_METHODS[method]:
            return f'{method} needs a model with warp {ALIGNED_METHODS[method]}'
        return ''
    attention, egocentric = DMN_METHODS[method]
    if (config.attention != 'uniform') != attention:
        return (f'{method} needs a model with attention' if attention else
                f"{method} needs a model with attention 'uniform'")
    if config.egocentric != egocentric:
        return f'{method} needs a model with egocentric {egocentric}'
    return ''


SUCCESS_M = math.sqrt(80.0)   # 8.94 m: RMSE threshold of the paper (15.7% of the area)


@dataclass
class EvalConfig:
    contexts: int = 4                    # Nc
    steps: int = 5                       # T
    k_global: int = 2048
    k_tracking: int = 256
    tracking_std: tuple = (6.0, 30.0)    # metres (x and y), degrees
    # the tracking belief's mean is the true pose plus noise of the same std (PF-net; the
    # paper's uninformed tracking RMSE of ~9.5 m implies it); False: centred on the truth
    tracking_perturb_mean: bool = True
    success_m: float = SUCCESS_M
    transition_std: tuple = (0.5, 0.5, 5.0)   # metres, metres, degrees per step
    resample_ess_ratio: float = 0.5
    seed: int = 0
    # B * K * N particle-context pairs evaluated at once: small chunks stay in cache (on 2
    # CPU cores 512 was ~1.6x faster than 8192 at K = 2048)
    particle_budget: int = 512
    diagnostic: bool = True              # image-use diagnostic for the DMN
    # 0: every particle attends to all Nc contexts (the paper). M > 0: the DMN methods attend
    # only to each particle's M nearest contexts, as the localizer does on large maps
    nearest_contexts: int = 0
    # 'trajectory': T consecutive steps of a driven trajectory; 'random': T random views of
    # the world in random order (the paper's Section V-A)
    queries: str = 'trajectory'

    def filter_config(self):
        """The protocol's particle filter: the transition noise, systematic resampling."""
        s = self.transition_std
        return FilterConfig(transition_std=(s[0], s[1], math.radians(s[2])),
                            resample='systematic', resample_ess_ratio=self.resample_ess_ratio)


def load_episodes(dataset, n, n_contexts, steps, seed, queries='trajectory'):
    """The first ``n`` episodes of a dataset for a seeded, shuffled pass (one per world);
    ``queries`` as :meth:`~dmn_localizer.data.dataset.Dataset.iter_episodes`."""
    out = []
    for ep in dataset.iter_episodes(n_contexts, steps, seed=seed, shuffle=True, loop=False,
                                    queries=queries):
        out.append(ep)
        if len(out) >= n:
            break
    if len(out) < n:
        logger.warning('dataset has %d worlds, evaluating %d episodes instead of %d',
                       len(out), len(out), n)
    return out


def initial_belief(batch, mode, k, cfg, gen):
    """The protocol's initial particles (B, K, 3) for ``mode``: uniform over each world
    ('global'), or the tracking Gaussian (``cfg.tracking_std`` about the true first pose,
    its mean perturbed by the same noise when ``cfg.tracking_perturb_mean``)."""
    if mode == 'global':
        out = [sample_uniform(1, k, float(ws), gen) for ws in batch.world_size]
        return torch.cat(out).to(batch.query_poses.device)
    return initial_particles(batch, k, gen, init_std=cfg.tracking_std,
                             perturb_mean=cfg.tracking_perturb_mean).to(
        batch.query_poses.device)


def _uninformed(batch, particles, fcfg, gen):
    from dmn_localizer.filter import ParticleFilter
    pf = ParticleFilter(fcfg, particles, generator=gen)
    est = []
    for t in range(batch.query_poses.shape[1]):
        if t:
            pf.predict(batch.odometry[:, t])
        est.append(pf.estimate())
    return torch.stack(est, 1)


def _closest_context(batch):
    d = (batch.context_poses[:, None, :, :2] - batch.query_poses[:, :, None, :2]).norm(dim=-1)
    idx = d.argmin(-1)                                                   # (B, T)
    return torch.gather(batch.context_poses, 1, idx[..., None].expand(*idx.shape, 3))


def shuffled_images(episodes, what):
    """Copies of ``episodes`` whose query ('query') or context ('context') images are those
    of the previous episode (poses kept): the image-use diagnostic."""
    out = []
    for i, ep in enumerate(episodes):
        other = episodes[i - 1]
        if what == 'query':
            out.append(dataclasses.replace(ep, query_images=other.query_images))
        elif what == 'context':
            out.append(dataclasses.replace(ep, context_images=other.context_images))
        else:
            raise ValueError(f"shuffle must be 'query' or 'context', got {what!r}")
    return out


@torch.no_grad()
def run_method(method, model, episodes, mode, k, cfg: EvalConfig, n_contexts=None,
               device='cpu', shuffle=None, keep_particles=False):
    """x-y errors (E, T) in metres of ``method`` over ``episodes`` in ``mode`` 'global' or
    'tracking' with K = ``k``. ``shuffle`` 'query' | 'context' rolls those images by one
    episode (diagnostic). Deterministic for ``cfg.seed``."""
    n_contexts = n_contexts or cfg.contexts
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + (0 if mode == 'global' else 1))
    fcfg = cfg.filter_config()
    bsz = max(1, min(len(episodes), cfg.particle_budget // (k * n_contexts)))
    if shuffle:
        episodes = shuffled_images(episodes, shuffle)
    errors = []
    for i in range(0, len(episodes), bsz):
        batch = make_batch(episodes[i:i + bsz], n_contexts, rng, 0.0, cfg.steps, device)
        particles = initial_belief(batch, mode, k, cfg, gen)
        if method in MODEL_METHODS:   # (a regression model's rollout has no filter)
            chunk = max(1, cfg.particle_budget // (len(batch) * n_contexts))
            nearest = cfg.nearest_contexts if method in LIKELIHOOD_METHODS else 0
            est = rollout(model, batch, particles, fcfg, gen, chunk=chunk,
                          nearest_contexts=nearest)['estimates']
        elif method == 'uninformed':
            est = _uninformed(batch, particles, fcfg, gen)
        elif method == 'closest_context':
            est = _closest_context(batch)
        else:
            raise ValueError(f'unknown method {method!r}; valid: {", ".join(METHODS)}')
        errors.append((est[..., :2] - batch.query_poses[..., :2]).norm(dim=-1).cpu())
    return torch.cat(errors).numpy()


def summarise(global_err, tracking_err, cfg: EvalConfig):
    """{'success@1', 'success@5', 'rmse@5', 'success_by_t', 'episodes'} from error arrays
    (E, T)."""
    t_last = cfg.steps - 1
    ok = global_err < cfg.success_m
    return {'episodes': int(ok.shape[0]),
            'success@1': float(ok[:, 0].mean()),
            f'success@{cfg.steps}': float(ok[:, t_last].mean()),
            f'rmse@{cfg.steps}': float(np.sqrt(np.mean(tracking_err[:, t_last] ** 2))),
            'success_by_t': [float(x) for x in ok.mean(0)]}


def evaluate(model, episodes, methods, cfg: EvalConfig, device='cpu'):
    """Run the protocol; returns ``{method: {success@1, success@5, rmse@5, ...}}``.

    ``model``: the DMN for ``dmn``, or a dict ``{method: model}`` for several methods with
    models (:data:`MODEL_METHODS`)."""
    results = {}
    models = model if isinstance(model, dict) else {'dmn': model}
    for method in methods:
        if method not in METHODS:
            raise ValueError(f'unknown method {method!r}; valid: {", ".join(METHODS)}')
        model = models.get(method)
        logger.info('evaluating %s on %d episodes', method, len(episodes))
        g = run_method(method, model, episodes, 'global', cfg.k_global, cfg, device=device)
        t = run_method(method, model, episodes, 'tracking', cfg.k_tracking, cfg, device=device)
        results[method] = summarise(g, t, cfg)
        if method in DIAGNOSTIC_METHODS and cfg.diagnostic:
            for what in ('query', 'context'):
                gs = run_method(method, model, episodes, 'global', cfg.k_global, cfg,
                                device=device, shuffle=what)
                ts = run_method(method, model, episodes, 'tracking', cfg.k_tracking, cfg,
                                device=device, shuffle=what)
                s = summarise(gs, ts, cfg)
                for key in ('success@1', f'success@{cfg.steps}', f'rmse@{cfg.steps}'):
                    results[method][f'{key}_shuffled_{what}'] = s[key]
    return results


def markdown_table(results, cfg: EvalConfig):
    """The paper-style table of :func:`evaluate` results; each success rate with its 95%
    interval over the episodes (Wilson, :mod:`~dmn_localizer.evaluation.intervals`) where
    the results say how many episodes there were."""
    T = cfg.steps
    lines = [f'| method | global success@1 | global success@{T} | tracking rmse@{T} (m) |',
             '|---|---|---|---|']
    for m, r in results.items():
        n = r.get('episodes')
        lines.append(f'| {m} | {percent_with_interval(r["success@1"], n)} | '
                     f'{percent_with_interval(r[f"success@{T}"], n)} | {r[f"rmse@{T}"]:.2f} |')
    for m, d in results.items():
        n = d.get('episodes')
        for what in ('query', 'context'):
            if f'success@1_shuffled_{what}' in d:
                lines.append(f'| {m}, {what} images shuffled | '
                             f'{percent_with_interval(d[f"success@1_shuffled_{what}"], n)} | '
                             f'{percent_with_interval(d[f"success@{T}_shuffled_{what}"], n)} | '
                             f'{d[f"rmse@{T}_shuffled_{what}"]:.2f} |')
    if any(r.get('episodes') for r in results.values()):
        lines += ['', 'In parentheses: the 95% interval of a success rate over the episodes '
                  '(Wilson).']
    return '\n'.join(lines)


def sweep(model, episodes, cfg: EvalConfig, *, ks=(), ncs=(), device='cpu'):
    """DMN global success@T for several K (at cfg.contexts) and several Nc (at k_global):
    ``{'k': {K: success}, 'nc': {Nc: success}}``."""
    out = {'k': {}, 'nc': {}}
    for k in ks:
        e = run_method('dmn', model, episodes, 'global', k, cfg, device=device)
        out['k'][int(k)] = float((e[:, -1] < cfg.success_m).mean())
    for nc in ncs:
        e = run_method('dmn', model, episodes, 'global', cfg.k_global, cfg, n_contexts=nc,
                       device=device)
        out['nc'][int(nc)] = float((e[:, -1] < cfg.success_m).mean())
    return out


@torch.no_grad()
def likelihood_map(model, episode, n_contexts, resolution_m=1.0, n_yaw=8, t=0, device='cpu',
                   chunk=2048):
    """Log-likelihood of query ``t`` over a grid of the world, max over ``n_yaw`` yaws.

    Returns (grid (G, G) with row 0 at y near 0, extent (x0, x1, y0, y1)).
    """
    from dmn_localizer.model.preprocess import images_to_tensor
    size = float(episode.world_size)
    g = int(round(size / resolution_m))
    c = (torch.arange(g, dtype=torch.float32) + 0.5) * resolution_m
    yaw = torch.arange(n_yaw, dtype=torch.float32) * (2 * math.pi / n_yaw) - math.pi
    yy, xx, aa = torch.meshgrid(c, c, yaw, indexing='ij')
    particles = torch.stack([xx, yy, aa], -1).reshape(1, -1, 3).to(device)
    m = model.build_map(images_to_tensor(episode.context_images[None, :n_contexts], device),
                        torch.as_tensor(episode.context_poses[None, :n_contexts], device=device))
    q = model.encode_query(images_to_tensor(episode.query_images[None, t], device))
    ll = model.log_likelihood(m, q, particles, chunk=chunk).view(g, g, n_yaw)
    return ll.max(-1).values.cpu().numpy(), (0.0, size, 0.0, size)


__all__ = ['ALIGNED_METHODS', 'EvalConfig', 'evaluate', 'likelihood_map', 'load_episodes',
           'markdown_table', 'METHODS', 'BASELINE_METHODS', 'DMN_METHODS', 'MODEL_METHODS',
           'model_mismatch', 'run_method', 'summarise', 'sweep']
