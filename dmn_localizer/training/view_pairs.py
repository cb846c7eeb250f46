"""The view-pair recipe: trains the aligned observation model (``architecture: aligned``) to
compare views, on sets of candidate poses where only the images tell the truth apart.

One training sample: a world, a query view (a trajectory step), ``contexts`` views from the
world's context pool (with probability ``overlap_prob`` one of them overlaps the query: at least
``min_overlap`` of its columns are seen by both, from the true depths, so walls in between do
not count), and ``candidates`` poses:

* the truth; poses near it (``near_std``) and farther (``far_std``): coarse to fine;
* the true position turned by 60-180 deg (the same place, another view);
* decoys: the truth's pose relative to its nearest context, re-anchored at the other contexts
  (a particle's pose relative to the views alone cannot tell them from the truth);
* the poses of the world's other views, jittered (elsewhere in free space).

Loss: the cross-entropy of the softmax of the model's log-likelihoods over the candidates
against a Gaussian kernel of each candidate's distance to the truth, the kernel shrinking from
``kernel_start`` to ``kernel_end`` over ``curriculum_steps`` (coarse to fine), plus
``depth_weight`` times the L1 error of the predicted log-depth of every view's columns against
the true depth.

Validation (the go/no-go signal, logged every ``val_every`` steps): on validation worlds, a
query and one context that overlaps it, 64 candidate poses (truth plus Gaussian offsets of 2 m,
2 m, 20 deg) with the truth at a random index: ``pose_top1`` is the share of queries whose truth
scores strictly highest (ties never count: chance 1/64), ``pose_top1_wrong`` the same with
another query's image (the gap is image use), ``top_error_m``/``top_error_deg`` the pose error of
the best candidate. Every ``eval_every`` steps (and at the end) the paper protocol on validation
episodes gives ``val_success@5`` (global, K = 2048) and ``val_rmse@5`` (tracking).

Outputs in the run folder: ``best`` (highest ``pose_top1`` then ``val_success@5``; see
:func:`train_view_pairs`), ``last``, ``final``, ``log.csv`` and ``curve.png`` (metrics against
wall time). Ctrl-C stops after the current step and still writes ``final``.
"""
import dataclasses
from dataclasses import asdict, dataclass, field
import csv
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from dmn_localizer.config import strict_from_dict
from dmn_localizer.util.errors import UserError
from dmn_localizer.geometry import compose, relative, wrap_angle
from dmn_localizer.model.aligned import AlignedMapState, AlignedQueryState
from dmn_localizer.model.column_warp import view_overlap
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.model.io import atomic_write_json, load_model, save_model
from dmn_localizer.filter.rollout import dense_loss
from dmn_localizer.training.view_worlds import load_view_worlds
from dmn_localizer.util.device import select_device

log = logging.getLogger(__name__)

RECIPE = 'view_pairs'
VAL_CANDIDATES = 64
VAL_OFFSET_STD = (2.0, math.radians(20.0))


@dataclass
class ViewPairConfig:
    recipe: str = RECIPE
    train_data: str = 'data/mazes/train'
    val_data: str = 'data/mazes/val'
    model: dict = field(default_factory=dict)   # DMNConfig fields; architecture 'aligned'
    init_from: str = None        # start from this model's weights (same config)
    seed: int = 0
    batch_size: int = 32
    contexts: int = 4
    candidates: int = 64
    overlap_prob: float = 0.6
    min_overlap: float = 0.3
    near_std: tuple = (0.75, 10.0)      # metres, degrees
    far_std: tuple = (2.5, 30.0)
    kernel_start: tuple = (1.5, 20.0)
    kernel_end: tuple = (0.5, 8.0)
    curriculum_steps: int = 2000
    depth_weight: float = 1.0
    # the coarse term: the same cross-entropy over ``coarse_candidates`` poses spread over the
    # world's free space (jittered poses of its views, random yaw, plus a few near the truth)
    # against a wide kernel (metres, degrees): where in the world, from what the views share
    coarse_weight: float = 1.0
    coarse_candidates: int = 64
    coarse_kernel: tuple = (4.0, 90.0)
    # the warp uses the true column depths (where known) in a share of the batches that falls
    # linearly from 1 at step 0 to 0 at this step: the comparison learns on correct warps
    # while the depth head is still poor, and on the predicted depths it will see at run time
    true_depth_steps: int = 2000
    lr: float = 1e-3
    lr_end: float = 1e-4
    grad_clip: float = 10.0
    max_steps: int = 8000
    max_minutes: float = 0.0     # wall-clock budget; 0: none
    threads: int = 2
    device: str = 'auto'
    max_train_worlds: int = 0    # 0: all
    val_every: int = 250
    val_queries: int = 256
    eval_every: int = 2000
    eval_episodes: int = 100

    def __post_init__(self):
        for name in ('near_std', 'far_std', 'kernel_start', 'kernel_end', 'coarse_kernel'):
            setattr(self, name, tuple(float(x) for x in getattr(self, name)))
        if self.recipe != RECIPE:
            raise ValueError(f'recipe must be {RECIPE!r}, got {self.recipe!r}')
        if self.candidates < 32:
            raise ValueError('candidates must be >= 32')
        if self.contexts < 1 or self.batch_size < 2:
            raise ValueError('contexts must be >= 1 and batch_size >= 2')

    def model_config(self, hfov_deg):
        d = {'architecture': 'aligned', 'hfov_deg': hfov_deg, **self.model}
        if d['architecture'] != 'aligned':
            raise ValueError("the view_pairs recipe trains architecture 'aligned' only")
        return DMNConfig.from_dict(d)


