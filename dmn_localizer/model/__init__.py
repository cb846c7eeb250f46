"""The Differentiable Mapping Network (Karkus et al., IROS 2020, Section IV): pure torch.

Public API::

    from dmn_localizer.model import DMN, DMNConfig, load_model, save_model, images_to_tensor
    model = DMN(DMNConfig())                           # or load_model('models/dmn_mazes')
    m = model.build_map(ctx_images, ctx_poses)         # once per map (B, N contexts)
    q = model.encode_query(query_image)                # once per query image (B,)
    log_lik = model.log_likelihood(m, q, particles)    # (B, K) for particles (B, K, 3)

The paper's learned baselines (latent image map, latent vector map, regression) are in
:mod:`dmn_localizer.model.baselines`; ``build_model(config)`` builds the network of
``config.architecture``, and ``load_model`` returns whichever a model file holds.
"""
from dmn_localizer.model.baselines import (build_model, count_parameters, LatentImageMap,
                                           LatentVectorMap, PoseRegression)
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN, MapState, QueryState
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.model.io import load_model, save_model

__all__ = ['build_model', 'count_parameters', 'DMN', 'DMNConfig', 'images_to_tensor',
           'LatentImageMap', 'LatentVectorMap', 'load_model', 'MapState', 'PoseRegression',
           'QueryState', 'save_model']
