"""Pieces both nodes share: QoS profiles, image subscription, pose-source subscription,
throttled warnings."""
import math
import sys
import time

import numpy as np
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.qos import (DurabilityPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CompressedImage, Image

from dmn_localizer.depth import DepthBuffer, message_columns
from dmn_localizer.util.errors import UserError
from dmn_localizer.images import resize_square
from dmn_localizer.nodes.conversions import (checked_stamp_to_sec, compressed_msg_to_rgb,
                                             image_to_rgb, pose_to_xyyaw)

# Latched outputs (like amcl_pose / map): late subscribers get the last message.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

POSE_TYPES = {'pose_stamped': (PoseStamped, lambda m: m.pose),
              'pose_with_covariance_stamped': (PoseWithCovarianceStamped, lambda m: m.pose.pose),
              'odometry': (Odometry, lambda m: m.pose.pose)}


def subscribe_images(node, topic, transport, image_size, callback, frame_id=None,
                     frame_callback=None):
    """Subscribe to raw or compressed images with sensor-data QoS; ``callback(stamp_s, rgb)``
    gets (image_size, image_size, 3) uint8 RGB. Bad frames are skipped with a throttled
    warning naming the topic and the reason. Images whose header names a frame other than
    ``frame_id`` (if given) are used, with one warning. ``frame_callback(frame_id)``, if
    given, gets each usable image's header frame_id before ``callback`` runs."""
    if transport not in ('raw', 'compressed'):
        raise UserError(f"image_transport must be 'raw' or 'compressed', not {transport!r}")
    cls, decode = (Image, image_to_rgb) if transport == 'raw' else \
        (CompressedImage, compressed_msg_to_rgb)
    if transport == 'compressed' and not topic.endswith('/compressed'):
        topic = topic + '/compressed'

    def on_image(msg):
        try:
            stamp = checked_stamp_to_sec(msg.header.stamp)
            rgb = resize_square(decode(msg), image_size)
        except ValueError as exc:  # images.ImageError included
            warn(node, f'{topic}: frame skipped: {exc}', throttle_duration_sec=5.0,
                 key=('image', topic))
            return
        check_frame(node, f'{topic}: image', msg.header.frame_id, frame_id, 'camera_frame_id')
        if frame_callback is not None:
            frame_callback(msg.header.frame_id)
        callback(stamp, rgb)
    return node.create_subscription(cls, topic, on_image, qos_profile_sensor_data)


def depth_input(node, config, takes_depth):
    """The node's depth camera (``config.depth_topic``; None when empty): subscribes (with
    sensor-data QoS, owned by the lifecycle ``node``) to a depth image registered to the camera
    images, each frame becoming ``config.image_size`` column depths (:mod:`dmn_localizer.
    depth`) in a :class:`~dmn_localizer.depth.DepthBuffer`, and returns ``depth_at(stamp)``:
    the frame nearest to an image stamp within ``depth_sync_tolerance_s``, or None (with a
    throttled warning: the image is then scored with predicted depths). Bad frames are skipped
    with a throttled warning. ``takes_depth``: whether the model uses them (else one warning
    says so; a map still stores them)."""
    topic = config.depth_topic
    if not topic:
        return None
    buffer = DepthBuffer(config.depth_sync_tolerance_s)
    if not takes_depth:
        warn(node, f'depth_topic {topic}: the model predicts no column depths (only aligned '
             'models take measured ones); the depth is not used for scoring')

    def on_depth(msg):
        try:
            stamp = checked_stamp_to_sec(msg.header.stamp)
            value = message_columns(msg, config.image_size)
        except ValueError as exc:  # images.ImageError included
            warn(node, f'{topic}: depth frame skipped: {exc}', throttle_duration_sec=5.0,
                 key=('depth', topic))
            return
        buffer.add(stamp, value)
    node.owned(node.create_subscription(Image, topic, on_depth, qos_profile_sensor_data))

    def depth_at(stamp):
        value = buffer.at(stamp)
        if value is None:
            warn(node, f'{topic}: no depth frame within depth_sync_tolerance_s of an image at '
                 f'{stamp:.3f} s: predicted depths used', throttle_duration_sec=10.0,
                 key=('depth-pair', topic))
        return value
    return depth_at


def check_frame(node, what, actual, expected, parameter):
    """One warning (per node, ``what`` and frame) when a message's frame id is not
    ``expected`` (the value of ``parameter``); nothing when ``expected`` is None."""
    if expected is not None and actual != expected:
        warn(node, f'{what} in frame {actual!r}, expected {parameter} {expected!r} (warned '
             'once)', throttle_duration_sec=math.inf, key=('frame', what, expected))


def subscribe_poses(node, topic, pose_type, callback, child_frame_id=None):
    """Subscribe to a pose source; ``callback(stamp_s, frame_id, xyyaw)``; non-finite poses
    are rejected with a throttled warning. Odometry whose child_frame_id is not
    ``child_frame_id`` (if given) is used, with one warning."""
    if pose_type not in POSE_TYPES:
        raise UserError(f'pose_type must be one of {", ".join(POSE_TYPES)}, not {pose_type!r}')
    cls, get_pose = POSE_TYPES[pose_type]

    def on_pose(msg):
        try:
            stamp = checked_stamp_to_sec(msg.header.stamp)
            xyyaw = pose_to_xyyaw(get_pose(msg))
        except ValueError as exc:
            warn(node, f'{topic}: pose rejected: {exc}', throttle_duration_sec=5.0,
                 key=('pose', topic))
            return
        if isinstance(msg, Odometry):
            check_frame(node, f'{topic}: child', msg.child_frame_id, child_frame_id,
                        'base_frame_id')
        callback(stamp, msg.header.frame_id, xyyaw)
    return node.create_subscription(cls, topic, on_pose, RELIABLE)


def warn(node, message, throttle_duration_sec=None, key=None):
    """Log a warning (``warning`` or the older ``warn``), at most once per
    ``throttle_duration_sec`` per ``key`` (default: the calling line), with the number of
    warnings suppressed since appended.

    rclpy's own throttle is keyed on the line that calls the logger, which would be this
    function for every warning of a node: one throttled warning would silence all others.
    """
    logger = node.get_logger()
    log = getattr(logger, 'warning', None) or logger.warn
    if throttle_duration_sec:
        if key is None:
            caller = sys._getframe(1)
            key = (caller.f_code.co_filename, caller.f_lineno)
        state = node.__dict__.setdefault('_dmn_throttled_warnings', {})
        now = time.monotonic()
        last, suppressed = state.get(key, (None, 0))
        if last is not None and now - last < throttle_duration_sec:
            state[key] = (last, suppressed + 1)
            return
        state[key] = (now, 0)
        if suppressed:
            message = f'{message} ({suppressed} similar suppressed)'
    log(message)


def camera_offset(config):
    """base_from_camera as a (3,) pose from the camera_offset_* parameters."""
    return np.array([config.camera_offset_x, config.camera_offset_y, config.camera_offset_yaw])


def run_node(node_class, name, args=None):
    """``main()`` of a node: spin until Ctrl-C or shutdown; a UserError is one line on stderr
    and exit status 2. Shutdown works the same on Humble, Jazzy and Kilted."""
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException

    from dmn_localizer.util.allocator import keep_freed_memory
    keep_freed_memory()  # steady update latency: no page faults for the temporaries
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        rclpy.spin(node)
    except UserError as exc:
        print(f'{name}: error: {exc}', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C shut the context down under a running callback (its publish fails): done
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
