"""The paper's learned baselines (Section V-B), with the interface of the DMN.

Letters and conventions as in :mod:`dmn_localizer.model.dmn` (B batch, N contexts, K
particles, ``h = H/4``; poses metric ``(x, y, yaw)``; images float in [-1, 1]). Unlike the
DMN, the latent maps have no egocentric transform: context viewpoints and particle poses enter
in the map frame as ``(x/L, y/L, sin yaw, cos yaw)`` with ``L = coord_scale_m`` (the DMN's pose
encoding), concatenated (tiled over the image grid where the features are images) to the
context and query features. Neither has attention: every context contributes equally.

* :class:`LatentImageMap` (``architecture: latent_image``): CNN1 as in the DMN embeds each
  context image (64, h, w); with its tiled viewpoint (4 channels) a conv stack (128-3-1-relu,
  96-3-1-relu) gives its features (96, h, w); their element-wise mean over the contexts is
  the map, one ``96 x h x w`` latent image. Localization uses the DMN's network: CNN5 query
  features (64, h, w), concatenated with the map and the tiled particle pose (4), CNN6
  (64-3-1-relu x 3, flatten) and FC1 (512-relu, 1) -> unnormalised log-likelihood.
  2,713,057 parameters at 32 px (the DMN: 2,782,369, 0.98x).
* :class:`LatentVectorMap` (``architecture: latent_vector``): CNN1, then with the tiled
  viewpoint a conv (64-3-1-relu), flatten and a dense layer (256-relu) per context; the mean
  over contexts is the map, a 256-vector. The query: CNN5, flatten, dense (256-relu). FC
  (512-relu, 512-relu, 1) on ``[map, query vector, particle pose (4)]``.
  2,922,113 parameters at 32 px (1.05x the DMN).
* :class:`PoseRegression` (``architecture: regression``): the DMN's networks evaluated for a
  single "particle" placed at the previous pose estimate; the last layer outputs 3 values
  instead of a log-likelihood: the offset ``(dx/L, dy/L, dyaw)`` of the true pose in the frame
  of that estimate. :func:`dmn_localizer.filter.rollout.regression_rollout` runs it (no
  particle filter). 2,783,395 parameters at 32 px (1.0004x the DMN).

The latent maps compute the parts that do not depend on the particle once per map
(:meth:`build_map`) and once per query (:meth:`encode_query`), and the first layer that reads
the particle pose as a sum of those parts and the pose's contribution (exact: that layer is
linear in its input; for convolutions the pose's contribution is the conv of a constant map,
border-aware under zero padding). ``reference_log_likelihood`` is the literal concatenation,
for the tests.
"""
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from dmn_localizer.model.aligned import AlignedModel
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN
from dmn_localizer.model.dmn_networks import (CNN6_DIM, EMBED_DIM, FC_DIM, FEAT4_DIM, FEAT5_DIM,
                                              KEY_DIM)
from dmn_localizer.model.layers import (constant_channel_maps, conv_layer, conv_stack,
                                        init_weights, pose_coords, TRUNK)
from dmn_localizer.model.preprocess import check_images

IMAGE_MAP_DIM = 96    # D of the latent image map (the channels of the DMN's attended map)
VECTOR_MAP_DIM = 256  # length of the latent vector map (and of the query vector)
CNN5_HEAD = [(64, 3, 1, True), (128, 3, 1, True), (FEAT5_DIM, 3, 1, True)]


def _config(config, architecture):
    config = config or DMNConfig(architecture=architecture)
    if config.architecture != architecture:
        raise ValueError(f'{architecture} model built from a config with architecture '
                         f'{config.architecture!r}')
    return config


