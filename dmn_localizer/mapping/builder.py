"""The mapper's pipeline: images and poses in, keyframes in a map out (pure, no rclpy).

:class:`MapBuilder` pairs each image with the pose nearest in time
(:class:`~dmn_localizer.mapping.sync.StampPairer`, within ``sync_tolerance_s``), makes the
camera pose ``map_from_base * base_from_camera`` (the base pose itself without a mounting),
keeps it as a new context when
:func:`~dmn_localizer.mapping.keyframes.is_new_keyframe` says the map has no view there yet,
embeds it (the model's CNN1, when an ``embed`` function is given) and adds image, pose,
embedding and, from an RGB-D camera (``depth_at``), its measured column depths to the
:class:`~dmn_localizer.mapping.view_map.ViewMap`. The mapper node feeds it
its messages, offline replay a mapping bag's in stamp order.
"""
import numpy as np

from dmn_localizer.geometry import compose
from dmn_localizer.mapping.keyframes import is_new_keyframe
from dmn_localizer.mapping.sync import StampPairer


class MapBuilder:
    """Adds keyframes to ``view_map``. ``embed(rgb, depth) -> embedding or None``: the
    context's embedding (None: the map stores images only). ``depth_at(stamp) -> column depths
    or None``: a depth camera's column depths (:class:`~dmn_localizer.depth.DepthBuffer`) for
    an image stamp (None: the image has no depth). The settings (:meth:`configure`) may change
    between events."""

    def __init__(self, view_map, embed=None, base_from_camera=None,
                 min_distance=2.0, min_angle=0.5, sync_tolerance_s=0.05, depth_at=None):
        self.view_map = view_map
        self.embed = embed
        self.depth_at = depth_at
        self.pairer = StampPairer(sync_tolerance_s)
        self.configure(base_from_camera, min_distance, min_angle, sync_tolerance_s)

    def configure(self, base_from_camera, min_distance, min_angle, sync_tolerance_s):
        """The camera mounting (x, y, yaw) in the base frame (None: the camera is at the
        base), the keyframe thresholds (m, rad) and the pairing tolerance (s)."""
        self.base_from_camera = (None if base_from_camera is None
                                 else np.asarray(base_from_camera, np.float64))
        self.min_distance, self.min_angle = min_distance, min_angle
        self.pairer.tolerance = float(sync_tolerance_s)

    def add_image(self, stamp, rgb):
        """An image (H, W, 3) uint8 RGB at the map's image size; returns the number of
        contexts added (the pairs it completed that were new keyframes)."""
        return sum(self.add_pair(*pair) for pair in self.pairer.add_image(stamp, rgb))

    def add_pose(self, stamp, map_from_base):
        """A pose of the robot base (x, y, yaw) in the map frame; returns the number of
        contexts added."""
        return sum(self.add_pair(*pair) for pair in self.pairer.add_pose(stamp, map_from_base))

    def add_pair(self, stamp, rgb, map_from_base):
        """An image and the base pose at its stamp: True if it became a new context."""
        map_from_camera = np.asarray(map_from_base, np.float64)
        if self.base_from_camera is not None:
            map_from_camera = compose(map_from_camera, self.base_from_camera)
        if not is_new_keyframe(map_from_camera, self.view_map.poses, self.min_distance,
                               self.min_angle):
            return False
        depth = None if self.depth_at is None else self.depth_at(stamp)
        embedding = None if self.embed is None else self.embed(rgb, depth)
        self.view_map.add(rgb, map_from_camera, embedding, depth)
        return True


def model_embedder(model, device='cpu', depth_range=0.0):
    """``embed(rgb, depth)`` for :class:`MapBuilder`: the model's view embedding (the DMN's
    CNN1) of one image (with its measured column depths, if any, for a model that takes
    them, and the depth camera's range ``depth_range``, see the aligned model's
    ``encode_columns``), as numpy, which a localizer running the same model reuses; None
    without a model (the map stores images only)."""
    if model is None:
        return None
    import torch

    from dmn_localizer.model.preprocess import images_to_tensor

    takes_depth = getattr(model, 'takes_depth', False)

    def embed(rgb, depth=None):
        with torch.no_grad():
            images = images_to_tensor(rgb[None], device)
            if takes_depth and depth is not None:
                return model.embed(images, np.asarray(depth, np.float32)[None],
                                   depth_range)[0].cpu().numpy()
            return model.embed(images)[0].cpu().numpy()
    return embed