def load_view_pair_config(path, overrides=None):
    try:
        with open(path, encoding='utf-8') as f:
            d = yaml.safe_load(f) or {}
    except OSError as exc:
        raise UserError(f'{path}: {exc.strerror}') from None
    d.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return strict_from_dict(ViewPairConfig, d, 'view_pairs config')
    except (TypeError, ValueError) as exc:
        raise UserError(f'{path}: {exc}') from None


def is_view_pair_config(path):
    """Whether the training YAML at ``path`` asks for this recipe (``recipe: view_pairs``)."""
    try:
        with open(path, encoding='utf-8') as f:
            d = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(d, dict) and d.get('recipe') == RECIPE


# ---------------------------------------------------------------------- sampling
def _gaussian(poses, std_m, std_rad, n, rng):
    """n Gaussian perturbations of each pose (B, 3) -> (B, n, 3)."""
    noise = rng.normal(size=poses.shape[:1] + (n, 3)) * np.array([std_m, std_m, std_rad])
    out = poses[:, None] + noise
    out[..., 2] = wrap_angle(out[..., 2])
    return out


def _overlaps(worlds, w, q, ctx):
    """Overlap share (B, C) of query view q (B,) with views ctx (B, C) of worlds w (B,)."""
    P = torch.as_tensor(worlds.poses, dtype=torch.float32)
    D = torch.as_tensor(worlds.depth, dtype=torch.float32)
    cols = D.shape[-1]
    qp, qd = P[w, q][:, None], D[w, q][:, None]
    cp, cd = P[w[:, None], ctx], D[w[:, None], ctx]
    ov = view_overlap(cp, qp.expand_as(cp), qd.expand(cd.shape), cd, cols, worlds.hfov_deg)
    return torch.nan_to_num(ov, nan=0.0).numpy()


