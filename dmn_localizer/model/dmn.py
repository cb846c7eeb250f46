"""The DMN networks and observation model (paper Section IV), in an exact factorised form.

Letters: B batch, N contexts, K particles, H x W images (``h = H/4``, ``w = W/4``), channels
first. Poses are metric ``(x, y, yaw)`` (:mod:`dmn_localizer.geometry`); images enter as float
in [-1, 1] (:func:`~dmn_localizer.model.preprocess.images_to_tensor`).

Networks (filters-kernel-stride-activation; 3x3 stride-1 layers zero-pad by 1 so they keep the
size, 2x2 stride-2 layers do not pad and halve it):

* CNN1 (32-2-2-relu, 32-3-1-relu, 64-2-2-relu, 64-3-1-relu): context image -> view embedding
  ``E_i`` (64, h, w).
* CNN2 (64-3-1-relu, 32-3-1-lin) on ``[E_i, tile(c_ik)]`` -> view key, where ``c_ik`` =
  ``(dx/L, dy/L, sin dyaw, cos dyaw)`` is context i's viewpoint in the frame of particle k and
  ``L = coord_scale_m`` (20 m). Only relative geometry enters, so the log-likelihoods do not
  change when the whole world (contexts and particles) is moved or rotated.
* CNN3 (32-2-2-relu, 32-3-1-relu, 64-2-2-relu, 32-3-1-relu, 64-3-1-relu, 32-3-1-lin): query
  image -> query key (32, h, w). Attention scores: scalar products of view and query keys over
  all 32*h*w elements, divided by ``sqrt(32*h*w) * attention_temperature``; weights ``l_ik``
  from them per :attr:`DMNConfig.attention` (softmax over contexts by default).
* CNN4 (128-3-1-relu, 64-3-1-relu) on ``E_i``, concatenated with the view key (96 channels),
  summed over contexts weighted by ``l_ik``.
* CNN5 (32-2-2-relu, 32-3-1-relu, 64-2-2-relu, 64-3-1-relu, 128-3-1-relu, 64-3-1-relu): query
  features; the first three layers are a trunk shared per :attr:`DMNConfig.query_trunk_sharing`.
* CNN6 (64-3-1-relu x 3, flatten) on ``[attended map (96), query features (64)]``, FC1
  (512-relu, 1) -> unnormalised log-likelihood (last layer linear unless ``final_relu``).

Speed: everything that does not depend on the particle is computed once per context
(:meth:`DMN.build_map`) or once per query (:meth:`DMN.encode_query`). Exact identities used:

* the first CNN2 conv over ``[E_i, tile(c_ik)]`` equals ``conv(E_i)`` (per context) plus
  ``sum_j c_ikj * conv(ones)_j`` (border-aware constant maps, exact under zero padding);
* the scores ``<conv2b(R_ik), q>`` equal ``<R_ik, conv2b^T(q)> + <b, sum q>`` (the adjoint
  conv is applied once per query), so CNN2's second conv runs once per particle on
  ``sum_i l_ik R_ik`` instead of once per particle and context;
* CNN6's first conv is linear in its input, so its CNN4 and CNN5 parts are precomputed per
  context and per query; at inference the view keys' bias (``sum_i l_ik`` times the second
  CNN2 conv's bias) also goes through it once, as a border-aware map scaled per particle.

:meth:`DMN.reference_log_likelihood` is the literal, per-particle formulation used by the tests.
"""
from dataclasses import dataclass
import math

import torch
from torch import nn
import torch.nn.functional as F

from dmn_localizer.geometry import relative
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.layers import (constant_channel_maps, conv_layer, conv_stack,
                                        full_precision, hwc_rows, hwc_view, init_weights,
                                        pose_coords, TRUNK)
from dmn_localizer.model.preprocess import check_images

EMBED_DIM = 64   # D of the view embedding
KEY_DIM = 32     # channels of view and query keys
FEAT4_DIM = 64   # CNN4 output channels
FEAT5_DIM = 64   # CNN5 output channels
CNN6_DIM = 64
FC_DIM = 512


HEAD_CHUNK = 256   # particles per block at inference (attention + convolutions; cache-sized)


