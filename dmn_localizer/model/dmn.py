"""The DMN observation model (paper Section IV), in an exact factorised form.

Letters: B batch, N contexts, K particles, H x W images (``h = H/4``, ``w = W/4``), channels
first. Poses are metric ``(x, y, yaw)`` (:mod:`dmn_localizer.geometry`); images enter as float
in [-1, 1] (:func:`~dmn_localizer.model.preprocess.images_to_tensor`).

The networks are :class:`~dmn_localizer.model.dmn_networks.DMNNetworks` (see
:mod:`dmn_localizer.model.dmn_networks` for their layers); :class:`DMN` evaluates them
for K particles per query through the observation-model interface (``build_map``,
``encode_query``, ``log_likelihood``, ``log_likelihood_selected``).

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

:meth:`DMNNetworks.reference_log_likelihood` (the literal, per-particle formulation) is what
the tests compare this with.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dmn_localizer.model.dmn_networks import CNN6_DIM, DMNNetworks, EMBED_DIM, FEAT4_DIM, KEY_DIM
from dmn_localizer.model.layers import constant_channel_maps, full_precision, hwc_rows, hwc_view


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


class DMN(DMNNetworks):
    """Differentiable Mapping Network observation model ``l(Q, s, m)`` (see module docstring)."""

    def _key_bias_map(self, dtype):
        """CNN6's first conv (key part) of the second CNN2 conv's bias tiled over the map:
        (1, 64, h, w) channels-last in ``dtype``."""
        w6, b = self.cnn6a.weight, self.cnn2b.bias

        def build():
            tiled = b[None, :, None, None].expand(1, KEY_DIM, self.h, self.w)
            bias_map = F.conv2d(tiled, w6[:, FEAT4_DIM:FEAT4_DIM + KEY_DIM], padding=1)
            return bias_map.to(dtype).contiguous(memory_format=torch.channels_last)
        return self._derived('_key_bias_map_cache', (w6, b), build, dtype)

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