def sample_batch(worlds, cfg: ViewPairConfig, rng, overlap_prob=None):
    """One training batch as numpy arrays: ``world`` (B,), ``query`` (B,) view index,
    ``contexts`` (B, N) view indices, ``candidates`` (B, K, 3) with the truth at index 0."""
    B, N, K = cfg.batch_size, cfg.contexts, cfg.candidates
    overlap_prob = cfg.overlap_prob if overlap_prob is None else overlap_prob
    kc, V = worlds.n_context, worlds.poses.shape[1]
    w = rng.integers(worlds.n_worlds, size=B)
    q = rng.integers(kc, V, size=B)
    ctx = np.argsort(rng.random((B, kc)), axis=1)[:, :N]
    ov = _overlaps(worlds, w, q, np.tile(np.arange(kc), (B, 1)))       # (B, Kc)
    for b in range(B):
        good = np.flatnonzero(ov[b] >= cfg.min_overlap)
        if len(good) and rng.random() < overlap_prob and not np.isin(ctx[b], good).any():
            ctx[b, rng.integers(N)] = rng.choice(good)
    truth = worlds.poses[w, q].astype(np.float64)                                 # (B, 3)
    n_near, n_far, n_turn = K // 4, K // 8, K // 8
    n_decoy = K // 4
    n_else = K - 1 - n_near - n_far - n_turn - n_decoy
    near = _gaussian(truth, cfg.near_std[0], math.radians(cfg.near_std[1]), n_near, rng)
    far = _gaussian(truth, cfg.far_std[0], math.radians(cfg.far_std[1]), n_far, rng)
    turn = _gaussian(truth, 0.3, 0.0, n_turn, rng)
    turn[..., 2] = wrap_angle(turn[..., 2] + rng.choice([-1.0, 1.0], size=turn.shape[:2])
                              * rng.uniform(math.radians(60), math.pi, size=turn.shape[:2]))
    cpose = worlds.poses[w[:, None], ctx].astype(np.float64)                       # (B, N, 3)
    nearest = np.linalg.norm(cpose[..., :2] - truth[:, None, :2], axis=-1).argmin(1)
    offset = relative(cpose[np.arange(B), nearest], truth)                         # (B, 3)
    anchor = cpose[np.arange(B)[:, None], rng.integers(N, size=(B, n_decoy))]     # (B, n, 3)
    decoy = compose(anchor, np.broadcast_to(offset[:, None], anchor.shape))
    decoy = decoy + rng.normal(size=decoy.shape) * np.array([0.3, 0.3, math.radians(5)])
    other = worlds.poses[w[:, None], rng.integers(V, size=(B, n_else))].astype(np.float64)
    other[..., :2] += rng.normal(size=other[..., :2].shape)
    other[..., 2] = rng.uniform(-math.pi, math.pi, size=other.shape[:2])
    cand = np.concatenate([truth[:, None], near, far, turn, decoy, other], 1)
    cand[..., 2] = wrap_angle(cand[..., 2])
    nc = cfg.coarse_candidates
    spread = worlds.poses[w[:, None], rng.integers(V, size=(B, nc))].astype(np.float64)
    spread[..., :2] += rng.normal(size=spread[..., :2].shape)
    spread[..., 2] = rng.uniform(-math.pi, math.pi, size=spread.shape[:2])
    spread[:, :nc // 8] = _gaussian(truth, 3.0, math.radians(45.0), nc // 8, rng)
    spread[:, 0] = truth
    spread[..., 2] = wrap_angle(spread[..., 2])
    return dict(world=w, query=q, contexts=ctx, candidates=cand.astype(np.float32),
                coarse=spread.astype(np.float32))


def _tensors(worlds, batch, device):
    w, q, ctx = batch['world'], batch['query'], batch['contexts']
    ci = images_to_tensor(worlds.images[w[:, None], ctx], device)
    qi = images_to_tensor(worlds.images[w, q], device)
    cp = torch.as_tensor(worlds.poses[w[:, None], ctx], device=device)
    cd = torch.as_tensor(worlds.depth[w[:, None], ctx], device=device)
    qd = torch.as_tensor(worlds.depth[w, q], device=device)
    cand = torch.as_tensor(batch['candidates'], device=device)
    return ci, cp, qi, cd, qd, cand


def _depth_error(pred, true):
    """Mean |log pred - log true| over columns with a known depth (NaN: unknown)."""
    ok = torch.isfinite(true)
    if not ok.any():
        return pred.sum() * 0.0
    return (torch.log(pred[ok]) - torch.log(true[ok])).abs().mean()


def training_loss(model, worlds, batch, kernel, cfg, device, true_depth=False):
    """(total loss, candidate cross-entropy, depth error) of one batch; ``kernel`` (m, rad)
    of the fine term; ``true_depth``: the warp uses the true column depths where known (the
    depth head still learns)."""
    ci, cp, qi, cd, qd, cand = _tensors(worlds, batch, device)
    B, N = cp.shape[:2]
    feat, depth, desc = model.encode_columns(torch.cat([ci.flatten(0, 1), qi]))
    J = feat.shape[1]
    true = torch.cat([cd.flatten(0, 1), qd])
    warp_depth = torch.where(torch.isfinite(true), true, depth) if true_depth else depth
    m = AlignedMapState(cp, feat[:B * N].view(B, N, J, -1), warp_depth[:B * N].view(B, N, J),
                        desc[:B * N].view(B, N, -1))
    qs = AlignedQueryState(feat[B * N:], warp_depth[B * N:], desc[B * N:])
    if cfg.coarse_weight > 0:
        cand = torch.cat([cand, torch.as_tensor(batch['coarse'], device=device)], 1)
    ll = model.log_likelihood(m, qs, cand)
    K = cfg.candidates
    truth = cand[:, 0]   # both candidate sets start with the truth
    ce = dense_loss(cand[:, :K], ll[:, :K], truth, *kernel).mean()
    loss = ce
    if cfg.coarse_weight > 0:
        loss = loss + cfg.coarse_weight * dense_loss(
            cand[:, K:], ll[:, K:], truth, cfg.coarse_kernel[0],
            math.radians(cfg.coarse_kernel[1])).mean()
    derr = _depth_error(depth, true)
    return loss + cfg.depth_weight * derr, ce, derr


# ---------------------------------------------------------------------- validation
def validation_set(worlds, n, seed, min_overlap):
    """Fixed validation queries: (world, query view, overlapping context view, candidates
    (n, 64, 3) with the truth at a random index ``truth_index`` (n,)), wrong-query views."""
    rng = np.random.default_rng(seed)
    kc, V = worlds.n_context, worlds.poses.shape[1]
    rows = []
    tries = 0
    while len(rows) < n and tries < 50 * n:
        tries += 1
        w = int(rng.integers(worlds.n_worlds))
        q = int(rng.integers(kc, V))
        ov = _overlaps(worlds, np.array([w]), np.array([q]), np.arange(kc)[None])[0]
        good = np.flatnonzero(ov >= min_overlap)
        if len(good):
            rows.append((w, q, int(rng.choice(good))))
    if not rows:
        raise UserError('no validation query overlaps a context: the view_pairs recipe needs '
                        'true column depths (a simulated dataset with layouts) and enough '
                        'views per world')
    w, q, c = (np.array(x) for x in zip(*rows))
    truth = worlds.poses[w, q].astype(np.float64)
    cand = _gaussian(truth, VAL_OFFSET_STD[0], VAL_OFFSET_STD[1], VAL_CANDIDATES, rng)
    idx = rng.integers(VAL_CANDIDATES, size=len(w))
    cand[np.arange(len(w)), idx] = truth
    wrong = np.roll(np.arange(len(w)), 1)
    return dict(world=w, query=q, context=c, candidates=cand.astype(np.float32),
                truth_index=idx, wrong=wrong)


@torch.no_grad()
def pose_ranking(model, worlds, vset, device, wrong_query=False, batch=64):
    """Tie-safe top-1 of the truth among the candidates, and the best candidate's error."""
    wins, err_m, err_deg = [], [], []
    n = len(vset['world'])
    for i in range(0, n, batch):
        sl = slice(i, i + batch)
        w, c = vset['world'][sl], vset['context'][sl]
        qw = vset['world'][vset['wrong'][sl]] if wrong_query else w
        qv = vset['query'][vset['wrong'][sl]] if wrong_query else vset['query'][sl]
        m = model.build_map(images_to_tensor(worlds.images[w, c][:, None], device),
                            torch.as_tensor(worlds.poses[w, c][:, None], device=device))
        qs = model.encode_query(images_to_tensor(worlds.images[qw, qv], device))
        cand = torch.as_tensor(vset['candidates'][sl], device=device)
        ll = model.log_likelihood(m, qs, cand).cpu()
        ti = torch.as_tensor(vset['truth_index'][sl])
        truth_ll = ll.gather(1, ti[:, None])[:, 0]
        others = ll.scatter(1, ti[:, None], -math.inf).max(1).values
        wins.append((truth_ll > others).float())
        best = cand.cpu()[torch.arange(len(ti)), ll.argmax(1)]
        truth = cand.cpu()[torch.arange(len(ti)), ti]
        err_m.append((best[:, :2] - truth[:, :2]).norm(dim=-1))
        err_deg.append(wrap_angle(best[:, 2] - truth[:, 2]).abs() * 180 / math.pi)
    return (float(torch.cat(wins).mean()), float(torch.cat(err_m).mean()),
            float(torch.cat(err_deg).mean()))


def protocol_success(model, val_data, episodes, device, seed=0):
    """The paper protocol on ``episodes`` validation episodes: (global success@5,
    tracking rmse@5, global success@5 with the query images shuffled)."""
    from dmn_localizer.data.dataset import open_dataset
    from dmn_localizer.evaluation.protocol import EvalConfig, load_episodes, run_method
    cfg = EvalConfig(seed=seed)
    eps = load_episodes(open_dataset(val_data), episodes, cfg.contexts, cfg.steps, cfg.seed)
    g = run_method('aligned', model, eps, 'global', cfg.k_global, cfg, device=device)
    t = run_method('aligned', model, eps, 'tracking', cfg.k_tracking, cfg, device=device)
    gs = run_method('aligned', model, eps, 'global', cfg.k_global, cfg, device=device,
                    shuffle='query')
    return (float((g[:, -1] < cfg.success_m).mean()), float(np.sqrt(np.mean(t[:, -1] ** 2))),
            float((gs[:, -1] < cfg.success_m).mean()))


# ---------------------------------------------------------------------- loop
def _schedule(cfg, step):
    a = min(1.0, step / max(1, cfg.curriculum_steps))
    km = cfg.kernel_start[0] + a * (cfg.kernel_end[0] - cfg.kernel_start[0])
    kd = cfg.kernel_start[1] + a * (cfg.kernel_end[1] - cfg.kernel_start[1])
    return km, math.radians(kd)


def _lr(cfg, step, minutes):
    """Cosine decay from lr to lr_end over max_steps (or max_minutes, whichever ends first)."""
    a = step / max(1, cfg.max_steps)
    if cfg.max_minutes:
        a = max(a, minutes / cfg.max_minutes)
    a = min(1.0, a)
    return cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * a))


