"""Nearest-context scoring, the one path every user of a large map takes (the localizer, the
filter rollout, evaluation): each particle attends only to its ``m`` nearest contexts in x-y,
so the cost per particle does not grow with the map."""
import torch

NEAREST_SEARCH_CHUNK = 4096   # particles whose distances to every context are computed at once


def nearest_context_index(context_poses, particles, m):
    """The ``m`` contexts nearest to each particle in x-y distance (a brute-force spatial
    index, in chunks of :data:`NEAREST_SEARCH_CHUNK` particles so the (k, N) distance matrix
    stays bounded): context_poses (N, 3), particles (K, 3) -> indices (K, m) long."""
    ctx_xy = context_poses[:, :2]
    return torch.cat([torch.cdist(part[:, :2], ctx_xy).topk(m, largest=False).indices
                      for part in particles.split(NEAREST_SEARCH_CHUNK)])


def log_likelihood_nearest(model, map_state, query, particles, m, chunk=None, n_contexts=None):
    """Log-likelihoods (B, K) of ``model`` (a :class:`DMN`) when each particle attends only to
    its ``m`` nearest contexts (:func:`nearest_context_index`), as the localizer runs on large
    maps; with ``m`` <= 0 or a map of at most ``m`` contexts, ``model.log_likelihood`` over
    all of them (``chunk`` as there; with ``m`` <= 0 any observation model serves, the
    paper's baselines included). B maps and queries, particles (B, K, 3). ``n_contexts``: the
    map's context count when the caller knows it (a map state need not expose poses)."""
    # m first: the baselines' map states have no poses
    if m <= 0 or (n_contexts if n_contexts is not None else map_state.poses.shape[1]) <= m:
        return model.log_likelihood(map_state, query, particles, chunk=chunk)
    out = []
    for b in range(particles.shape[0]):
        one = map_state.select(b)
        index = nearest_context_index(one.poses[0], particles[b], m)
        out.append(model.log_likelihood_selected(one, query.select(b), particles[b:b + 1],
                                                 index))
    return torch.cat(out)
