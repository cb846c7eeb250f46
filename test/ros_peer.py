"""A tiny ROS 2 peer process for DDS tests: publishes or receives one kind of message.

    python test/ros_peer.py pub {image,pose,tf} SECONDS
    python test/ros_peer.py sub {image,pose,tf} SECONDS   -> prints one JSON line, exit 0/3

The publisher republishes every 50 ms until SECONDS pass (discovery takes 0.01-3 s); the
subscriber prints the first message it gets as JSON and exits 0, or prints 'timeout' and
exits 3 when nothing came (1 stays a crash's status).
"""
import json
import sys
import time

import rclpy
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from tf2_msgs.msg import TFMessage

TOPICS = {'image': ('camera/image_raw', Image), 'pose': ('pose', PoseWithCovarianceStamped),
          'tf': ('/tf', TFMessage)}


def make(kind):
    if kind == 'image':
        msg = Image(height=2, width=3, encoding='rgb8', step=9, data=bytes(range(18)))
        msg.header.frame_id = 'camera_link'
    elif kind == 'pose':
        msg = PoseWithCovarianceStamped()
        msg.header.frame_id = 'map'
        msg.pose.pose.position.x, msg.pose.pose.position.y = 1.5, -2.25
        msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = 0.6, 0.8
        msg.pose.covariance[0] = msg.pose.covariance[7] = 0.25
        msg.pose.covariance[35] = 0.01
    else:
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = 'map', 'odom'
        t.transform.translation.x = 3.0
        t.transform.rotation.w = 1.0
        msg = TFMessage(transforms=[t])
    return msg


def summary(kind, msg):
    if kind == 'image':
        return {'encoding': msg.encoding, 'size': [msg.height, msg.width],
                'data': list(bytes(msg.data)), 'frame': msg.header.frame_id}
    if kind == 'pose':
        p = msg.pose.pose
        return {'frame': msg.header.frame_id, 'xy': [p.position.x, p.position.y],
                'qzw': [p.orientation.z, p.orientation.w],
                'cov': [msg.pose.covariance[i] for i in (0, 7, 35)]}
    return {'transforms': [[t.header.frame_id, t.child_frame_id, t.transform.translation.x]
                           for t in msg.transforms]}


def main(role, kind, seconds):
    rclpy.init()
    node = rclpy.create_node(f'peer_{role}_{kind}')
    topic, cls = TOPICS[kind]
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    deadline = time.monotonic() + seconds
    got = []
    try:
        if role == 'pub':
            pub = node.create_publisher(cls, topic, qos)
            while time.monotonic() < deadline:
                pub.publish(make(kind))
                rclpy.spin_once(node, timeout_sec=0.05)
            return 0
        node.create_subscription(cls, topic, got.append, qos)
        while not got and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        if not got:
            print('timeout: nothing received', flush=True)
            return 3
        print(json.dumps(summary(kind, got[0])), flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