def plot_curve(rows, path):
    """PNG of the validation metrics against wall time (minutes)."""
    from dmn_localizer.util.figures import figure, save_png
    val = [r for r in rows if r.get('pose_top1') not in (None, '')]
    if not val:
        return
    t = [float(r['minutes']) for r in val]
    fig = figure(figsize=(10, 3.8))
    ax = fig.subplots(1, 2)
    ax[0].plot(t, [100 * float(r['pose_top1']) for r in val], label='pose top-1')
    ax[0].plot(t, [100 * float(r['pose_top1_wrong']) for r in val],
               label='pose top-1, wrong query')
    ax[0].axhline(100 / VAL_CANDIDATES, color='grey', ls=':', label='chance')
    ev = [r for r in val if r.get('val_success') not in (None, '')]
    if ev:
        ax[0].plot([float(r['minutes']) for r in ev],
                   [100 * float(r['val_success']) for r in ev], 'o-',
                   label='val global success@5')
    ax[0].set_xlabel('wall time (min)')
    ax[0].set_ylabel('%')
    ax[0].legend(fontsize=8)
    ax[1].plot(t, [float(r['depth_error']) for r in val], label='depth |log error|')
    ax[1].plot(t, [float(r['loss']) for r in val], label='train cross-entropy')
    ax[1].set_xlabel('wall time (min)')
    ax[1].legend(fontsize=8)
    save_png(fig, path, dpi=90)