class _LatentMap(nn.Module):
    """What the latent maps share: config, init, pose encoding, image checks, chunking."""

    architecture = None
    regresses_pose = False

    def __init__(self, config):
        super().__init__()
        self.config = _config(config, self.architecture)
        self.h = self.w = self.config.image_size // 4

    def reset_parameters(self):
        """As the DMN: He init for relu layers, unit gain for linear ones, a small last layer,
        zero biases."""
        init_weights(self, self.last_layer(), self.config.last_layer_init_scale)

    def _check_images(self, images, name):
        check_images(images, self.config.image_size, name)

    def _pose_coords(self, poses):
        """Map-frame poses (..., 3) -> (x/L, y/L, sin yaw, cos yaw) (..., 4)."""
        return pose_coords(poses, self.config.coord_scale_m)

    def _with_pose(self, features, poses):
        """Concatenate tiled pose coordinates to features: (M, C, h, w), (M, 3) ->
        (M, C + 4, h, w)."""
        c = self._pose_coords(poses.to(features.dtype))
        return torch.cat([features, c[..., None, None].expand(c.shape + (self.h, self.w))], 1)

    def _out(self, out):
        return F.relu(out) if self.config.final_relu else out

    def embed(self, images):
        """CNN1 (as the DMN's): images (M, 3, H, W) -> (M, 64, h, w)."""
        return self.cnn1_head(self.context_trunk(images))

    def query_features(self, images):
        """CNN5 (as the DMN's): images (M, 3, H, W) -> (M, 64, h, w)."""
        return self.cnn5_head(self.query_trunk(images))

    def log_likelihood(self, map_state, query, particles, chunk=None, return_attention=False):
        """Unnormalised log-likelihoods (B, K) of particles (B, K, 3) (metric, map frame)
        given B maps and B queries; ``chunk`` bounds the particles processed at once."""
        if return_attention:
            raise ValueError(f'{self.architecture} has no attention (train it with '
                             'attention_weight: 0)')
        B, K = particles.shape[:2]
        assert particles.shape == (B, K, 3), particles.shape
        if chunk and K > chunk:
            return torch.cat([self._log_likelihood(map_state, query, particles[:, i:i + chunk])
                              for i in range(0, K, chunk)], dim=1)
        return self._log_likelihood(map_state, query, particles)

    def forward(self, context_images, context_poses, query_images, particles):
        """One observation update's log-likelihoods: (B, N, 3, H, W), (B, N, 3),
        (B, 3, H, W), (B, K, 3) -> (B, K)."""
        return self.log_likelihood(self.build_map(context_images, context_poses),
                                   self.encode_query(query_images), particles)


@dataclass
class LatentImageState:
    """A latent image map (:meth:`LatentImageMap.build_map`) of B worlds."""
    latent: torch.Tensor    # (B, 96, h, w) mean of the context features
    feat6: torch.Tensor     # (B, 64, h, w) CNN6 first conv of the map part (no bias)

    def select(self, index):
        if isinstance(index, int):
            index = slice(index, index + 1)
        return LatentImageState(self.latent[index], self.feat6[index])


@dataclass
class LatentImageQuery:
    features: torch.Tensor  # (B, 64, h, w) CNN5 query features
    feat6: torch.Tensor     # (B, 64, h, w) CNN6 first conv of the query part, with its bias


class LatentImageMap(_LatentMap):
    """The latent image map baseline (module docstring): 2,713,057 parameters at 32 px
    (DMN: 2,782,369), 1,140,193 at 16 px (DMN: 1,209,505)."""

    architecture = 'latent_image'

    def __init__(self, config: DMNConfig = None):
        super().__init__(config)
        self.context_trunk = conv_stack(TRUNK, 3)
        self.cnn1_head = conv_stack([(EMBED_DIM, 3, 1, True)], 64)
        self.context_net = conv_stack([(128, 3, 1, True), (IMAGE_MAP_DIM, 3, 1, True)],
                                      EMBED_DIM + 4)
        self.query_trunk = conv_stack(TRUNK, 3)
        self.cnn5_head = conv_stack(CNN5_HEAD, 64)
        self.cnn6a = conv_layer(IMAGE_MAP_DIM + FEAT5_DIM + 4, CNN6_DIM, 3, 1)
        self.cnn6a.is_relu = True
        self.cnn6_rest = conv_stack([(CNN6_DIM, 3, 1, True), (CNN6_DIM, 3, 1, True)], CNN6_DIM)
        self.fc1a = nn.Linear(CNN6_DIM * self.h * self.w, FC_DIM)
        self.fc1a.is_relu = True
        self.fc1b = nn.Linear(FC_DIM, 1)
        self.fc1b.is_relu = self.config.final_relu
        self.reset_parameters()

    def last_layer(self):
        return self.fc1b

    def _head(self, x):
        """CNN6 layers 2-3, flatten, FC1: x (M, 64, h, w) after CNN6's first conv -> (M,)."""
        x = self.cnn6_rest(F.relu(x)).flatten(1)
        return self._out(self.fc1b(F.relu(self.fc1a(x))).squeeze(-1))

    def latent_map(self, context_images, context_poses):
        """The latent image (B, 96, h, w) of B maps of N contexts."""
        self._check_images(context_images, 'context_images')
        B, N = context_images.shape[:2]
        emb = self.embed(context_images.flatten(0, 1))
        feat = self.context_net(self._with_pose(emb, context_poses.reshape(B * N, 3)))
        return feat.view((B, N) + feat.shape[1:]).mean(1)

    def build_map(self, context_images, context_poses):
        """context_images (B, N, 3, H, W), context_poses (B, N, 3) -> LatentImageState."""
        latent = self.latent_map(context_images, context_poses)
        f6 = F.conv2d(latent, self.cnn6a.weight[:, :IMAGE_MAP_DIM], padding=1)
        return LatentImageState(latent, f6)

    def encode_query(self, query_images):
        """(B, 3, H, W) -> LatentImageQuery."""
        self._check_images(query_images, 'query_images')
        feat = self.query_features(query_images)
        w = self.cnn6a.weight[:, IMAGE_MAP_DIM:IMAGE_MAP_DIM + FEAT5_DIM]
        return LatentImageQuery(feat, F.conv2d(feat, w, self.cnn6a.bias, padding=1))

    def _log_likelihood(self, map_state, query, particles):
        B, K = particles.shape[:2]
        h, w = self.h, self.w
        coord_maps = constant_channel_maps(self.cnn6a.weight[:, IMAGE_MAP_DIM + FEAT5_DIM:], h, w)
        c = self._pose_coords(particles.to(coord_maps.dtype))                    # (B, K, 4)
        x = (torch.matmul(c, coord_maps.reshape(4, -1)).view(B, K, CNN6_DIM, h, w)
             + map_state.feat6[:, None] + query.feat6[:, None])
        return self._head(x.view(B * K, CNN6_DIM, h, w)).view(B, K)

    def reference_log_likelihood(self, context_images, context_poses, query_images, particles):
        """The literal formulation (per particle concatenation), for tests; as :meth:`forward`."""
        B, K = particles.shape[:2]
        latent = self.latent_map(context_images, context_poses)
        feat = self.query_features(query_images)
        x = torch.cat([latent, feat], 1)
        x = x[:, None].expand((B, K) + x.shape[1:])
        x = self._with_pose(x.flatten(0, 1), particles.reshape(B * K, 3))
        return self._head(self.cnn6a(x)).view(B, K)


