"""localizer_node: DMN particle-filter localization, with nav2 AMCL's ROS interface.

Subscribes: camera (raw or compressed, sensor-data QoS), ``/tf`` and ``/tf_static`` (odometry
``odom -> base`` as AMCL, and the camera mounting: :mod:`dmn_localizer.nodes.tf_listener`) or
``odom`` (``odom_source: topic``), ``initialpose``. Publishes: ``amcl_pose`` (reliable,
transient local, as AMCL's), ``~/particles``, ``~/particle_markers``, TF ``map -> odom``
(future-dated by ``transform_tolerance``) and ``/diagnostics`` (the filter, the camera and
odometry rates). Services, relative as AMCL's: ``reinitialize_global_localization``,
``request_nomotion_update``, ``set_initial_pose``; and ``~/load_map`` (load ``map_file``).

Robustness: bad input (bad images, non-finite poses, invalid stamps, a bad /initialpose) is
rejected with a throttled warning and never stops the node. Without a usable map the node
keeps running, publishes nothing and reports why in diagnostics (ERROR) until ``~/load_map``
succeeds. Odometry going backwards or jumping restarts its time base; missing odometry is a
diagnostics WARN. Time and order are the feed loop's (:class:`~dmn_localizer.localization.
tracker.Tracker`, which offline replay runs too), the filter math is in
:mod:`dmn_localizer.localization`; this file converts messages and publishes.

A lifecycle node (:mod:`dmn_localizer.nodes.lifecycle`): inputs are used and outputs
published only while active; ``autostart`` (default) configures and activates it at start.
"""
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from nav2_msgs.srv import SetInitialPose
from nav_msgs.msg import Odometry
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo
from std_srvs.srv import Empty, Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from dmn_localizer.config import LOCALIZER_RUNTIME_PARAMETERS, LocalizerConfig
from dmn_localizer.util.errors import UserError
from dmn_localizer.localization.diagnostics import (describe_values, filter_values,
                                                    input_rates, localizer_status)
from dmn_localizer.localization.initial_pose import initial_std, NoMapError
from dmn_localizer.localization.localizer import Localizer
from dmn_localizer.localization.tracker import Tracker
from dmn_localizer.mapping.view_map import check_model_image_size, load_localization_map
from dmn_localizer.nodes.common import (LATCHED, RELIABLE, camera_offset, check_frame,
                                        depth_input, run_node, subscribe_images, warn)
from dmn_localizer.nodes.conversions import (checked_stamp_to_sec, diagnostic_array, pose_to_xyyaw,
                                             poses_to_pose_array, sec_to_stamp)
from dmn_localizer.nodes.last_pose import LastPose
from dmn_localizer.nodes.lifecycle import ManagedNode
from dmn_localizer.nodes.particle_cloud import ParticleCloudPublisher
from dmn_localizer.nodes.pose_messages import map_to_odom, pose_with_covariance, weight_markers
from dmn_localizer.nodes.tf_listener import TfInputs
from dmn_localizer.util.device import select_device, set_cpu_threads
from dmn_localizer.util.resources import default_model_path


def load_model_file(path):
    from dmn_localizer.model.io import load_model, LOCALIZER_ARCHITECTURES
    path = Path(path) if path else default_model_path()
    return load_model(path, architecture=LOCALIZER_ARCHITECTURES), path


class LocalizerNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__('localizer', LocalizerConfig, LOCALIZER_RUNTIME_PARAMETERS, **kwargs)

    def setup(self):
        """configure: model, filter, map, publishers, subscriptions, services, timers."""
        cfg = self.config
        if cfg.odom_source not in ('tf', 'topic'):
            raise UserError(f"odom_source must be 'tf' or 'topic', not {cfg.odom_source!r}")
        try:
            device = select_device(cfg.device)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        set_cpu_threads(cfg.cpu_threads)
        model, self.model_file = load_model_file(cfg.model)
        check_model_image_size(model, cfg.image_size, self.model_file)
        try:
            self.localizer = Localizer(model, cfg, device, base_from_camera=camera_offset(cfg))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.device_name = str(device)
        # time and order of the inputs; publish_step puts each image's result out
        self.tracker = Tracker(self.localizer, publish=self.publish_step,
                               clock=lambda: self.get_clock().now().nanoseconds * 1e-9,
                               depth_at=depth_input(self, cfg, self.localizer.takes_depth))
        self.image_frame = None    # the last image's header frame_id
        self.initial_pose_on_inactive = None
        self.started = False         # activated since configure
        self.last_pose = LastPose(self)
        self.map_status = 'no map_file given: set the map_file parameter and call ~/load_map'
        if cfg.map_file:
            ok, message = self.load_map(cfg.map_file)
            if not ok:
                self.get_logger().error(message)

        # outputs appear only while active (lifecycle publishers)
        self.pose_pub = self.owned(self.create_lifecycle_publisher(
            PoseWithCovarianceStamped, 'amcl_pose', LATCHED))
        self.particles_pub = self.owned(self.create_lifecycle_publisher(
            PoseArray, '~/particles', RELIABLE))
        self.markers_pub = self.owned(self.create_lifecycle_publisher(
            MarkerArray, '~/particle_markers', RELIABLE))
        self.contexts_pub = self.owned(self.create_lifecycle_publisher(   # the map, for RViz
            PoseArray, '~/contexts', LATCHED))
        self.particle_cloud = ParticleCloudPublisher(   # nav2_msgs/ParticleCloud, as AMCL
            self.owned(ParticleCloudPublisher.create(self)))
        self.tf_pub = self.owned(self.create_lifecycle_publisher(TFMessage, '/tf', 100))
        self.diag_pub = self.owned(self.create_lifecycle_publisher(
            DiagnosticArray, '/diagnostics', 10))
        # inputs are processed only while active (see the callbacks)
        self.owned(subscribe_images(self, cfg.image_topic, cfg.image_transport, cfg.image_size,
                                    self.on_image, frame_id=cfg.camera_frame_id,
                                    frame_callback=self.on_image_frame))
        # TF: the camera mounting; and odometry (odom -> base) with odom_source tf, as AMCL
        self.tf_inputs = TfInputs(self, cfg.odom_frame_id, cfg.base_frame_id,
                                  cfg.camera_frame_id, on_odometry=self.on_tf_odometry
                                  if cfg.odom_source == 'tf' else None)
        for sub in self.tf_inputs.subscriptions:
            self.owned(sub)
        if cfg.odom_source == 'topic':
            self.owned(self.create_subscription(Odometry, cfg.odom_topic, self.on_odom,
                                                RELIABLE))
        self.owned(self.create_subscription(CameraInfo, cfg.camera_info_topic,
                                            self.on_camera_info, qos_profile_sensor_data))
        self.owned(self.create_subscription(PoseWithCovarianceStamped, cfg.initial_pose_topic,
                                            self.on_initial_pose, RELIABLE))
        # AMCL's services (relative names)
        self.owned(self.create_service(SetInitialPose, 'set_initial_pose',
                                       self.on_set_initial_pose))
        self.owned(self.create_service(Empty, 'reinitialize_global_localization',
                                       self.on_reinit_global))
        self.owned(self.create_service(Empty, 'request_nomotion_update',
                                       self.on_nomotion_update))
        self.owned(self.create_service(Trigger, '~/load_map', self.on_load_map))
        self.owned(self.create_timer(1.0, self.publish_diagnostics))
        self.last_pose.schedule()
        self.get_logger().info(f'model {self.model_file} on {self.device_name}; '
                               f'{self.map_status}; '
                               + describe_values(filter_values(self.localizer)))

    def teardown(self):
        """cleanup: drop the model, filter and map (setup makes them again)."""
        self.localizer = self.tracker = self.map_poses = None

    def activated(self):
        """The belief at activation, as AMCL: initial_pose.* when set_initial_pose, else an
        initialpose received while inactive, else (first activation after configure, unless
        always_reset_initial_pose) the saved last pose, else global localization."""
        self.publish_contexts()
        cfg = self.config
        msg, self.initial_pose_on_inactive = self.initial_pose_on_inactive, None
        if cfg.set_initial_pose:
            cov = np.diag([cfg.initial_sigma_xy ** 2, cfg.initial_sigma_xy ** 2,
                           cfg.initial_sigma_yaw ** 2])
            msg = self.pose_msg([cfg.initial_pose_x, cfg.initial_pose_y, cfg.initial_pose_yaw],
                                cov)
        elif msg is None and not self.started and not cfg.always_reset_initial_pose:
            saved = self.last_pose.load()
            msg = None if saved is None else self.pose_msg(*saved)
        self.started = True
        if msg is not None:
            self.on_initial_pose(msg)

    def deactivating(self):
        self.last_pose.save()

    def destroy_node(self):
        """Also at exit (Ctrl-C): the newest estimate is saved."""
        if self.configured:
            self.last_pose.save()
        super().destroy_node()

    def apply_parameters(self, changes):
        """Runtime parameter changes (``config.LOCALIZER_RUNTIME_PARAMETERS``): the filter
        reads its config at each use, so replacing it applies them from the next image on."""
        self.config = dataclasses.replace(self.config, **changes)
        self.tracker.configure(self.config, self.base_from_camera())
        if 'save_pose_rate' in changes:
            self.last_pose.schedule()
        self.get_logger().info('parameters set: ' + ', '.join(
            f'{k} = {v!r}' for k, v in changes.items()))

    # ------------------------------------------------------------------ map
    def load_map(self, path):
        """Load a map file and start global localization on it. Returns (ok, message); on
        failure (missing, unreadable, corrupt, empty or wrong image size) the current map,
        if any, stays and the message says why."""
        try:
            view_map = load_localization_map(path, self.config.image_size)
        except UserError as exc:
            message = f'map not loaded: {exc}'
            if self.localizer.map_state is None:
                self.map_status = message
            return False, message
        if view_map.frame_id != self.config.global_frame_id:
            warn(self, f'{path}: map frame {view_map.frame_id!r} differs from global_frame_id '
                 f'{self.config.global_frame_id!r}; using it as {self.config.global_frame_id!r}')
        self.localizer.set_map(view_map)
        self.localizer.init_global()
        self.map_poses = view_map.poses
        self.publish_contexts()
        self.tracker.clear()
        self.map_status = f'{len(view_map)} contexts from {path}'
        return True, f'loaded {self.map_status}; global localization started'

    def publish_contexts(self):
        """The map's context viewpoints on ~/contexts (latched; only while active)."""
        if self.active and getattr(self, 'map_poses', None) is not None:
            self.contexts_pub.publish(poses_to_pose_array(
                self.map_poses, self.config.global_frame_id, self.get_clock().now().to_msg()))

    def on_load_map(self, request, response):
        path = self.get_parameter('map_file').value
        if not path:
            response.success, response.message = False, 'the map_file parameter is empty'
        else:
            response.success, response.message = self.load_map(path)
        log = self.get_logger().info if response.success else self.get_logger().error
        log(response.message)
        return response

    # ------------------------------------------------------------------ inputs
    def on_camera_info(self, msg):
        if not self.active or self.localizer is None:
            return
        try:
            message = self.localizer.set_camera_intrinsics(msg.width, msg.k[0])
        except ValueError as exc:
            warn(self, f'{self.config.camera_info_topic}: {exc}', throttle_duration_sec=30.0)
            return
        if message:
            self.get_logger().warning(message)

    def on_odom(self, msg):
        if not self.active:
            return
        try:
            stamp = checked_stamp_to_sec(msg.header.stamp)
            odom_from_base = pose_to_xyyaw(msg.pose.pose)
        except ValueError as exc:
            warn(self, f'{self.config.odom_topic}: odometry rejected: {exc}',
                 throttle_duration_sec=5.0)
            return
        check_frame(self, f'{self.config.odom_topic}: odometry', msg.header.frame_id,
                    self.config.odom_frame_id, 'odom_frame_id')
        check_frame(self, f'{self.config.odom_topic}: odometry child', msg.child_frame_id,
                    self.config.base_frame_id, 'base_frame_id')
        self.report(self.tracker.add_odometry(stamp, odom_from_base))

    def on_tf_odometry(self, stamp, odom_from_base):
        """odom_source tf: each new odom -> base transform (tf_listener.TfInputs)."""
        if self.active:
            self.report(self.tracker.add_odometry(stamp, odom_from_base))

    def base_from_camera(self):
        """The camera mounting (x, y, yaw): base_frame_id -> the images' frame from TF when TF
        has it, else the camera_offset_* parameters."""
        pose = self.tf_inputs.camera_mounting(self.image_frame)
        return camera_offset(self.config) if pose is None else pose

    def on_image_frame(self, frame_id):
        """Each image's frame: the filter scores the camera mounted where TF says."""
        self.image_frame = frame_id
        if getattr(self, 'tracker', None) is not None:
            self.tracker.configure(self.config, self.base_from_camera())

    def on_image(self, stamp, rgb):
        """Images often arrive before the odometry that covers their stamp: the tracker keeps
        the newest one until it comes (older waiting images are dropped, to stay real time)."""
        if not self.active:
            return
        self.get_logger().debug(f'image {stamp:.3f}, odometry up to '
                                f'{self.tracker.odometry.latest_stamp}')
        self.report(self.tracker.add_image(stamp, rgb))

    def publish_step(self, stamp, report):
        """The tracker's callback for each image through the filter, before its health check
        (scoring random reference poses), so that work is not in the image-to-pose latency."""
        if report.updated:
            self.publish_estimate(stamp)
        else:
            self.publish_tf(stamp)

    def report(self, outcome):
        """Warnings for what an input did (a :class:`~dmn_localizer.localization.tracker.
        Outcome`): a time-base reset, a frame without odometry, a recovery."""
        if outcome.reset:
            warn(self, f'odometry {outcome.reset}: time base reset', throttle_duration_sec=1.0)
        if outcome.skipped:
            warn(self, 'no odometry around the image stamp: frame skipped',
                 throttle_duration_sec=5.0)
        if not outcome.updated:
            return
        report = outcome.report
        self.get_logger().debug(f'image {outcome.stamp:.3f}: updated, '
                                f'{1e3 * outcome.seconds:.0f} ms')
        if report.recovery == 'global':
            warn(self, f'likelihood collapsed (belief score {report.belief_score:.2f}): global '
                 're-initialisation')
        elif report.recovery == 'inject':
            warn(self, f'likelihood collapsed (belief score {report.belief_score:.2f}): '
                 'injecting random particles', throttle_duration_sec=5.0)

    def on_initial_pose(self, msg):
        if not self.active:  # as AMCL: kept, and used at activation
            self.initial_pose_on_inactive = msg
            self.get_logger().info('initial pose received while inactive: used at activation')
            return
        if msg.header.frame_id.lstrip('/') != self.config.global_frame_id.lstrip('/'):  # AMCL
            warn(self, f'initial pose in frame {msg.header.frame_id!r} rejected: '
                 f'expected {self.config.global_frame_id!r}')
            return
        try:
            mean = pose_to_xyyaw(msg.pose.pose)
            stamp = checked_stamp_to_sec(msg.header.stamp)
            std = initial_std(mean, msg.pose.covariance, self.localizer.bounds,
                              (self.config.initial_sigma_xy, self.config.initial_sigma_yaw))
        except NoMapError as exc:
            warn(self, f'initial pose ignored: {exc}')
            return
        except ValueError as exc:
            warn(self, f'initial pose rejected: {exc}')
            return
        # the pose holds at its stamp (Localizer.init_gaussian)
        self.localizer.init_gaussian(mean, std, stamp=stamp, odometry=self.tracker.odometry)
        self.get_logger().info(f'initial pose ({mean[0]:.2f}, {mean[1]:.2f}, '
                               f'{math.degrees(mean[2]):.0f} deg), sigma {np.round(std, 2)}')

    def on_set_initial_pose(self, request, response):
        """nav2_msgs/SetInitialPose: as a message on the initial pose topic."""
        self.on_initial_pose(request.pose)
        return response

    def on_reinit_global(self, request, response):
        if self.localizer.map_state is None:
            warn(self, 'global localization needs a map')
        else:
            self.localizer.init_global()
        return response

    def on_nomotion_update(self, request, response):
        self.localizer.force_next = True
        return response

    # ------------------------------------------------------------------ outputs
    def publish_estimate(self, stamp):
        cfg = self.config
        mean, cov = self.localizer.estimate()
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            warn(self, 'estimate not finite: not published', throttle_duration_sec=5.0)
            return
        msg = self.pose_msg(mean, cov, sec_to_stamp(stamp))
        self.pose_pub.publish(msg)
        self.last_pose.unsaved = True
        if cfg.publish_particles:
            particles, weights = self.localizer.particle_array()
            self.particles_pub.publish(poses_to_pose_array(particles, cfg.global_frame_id,
                                                           msg.header.stamp))
            self.markers_pub.publish(weight_markers(particles, weights, cfg.global_frame_id,
                                                    msg.header.stamp))
            self.particle_cloud.publish(particles, weights, cfg.global_frame_id,
                                        msg.header.stamp)
        self.publish_tf(stamp, mean)

    def pose_msg(self, mean, cov, stamp=None):
        """PoseWithCovarianceStamped in global_frame_id (stamped now unless ``stamp``)."""
        return pose_with_covariance(mean, cov, self.config.global_frame_id,
                                    self.get_clock().now().to_msg() if stamp is None else stamp)

    def publish_tf(self, stamp, map_from_base=None):
        """map -> odom such that map -> odom -> base equals the estimate at the image stamp."""
        if not self.config.tf_broadcast or not self.localizer.ready:
            return
        if map_from_base is None:
            map_from_base = self.localizer.estimate()[0]
        odom_from_base = self.tracker.odometry.pose_at(stamp)
        if odom_from_base is None:
            return
        cfg = self.config
        self.tf_pub.publish(map_to_odom(map_from_base, odom_from_base, cfg.global_frame_id,
                                        cfg.odom_frame_id,
                                        sec_to_stamp(stamp + cfg.transform_tolerance)))

    def health(self):
        """(level, message, values) of the node and filter state for /diagnostics."""
        return localizer_status(self.tracker, self.config, self.map_status, self.device_name)

    def publish_diagnostics(self):
        """The filter's status and the input rates, as diagnostic_updater's tasks."""
        name = self.get_name()
        statuses = [(f'{name}: filter', *self.health())] + [
            (f'{name}: {task}', *rest) for task, *rest in input_rates(self.tracker)]
        self.diag_pub.publish(diagnostic_array(statuses, self.get_clock().now().to_msg()))


def main(args=None):
    return run_node(LocalizerNode, 'localizer_node', args)


if __name__ == '__main__':
    sys.exit(main())