FIELDS = ['step', 'minutes', 'loss', 'depth_error', 'pose_top1', 'pose_top1_wrong',
          'top_error_m', 'top_error_deg', 'val_success', 'val_success_wrong', 'val_rmse']


def train_view_pairs(cfg: ViewPairConfig, out_dir, progress=True):
    """Train; returns a summary dict. ``best`` is the model with the highest validation
    global success@5 at the protocol evaluations (every ``eval_every`` steps and at the end),
    or, before the first, with the highest ``pose_top1``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = select_device(cfg.device)
    if device.type == 'cpu' and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    probe = DMNConfig(architecture='aligned', **{k: v for k, v in cfg.model.items()
                                                 if k != 'architecture'})
    columns = probe.image_size // 2
    train = load_view_worlds(cfg.train_data, columns, cfg.max_train_worlds or None, progress)
    val = load_view_worlds(cfg.val_data, columns, None, progress)
    mcfg = cfg.model_config(train.hfov_deg)
    if cfg.init_from:
        model = load_model(cfg.init_from, device=device, architecture='aligned')
        # the camera is the data's, not the source model's, and the context pooling is the
        # run's: only the network must agree
        if dataclasses.replace(model.config, hfov_deg=mcfg.hfov_deg,
                               context_pooling=mcfg.context_pooling) != mcfg:
            raise UserError(f'{cfg.init_from}: its config differs from the run\'s model '
                            f'({model.config} != {mcfg})')
        model.config = mcfg
        model.set_camera(mcfg.hfov_deg)
    else:
        from dmn_localizer.model import build_model
        model = build_model(mcfg).to(device)
    with open(out / 'config.yaml', 'w', encoding='utf-8') as f:
        yaml.safe_dump(asdict(cfg), f, sort_keys=False)
    vset = validation_set(val, cfg.val_queries, cfg.seed + 1, cfg.min_overlap)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rows, best, best_key = [], None, None
    start = time.perf_counter()
    card = dict(recipe=RECIPE, train_data=cfg.train_data, train_worlds=train.n_worlds,
                val_data=cfg.val_data)

    def validate(step, loss, derr, protocol):
        model.eval()
        top1, em, ed = pose_ranking(model, val, vset, device)
        top1w, _, _ = pose_ranking(model, val, vset, device, wrong_query=True)
        row = dict(step=step, minutes=round((time.perf_counter() - start) / 60, 3),
                   loss=round(loss, 5), depth_error=round(derr, 5), pose_top1=top1,
                   pose_top1_wrong=top1w, top_error_m=round(em, 3), top_error_deg=round(ed, 2),
                   val_success='', val_success_wrong='', val_rmse='')
        if protocol and cfg.eval_episodes > 0:
            s, r, sw = protocol_success(model, cfg.val_data, cfg.eval_episodes, device)
            row.update(val_success=s, val_success_wrong=sw, val_rmse=round(r, 3))
        model.train()
        rows.append(row)
        with open(out / 'log.csv', 'w', newline='', encoding='utf-8') as f:
            wr = csv.DictWriter(f, FIELDS)
            wr.writeheader()
            wr.writerows(rows)
        plot_curve(rows, out / 'curve.png')
        meta = dict(card, steps=step, minutes=row['minutes'], validation=row)
        save_model(model, out / 'last', metadata=meta)
        return row, meta

    model.train()
    bar = tqdm(total=cfg.max_steps, desc='view pairs', unit='step', disable=not progress)
    step, loss_avg, derr_avg = 0, 0.0, 0.0
    try:
        while step < cfg.max_steps:
            if cfg.max_minutes and time.perf_counter() - start > 60 * cfg.max_minutes:
                log.info('wall-clock budget of %.1f min reached', cfg.max_minutes)
                break
            for g in opt.param_groups:
                g['lr'] = _lr(cfg, step, (time.perf_counter() - start) / 60)
            batch = sample_batch(train, cfg, rng)
            teach = rng.random() < 1.0 - step / max(1, cfg.true_depth_steps)
            loss, ce, derr = training_loss(model, train, batch, _schedule(cfg, step), cfg,
                                           device, true_depth=teach)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            k = 0.98 if step > 1 else 0.0
            loss_avg = k * loss_avg + (1 - k) * ce.item()
            derr_avg = k * derr_avg + (1 - k) * derr.item()
            bar.update(1)
            bar.set_postfix(ce=f'{loss_avg:.3f}', depth=f'{derr_avg:.3f}')
            if step % cfg.val_every == 0:
                protocol = cfg.eval_every > 0 and step % cfg.eval_every == 0
                row, meta = validate(step, loss_avg, derr_avg, protocol)
                key = (row['val_success'] if protocol else -1.0, row['pose_top1'])
                if best_key is None or key >= best_key:
                    best_key, best = key, row
                    save_model(model, out / 'best', metadata=meta)
    except KeyboardInterrupt:
        log.warning('interrupted at step %d: writing the final model', step)
    bar.close()
    row, meta = validate(step, loss_avg, derr_avg, cfg.eval_episodes > 0)
    save_model(model, out / 'final', metadata=meta)
    key = (row['val_success'] if row['val_success'] != '' else -1.0, row['pose_top1'])
    if best_key is None or key >= best_key:
        best = row
        save_model(model, out / 'best', metadata=meta)
    summary = dict(steps=step, minutes=row['minutes'], final=row, best=best)
    atomic_write_json(out / 'summary.json', summary)
    return summary


__all__ = ['is_view_pair_config', 'load_view_pair_config', 'pose_ranking', 'sample_batch',
           'train_view_pairs', 'ViewPairConfig', 'validation_set']