@dataclass
class LatentVectorState:
    """A latent vector map (:meth:`LatentVectorMap.build_map`) of B worlds."""
    latent: torch.Tensor    # (B, 256) mean of the context vectors
    fc_pre: torch.Tensor    # (B, 512) first FC layer's map part (no bias)

    def select(self, index):
        if isinstance(index, int):
            index = slice(index, index + 1)
        return LatentVectorState(self.latent[index], self.fc_pre[index])


@dataclass
class LatentVectorQuery:
    features: torch.Tensor  # (B, 256) query vector
    fc_pre: torch.Tensor    # (B, 512) first FC layer's query part, with its bias


class LatentVectorMap(_LatentMap):
    """The latent vector map baseline (module docstring): 2,922,113 parameters at 32 px
    (DMN: 2,782,369), 1,349,249 at 16 px (DMN: 1,209,505)."""

    architecture = 'latent_vector'

    def __init__(self, config: DMNConfig = None):
        super().__init__(config)
        flat = 64 * self.h * self.w
        self.context_trunk = conv_stack(TRUNK, 3)
        self.cnn1_head = conv_stack([(EMBED_DIM, 3, 1, True)], 64)
        self.context_conv = conv_stack([(64, 3, 1, True)], EMBED_DIM + 4)
        self.context_fc = nn.Linear(flat, VECTOR_MAP_DIM)
        self.query_trunk = conv_stack(TRUNK, 3)
        self.cnn5_head = conv_stack(CNN5_HEAD, 64)
        self.query_fc = nn.Linear(flat, VECTOR_MAP_DIM)
        self.fc1a = nn.Linear(2 * VECTOR_MAP_DIM + 4, FC_DIM)
        self.fc1b = nn.Linear(FC_DIM, FC_DIM)
        self.fc1c = nn.Linear(FC_DIM, 1)
        self.fc1c.is_relu = self.config.final_relu
        self.reset_parameters()

    def last_layer(self):
        return self.fc1c

    def latent_map(self, context_images, context_poses):
        """The latent vector (B, 256) of B maps of N contexts."""
        self._check_images(context_images, 'context_images')
        B, N = context_images.shape[:2]
        emb = self.embed(context_images.flatten(0, 1))
        x = self.context_conv(self._with_pose(emb, context_poses.reshape(B * N, 3)))
        return F.relu(self.context_fc(x.flatten(1))).view(B, N, -1).mean(1)

    def query_vector(self, query_images):
        """(B, 3, H, W) -> (B, 256)."""
        return F.relu(self.query_fc(self.query_features(query_images).flatten(1)))

    def build_map(self, context_images, context_poses):
        """context_images (B, N, 3, H, W), context_poses (B, N, 3) -> LatentVectorState."""
        latent = self.latent_map(context_images, context_poses)
        return LatentVectorState(latent, latent @ self.fc1a.weight[:, :VECTOR_MAP_DIM].T)

    def encode_query(self, query_images):
        """(B, 3, H, W) -> LatentVectorQuery."""
        self._check_images(query_images, 'query_images')
        u = self.query_vector(query_images)
        w = self.fc1a.weight[:, VECTOR_MAP_DIM:2 * VECTOR_MAP_DIM]
        return LatentVectorQuery(u, F.linear(u, w, self.fc1a.bias))

    def _tail(self, pre):
        """After the first FC layer's pre-activation (..., 512) -> (...)."""
        return self._out(self.fc1c(F.relu(self.fc1b(F.relu(pre)))).squeeze(-1))

    def _log_likelihood(self, map_state, query, particles):
        c = self._pose_coords(particles.to(map_state.fc_pre.dtype))              # (B, K, 4)
        pre = (F.linear(c, self.fc1a.weight[:, 2 * VECTOR_MAP_DIM:])
               + (map_state.fc_pre + query.fc_pre)[:, None])
        return self._tail(pre)

    def reference_log_likelihood(self, context_images, context_poses, query_images, particles):
        """The literal formulation (per particle concatenation), for tests; as :meth:`forward`."""
        B, K = particles.shape[:2]
        latent = self.latent_map(context_images, context_poses)[:, None].expand(B, K, -1)
        u = self.query_vector(query_images)[:, None].expand(B, K, -1)
        return self._tail(self.fc1a(torch.cat([latent, u, self._pose_coords(particles)], -1)))


