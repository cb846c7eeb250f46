"""The geometry-aligned observation model (``architecture: aligned``): our addition beside the
paper's DMN, behind the same interface (map of contexts, per-particle log-likelihood).

The DMN learns to compare a query with a context through a late-fused relative pose, which on
our CPU budget learns a proximity score instead of a view comparison. This model makes the
comparison explicit with geometry (:mod:`dmn_localizer.model.column_warp`):

* one shared **column encoder** for contexts and queries: an image (3, S, S) becomes J = S/2
  columns, each with a unit feature vector (``feature_dim``) and a predicted depth (metres;
  supervised by the true column depth in training), plus a unit global descriptor;
* for each (particle, context): the particle's camera pose in the context camera's frame; each
  query column's ray and predicted depth give a point, which projects to a continuous column of
  the context (masked when behind it or outside its field of view): a 2.5D warp that handles
  rotation and translation. Per query column: the cosine similarity with the context's
  features there (linear interpolation of the query-by-context similarity matrix, computed once
  per query and context), the log-depth residual against the context's own depth there
  (occlusion and inconsistency), and whether it is visible;
* a per-column MLP, pooled over visible columns, with the visible share, the global
  descriptor similarity and Fourier features of the relative pose, gives a per-context score
  ``s_ik``: a log-likelihood ratio against "this context tells nothing" (0 is neutral);
* contexts combine by ``context_pooling``: ``sum`` gives ``sum_i s_ik`` (every context is
  independent evidence); ``overlap_attention`` gives
  ``log sum_i w_ik exp(s_ik) / sum_i w_ik`` with ``w_ik`` the share of the query's columns
  context i sees from particle k (floored at :data:`MIN_OVERLAP_WEIGHT`): the egocentric
  attention of the DMN made explicit, which does not grow with the number of near-duplicate
  views in a dense map. ``return_attention`` gives each context's share in the score.

``warp: false`` is the ablation without geometry (same network): query column j is compared
with context column j, the depth residual and visibility are dropped (all columns count), so
only the relative pose features tell where the particle is relative to the view.

A depth camera's measured column depths (:mod:`dmn_localizer.depth`) may replace the predicted
ones: ``depth`` in :meth:`AlignedModel.encode_columns` and the methods built on it (NaN keeps
the prediction for that column).

The camera enters as the horizontal field of view ``hfov_deg`` (the model card records the
training camera's); :meth:`AlignedModel.set_camera` adapts a loaded model to another camera.
Everything depends only on relative poses, so moving the whole world (contexts and particles
together) does not change a log-likelihood.

Cost per particle and context: J column warps, two scalar gathers and a 3-16-16 MLP per column,
then one small MLP: no image-sized tensor per particle.
"""
from dataclasses import dataclass, replace
import math

import torch
from torch import nn
import torch.nn.functional as F

from dmn_localizer.depth import pool_columns
from dmn_localizer.geometry import relative
from dmn_localizer.model.column_warp import MIN_FORWARD_M, sample_columns, warp_columns
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.preprocess import check_images

COLUMN_HIDDEN = 16
HEAD_HIDDEN = 64
POSE_SCALE_M = 8.0      # relative offsets are divided by this before the Fourier features
POSE_FREQUENCIES = 3    # sin/cos of 2^f * pi * offset / POSE_SCALE_M, f = 0..2
RESIDUAL_CLIP = 2.0     # log-depth residuals are clipped to +-this
PARTICLE_BLOCK = 4096   # particle-context pairs per block at inference (bounds memory)
MIN_OVERLAP_WEIGHT = 1e-3  # floor of a context's overlap weight in 'overlap_attention'
LOG_DEPTH_OFFSET = math.log(4.0)   # the depth head's output 0 means 4 m


