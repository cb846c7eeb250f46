"""The localizer's output messages from numpy: the pose with covariance, the particles as
coloured markers, TF ``map -> odom``."""
import numpy as np
from geometry_msgs.msg import Point, PoseWithCovarianceStamped, TransformStamped
from std_msgs.msg import ColorRGBA
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from dmn_localizer.geometry import compose, inverse, yaw_to_quaternion
from dmn_localizer.localization.initial_pose import XYYAW
from dmn_localizer.nodes.conversions import xyyaw_to_pose


def pose_with_covariance(mean, cov, frame_id, stamp):
    """PoseWithCovarianceStamped in ``frame_id`` from (x, y, yaw) and its 3x3 covariance."""
    msg = PoseWithCovarianceStamped()
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.pose.pose = xyyaw_to_pose(mean)
    c = np.zeros((6, 6))
    c[np.ix_(XYYAW, XYYAW)] = cov
    msg.pose.covariance = c.flatten().tolist()
    return msg


def weight_markers(particles, weights, frame_id, stamp):
    """The particles (K, 3) as points coloured by weight, blue (low) to red (the highest)."""
    m = Marker(type=Marker.POINTS, action=Marker.ADD, ns='particles', id=0)
    m.header.frame_id, m.header.stamp = frame_id, stamp
    m.scale.x = m.scale.y = 0.15
    rel = weights / max(float(weights.max()), 1e-12)
    m.points = [Point(x=float(p[0]), y=float(p[1])) for p in particles]
    m.colors = [ColorRGBA(r=float(r), g=0.2, b=float(1.0 - r), a=0.9) for r in rel]
    return MarkerArray(markers=[m])


def map_to_odom(map_from_base, odom_from_base, map_frame, odom_frame, stamp):
    """TF ``map_frame -> odom_frame`` such that map -> odom -> base equals ``map_from_base``
    when odom -> base is ``odom_from_base``."""
    map_from_odom = compose(map_from_base, inverse(odom_from_base))
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id, t.header.stamp = map_frame, odom_frame, stamp
    t.transform.translation.x, t.transform.translation.y = map(float, map_from_odom[:2])
    q = yaw_to_quaternion(float(map_from_odom[2]))
    (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
     t.transform.rotation.w) = q
    return TFMessage(transforms=[t])
