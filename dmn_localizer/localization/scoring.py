"""Scoring camera poses against the map: the model's log-likelihoods, the floor outside it.

Outside the map (``max_context_distance``). A particle whose camera is farther than
``max_context_distance`` from every map context has no view the model could compare the
image with; the model's score there is an extrapolation (the DMN never saw such poses in
training) and could pull the belief outside the mapped area, even behind its walls. Such a
particle is not scored by the model: it gets the update's *no-evidence floor*, the lowest
log-likelihood of the map's own context poses (at most :data:`FLOOR_CONTEXTS` of them, evenly
spread), so it never outscores a mapped pose whose view matches, and when every particle is
outside the weights stay as they are. Near a context the model's scores are unchanged. Random
reference poses of the health check that are outside do not count in the belief score.

:class:`MapScoring` is the observation side of
:class:`~dmn_localizer.localization.localizer.Localizer` (pure torch, no rclpy).
"""
import math

import torch

from dmn_localizer.model.nearest import log_likelihood_nearest, nearest_context_index

# default (particle, context) pairs whose attention is computed at once (the ``chunk``
# argument): small enough to stay in cache, and bounded memory whatever the map size.
# Measured at Nc = 4 (128 particles a call): 512 pairs take K=2048 from 321 to 220 ms and
# K=8192 from 1,465 to 1,119 ms against 1024. (The convolutions after the attention run in
# blocks of dmn.HEAD_CHUNK particles.)
PAIRS_PER_CHUNK = 512

# Context poses scored for the no-evidence floor (see the module docstring), evenly spread
# over the map: a bounded cost per update, and only when some particle is outside the map.
FLOOR_CONTEXTS = 64


class MapScoring:
    """Log-likelihoods of camera poses for an encoded query on the loaded map. A mixin of
    :class:`~dmn_localizer.localization.localizer.Localizer`, which sets what it reads:
    ``model``, ``nearest_contexts`` (the count in use), ``config`` (``max_context_distance``;
    both read at every use),
    ``map_state``, ``map_size``, ``context_poses`` (N, 3), ``chunk`` and ``_floor`` (the
    floor of the last query, None after a map change)."""

    def log_likelihood(self, query, cam):
        """Log-likelihoods (1, K) of camera poses ``cam`` (1, K, 3) for an encoded query: the
        model's for poses within ``max_context_distance`` of a map context, the no-evidence
        floor (:meth:`no_evidence_floor`) for the others."""
        return self._scores(query, cam)[0]

    def _scores(self, query, cam):
        """(:meth:`log_likelihood` (1, K), the outside mask (K,) or None when the test is
        off). One nearest-context search serves both the outside test and the model's
        nearest-context scoring."""
        c, nearest = self.config, self.nearest_contexts
        selected = 0 < nearest < self.map_size
        index = outside = None
        if selected or (c.max_context_distance > 0 and self.context_poses is not None):
            index = nearest_context_index(self.context_poses, cam[0],
                                          nearest if selected else 1)  # nearest first
        if c.max_context_distance > 0 and index is not None:
            d = torch.linalg.vector_norm(cam[0, :, :2] - self.context_poses[index[:, 0], :2],
                                         dim=-1)
            outside = d > c.max_context_distance
        index = index if selected else None
        if outside is None or not bool(outside.any()):
            return self._model_scores(query, cam, index), outside
        ll = torch.empty(cam.shape[:2], device=cam.device)
        ll[0, outside] = self.no_evidence_floor(query)
        inside = ~outside
        if bool(inside.any()):
            ll[0, inside] = self._model_scores(
                query, cam[:, inside], None if index is None else index[inside]).float()[0]
        return ll, outside

    def no_evidence_floor(self, query):
        """The lowest model log-likelihood of the map's context poses (at most
        :data:`FLOOR_CONTEXTS`, evenly spread) for this query: a pose outside the map scores
        as the least-matching mapped view. Computed once per query."""
        if self._floor is not None and self._floor[0] is query:
            return self._floor[1]
        n = self.map_size
        pick = torch.linspace(0, n - 1, min(n, FLOOR_CONTEXTS)).round().long()
        ll = self.model_log_likelihood(query, self.context_poses[pick][None]).float()[0]
        ll = ll[torch.isfinite(ll)]
        floor = float(ll.min()) if ll.numel() else -math.inf
        self._floor = (query, floor)
        return floor

    @staticmethod
    def _without_outside(ref_ll, outside, start=0):
        """Reference log-likelihoods with the outside poses' (``outside[start:]``) set to NaN
        (not counted)."""
        if outside is None:
            return ref_ll
        return torch.where(outside[start:], torch.full_like(ref_ll, math.nan), ref_ll)

    def model_log_likelihood(self, query, cam):
        """The model's log-likelihoods (1, K) of camera poses ``cam`` (1, K, 3).

        With more than ``nearest_contexts`` contexts in the map, each particle attends only to
        its M nearest contexts (x-y distance): the per-particle cost no longer grows with the
        map, and the attention sees as many contexts as in training.
        """
        # the map size is the localizer's own count: the map state may be any observation
        # model's (the tests' synthetic models keep an opaque one)
        return log_likelihood_nearest(self.model, self.map_state, query, cam,
                                      self.nearest_contexts,
                                      chunk=max(1, self.chunk // self.map_size),
                                      n_contexts=self.map_size)

    def _model_scores(self, query, cam, index):
        """The model's log-likelihoods of ``cam`` with each pose's nearest contexts ``index``
        (K, M) already found, or over every context when None (as :meth:`model_log_likelihood`
        would choose)."""
        if index is None:
            return self.model.log_likelihood(self.map_state, query, cam,
                                             chunk=max(1, self.chunk // self.map_size))
        return self.model.log_likelihood_selected(self.map_state, query, cam, index)
