"""localizer_node: DMN particle-filter localization, with nav2 AMCL's ROS interface.

Subscribes: camera (raw or compressed, sensor-data QoS), ``/tf`` and ``/tf_static`` (odometry
``odom -> base`` as AMCL, and the camera mounting: :mod:`dmn_localizer.nodes.tf_listener`), or
``odom`` (nav_msgs/Odometry) with ``odom_source: topic``, ``initialpose``
(PoseWithCovarianceStamped in the map frame). Publishes: ``amcl_pose``
(PoseWithCovarianceStamped, reliable and transient local as AMCL's), ``~/particles``
(PoseArray), ``~/particle_markers`` (MarkerArray coloured by weight), TF ``map -> odom``
(future-dated by ``transform_tolerance``) and ``/diagnostics``. Services, relative as AMCL's:
``reinitialize_global_localization`` and ``request_nomotion_update`` (std_srvs/Empty); and
``~/load_map`` (std_srvs/Trigger: load the map named by the ``map_file`` parameter, which may
be changed at run time).

Robustness: bad input is rejected with a throttled warning and never stops the node (images
with unsupported encodings or bad data, non-finite poses, invalid stamps, /initialpose in the
wrong frame or with a non-finite or not positive semi-definite covariance). Without a usable
map (none given, missing, corrupt or empty file) the node keeps running, publishes nothing and
reports the reason in diagnostics (ERROR) until ``~/load_map`` succeeds. Odometry time going
backwards or jumping more than ``odom_jump_threshold`` restarts the odometry time base;
missing odometry is a diagnostics WARN. All filter math, including the likelihood-collapse
monitor and recovery, is in :mod:`dmn_localizer.localization.localizer`; this file converts
messages and keeps time.

A lifecycle node (:mod:`dmn_localizer.nodes.lifecycle`): inputs are used and outputs
published only while active; ``autostart`` (default) configures and activates it at start.
"""
import dataclasses
import math
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import (PoseArray, PoseWithCovarianceStamped, TransformStamped)
from nav2_msgs.srv import SetInitialPose
from nav_msgs.msg import Odometry
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo
from std_srvs.srv import Empty, Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from dmn_localizer.config import LocalizerConfig
from dmn_localizer.errors import FileFormatError, UserError
from dmn_localizer.geometry import compose, inverse, yaw_to_quaternion
from dmn_localizer.localization.localizer import Localizer
from dmn_localizer.localization.odometry import OdometryBuffer
from dmn_localizer.localization.saved_pose import default_pose_file, load_pose, save_pose
from dmn_localizer.mapping.view_map import (check_map_image_size, check_model_image_size,
                                            ViewMap)
from dmn_localizer.nodes.common import (LATCHED, RELIABLE, camera_offset, check_frame,
                                        run_node, subscribe_images, warn)
from dmn_localizer.nodes.conversions import (checked_stamp_to_sec, pose_to_xyyaw,
                                             poses_to_pose_array, sec_to_stamp, xyyaw_to_pose)
from dmn_localizer.nodes.lifecycle import ManagedNode
from dmn_localizer.nodes.particle_cloud import ParticleCloudPublisher
from dmn_localizer.nodes.tf_listener import TfInputs
from dmn_localizer.util.device import select_device
from dmn_localizer.util.resources import default_model_path


def level_rank(level):
    """DiagnosticStatus levels are bytes (b'\\x00'..) in rclpy: their integer value."""
    return level[0] if isinstance(level, bytes) else int(level)


# Config fields a set_parameters request applies at once; the others (frames, topics, model,
# device, image size, precision, camera field of view) are read at configure.
RUNTIME_PARAMETERS = frozenset({
    'camera_offset_x', 'camera_offset_y', 'camera_offset_yaw', 'map_file', 'nearest_contexts',
    'num_particles', 'global_num_particles', 'initial_sigma_xy', 'initial_sigma_yaw',
    'motion_noise_xy', 'motion_noise_yaw', 'update_min_d', 'update_min_a',
    'force_update_when_still', 'resample_ess_ratio', 'health_samples', 'collapse_score',
    'collapse_updates', 'recovery_alpha', 'global_reinit_updates', 'min_evidence',
    'max_context_distance', 'odom_jump_threshold',
    'odom_max_speed', 'odom_timeout', 'transform_tolerance', 'tf_broadcast',
    'publish_particles', 'set_initial_pose', 'initial_pose_x', 'initial_pose_y',
    'initial_pose_z', 'initial_pose_yaw', 'always_reset_initial_pose', 'save_pose_rate',
    'pose_file'})