@dataclass
class MapState:
    """Per-context precomputations of a map (:meth:`DMN.build_map`); B maps of N contexts.

    The per-particle code forms attention-weighted sums of the flattened maps; they are
    flattened in (row, column, channel) order (P = h*w*64), so a sum views as a channels-last
    map without a copy, and channels-last convolutions are the fast ones on CPU.
    """
    poses: torch.Tensor        # (B, N, 3) metric context viewpoints
    embeddings: torch.Tensor   # (B, N, 64, h, w) view embeddings E_i (CNN1)
    key_pre: torch.Tensor      # (B, N, P) CNN2 first conv of E_i, with its bias
    coord_maps: torch.Tensor   # (4, P) CNN2 first conv of a ones map per coord channel
    feat6: torch.Tensor        # (B, N, P) CNN6 first conv of CNN4(E_i) (no bias)

    def select(self, index):
        """The maps at batch ``index`` (an int keeps a batch dim of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return MapState(self.poses[index], self.embeddings[index], self.key_pre[index],
                        self.coord_maps, self.feat6[index])


@dataclass
class QueryState:
    """Per-query precomputations (:meth:`DMN.encode_query`) for B query images."""
    key: torch.Tensor          # (B, 32, h, w) query key (CNN3)
    key_adjoint: torch.Tensor  # (B, P) conv2b^T(query key), flattened like MapState's maps
    key_bias: torch.Tensor     # (B,) <conv2b bias, spatial sum of the query key>
    feat6: torch.Tensor        # (B, 64, h, w) CNN6 first conv of CNN5 features + its bias
    features: torch.Tensor     # (B, 64, h, w) CNN5 query features

    def select(self, b):
        """The query at batch index ``b`` (int), keeping a batch dim of 1."""
        return QueryState(*(t[b:b + 1] for t in (self.key, self.key_adjoint, self.key_bias,
                                                 self.feat6, self.features)))


class DMN(nn.Module):
    """Differentiable Mapping Network observation model ``l(Q, s, m)`` (see module docstring)."""

    def __init__(self, config: DMNConfig = None):
        super().__init__()
        self.config = config = config or DMNConfig()
        self.h = self.w = config.image_size // 4
        share = config.query_trunk_sharing
        self.context_trunk = conv_stack(TRUNK, 3)
        self.query_trunk = self.context_trunk if share == 'cnn1' else conv_stack(TRUNK, 3)
        self.key_trunk = (self.query_trunk if share in ('cnn1', 'cnn3')
                          else conv_stack(TRUNK, 3))
        self.cnn1_head = conv_stack([(EMBED_DIM, 3, 1, True)], 64)
        self.cnn2a = conv_layer(EMBED_DIM + (4 if config.egocentric else 8), 64, 3, 1)
        self.cnn2a.is_relu = True
        self.cnn2b = conv_layer(64, KEY_DIM, 3, 1)
        self.cnn2b.is_relu = False
        self.cnn3_head = conv_stack([(32, 3, 1, True), (64, 3, 1, True),
                                     (KEY_DIM, 3, 1, False)], 64)
        self.cnn4 = conv_stack([(128, 3, 1, True), (FEAT4_DIM, 3, 1, True)], EMBED_DIM)
        self.cnn5_head = conv_stack([(64, 3, 1, True), (128, 3, 1, True),
                                     (FEAT5_DIM, 3, 1, True)], 64)
        self.cnn6a = conv_layer(FEAT4_DIM + KEY_DIM + FEAT5_DIM, CNN6_DIM, 3, 1)
        self.cnn6a.is_relu = True
        self.cnn6_rest = conv_stack([(CNN6_DIM, 3, 1, True), (CNN6_DIM, 3, 1, True)], CNN6_DIM)
        self.fc1a = nn.Linear(CNN6_DIM * self.h * self.w, FC_DIM)
        self.fc1a.is_relu = True
        self.fc1b = nn.Linear(FC_DIM, 1)
        self.fc1b.is_relu = config.final_relu
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self):
        """He init for relu layers, unit-gain for linear ones, a small last layer, zero biases."""
        init_weights(self, self.fc1b, self.config.last_layer_init_scale)

    # --------------------------------------------------------------- helpers
    def _check_images(self, images, name):
        check_images(images, self.config.image_size, name)

    def _pose_coords(self, poses):
        """Map-frame poses (..., 3) -> (x/L, y/L, sin yaw, cos yaw) (..., 4)."""
        return pose_coords(poses, self.config.coord_scale_m)

    def _coords(self, map_poses, particles):
        """The per-(particle, context) coordinate channels of CNN2: (B, K, N, 4).

        Egocentric: context viewpoints in each particle's frame, (dx/L, dy/L, sin, cos).
        Otherwise: the particle's own map-frame pose (the context's is a per-context input).
        map_poses (B, N, 3), particles (B, K, 3), metric.
        """
        if not self.config.egocentric:
            B, K, N = particles.shape[0], particles.shape[1], map_poses.shape[1]
            return self._pose_coords(particles)[:, :, None, :].expand(B, K, N, 4)
        return self._pose_coords(relative(particles[:, :, None, :], map_poses[:, None, :, :]))

    def _selected_coords(self, map_poses, particles, index):
        """:meth:`_coords` for one map (N, 3), particles (K, 3) and each particle's contexts
        ``index`` (K, M): (K, M, 4)."""
        if not self.config.egocentric:
            return self._pose_coords(particles)[:, None, :].expand(index.shape + (4,))
        return self._pose_coords(relative(particles[:, None, :], map_poses[index]))

    def _attention_logits(self, scores):
        """Raw scalar products (B, K, N) -> the scaled scores the attention normalises."""
        return scores / (math.sqrt(KEY_DIM * self.h * self.w) * self.config.attention_temperature)

    def _attention(self, scores):
        """scores (B, K, N) raw scalar products -> attention weights (B, K, N)."""
        scores = self._attention_logits(scores)
        mode = self.config.attention
        if mode == 'softmax':
            return torch.softmax(scores, dim=-1)
        if mode == 'sigmoid':
            return torch.sigmoid(scores)
        if mode == 'uniform':
            return torch.full_like(scores, 1.0 / scores.shape[-1])
        return scores

    def _head(self, x):
        """CNN6 layers 2-3, flatten, FC1: x (M, 64, h, w) after CNN6's first conv -> (M,).

        At inference a channels-last x goes through FC1's first layer as what it is, a
        convolution with an h x w kernel and no padding, against a cached channels-last view of
        its weight: the same sum, without a transposing copy, and oneDNN's convolution runs
        it 10-15% faster than the matrix product (measured on a Zen 4 CPU).
        """
        if torch.is_grad_enabled():
            y = self.cnn6_rest(F.relu(x))
        else:  # inference: x is a temporary, the activations go in place
            y = x.relu_()
            for layer in self.cnn6_rest:
                y = y.relu_() if isinstance(layer, nn.ReLU) else layer(y)
        if y.shape[0] > 1 and not y.is_contiguous() \
                and y.is_contiguous(memory_format=torch.channels_last) \
                and not (torch.is_grad_enabled() and self.fc1a.weight.requires_grad):
            hidden = F.conv2d(y, self._fc1a_kernel(y.dtype), self.fc1a.bias).flatten(1)
        else:
            hidden = self.fc1a(y.flatten(1))
        out = self.fc1b(F.relu(hidden)).squeeze(-1)
        return F.relu(out) if self.config.final_relu else out

    def _derived(self, name, sources, build, dtype=None):
        """``build()``, cached under ``name`` while the ``sources`` tensors (weights) are
        unchanged: same storage and version (inference only; training changes the versions)."""
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in sources) + (dtype,)
        cached = self.__dict__.get(name)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, build())
            self.__dict__[name] = cached
        return cached[1]

    def _key_bias_map(self, dtype):
        """CNN6's first conv (key part) of the second CNN2 conv's bias tiled over the map:
        (1, 64, h, w) channels-last in ``dtype``."""
        w6, b = self.cnn6a.weight, self.cnn2b.bias

        def build():
            tiled = b[None, :, None, None].expand(1, KEY_DIM, self.h, self.w)
            bias_map = F.conv2d(tiled, w6[:, FEAT4_DIM:FEAT4_DIM + KEY_DIM], padding=1)
            return bias_map.to(dtype).contiguous(memory_format=torch.channels_last)
        return self._derived('_key_bias_map_cache', (w6, b), build, dtype)

    def _fc1a_kernel(self, dtype):
        """FC1's first weight as a channels-last (512, 64, h, w) convolution kernel in
        ``dtype`` (under bf16 autocast the cached bf16 copy spares a 2M-element cast per
        call)."""
        w = self.fc1a.weight
        return self._derived(f'_fc1a_kernel_cache_{dtype}', (w,), lambda: w.view(
            FC_DIM, CNN6_DIM, self.h, self.w).to(dtype).contiguous(
                memory_format=torch.channels_last), dtype)

    def _particle_head(self, r_sum, lam_sum, f6, q6):
        """Everything after the attention, per particle: -> log-likelihoods (M,).

        r_sum (M, P): attention-weighted first-CNN2-layer activations; lam_sum (M,): the sums
        of the attention weights (the second CNN2 conv's bias enters with them); f6 (M, P):
        attention-weighted CNN6-first-conv of the CNN4 features; q6 (1 or M, 64, h, w): the
        query's part of CNN6's first conv. Flattened maps are in (row, column, channel) order,
        so the convolutions run channels-last.
        """
        h, w = self.h, self.w
        w6_key = self.cnn6a.weight[:, FEAT4_DIM:FEAT4_DIM + KEY_DIM]
        if torch.is_grad_enabled():
            vkey = F.conv2d(hwc_view(r_sum, EMBED_DIM, h, w), self.cnn2b.weight, padding=1) \
                + lam_sum.view(-1, 1, 1, 1) * self.cnn2b.bias[:, None, None]
            x = F.conv2d(vkey, w6_key, padding=1) + hwc_view(f6, CNN6_DIM, h, w) + q6
            return self._head(x)
        # inference: the same sums in place, the key bias through CNN6's first conv once
        # (conv(v + l b) = conv(v) + l conv(b), b tiled, zero padding: a border-aware map)
        x = F.conv2d(F.conv2d(hwc_view(r_sum, EMBED_DIM, h, w), self.cnn2b.weight, padding=1),
                     w6_key, padding=1)
        f6 = hwc_view(f6, CNN6_DIM, h, w)
        if x.dtype != f6.dtype:  # autocast: sum in the wider type, as out of place
            x = x.to(torch.promote_types(x.dtype, f6.dtype))
        x.addcmul_(lam_sum.view(-1, 1, 1, 1).to(x.dtype), self._key_bias_map(x.dtype))
        x += f6
        x += q6
        return self._head(x)

    def embed(self, images):
        """CNN1: images (M, 3, H, W) -> view embeddings (M, 64, h, w)."""
        return self.cnn1_head(self.context_trunk(images))

    def query_key(self, images):
        """CNN3: images (M, 3, H, W) -> query keys (M, 32, h, w)."""
        return self.cnn3_head(self.key_trunk(images))

    def query_features(self, images):
        """CNN5: images (M, 3, H, W) -> query features (M, 64, h, w)."""
        return self.cnn5_head(self.query_trunk(images))

    # ------------------------------------------------------------ efficient
    def build_map(self, context_images, context_poses):
        """Embed the contexts once (the paper's map m plus per-context precomputations).

        context_images: (B, N, 3, H, W) float in [-1, 1]; context_poses: (B, N, 3) metric.
        Returns a :class:`MapState`.
        """
        self._check_images(context_images, 'context_images')
        B, N = context_images.shape[:2]
        emb = self.embed(context_images.flatten(0, 1))                    # (BN, 64, h, w)
        return self.map_from_embeddings(emb.view((B, N) + emb.shape[1:]), context_poses)

    def map_from_embeddings(self, embeddings, context_poses):
        """The :class:`MapState` of view embeddings (B, N, 64, h, w) from :meth:`embed` (e.g.
        stored in a map file by the mapper) and their poses (B, N, 3)."""
        B, N = embeddings.shape[:2]
        assert context_poses.shape == (B, N, 3), context_poses.shape
        assert embeddings.shape[2:] == (EMBED_DIM, self.h, self.w), embeddings.shape
        emb = embeddings.flatten(0, 1)
        w2a = self.cnn2a.weight                                   # (64, 64 + 4 or 8, 3, 3)
        # bias once; (BN, P) in (row, column, channel) order, see MapState
        key_pre = hwc_rows(F.conv2d(emb, w2a[:, :EMBED_DIM], self.cnn2a.bias, padding=1))
        # maps[j] = conv of a map that is 1 in coordinate channel j (0 elsewhere): (4|8, P)
        maps = hwc_rows(constant_channel_maps(w2a[:, EMBED_DIM:], self.h, self.w))
        coord_maps = maps[-4:]                        # the per-particle coordinate channels
        if not self.config.egocentric:   # the context's own map-frame viewpoint, per context
            ctx = self._pose_coords(context_poses.to(emb.dtype)).reshape(B * N, 4)
            key_pre = key_pre + torch.matmul(ctx, maps[:4])
        feat6 = hwc_rows(F.conv2d(self.cnn4(emb), self.cnn6a.weight[:, :FEAT4_DIM], padding=1))
        return MapState(context_poses.to(emb.dtype), embeddings,
                        key_pre.reshape(B, N, -1), coord_maps.contiguous(),
                        feat6.reshape(B, N, -1))

    def encode_query(self, query_images):
        """Encode B query images once: (B, 3, H, W) float in [-1, 1] -> :class:`QueryState`."""
        self._check_images(query_images, 'query_images')
        key = self.query_key(query_images)                                # (B, 32, h, w)
        adj = hwc_rows(F.conv_transpose2d(key, self.cnn2b.weight, padding=1))  # (B, P)
        kb = (key.sum(dim=(2, 3)) * self.cnn2b.bias).sum(-1)              # (B,)
        feat = self.query_features(query_images)                          # (B, 64, h, w)
        f6 = F.conv2d(feat, self.cnn6a.weight[:, FEAT4_DIM + KEY_DIM:], self.cnn6a.bias,
                      padding=1).contiguous(memory_format=torch.channels_last)
        return QueryState(key, adj, kb, f6, feat)

    def log_likelihood(self, map_state: MapState, query: QueryState, particles, chunk=None,
                       return_attention=False):
        """Unnormalised log-likelihoods of K particles per query.

        map_state: B maps (N contexts); query: B query encodings; particles: (B, K, 3) metric
        poses. ``chunk`` bounds the particles whose attention is computed at once (its
        (chunk, N, P) pre-activations are the memory-bound part). Returns (B, K), and the
        attention weights (B, K, N) too with ``return_attention``.

        At inference the particles go through in blocks of :data:`HEAD_CHUNK` rows (attention
        and convolutions), so each block's activations stay in cache.
        """
        B, K = particles.shape[:2]
        assert particles.shape == (B, K, 3), particles.shape
        assert map_state.poses.shape[0] == B and query.key.shape[0] == B
        block = K if torch.is_grad_enabled() else max(1, HEAD_CHUNK // B)
        if K <= block:
            return self._log_likelihood_block(map_state, query, particles, chunk,
                                              return_attention)
        parts = [self._log_likelihood_block(map_state, query, particles[:, i:i + block], chunk,
                                            return_attention)
                 for i in range(0, K, block)]
        if return_attention:
            return (torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1))
        return torch.cat(parts, 1)

    def _log_likelihood_block(self, map_state, query, particles, chunk, return_attention):
        """:meth:`log_likelihood` of one block of particles."""
        B, K = particles.shape[:2]
        step = chunk if chunk and K > chunk else K
        parts = [self._attend(map_state, query, particles[:, i:i + step])
                 for i in range(0, K, step)]
        lam = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts], 1)
        r_sum = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts], 1)
        f6 = torch.matmul(lam, map_state.feat6)                              # (B, K, P)
        q6 = query.feat6 if B == 1 else \
            query.feat6[:, None].expand((B, K) + query.feat6.shape[1:]).flatten(0, 1)
        out = self._particle_head(r_sum.view(B * K, -1), lam.sum(-1).view(B * K),
                                  f6.view(B * K, -1), q6).view(B, K)
        return (out, lam) if return_attention else out

    def _attend(self, map_state: MapState, query: QueryState, particles):
        """Attention of particles (B, K, 3) over all contexts: weights (B, K, N) and the
        weighted sums (B, K, P) of the first-CNN2-layer activations (fp32 under autocast, see
        :func:`full_precision`)."""
        with full_precision(particles.device):
            scores, r = self._key_scores(map_state, query, particles)
            B, K, N = scores.shape
            lam = self._attention(scores)                                        # (B, K, N)
            r_sum = torch.matmul(lam.reshape(B * K, 1, N), r.reshape(B * K, N, -1))
            return lam, r_sum.view(B, K, -1)

    def attention_logits(self, map_state: MapState, query: QueryState, particles):
        """The scaled scalar products of each context's view key at each particle with the
        query key, before the attention normalises them over contexts: (B, K, N). They
        compare poses for one context, which the weights (normalised per particle) cannot."""
        with full_precision(particles.device):
            return self._attention_logits(self._key_scores(map_state, query, particles)[0])

    def _key_scores(self, map_state: MapState, query: QueryState, particles):
        """Raw scores <view key, query key> (B, K, N) (the view keys' bias term included) and
        the first-CNN2-layer activations r (B, K, N, P) of particles (B, K, 3)."""
        B, K = particles.shape[:2]
        c = self._coords(map_state.poses, particles)                         # (B, K, N, 4)
        N, P = c.shape[2], map_state.key_pre.shape[-1]
        # first CNN2 layer per (particle, context), flattened: (B, K, N, P). Memory traffic
        # dominates here: one map (inference) takes a fused batched multiply-add whose
        # per-context part is broadcast over the particles (2x faster than a matmul + add)
        if B == 1:
            pre = torch.baddbmm(map_state.key_pre[0].expand(K, N, P), c[0],
                                map_state.coord_maps.expand(K, 4, P))[None]
        else:
            pre = torch.matmul(c, map_state.coord_maps)
            pre += map_state.key_pre[:, None]
        r = F.relu(pre, inplace=True)
        scores = torch.matmul(r.reshape(B, K * N, P),
                              query.key_adjoint.reshape(B, P, 1).to(r.dtype)).view(B, K, N)
        return scores + query.key_bias[:, None, None], r

    def log_likelihood_selected(self, map_state: MapState, query: QueryState, particles, index,
                                attention_chunk=32):
        """Log-likelihoods when each particle attends to its own subset of the map's contexts
        (e.g. its M nearest): the same values as :meth:`log_likelihood` on a map of just those
        contexts, without copying the query or the map per particle.

        map_state: one map (B = 1) of N contexts; query: one query; particles: (1, K, 3);
        index: (K, M) long, the contexts of each particle. Returns (1, K).

        The attention (a memory-bound (k, M, P) pre-activation per chunk) runs over
        ``attention_chunk`` particles at a time, so its working set stays in the CPU cache (32:
        4 MB at M = 8; 2-3% faster than 16 at K = 2048 and equal at K = 256 on a Zen 4 CPU, 128
        slower); at inference, attention and convolutions run over blocks of :data:`HEAD_CHUNK`
        particles.
        """
        assert particles.shape[0] == 1 and map_state.poses.shape[0] == 1
        K, M = index.shape
        assert particles.shape == (1, K, 3), particles.shape
        block = K if torch.is_grad_enabled() else HEAD_CHUNK
        out = [self._selected_block(map_state, query, particles[0, i:i + block],
                                    index[i:i + block], attention_chunk)
               for i in range(0, K, block)]
        return (out[0] if len(out) == 1 else torch.cat(out)).view(1, K)

    def _selected_block(self, map_state, query, particles, index, attention_chunk):
        """:meth:`log_likelihood_selected` of one block: particles (K, 3), index (K, M)."""
        K, M = index.shape
        c = self._selected_coords(map_state.poses[0], particles, index)         # (K, M, 4)
        lam, r_sum = self._selected_attention(map_state, query, c, index, attention_chunk)
        feat6 = map_state.feat6[0]                                                 # (N, P)
        f6 = F.embedding_bag(index, feat6, per_sample_weights=lam.to(feat6.dtype), mode='sum')
        return self._particle_head(r_sum.view(K, -1), lam.sum(-1), f6, query.feat6)

    def _selected_attention(self, map_state, query, c, index, attention_chunk):
        """The attention of :meth:`_selected_block` (coordinates ``c`` (K, M, 4) of each
        particle's contexts ``index`` (K, M)): weights (K, M), weighted sums (K, 1, P), in the
        map's fp32 under autocast (:func:`full_precision`)."""
        key_pre = map_state.key_pre[0]                                          # (N, P)
        with full_precision(key_pre.device):
            P = key_pre.shape[-1]
            adjoint = query.key_adjoint[0].to(key_pre.dtype)
            key_bias, coord_maps = query.key_bias[0], map_state.coord_maps
            c = c.to(key_pre.dtype)
            lams, sums = [], []
            in_place = not torch.is_grad_enabled()   # inference: no copy of the gathered rows
            for i in range(0, index.shape[0], max(1, attention_chunk)):
                idx, ci = index[i:i + attention_chunk], c[i:i + attention_chunk]
                # (k, M, P); index_select copies whole rows (5x faster than key_pre[idx] here)
                rows = key_pre.index_select(0, idx.reshape(-1)).view(idx.shape + (P,))
                maps = coord_maps.expand(idx.shape[0], 4, P)
                if in_place:
                    r = rows.baddbmm_(ci, maps).clamp_min_(0.0)
                else:
                    r = F.relu(torch.baddbmm(rows, ci, maps))
                scores = torch.matmul(r, adjoint)                                      # (k, M)
                lam_i = self._attention(scores + key_bias)
                lams.append(lam_i)
                sums.append(torch.bmm(lam_i[:, None, :], r))                         # (k, 1, P)
            return torch.cat(lams), torch.cat(sums)

    def forward(self, context_images, context_poses, query_images, particles):
        """One observation update's log-likelihoods (efficient path).

        context_images (B, N, 3, H, W), context_poses (B, N, 3), query_images (B, 3, H, W),
        particles (B, K, 3) -> (B, K).
        """
        return self.log_likelihood(self.build_map(context_images, context_poses),
                                   self.encode_query(query_images), particles)

    # ------------------------------------------------------------ reference
    def reference_log_likelihood(self, context_images, context_poses, query_images, particles):
        """The literal formulation (per particle and context, no factorisation), for tests.

        Same inputs and output as :meth:`forward`.
        """
        B, N = context_images.shape[:2]
        K = particles.shape[1]
        h, w = self.h, self.w
        emb = self.embed(context_images.flatten(0, 1)).view(B, N, EMBED_DIM, h, w)
        c = self._coords(context_poses.to(emb.dtype), particles)             # (B, K, N, 4)
        if not self.config.egocentric:  # [context viewpoint, particle pose], map frame
            ctx = self._pose_coords(context_poses.to(emb.dtype))[:, None].expand(B, K, N, 4)
            c = torch.cat([ctx, c], dim=-1)                                  # (B, K, N, 8)
        tiled = c[..., None, None].expand(B, K, N, c.shape[-1], h, w)
        inp = torch.cat([emb[:, None].expand(B, K, N, EMBED_DIM, h, w), tiled], dim=3)
        vkey = self.cnn2b(F.relu(self.cnn2a(inp.reshape(B * K * N, -1, h, w))))
        vkey = vkey.view(B, K, N, KEY_DIM, h, w)
        qkey = self.query_key(query_images)                                  # (B, 32, h, w)
        lam = self._attention(torch.einsum('bknchw,bchw->bkn', vkey, qkey))
        feat4 = self.cnn4(emb.flatten(0, 1)).view(B, 1, N, FEAT4_DIM, h, w)
        values = torch.cat([feat4.expand(B, K, N, FEAT4_DIM, h, w), vkey], dim=3)
        attended = (lam[..., None, None, None] * values).sum(2)              # (B, K, 96, h, w)
        feat5 = self.query_features(query_images)[:, None].expand(B, K, FEAT5_DIM, h, w)
        x = torch.cat([attended, feat5], dim=2).reshape(B * K, -1, h, w)
        return self._head(self.cnn6a(x)).view(B, K)
