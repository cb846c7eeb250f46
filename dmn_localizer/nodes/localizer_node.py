"""localizer_node: DMN particle-filter localization, with nav2 AMCL's ROS interface.

Subscribes: camera (raw or compressed, sensor-data QoS), ``odom`` (nav_msgs/Odometry),
``initialpose`` (PoseWithCovarianceStamped in the map frame). Publishes: ``~/pose``
(PoseWithCovarianceStamped, latched like ``amcl_pose``), ``~/particles`` (PoseArray),
``~/particle_markers`` (MarkerArray coloured by weight), TF ``map -> odom`` (future-dated by
``transform_tolerance``) and ``/diagnostics``. Services: ``~/reinitialize_global_localization``
and ``~/request_nomotion_update`` (std_srvs/Empty). All filter math is in
:mod:`dmn_localizer.localizer`; this file converts messages and keeps time.
"""
import math
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import (PoseArray, PoseWithCovarianceStamped, TransformStamped)
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.time import Time
from std_srvs.srv import Empty
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from dmn_localizer.config import LocalizerConfig
from dmn_localizer.errors import UserError
from dmn_localizer.geometry import compose, inverse, yaw_to_quaternion
from dmn_localizer.localizer import Localizer, select_device
from dmn_localizer.nodes.common import (LATCHED, RELIABLE, camera_offset, subscribe_images,
                                        warn)
from dmn_localizer.nodes.conversions import (pose_to_xyyaw, poses_to_pose_array,
                                             stamp_to_sec, xyyaw_to_pose)
from dmn_localizer.nodes.parameters import declare_config, refuse_changes
from dmn_localizer.odometry import OdometryBuffer
from dmn_localizer.resources import default_model_path
from dmn_localizer.view_map import ViewMap


def load_model_file(path):
    from dmn_localizer.model.io import load_model
    path = Path(path) if path else default_model_path()
    return load_model(path), path


class LocalizerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('localizer', **kwargs)
        self.config = cfg = declare_config(self, LocalizerConfig)
        refuse_changes(self, ['image_topic', 'image_transport', 'odom_topic', 'model',
                              'map_file', 'image_size', 'device', 'initial_pose_topic'])
        device = select_device(cfg.device)
        model, self.model_file = load_model_file(cfg.model)
        self.localizer = Localizer(model, cfg, device, base_from_camera=camera_offset(cfg))
        self.device_name = str(device)
        self.map_status = 'no map_file given'
        if cfg.map_file:
            self.load_map(cfg.map_file)
        self.odom = OdometryBuffer()
        self.waiting_image = None  # (stamp, rgb) until odometry covers its stamp
        self.dropped_images = 0
        self.update_times = []
        self.last_report = None

        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, '~/pose', LATCHED)
        self.particles_pub = self.create_publisher(PoseArray, '~/particles', RELIABLE)
        self.markers_pub = self.create_publisher(MarkerArray, '~/particle_markers', RELIABLE)
        self.tf_pub = self.create_publisher(TFMessage, '/tf', 100)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        subscribe_images(self, cfg.image_topic, cfg.image_transport, cfg.image_size,
                         self.on_image)
        self.create_subscription(Odometry, cfg.odom_topic, self.on_odom, RELIABLE)
        self.create_subscription(PoseWithCovarianceStamped, cfg.initial_pose_topic,
                                 self.on_initial_pose, RELIABLE)
        self.create_service(Empty, '~/reinitialize_global_localization', self.on_reinit_global)
        self.create_service(Empty, '~/request_nomotion_update', self.on_nomotion_update)
        self.create_timer(1.0, self.publish_diagnostics)
        if self.localizer.map_state is not None:
            self.localizer.init_global()
        self.get_logger().info(f'model {self.model_file} on {self.device_name}; '
                               f'{self.map_status}')

    # ------------------------------------------------------------------ inputs
    def load_map(self, path):
        view_map = ViewMap.load(path)
        self.localizer.set_map(view_map)
        self.map_status = f'{len(view_map)} contexts from {path}'

    def on_odom(self, msg):
        try:
            odom_from_base = pose_to_xyyaw(msg.pose.pose)
        except ValueError as exc:
            warn(self, f'odometry rejected: {exc}', throttle_duration_sec=5.0)
            return
        if self.odom.add(stamp_to_sec(msg.header.stamp), odom_from_base):
            warn(self, 'odometry time went backwards: time base reset')
            self.localizer.last_stamp = None
        if self.waiting_image is not None and self.odom.latest_stamp >= self.waiting_image[0]:
            stamp, rgb = self.waiting_image
            self.waiting_image = None
            self.process_image(stamp, rgb)

    def on_image(self, stamp, rgb):
        """Images often arrive before the odometry that covers their stamp: the newest one
        waits for it (older waiting images are dropped, to stay real time)."""
        self.get_logger().debug(f'image {stamp:.3f}, odometry up to {self.odom.latest_stamp}')
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
        t0 = time.perf_counter()
        report = self.localizer.step(stamp, rgb, self.odom)
        if report is None:
            warn(self, 'no odometry around the image stamp: frame skipped',
                 throttle_duration_sec=5.0)
            return
        self.get_logger().debug(f'image {stamp:.3f}: updated {report.updated}, '
                                f'{1e3 * (time.perf_counter() - t0):.0f} ms')
        if not report.updated:
            self.publish_tf(stamp)
            return
        self.update_times.append(time.perf_counter() - t0)
        self.last_report = report
        self.publish_estimate(stamp)

    def on_initial_pose(self, msg):
        if msg.header.frame_id != self.config.map_frame:
            warn(self, f'initial pose in frame {msg.header.frame_id!r} rejected: '
                 f'expected {self.config.map_frame!r}')
            return
        try:
            mean = pose_to_xyyaw(msg.pose.pose)
        except ValueError as exc:
            warn(self, f'initial pose rejected: {exc}')
            return
        cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)
        var = np.array([cov[0, 0], cov[1, 1], cov[5, 5]])
        if not np.isfinite(cov).all() or (var < 0).any():
            warn(self, 'initial pose rejected: covariance not finite or negative')
            return
        std = np.sqrt(var)
        std[:2] = np.where(std[:2] > 0, std[:2], self.config.initial_sigma_xy)
        std[2] = std[2] if std[2] > 0 else self.config.initial_sigma_yaw
        if self.localizer.map_state is None:
            warn(self, 'initial pose ignored: no map loaded')
            return
        self.localizer.init_gaussian(mean, std)
        self.get_logger().info(f'initial pose ({mean[0]:.2f}, {mean[1]:.2f}, '
                               f'{math.degrees(mean[2]):.0f} deg), sigma {np.round(std, 2)}')

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
        return Time(nanoseconds=int(round(stamp_s * 1e9))).to_msg()

    def publish_estimate(self, stamp):
        cfg = self.config
        mean, cov = self.localizer.estimate()
        msg = PoseWithCovarianceStamped()
        msg.header.frame_id, msg.header.stamp = cfg.map_frame, self.stamp_msg(stamp)
        msg.pose.pose = xyyaw_to_pose(mean)
        c = np.zeros((6, 6))
        idx = [0, 1, 5]  # x, y, yaw in the 6x6 (x, y, z, roll, pitch, yaw) layout
        c[np.ix_(idx, idx)] = cov
        msg.pose.covariance = c.flatten().tolist()
        self.pose_pub.publish(msg)
        if cfg.publish_particles:
            particles, weights = self.localizer.particle_array()
            self.particles_pub.publish(poses_to_pose_array(particles, cfg.map_frame,
                                                           msg.header.stamp))
            self.markers_pub.publish(self.weight_markers(particles, weights, msg.header.stamp))
        self.publish_tf(stamp, mean)

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
        t.header.frame_id, t.child_frame_id = self.config.map_frame, self.config.odom_frame
        t.header.stamp = self.stamp_msg(stamp + self.config.transform_tolerance)
        t.transform.translation.x, t.transform.translation.y = map(float, map_from_odom[:2])
        q = yaw_to_quaternion(float(map_from_odom[2]))
        (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
         t.transform.rotation.w) = q
        self.tf_pub.publish(TFMessage(transforms=[t]))

    def weight_markers(self, particles, weights, stamp):
        m = Marker(type=Marker.POINTS, action=Marker.ADD, ns='particles', id=0)
        m.header.frame_id, m.header.stamp = self.config.map_frame, stamp
        m.scale.x = m.scale.y = 0.15
        rel = weights / max(float(weights.max()), 1e-12)
        from geometry_msgs.msg import Point
        from std_msgs.msg import ColorRGBA
        m.points = [Point(x=float(p[0]), y=float(p[1])) for p in particles]
        m.colors = [ColorRGBA(r=float(r), g=0.2, b=float(1.0 - r), a=0.9) for r in rel]
        return MarkerArray(markers=[m])

    def publish_diagnostics(self):
        loc = self.localizer
        status = DiagnosticStatus(name=f'{self.get_name()}: filter', hardware_id='dmn_localizer')
        if loc.map_state is None:
            status.level, status.message = DiagnosticStatus.ERROR, f'no map: {self.map_status}'
        elif not self.update_times:
            status.level, status.message = DiagnosticStatus.WARN, 'waiting for images/odometry'
        else:
            status.level, status.message = DiagnosticStatus.OK, 'localizing'
        spread = float('nan')
        if loc.ready:
            cov = loc.estimate()[1]
            spread = math.sqrt(max(cov[0, 0] + cov[1, 1], 0.0))
        recent = self.update_times[-20:]
        values = {'map_contexts': loc.map_size, 'device': self.device_name,
                  'particles': loc.particles.shape[1] if loc.ready else 0,
                  'ess': round(loc.ess(), 1), 'spread_xy_m': round(spread, 3),
                  'updates': len(self.update_times), 'dropped_images': self.dropped_images,
                  'update_ms_mean': round(1e3 * float(np.mean(recent)), 1) if recent else 0.0}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        if len(self.update_times) > 1000:
            del self.update_times[:-100]


def main(args=None):
    rclpy.init(args=args)
    node = None
    try:
        node = LocalizerNode()
        rclpy.spin(node)
    except UserError as exc:
        print(f'localizer_node: error: {exc}', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
