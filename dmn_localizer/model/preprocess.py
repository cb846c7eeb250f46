"""Images as the networks take them: uint8 ``(..., H, W, 3)`` arrays to float ``(..., 3, H, W)``
in [-1, 1], and the shape check every model applies to its inputs."""
import numpy as np
import torch


def images_to_tensor(images, device=None):
    """uint8 images ``(..., H, W, 3)`` (numpy or torch) -> float ``(..., 3, H, W)`` in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images,
                        device=device)
    if x.dtype != torch.uint8:
        raise ValueError(f'images must be uint8, got {x.dtype}')
    return x.movedim(-1, -3).float().div(127.5).sub(1.0)


def check_images(images, size, name):
    """ValueError unless ``images`` is (..., 3, size, size)."""
    if images.shape[-3:] != (3, size, size):
        raise ValueError(f'{name} must be (..., 3, {size}, {size}) float in [-1, 1], got '
                         f'{tuple(images.shape)}')
