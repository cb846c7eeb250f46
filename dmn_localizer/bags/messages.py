"""Builders of ROS 2 messages as ``rosbags`` objects (Kilted type store), frames per REP-105."""
import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
from rosbags.interfaces import QosTime
from rosbags.typesys import Stores, get_typestore

from dmn_localizer.geometry import yaw_to_quaternion

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types

IMAGE = 'sensor_msgs/msg/Image'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
ODOMETRY = 'nav_msgs/msg/Odometry'
TF = 'tf2_msgs/msg/TFMessage'
POSE_STAMPED = 'geometry_msgs/msg/PoseStamped'
POSE_COV_STAMPED = 'geometry_msgs/msg/PoseWithCovarianceStamped'

_ZERO = QosTime(sec=0, nsec=0)
_INF = QosTime(sec=9223372036, nsec=854775807)


def qos(depth=10, latched=False):
    """Offered QoS of a recorded publisher: reliable, keep-last ``depth``; transient-local if
    ``latched`` (``/tf_static``), else volatile."""
    return Qos(history=QosHistory.KEEP_LAST, depth=depth,
               reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               deadline=_INF, lifespan=_INF, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=_INF, avoid_ros_namespace_conventions=False)


def stamp(ns):
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return T['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)


def stamp_ns(s):
    return int(s.sec) * 1_000_000_000 + int(s.nanosec)


def header(ns, frame_id):
    return T['std_msgs/msg/Header'](stamp=stamp(ns), frame_id=frame_id)


def pose_msg(x, y, yaw, z=0.0):
    qx, qy, qz, qw = yaw_to_quaternion(float(yaw))
    return T['geometry_msgs/msg/Pose'](
        position=T['geometry_msgs/msg/Point'](x=float(x), y=float(y), z=float(z)),
        orientation=T['geometry_msgs/msg/Quaternion'](x=qx, y=qy, z=qz, w=qw))


def transform(ns, parent, child, xyz=(0.0, 0.0, 0.0), quat=(0.0, 0.0, 0.0, 1.0)):
    return T['geometry_msgs/msg/TransformStamped'](
        header=header(ns, parent), child_frame_id=child,
        transform=T['geometry_msgs/msg/Transform'](
            translation=T['geometry_msgs/msg/Vector3'](
                x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            rotation=T['geometry_msgs/msg/Quaternion'](x=float(quat[0]), y=float(quat[1]),
                                                       z=float(quat[2]), w=float(quat[3]))))


def tf_message(transforms):
    return T[TF](transforms=list(transforms))


def image_msg(ns, frame_id, rgb):
    """sensor_msgs/Image rgb8 of an (H, W, 3) uint8 array."""
    h, w, _ = rgb.shape
    return T[IMAGE](header=header(ns, frame_id), height=h, width=w, encoding='rgb8',
                    is_bigendian=0, step=w * 3,
                    data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1))


def depth_image_msg(ns, frame_id, depth):
    """sensor_msgs/Image 32FC1 (REP-118: metres, NaN: no reading) of an (H, W) array."""
    h, w = depth.shape
    data = np.ascontiguousarray(depth, dtype='<f4').reshape(-1).view(np.uint8)
    return T[IMAGE](header=header(ns, frame_id), height=h, width=w, encoding='32FC1',
                    is_bigendian=0, step=w * 4, data=data)


def camera_info_msg(ns, frame_id, cam):
    """sensor_msgs/CameraInfo of a :class:`~dmn_localizer.sim.camera.CameraModel`."""
    return T[CAMERA_INFO](
        header=header(ns, frame_id), height=cam.height, width=cam.width,
        distortion_model='plumb_bob', d=np.zeros(5), k=np.array(cam.k),
        r=np.eye(3).reshape(-1), p=np.array(cam.p), binning_x=0, binning_y=0,
        roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))


def odometry_msg(ns, pose, twist_xy_yaw, cov_xy=0.01, cov_yaw=0.001):
    """nav_msgs/Odometry odom -> base_link with ``pose`` (x, y, yaw) and body-frame twist."""
    pc = np.zeros(36)
    pc[0] = pc[7] = cov_xy
    pc[35] = cov_yaw
    pc[14] = pc[21] = pc[28] = 1e6
    vx, vy, wz = twist_xy_yaw
    return T[ODOMETRY](
        header=header(ns, 'odom'), child_frame_id='base_link',
        pose=T['geometry_msgs/msg/PoseWithCovariance'](pose=pose_msg(*pose), covariance=pc),
        twist=T['geometry_msgs/msg/TwistWithCovariance'](
            twist=T['geometry_msgs/msg/Twist'](
                linear=T['geometry_msgs/msg/Vector3'](x=float(vx), y=float(vy), z=0.0),
                angular=T['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=float(wz))),
            covariance=pc.copy()))


def pose_stamped_msg(ns, frame_id, pose):
    return T[POSE_STAMPED](header=header(ns, frame_id), pose=pose_msg(*pose))


# camera_link (x forward, z up) -> camera_optical_frame (z forward, x right, y down), REP-103
OPTICAL_QUAT = (-0.5, 0.5, -0.5, 0.5)
