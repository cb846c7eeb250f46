"""mapper_node: builds the view-embedding map from camera images and poses.

Subscribes to images (raw or compressed) and a pose source and feeds them to
:class:`~dmn_localizer.mapping.builder.MapBuilder` (the pipeline offline replay runs too): it
pairs them by stamp, applies the camera mounting (``base_frame_id ->`` the images' frame from
TF, as the localizer; else ``camera_offset_*``), keeps keyframes (camera moved/turned enough
since the nearest context) and embeds each new context with the model's CNN1 (stored in the
map with the model id, so a localizer running the same model skips that work). The node
publishes the context viewpoints (latched).
Services: ``~/save_map`` (std_srvs/Trigger, atomic write to ``save_path``) and ``~/clear_map``
(std_srvs/Trigger).

A lifecycle node (:mod:`dmn_localizer.nodes.lifecycle`): inputs are used and outputs
published only while active; ``autostart`` (default) configures and activates it at start.
"""
import dataclasses
import sys

from std_srvs.srv import Trigger

from dmn_localizer.config import MAPPER_RUNTIME_PARAMETERS, MapperConfig
from dmn_localizer.util.errors import UserError
from dmn_localizer.mapping.builder import MapBuilder, model_embedder
from dmn_localizer.mapping.view_map import check_map_image_size, check_model_image_size, ViewMap
from dmn_localizer.nodes.common import (LATCHED, camera_offset, depth_input,
                                        subscribe_images, subscribe_poses, run_node, warn)
from dmn_localizer.nodes.conversions import poses_to_pose_array
from dmn_localizer.nodes.lifecycle import ManagedNode
from dmn_localizer.nodes.tf_listener import TfInputs
from geometry_msgs.msg import PoseArray


class MapperNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__('mapper', MapperConfig, MAPPER_RUNTIME_PARAMETERS, **kwargs)

    def setup(self):
        """configure: model, the map to start from, publisher, subscriptions, services."""
        cfg = self.config
        self.model = self.load_model(cfg)
        self.view_map = ViewMap(frame_id=cfg.global_frame_id, model_id=self.model_id)
        if cfg.map_file:
            self.view_map = ViewMap.load(cfg.map_file)
            check_map_image_size(self.view_map, cfg.image_size, cfg.map_file)
            self.get_logger().info(f'started from {cfg.map_file}: {len(self.view_map)} contexts')
            if self.view_map.model_id != self.model_id:
                self.view_map.embeddings = None  # another model's: the localizer re-embeds
                self.view_map.model_id = self.model_id
        self.image_frame = None   # the last image's header frame_id
        # the camera mounting from TF (/tf_static), as the localizer reads it
        self.tf_inputs = TfInputs(self, None, cfg.base_frame_id, cfg.camera_frame_id)
        for sub in self.tf_inputs.subscriptions:
            self.owned(sub)
        self.builder = MapBuilder(
            self.view_map, model_embedder(self.model, self.device, cfg.depth_range),
            depth_at=depth_input(self, cfg, getattr(self.model, 'takes_depth', False)))
        self.configure_builder()
        # the contexts appear only while active; images and poses are used only while active
        self.contexts_pub = self.owned(self.create_lifecycle_publisher(PoseArray, '~/contexts',
                                                                       LATCHED))
        self.owned(subscribe_images(self, cfg.image_topic, cfg.image_transport, cfg.image_size,
                                    self.on_image, frame_id=cfg.camera_frame_id,
                                    frame_callback=self.on_image_frame))
        self.owned(subscribe_poses(self, cfg.pose_topic, cfg.pose_type, self.on_pose,
                                   child_frame_id=cfg.base_frame_id))
        self.owned(self.create_service(Trigger, '~/save_map', self.on_save_map))
        self.owned(self.create_service(Trigger, '~/clear_map', self.on_clear_map))

    def teardown(self):
        """cleanup: the map not saved is dropped, as the model."""
        self.model = self.view_map = self.builder = None

    def activated(self):
        self.publish_contexts()

    def apply_parameters(self, changes):
        """Runtime parameter changes (``config.MAPPER_RUNTIME_PARAMETERS``), used from the
        next image on."""
        self.config = dataclasses.replace(self.config, **changes)
        self.configure_builder()
        self.get_logger().info('parameters set: ' + ', '.join(
            f'{k} = {v!r}' for k, v in changes.items()))

    def configure_builder(self):
        cfg = self.config
        self.builder.configure(self.camera_mounting(), cfg.keyframe_min_distance,
                               cfg.keyframe_min_angle, cfg.sync_tolerance_s)

    def load_model(self, cfg):
        """The DMN whose CNN1 embeds each new context (the localizer reuses the embeddings
        when it runs the same model). Without a model file the map keeps images only."""
        from dmn_localizer.model.io import load_model, LOCALIZER_ARCHITECTURES, model_paths
        from dmn_localizer.util.device import select_device, set_cpu_threads
        from dmn_localizer.util.resources import default_model_path
        path = model_paths(cfg.model)[0] if cfg.model else default_model_path()
        if not path.is_file():
            warn(self, f'no model at {path}: the map stores images only (the localizer embeds '
                 'them at load)')
            self.model_id, self.device = '', None
            return None
        try:
            device = select_device(cfg.device)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        set_cpu_threads(cfg.cpu_threads)
        model = load_model(path, device, architecture=LOCALIZER_ARCHITECTURES)
        check_model_image_size(model, cfg.image_size, path)
        self.model_id = model.model_id
        self.device = device
        return model

    def camera_mounting(self):
        """base_from_camera (x, y, yaw): base_frame_id -> the images' frame from TF when TF
        has it, else the camera_offset_* parameters (the localizer's rule)."""
        pose = self.tf_inputs.camera_mounting(self.image_frame)
        return camera_offset(self.config) if pose is None else pose

    def on_image_frame(self, frame_id):
        self.image_frame = frame_id
        self.configure_builder()

    def on_image(self, stamp, rgb):
        if self.active and self.builder.add_image(stamp, rgb):
            self.publish_contexts()

    def on_pose(self, stamp, frame_id, map_from_base):
        if not self.active:
            return
        if frame_id and frame_id != self.config.global_frame_id:
            warn(self, f'pose in frame {frame_id!r}, expected {self.config.global_frame_id!r}: '
                 'ignored', throttle_duration_sec=5.0)
            return
        if self.builder.add_pose(stamp, map_from_base):
            self.publish_contexts()

    def publish_contexts(self):
        self.contexts_pub.publish(poses_to_pose_array(
            self.view_map.poses, self.config.global_frame_id, self.get_clock().now().to_msg()))

    def on_save_map(self, request, response):
        try:
            self.view_map.save(self.config.save_path)
        except OSError as exc:
            response.success, response.message = False, f'{self.config.save_path}: {exc}'
            return response
        response.success = True
        response.message = f'saved {len(self.view_map)} contexts to {self.config.save_path}'
        self.get_logger().info(response.message)
        return response

    def on_clear_map(self, request, response):
        self.view_map.clear()
        self.publish_contexts()
        response.success, response.message = True, 'map cleared'
        return response


def main(args=None):
    return run_node(MapperNode, 'mapper_node', args)


if __name__ == '__main__':
    sys.exit(main())
