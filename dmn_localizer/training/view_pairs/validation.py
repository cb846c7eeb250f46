"""Validation of the view-pair recipe: the truth's rank among candidate poses (with the true
and a wrong query image) and the paper protocol on validation episodes."""
import math

import numpy as np
import torch

from dmn_localizer.geometry import wrap_angle
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.training.view_pairs.sampling import gaussian_poses, overlaps
from dmn_localizer.util.errors import UserError

VAL_CANDIDATES = 64
VAL_OFFSET_STD = (2.0, math.radians(20.0))


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
        ov = overlaps(worlds, np.array([w]), np.array([q]), np.arange(kc)[None])[0]
        good = np.flatnonzero(ov >= min_overlap)
        if len(good):
            rows.append((w, q, int(rng.choice(good))))
    if not rows:
        raise UserError('no validation query overlaps a context: the view_pairs recipe needs '
                        'true column depths (a simulated dataset with layouts) and enough '
                        'views per world')
    w, q, c = (np.array(x) for x in zip(*rows))
    truth = worlds.poses[w, q].astype(np.float64)
    cand = gaussian_poses(truth, VAL_OFFSET_STD[0], VAL_OFFSET_STD[1], VAL_CANDIDATES, rng)
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


def protocol_success(model, val_data, episodes, device, seed=0, queries='trajectory'):
    """The paper protocol on ``episodes`` validation episodes (query views drawn as
    ``queries``): (global success@5, tracking rmse@5, global success@5 with the query images
    shuffled)."""
    from dmn_localizer.data.dataset import open_dataset
    from dmn_localizer.evaluation.protocol import EvalConfig, load_episodes, run_method
    cfg = EvalConfig(seed=seed, queries=queries)
    eps = load_episodes(open_dataset(val_data), episodes, cfg.contexts, cfg.steps, cfg.seed,
                        queries=queries)
    g = run_method('aligned', model, eps, 'global', cfg.k_global, cfg, device=device)
    t = run_method('aligned', model, eps, 'tracking', cfg.k_tracking, cfg, device=device)
    gs = run_method('aligned', model, eps, 'global', cfg.k_global, cfg, device=device,
                    shuffle='query')
    return (float((g[:, -1] < cfg.success_m).mean()), float(np.sqrt(np.mean(t[:, -1] ** 2))),
            float((gs[:, -1] < cfg.success_m).mean()))
