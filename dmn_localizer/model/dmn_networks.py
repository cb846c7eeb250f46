"""The DMN's networks (paper Section IV) and their literal formulation, the tests' oracle.

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

:meth:`DMNNetworks.reference_log_likelihood` evaluates them literally, per particle and context;
the observation model (:class:`dmn_localizer.model.dmn.DMN`) computes the same values
factorised.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from dmn_localizer.geometry import relative
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.layers import conv_layer, conv_stack, init_weights, pose_coords, TRUNK
from dmn_localizer.model.preprocess import check_images

EMBED_DIM = 64   # D of the view embedding
KEY_DIM = 32     # channels of view and query keys
FEAT4_DIM = 64   # CNN4 output channels
FEAT5_DIM = 64   # CNN5 output channels
CNN6_DIM = 64
FC_DIM = 512


class DMNNetworks(nn.Module):
    """The DMN's networks, their building blocks and the literal formulation (see module
    docstring); :class:`~dmn_localizer.model.dmn.DMN` adds the factorised inference."""

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

    def _fc1a_kernel(self, dtype):
        """FC1's first weight as a channels-last (512, 64, h, w) convolution kernel in
        ``dtype`` (under bf16 autocast the cached bf16 copy spares a 2M-element cast per
        call)."""
        w = self.fc1a.weight
        return self._derived(f'_fc1a_kernel_cache_{dtype}', (w,), lambda: w.view(
            FC_DIM, CNN6_DIM, self.h, self.w).to(dtype).contiguous(
                memory_format=torch.channels_last), dtype)

    def embed(self, images):
        """CNN1: images (M, 3, H, W) -> view embeddings (M, 64, h, w)."""
        return self.cnn1_head(self.context_trunk(images))

    def query_key(self, images):
        """CNN3: images (M, 3, H, W) -> query keys (M, 32, h, w)."""
        return self.cnn3_head(self.key_trunk(images))

    def query_features(self, images):
        """CNN5: images (M, 3, H, W) -> query features (M, 64, h, w)."""
        return self.cnn5_head(self.query_trunk(images))

    # ------------------------------------------------------------ reference
    def reference_log_likelihood(self, context_images, context_poses, query_images, particles):
        """The literal formulation (per particle and context, no factorisation), for tests.

        Same inputs and output as :meth:`DMN.forward <dmn_localizer.model.dmn.DMN.forward>`.
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