def load_model_file(path):
    from dmn_localizer.model.io import load_model, LOCALIZER_ARCHITECTURES
    path = Path(path) if path else default_model_path()
    return load_model(path, architecture=LOCALIZER_ARCHITECTURES), path


class LocalizerNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__('localizer', LocalizerConfig, RUNTIME_PARAMETERS, **kwargs)

    def setup(self):
        """configure: model, filter, map, publishers, subscriptions, services, timers."""
        cfg = self.config
        if cfg.odom_source not in ('tf', 'topic'):
            raise UserError(f"odom_source must be 'tf' or 'topic', not {cfg.odom_source!r}")
        try:
            device = select_device(cfg.device)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        model, self.model_file = load_model_file(cfg.model)
        check_model_image_size(model, cfg.image_size, self.model_file)
        try:
            self.localizer = Localizer(model, cfg, device, base_from_camera=camera_offset(cfg))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.device_name = str(device)
        self.odom = OdometryBuffer(max_jump_m=cfg.odom_jump_threshold,
                                   max_speed=cfg.odom_max_speed)
        self.waiting_image = None  # (stamp, rgb) until odometry covers its stamp
        self.image_frame = None    # the last image's header frame_id
        self.images_received = 0
        self.dropped_images = 0    # waiting images replaced by newer ones before odometry came
        self.skipped_images = 0    # no odometry around the stamp
        self.updates = 0
        self.update_times = deque(maxlen=100)
        self.last_report = None
        self.odom_received = 0
        self.last_odom_time = None   # time.monotonic() of the last odometry message
        self.last_odom_reset = None  # (time.monotonic(), reason)
        self.initial_pose_on_inactive = None
        self.started = False         # activated since configure
        self.pose_unsaved = False    # an estimate newer than the saved pose
        self.save_timer = None
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
        self.schedule_pose_saving()
        self.get_logger().info(f'model {self.model_file} on {self.device_name}; '
                               f'{self.map_status}')

    def teardown(self):
        """cleanup: drop the model, filter and map (setup makes them again)."""
        self.localizer = self.odom = self.waiting_image = self.map_poses = None

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
                                cov, self.get_clock().now().to_msg())
        elif msg is None and not self.started and not cfg.always_reset_initial_pose:
            msg = self.saved_pose_msg()
        self.started = True
        if msg is not None:
            self.on_initial_pose(msg)

    def deactivating(self):
        self.save_last_pose()

    def destroy_node(self):
        """Also at exit (Ctrl-C): the newest estimate is saved."""
        if self.configured:
            self.save_last_pose()
        super().destroy_node()

    # ------------------------------------------------------------------ last pose
    def pose_file(self):
        if self.config.pose_file:
            return Path(self.config.pose_file)
        return default_pose_file(f'{self.get_namespace().rstrip("/")}/{self.get_name()}')

    def saved_pose_msg(self):
        """The saved last pose as an initial pose message, or None (no usable file)."""
        path = self.pose_file()
        if not path.is_file():
            return None
        try:
            frame_id, mean, cov = load_pose(path)
        except (OSError, ValueError) as exc:
            warn(self, f'saved pose not used: {exc}')
            return None
        if frame_id != self.config.global_frame_id:
            warn(self, f'saved pose not used: {path} is in frame {frame_id!r}, not '
                 f'{self.config.global_frame_id!r}')
            return None
        self.get_logger().info(f'starting from the last pose, saved in {path}')
        return self.pose_msg(mean, cov, self.get_clock().now().to_msg())

    def schedule_pose_saving(self):
        """(Re)start the timer that saves the estimate every 1 / save_pose_rate seconds."""
        if self.save_timer is not None:
            self.destroy_timer(self.save_timer)
            self._entities.remove(self.save_timer)
            self.save_timer = None
        if self.config.save_pose_rate > 0:
            self.save_timer = self.owned(self.create_timer(1.0 / self.config.save_pose_rate,
                                                           self.save_last_pose))

    def save_last_pose(self):
        """Save the estimate if it changed since the last save (one warning per minute when
        the file cannot be written)."""
        if not self.pose_unsaved or self.config.save_pose_rate <= 0 \
                or self.localizer is None or not self.localizer.ready:
            return
        mean, cov = self.localizer.estimate()
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            return
        try:
            save_pose(self.pose_file(), self.config.global_frame_id, mean, cov)
        except OSError as exc:
            warn(self, f'last pose not saved: {exc}', throttle_duration_sec=60.0)
            return
        self.pose_unsaved = False

    def apply_parameters(self, changes):
        """Runtime parameter changes (``RUNTIME_PARAMETERS``): the filter reads its config at
        each use, so replacing it applies them from the next image on."""
        self.config = dataclasses.replace(self.config, **changes)
        self.localizer.config = self.config
        self.localizer.base_from_camera = torch.as_tensor(self.base_from_camera(),
                                                          dtype=torch.float32)
        self.odom.max_jump = self.config.odom_jump_threshold
        self.odom.max_speed = self.config.odom_max_speed
        if 'save_pose_rate' in changes:
            self.schedule_pose_saving()
        self.get_logger().info('parameters set: ' + ', '.join(
            f'{k} = {v!r}' for k, v in changes.items()))

    # ------------------------------------------------------------------ map
    def load_map(self, path):
        """Load a map file and start global localization on it. Returns (ok, message); on
        failure (missing, unreadable, corrupt, empty or wrong image size) the current map,
        if any, stays and the message says why."""
        try:
            view_map = ViewMap.load(path)
            if len(view_map) == 0:
                raise FileFormatError(path, 'the map has no contexts')
            check_map_image_size(view_map, self.config.image_size, path)
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
        self.waiting_image = None
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
        self.add_odometry(stamp, odom_from_base)

    def on_tf_odometry(self, stamp, odom_from_base):
        """odom_source tf: each new odom -> base transform (tf_listener.TfInputs)."""
        if self.active:
            self.add_odometry(stamp, odom_from_base)

    def add_odometry(self, stamp, odom_from_base):
        """One odometry sample ``odom_from_base`` (x, y, yaw) at ``stamp`` (s), from the
        odometry topic or TF; a waiting image that it covers goes through the filter."""
        self.odom_received += 1
        self.last_odom_time = time.monotonic()
        if self.odom.add(stamp, odom_from_base):
            self.last_odom_reset = (self.last_odom_time, self.odom.last_reset)
            warn(self, f'odometry {self.odom.last_reset}: time base reset',
                 throttle_duration_sec=1.0)
            self.localizer.reset_time()
            if self.waiting_image is not None:
                self.dropped_images += 1
                self.waiting_image = None
        if self.waiting_image is not None and self.odom.latest_stamp >= self.waiting_image[0]:
            stamp, rgb = self.waiting_image
            self.waiting_image = None
            self.process_image(stamp, rgb)

    def base_from_camera(self):
        """The camera mounting (x, y, yaw): base_frame_id -> the images' frame from TF when TF
        has it, else the camera_offset_* parameters."""
        pose = self.tf_inputs.camera_mounting(self.image_frame)
        return camera_offset(self.config) if pose is None else pose

    def on_image_frame(self, frame_id):
        """Each image's frame: the filter scores the camera mounted where TF says."""
        self.image_frame = frame_id
        if self.localizer is not None:
            self.localizer.base_from_camera = torch.as_tensor(self.base_from_camera(),
                                                              dtype=torch.float32)

    def on_image(self, stamp, rgb):
        """Images often arrive before the odometry that covers their stamp: the newest one
        waits for it (older waiting images are dropped, to stay real time)."""
        if not self.active:
            return
        self.get_logger().debug(f'image {stamp:.3f}, odometry up to {self.odom.latest_stamp}')
        self.images_received += 1
        if not self.localizer.ready:
            return
        latest = self.odom.latest_stamp
        if latest is None or latest < stamp:
            if self.waiting_image is not None:
                self.dropped_images += 1
            self.waiting_image = (stamp, rgb)
            return
        self.process_image(stamp, rgb)

    def process_image(self, stamp, rgb):
        """One image through the filter. The pose goes out before the filter's health check
        (scoring random reference poses), so that work is not in the image-to-pose latency."""
        t0 = time.perf_counter()
        report = self.localizer.step(stamp, rgb, self.odom, defer_health=True)
        if report is None:
            self.skipped_images += 1
            warn(self, 'no odometry around the image stamp: frame skipped',
                 throttle_duration_sec=5.0)
            return
        if not report.updated:
            self.publish_tf(stamp)
            return
        self.publish_estimate(stamp)
        self.localizer.check_health()
        self.get_logger().debug(f'image {stamp:.3f}: updated, '
                                f'{1e3 * (time.perf_counter() - t0):.0f} ms')
        self.update_times.append(time.perf_counter() - t0)
        self.updates += 1
        self.last_report = report
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
        if msg.header.frame_id != self.config.global_frame_id:
            warn(self, f'initial pose in frame {msg.header.frame_id!r} rejected: '
                 f'expected {self.config.global_frame_id!r}')
            return
        try:
            mean = pose_to_xyyaw(msg.pose.pose)
        except ValueError as exc:
            warn(self, f'initial pose rejected: {exc}')
            return
        cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)
        idx = [0, 1, 5]  # x, y, yaw
        sub = cov[np.ix_(idx, idx)]
        if not np.isfinite(cov).all():
            warn(self, 'initial pose rejected: covariance not finite')
            return
        scale = max(float(np.abs(sub).max()), 1e-300)
        if not np.allclose(sub, sub.T, rtol=1e-6, atol=1e-9 * scale) \
                or float(np.linalg.eigvalsh((sub + sub.T) / 2).min()) < -1e-9 * scale:
            warn(self, 'initial pose rejected: covariance (x, y, yaw) is not symmetric '
                 'positive semi-definite')
            return
        if self.localizer.map_state is None:
            warn(self, 'initial pose ignored: no map loaded')
            return
        x0, y0, size = self.localizer.bounds
        if not (x0 - size <= mean[0] <= x0 + 2 * size and y0 - size <= mean[1] <= y0 + 2 * size):
            warn(self, f'initial pose rejected: ({mean[0]:.4g}, {mean[1]:.4g}) is far outside '
                 'the map')
            return
        std = np.sqrt(np.maximum(np.diag(sub), 0.0))
        std[:2] = np.where(std[:2] > 0, np.minimum(std[:2], size), self.config.initial_sigma_xy)
        std[2] = min(std[2], math.pi) if std[2] > 0 else self.config.initial_sigma_yaw
        self.localizer.init_gaussian(mean, std)
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
    def stamp_msg(self, stamp_s):
        return sec_to_stamp(stamp_s)

    def publish_estimate(self, stamp):
        cfg = self.config
        mean, cov = self.localizer.estimate()
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            warn(self, 'estimate not finite: not published', throttle_duration_sec=5.0)
            return
        msg = self.pose_msg(mean, cov, self.stamp_msg(stamp))
        self.pose_pub.publish(msg)
        self.pose_unsaved = True
        if cfg.publish_particles:
            particles, weights = self.localizer.particle_array()
            self.particles_pub.publish(poses_to_pose_array(particles, cfg.global_frame_id,
                                                           msg.header.stamp))
            self.markers_pub.publish(self.weight_markers(particles, weights, msg.header.stamp))
            self.particle_cloud.publish(particles, weights, cfg.global_frame_id,
                                        msg.header.stamp)
        self.publish_tf(stamp, mean)

    def pose_msg(self, mean, cov, stamp):
        """PoseWithCovarianceStamped in global_frame_id from (x, y, yaw) and its 3x3 cov."""
        msg = PoseWithCovarianceStamped()
        msg.header.frame_id, msg.header.stamp = self.config.global_frame_id, stamp
        msg.pose.pose = xyyaw_to_pose(mean)
        c = np.zeros((6, 6))
        idx = [0, 1, 5]  # x, y, yaw in the 6x6 (x, y, z, roll, pitch, yaw) layout
        c[np.ix_(idx, idx)] = cov
        msg.pose.covariance = c.flatten().tolist()
        return msg

    def publish_tf(self, stamp, map_from_base=None):
        """map -> odom such that map -> odom -> base equals the estimate at the image stamp."""
        if not self.config.tf_broadcast or not self.localizer.ready:
            return
        if map_from_base is None:
            map_from_base = self.localizer.estimate()[0]
        odom_from_base = self.odom.pose_at(stamp)
        if odom_from_base is None:
            return
        map_from_odom = compose(map_from_base, inverse(odom_from_base))
        t = TransformStamped()
        t.header.frame_id = self.config.global_frame_id
        t.child_frame_id = self.config.odom_frame_id
        t.header.stamp = self.stamp_msg(stamp + self.config.transform_tolerance)
        t.transform.translation.x, t.transform.translation.y = map(float, map_from_odom[:2])
        q = yaw_to_quaternion(float(map_from_odom[2]))
        (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
         t.transform.rotation.w) = q
        self.tf_pub.publish(TFMessage(transforms=[t]))

    def weight_markers(self, particles, weights, stamp):
        m = Marker(type=Marker.POINTS, action=Marker.ADD, ns='particles', id=0)
        m.header.frame_id, m.header.stamp = self.config.global_frame_id, stamp
        m.scale.x = m.scale.y = 0.15
        rel = weights / max(float(weights.max()), 1e-12)
        from geometry_msgs.msg import Point
        from std_msgs.msg import ColorRGBA
        m.points = [Point(x=float(p[0]), y=float(p[1])) for p in particles]
        m.colors = [ColorRGBA(r=float(r), g=0.2, b=float(1.0 - r), a=0.9) for r in rel]
        return MarkerArray(markers=[m])

    def health(self):
        """(level, message, values) of the node and filter state for /diagnostics."""
        loc, cfg = self.localizer, self.config
        now = time.monotonic()
        h = loc.health
        odom_age = None if self.last_odom_time is None else now - self.last_odom_time
        problems = []  # (level, text), most severe first after sorting
        if loc.map_state is None:
            problems.append((DiagnosticStatus.ERROR, f'no map: {self.map_status}'))
        if odom_age is None:
            problems.append((DiagnosticStatus.WARN, 'no odometry received' + (
                f' (TF {cfg.odom_frame_id} -> {cfg.base_frame_id})'
                if cfg.odom_source == 'tf' else f' ({cfg.odom_topic})')))
        elif odom_age > cfg.odom_timeout:
            problems.append((DiagnosticStatus.WARN, f'no odometry for {odom_age:.1f} s'))
        if self.last_odom_reset is not None and now - self.last_odom_reset[0] < 10.0:
            problems.append((DiagnosticStatus.WARN,
                             f'odometry {self.last_odom_reset[1]}: time base reset'))
        if h.collapsed:
            problems.append((DiagnosticStatus.WARN, f'likelihood collapsed (count {h.collapsed}, '
                             f'belief score {h.belief_score:.2f}): recovering'))
        if h.unreliable:
            problems.append((DiagnosticStatus.WARN, 'lost: no view of the map matches the '
                             f'images (best score below min_evidence {cfg.min_evidence:g} in '
                             f'{h.weak_evidence} recent updates); covariance covers the map'))
        if loc.map_state is not None and not self.updates and not problems:
            problems.append((DiagnosticStatus.WARN, 'waiting for images/odometry'))
        problems.sort(key=lambda p: -level_rank(p[0]))  # stable: ERROR first
        level = problems[0][0] if problems else DiagnosticStatus.OK
        message = '; '.join(p[1] for p in problems) if problems else 'localizing'
        spread = float('nan')
        if loc.ready:
            cov = loc.estimate()[1]
            spread = math.sqrt(max(cov[0, 0] + cov[1, 1], 0.0))
        recent = list(self.update_times)[-20:]
        values = {'map': self.map_status, 'map_contexts': loc.map_size,
                  'device': self.device_name,
                  'particles': loc.particles.shape[1] if loc.ready else 0,
                  'ess': round(loc.ess(), 1), 'spread_xy_m': round(spread, 3),
                  'images_received': self.images_received, 'updates': self.updates,
                  'dropped_images': self.dropped_images, 'skipped_images': self.skipped_images,
                  'update_ms_mean': round(1e3 * float(np.mean(recent)), 2) if recent else 0.0,
                  'update_ms_max': round(1e3 * float(np.max(recent)), 2) if recent else 0.0,
                  'odometry_received': self.odom_received,
                  'odometry_age_s': round(odom_age, 2) if odom_age is not None else -1.0,
                  'odometry_time_resets': self.odom.time_resets,
                  'odometry_jumps': self.odom.jumps,
                  'belief_score': round(h.belief_score, 3),
                  'collapsed_updates': h.collapsed, 'collapsed_total': h.collapsed_total,
                  'recovery_injections': h.injections,
                  'recovery_global_reinits': h.global_reinits,
                  'unreliable': h.unreliable, 'unreliable_updates_total': h.unreliable_total}
        return level, message, values

    def publish_diagnostics(self):
        level, message, values = self.health()
        status = DiagnosticStatus(name=f'{self.get_name()}: filter', hardware_id='dmn_localizer',
                                  level=level, message=message)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


def main(args=None):
    return run_node(LocalizerNode, 'localizer_node', args)


if __name__ == '__main__':
    sys.exit(main())