@dataclass
class AlignedMapState:
    """B maps of N contexts: viewpoints, unit column features, column depths, descriptors."""
    poses: torch.Tensor        # (B, N, 3) metric context viewpoints
    features: torch.Tensor     # (B, N, J, D) unit column features
    depth: torch.Tensor        # (B, N, J) column depths (m)
    descriptor: torch.Tensor   # (B, N, D) unit global descriptors

    def select(self, index):
        """The maps at batch ``index`` (an int keeps a batch dim of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return AlignedMapState(self.poses[index], self.features[index], self.depth[index],
                               self.descriptor[index])


@dataclass
class AlignedQueryState:
    """B encoded query images."""
    features: torch.Tensor     # (B, J, D)
    depth: torch.Tensor        # (B, J)
    descriptor: torch.Tensor   # (B, D)

    def select(self, b):
        return AlignedQueryState(self.features[b:b + 1], self.depth[b:b + 1],
                                 self.descriptor[b:b + 1])


def _conv(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class AlignedModel(nn.Module):
    """See the module docstring. ``config``: a :class:`DMNConfig` with architecture
    'aligned' (``image_size``, ``hfov_deg``, ``feature_dim``, ``warp`` apply)."""

    regresses_pose = False
    takes_depth = True   # measured column depths may replace the predicted ones

    def __init__(self, config: DMNConfig = None):
        super().__init__()
        self.config = config or DMNConfig(architecture='aligned')
        c = self.config
        s = c.image_size
        self.columns = s // 2
        self.h = s // 8
        self.w = self.columns
        self.hfov_deg = float(c.hfov_deg)
        d = c.feature_dim
        self.trunk = nn.Sequential(
            _conv(3, 32, stride=2), nn.ReLU(),                        # S/2 x S/2
            _conv(32, 64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=(2, 1), padding=1), nn.ReLU(),   # S/4 x S/2
            nn.Conv2d(64, 96, 3, stride=(2, 1), padding=1), nn.ReLU())   # S/8 x S/2
        flat = 96 * self.h
        self.column_mix = nn.Sequential(nn.Conv1d(flat, 128, 3, padding=1), nn.ReLU())
        self.feature_out = nn.Conv1d(128, d, 1)
        self.depth_out = nn.Sequential(nn.Conv1d(128, 32, 1), nn.ReLU(), nn.Conv1d(32, 1, 1))
        self.descriptor_out = nn.Linear(128, d)
        self.column_mlp = nn.Sequential(nn.Linear(3, COLUMN_HIDDEN), nn.ReLU(),
                                        nn.Linear(COLUMN_HIDDEN, COLUMN_HIDDEN), nn.ReLU())
        n_pose = 4 * POSE_FREQUENCIES + 3
        self.head = nn.Sequential(nn.Linear(COLUMN_HIDDEN + 2 + n_pose, HEAD_HIDDEN), nn.ReLU(),
                                  nn.Linear(HEAD_HIDDEN, HEAD_HIDDEN), nn.ReLU(),
                                  nn.Linear(HEAD_HIDDEN, 1))
        self.reset_parameters()

    # ------------------------------------------------------------------ setup
    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity='relu')
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.head[-1].weight.mul_(0.1)
            self.depth_out[-1].weight.mul_(0.1)

    @property
    def last_layer(self):
        return self.head[-1]

    def set_camera(self, hfov_deg):
        """Use another camera's horizontal field of view (degrees) from now on."""
        if not 1.0 <= float(hfov_deg) < 180.0:
            raise ValueError(f'hfov_deg must be within [1, 180), got {hfov_deg}')
        self.hfov_deg = float(hfov_deg)

    def set_context_pooling(self, pooling):
        """Combine the contexts by ``pooling`` (:data:`~dmn_localizer.model.config.
        CONTEXT_POOLINGS`) from now on: how dense the map is decides which suits it."""
        self.config = replace(self.config, context_pooling=pooling)

    # ------------------------------------------------------------------ images
    def measured_depth(self, depth, m):
        """Measured column depths (M, W) (m; +inf: no reading, NaN: no frame; W a multiple of
        J, e.g. the image width) -> (M, J): the median of each model column's W / J measured
        columns (of an even count, the lower one: the nearer surface)."""
        depth = torch.as_tensor(depth, dtype=torch.float32)
        J = self.columns
        if depth.dim() != 2 or depth.shape[0] != m or depth.shape[1] % J:
            raise ValueError(f'depth must be ({m}, a multiple of {J}) column depths, got '
                             f'{tuple(depth.shape)}')
        return torch.from_numpy(pool_columns(depth.cpu().numpy(), J))

    def encode_columns(self, images, depth=None, depth_range=0.0):
        """images (M, 3, S, S) in [-1, 1] -> unit features (M, J, D), depths (M, J) (m),
        unit descriptors (M, D). ``depth`` (M, W): measured column depths (m) that replace
        the predicted ones where finite (:meth:`measured_depth`); +inf marks a column the
        depth camera read nothing in, NaN one without a depth frame (:mod:`dmn_localizer.
        depth`). ``depth_range`` (m, > 0): the depth camera's range, to which the predicted
        depth of a +inf column is raised (0: kept)."""
        check_images(images, self.config.image_size, 'images')
        x = self.trunk(images)                                    # (M, 96, S/8, J)
        x = self.column_mix(x.flatten(1, 2))                      # (M, 128, J)
        feat = F.normalize(self.feature_out(x), dim=1).transpose(1, 2)
        log_depth = self.depth_out(x)[:, 0] + LOG_DEPTH_OFFSET
        valid = (MIN_FORWARD_M, 100.0)
        predicted = torch.exp(log_depth.clamp(*(math.log(v) for v in valid)))
        if depth is None:
            depth = predicted
        else:
            measured = self.measured_depth(depth, len(images)).to(predicted)
            fill = predicted
            if depth_range > 0:   # +inf: no reading, so beyond the sensor's range
                fill = torch.where(measured == math.inf,
                                   predicted.clamp_min(float(depth_range)), predicted)
            depth = torch.where(torch.isfinite(measured), measured.clamp(*valid), fill)
        desc = F.normalize(self.descriptor_out(x.mean(-1)), dim=-1)
        return feat, depth, desc

    def embed(self, images, depth=None, depth_range=0.0):
        """A context's stored embedding (M, 2D + 1, J): column features (rows 0..D-1), the
        log-depth (row D) and the descriptor repeated over the columns (rows D+1..2D).
        ``depth``, ``depth_range``: measured column depths, as in :meth:`encode_columns`."""
        feat, depth, desc = self.encode_columns(images, depth, depth_range)
        return torch.cat([feat.transpose(1, 2), torch.log(depth)[:, None],
                          desc[..., None].expand(-1, -1, self.columns)], 1)

    def map_from_embeddings(self, embeddings, context_poses):
        """The map of stored embeddings (B, N, 2D + 1, J) from :meth:`embed` and poses."""
        B, N = embeddings.shape[:2]
        d = self.config.feature_dim
        assert embeddings.shape[2:] == (2 * d + 1, self.columns), embeddings.shape
        assert context_poses.shape == (B, N, 3), context_poses.shape
        feat = embeddings[:, :, :d].transpose(2, 3)
        depth = torch.exp(embeddings[:, :, d])
        desc = embeddings[:, :, d + 1:, 0]
        return AlignedMapState(context_poses.to(feat.dtype), feat, depth, desc)

    def build_map(self, context_images, context_poses, depth=None, depth_range=0.0):
        """context_images (B, N, 3, S, S), context_poses (B, N, 3) -> :class:`AlignedMapState`.
        ``depth`` (B, N, W), ``depth_range``: measured column depths, as in
        :meth:`encode_columns`."""
        B, N = context_images.shape[:2]
        feat, depth, desc = self.encode_columns(
            context_images.flatten(0, 1), None if depth is None else
            torch.as_tensor(depth).flatten(0, 1), depth_range)
        return AlignedMapState(context_poses.to(feat.dtype), feat.view(B, N, *feat.shape[1:]),
                               depth.view(B, N, -1), desc.view(B, N, -1))

    def encode_query(self, query_images, depth=None, depth_range=0.0):
        """query_images (B, 3, S, S) -> :class:`AlignedQueryState`; ``depth`` (B, W),
        ``depth_range``: measured column depths, as in :meth:`encode_columns`."""
        return AlignedQueryState(*self.encode_columns(query_images, depth, depth_range))

    # ------------------------------------------------------------------ scores
    def _pose_features(self, rel):
        """Fourier features of the particle's pose in the context frame (..., 3) -> (..., F)."""
        xy = rel[..., :2] / POSE_SCALE_M
        freq = (2.0 ** torch.arange(POSE_FREQUENCIES, device=rel.device, dtype=rel.dtype)
                ) * math.pi
        ang = (xy[..., None] * freq).flatten(-2)                        # (..., 2F)
        dist = rel[..., :2].norm(dim=-1, keepdim=True) / (4 * POSE_SCALE_M)
        return torch.cat([torch.sin(ang), torch.cos(ang), torch.sin(rel[..., 2:]),
                          torch.cos(rel[..., 2:]), dist], -1)

    @staticmethod
    def appearance(map_state, query):
        """What depends on the query and the contexts but not on the particles, computed once
        per query and map: the cosine similarity of every query column with every context
        column (B, N, Jq, Jc) and of the global descriptors (B, N)."""
        sim = torch.einsum('bjd,bnkd->bnjk', query.features, map_state.features)
        glob = torch.einsum('bd,bnd->bn', query.descriptor, map_state.descriptor)
        return sim, glob

    def context_scores(self, map_state, query, particles, index=None, appearance=None):
        """Per-context scores ``s_ik`` (B, K, N) (or (1, K, M) for the contexts ``index``
        (K, M) of each particle, B = 1) and the visible share of the query's columns.
        ``appearance``: :meth:`appearance` of this map and query, if already computed."""
        sim, glob = appearance or self.appearance(map_state, query)
        ctx_pose, ctx_depth = map_state.poses, map_state.depth
        parts = particles[:, :, None]                                  # (B, K, 1, 3)
        if index is not None:   # one map: gather each particle's own contexts
            ctx_pose = ctx_pose[0][index][None]                        # (1, K, M, 3)
            sim = sim[0][index][None]                                  # (1, K, M, Jq, Jc)
            ctx_depth = ctx_depth[0][index][None]                      # (1, K, M, Jc)
            glob = glob[0][index][None]                                # (1, K, M)
        else:
            ctx_pose = ctx_pose[:, None]                               # (B, 1, N, 3)
            sim = sim[:, None]                                         # (B, 1, N, Jq, Jc)
            ctx_depth = ctx_depth[:, None]                             # (B, 1, N, Jc)
            glob = glob[:, None]                                       # (B, 1, N)
        rel = relative(ctx_pose, parts)                                # (B, K, N, 3)
        J = self.columns
        qd = query.depth[:, None, None]                                # (B, 1, 1, J)
        if self.config.warp:
            u, f, valid = warp_columns(rel, qd, J, self.hfov_deg)     # (B, K, N, J)
            col_sim = sample_columns(sim, u[..., None])[..., 0]
            ctx_d = sample_columns(ctx_depth, u)
            resid = (torch.log(f.clamp_min(MIN_FORWARD_M)) - torch.log(ctx_d)).clamp(
                -RESIDUAL_CLIP, RESIDUAL_CLIP)
            vis = valid.to(col_sim.dtype)
        else:   # the ablation: column j against column j, no geometry
            col_sim = torch.diagonal(sim, dim1=-2, dim2=-1).expand(rel.shape[:-1] + (J,))
            resid = torch.zeros_like(col_sim)
            vis = torch.ones_like(col_sim)
        x = torch.stack([col_sim * vis, resid * vis, vis], -1)       # (B, K, N, J, 3)
        h = self.column_mlp(x) * vis[..., None]
        share = vis.mean(-1, keepdim=True)                             # (B, K, N, 1)
        pooled = h.sum(-2) / (vis.sum(-1, keepdim=True) + 1.0)
        glob = glob.expand(rel.shape[:-1])[..., None]
        z = torch.cat([pooled, share, glob, self._pose_features(rel)], -1)
        return self.head(z)[..., 0], share[..., 0]

    def _log_likelihood(self, map_state, query, particles, index=None, return_attention=False,
                        appearance=None):
        s, share = self.context_scores(map_state, query, particles, index, appearance)
        if self.config.context_pooling == 'sum':
            logits, ll = s, s.sum(-1)
        else:
            w = torch.log(share.clamp_min(MIN_OVERLAP_WEIGHT))
            logits = s + w
            ll = torch.logsumexp(logits, -1) - torch.logsumexp(w, -1)
        return (ll, torch.softmax(logits, -1)) if return_attention else ll

    def log_likelihood(self, map_state, query, particles, chunk=None, return_attention=False):
        """Unnormalised log-likelihoods (B, K) of particles (B, K, 3) (camera poses); with
        ``return_attention`` also each context's share (B, K, N). ``chunk``: particles per
        block (default: blocks of :data:`PARTICLE_BLOCK` particle-context pairs)."""
        B, K = particles.shape[:2]
        assert particles.shape == (B, K, 3), particles.shape
        N = map_state.poses.shape[1]
        block = chunk or max(1, PARTICLE_BLOCK // max(1, B * N))
        app = self.appearance(map_state, query)
        if torch.is_grad_enabled() or K <= block:
            return self._log_likelihood(map_state, query, particles,
                                        return_attention=return_attention, appearance=app)
        parts = [self._log_likelihood(map_state, query, particles[:, i:i + block],
                                      return_attention=return_attention, appearance=app)
                 for i in range(0, K, block)]
        if return_attention:
            return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
        return torch.cat(parts, 1)

    def log_likelihood_selected(self, map_state, query, particles, index):
        """Log-likelihoods (1, K) when particle k uses only the contexts ``index[k]`` (K, M)
        of one map (B = 1): the same as :meth:`log_likelihood` on a map of those contexts."""
        K, M = index.shape
        assert particles.shape == (1, K, 3) and map_state.poses.shape[0] == 1
        block = max(1, PARTICLE_BLOCK // M)
        app = self.appearance(map_state, query)
        out = [self._log_likelihood(map_state, query, particles[:, i:i + block],
                                    index=index[i:i + block], appearance=app)
               for i in range(0, K, block)]
        return torch.cat(out, 1)

    def forward(self, context_images, context_poses, query_images, particles):
        m = self.build_map(context_images, context_poses)
        return self.log_likelihood(m, self.encode_query(query_images), particles)

    def reference_log_likelihood(self, context_images, context_poses, query_images, particles):
        """Literal formulation for tests: each particle scored alone against each context."""
        m = self.build_map(context_images, context_poses)
        q = self.encode_query(query_images)
        B, K = particles.shape[:2]
        out = torch.empty(B, K, dtype=particles.dtype, device=particles.device)
        for b in range(B):
            for k in range(K):
                out[b, k] = self._log_likelihood(m.select(b), q.select(b),
                                                 particles[b:b + 1, k:k + 1])[0, 0]
        return out


__all__ = ['AlignedMapState', 'AlignedModel', 'AlignedQueryState']