class PoseRegression(DMN):
    """The regression baseline (module docstring): the DMN's networks for one "particle" at
    the previous pose estimate; the last layer (FC1's second, linear) outputs the offset
    ``(dx/L, dy/L, dyaw)`` of the true pose in that estimate's frame instead of a
    log-likelihood. 2,783,395 parameters at 32 px (DMN: 2,782,369), 1,210,531 at 16 px.

    :meth:`build_map` and :meth:`encode_query` are the DMN's; :meth:`regress` replaces
    :meth:`log_likelihood` (which raises: there is no particle filter). The features are the
    DMN's literal formulation for K = 1 (only the map's poses and view embeddings and the
    query's key and features are read), so this class does not depend on the DMN's factorised
    particle code.
    """

    regresses_pose = True

    def __init__(self, config: DMNConfig = None):
        super().__init__(_config(config, 'regression'))
        self.fc1b = nn.Linear(FC_DIM, 3)
        self.fc1b.is_relu = False
        self.reset_parameters()

    def _head(self, x):
        """CNN6 layers 2-3, flatten, FC1: (M, 64, h, w) after CNN6's first conv -> (M, 3)."""
        x = self.cnn6_rest(F.relu(x)).flatten(1)
        return self.fc1b(F.relu(self.fc1a(x)))

    def regress(self, map_state, query, poses):
        """The metric offsets (B, 3) ``(dx, dy, dyaw)`` of the true pose in the frame of each
        pose estimate ``poses`` (B, 3); compose them with the estimates to correct them."""
        emb = map_state.embeddings                                      # (B, N, 64, h, w)
        B, N = emb.shape[:2]
        h, w = self.h, self.w
        ctx = map_state.poses
        c = self._coords(ctx, poses[:, None].to(ctx.dtype))[:, 0]      # (B, N, 4)
        if not self.config.egocentric:   # [context viewpoint, estimate], map frame
            c = torch.cat([self._pose_coords(ctx), c], dim=-1)          # (B, N, 8)
        tiled = c[..., None, None].expand(B, N, c.shape[-1], h, w)
        inp = torch.cat([emb, tiled], dim=2).flatten(0, 1)
        vkey = self.cnn2b(F.relu(self.cnn2a(inp))).view(B, N, KEY_DIM, h, w)
        lam = self._attention(torch.einsum('bnchw,bchw->bn', vkey, query.key)[:, None])[:, 0]
        feat4 = self.cnn4(emb.flatten(0, 1)).view(B, N, FEAT4_DIM, h, w)
        attended = (lam[..., None, None, None] * torch.cat([feat4, vkey], dim=2)).sum(1)
        out = self._head(self.cnn6a(torch.cat([attended, query.features], dim=1)))
        scale = self.config.coord_scale_m
        return out * out.new_tensor([scale, scale, 1.0])

    def log_likelihood(self, *args, **kwargs):
        raise ValueError('a regression model has no particle log-likelihood: it regresses a '
                         'pose (see regression_rollout)')

    def log_likelihood_selected(self, *args, **kwargs):
        return self.log_likelihood()

    def reference_log_likelihood(self, *args, **kwargs):
        return self.log_likelihood()


ARCHITECTURE_CLASSES = {'dmn': DMN, 'latent_image': LatentImageMap,
                        'latent_vector': LatentVectorMap, 'regression': PoseRegression,
                        'aligned': AlignedModel}


def build_model(config: DMNConfig = None):
    """The network of ``config.architecture`` (a fresh, randomly initialised model)."""
    config = config or DMNConfig()
    return ARCHITECTURE_CLASSES[config.architecture](config)


def count_parameters(model):
    """Learnable parameters (shared modules counted once)."""
    return sum(p.numel() for p in model.parameters())
