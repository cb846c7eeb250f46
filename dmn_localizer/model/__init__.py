"""The Differentiable Mapping Network (Karkus et al., IROS 2020, Section IV): pure torch.

Public API::

    from dmn_localizer.model import DMN, DMNConfig, load_model, save_model, images_to_tensor
    model = DMN(DMNConfig())                           # or load_model('models/dmn_mazes')
    m = model.build_map(ctx_images, ctx_poses)         # once per map (B, N contexts)
    q = model.encode_query(query_image)                # once per query image (B,)
    log_lik = model.log_likelihood(m, q, particles)    # (B, K) for particles (B, K, 3)
"""
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN, MapState, QueryState, images_to_tensor
from dmn_localizer.model.io import load_model, save_model

__all__ = ['DMN', 'DMNConfig', 'MapState', 'QueryState', 'images_to_tensor', 'load_model',
           'save_model']
