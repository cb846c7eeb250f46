"""Bag player and estimate recorder for ``dmn-localizer replay --live`` (one process).

    python -m dmn_localizer.nodes.tools.bag_player --bag BAG --topic /camera/image_raw
        --topic /odom --image-topic /camera/image_raw --record FILE.npz [--rate R]
        [--initial-pose X Y YAW SX SY SYAW]

Waits until the localizer node's subscriptions and ``amcl_pose`` publisher are matched,
optionally sends ``initialpose``, then publishes the bag's serialized messages unchanged (header
stamps as recorded) at the bag's pace scaled by ``--rate``, like ``ros2 bag play``. Meanwhile a
:class:`~dmn_localizer.nodes.tools.recorder.Recorder` records the node's estimates. After the
last message it waits for the estimate of the last image (or ``--settle`` seconds without a new
one) and writes FILE.npz atomically. Exit status: 0 done, 2 bad bag, 3 the node never came up
(or went away), 130 interrupted (nothing written).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from dmn_localizer.nodes.conversions import xyyaw_to_pose
from dmn_localizer.nodes.tools.recorder import Recorder
from dmn_localizer.util.atomic import atomic_path
from dmn_localizer.util.errors import UserError

PLAY_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


PLAYABLE = {'sensor_msgs/msg/Image': Image, 'sensor_msgs/msg/CompressedImage': CompressedImage,
            'nav_msgs/msg/Odometry': Odometry}
"""The message types the player publishes (what the localizer node subscribes to)."""


def message_class(msgtype, topic):
    """The rclpy class of ``msgtype`` (:data:`PLAYABLE`); UserError for any other type."""
    if msgtype not in PLAYABLE:
        raise UserError(f'{topic} is {msgtype}; the player publishes '
                        f'{", ".join(sorted(PLAYABLE))}')
    return PLAYABLE[msgtype]


def image_stamp(reader, conn, raw):
    """The header stamp (s) of an image message of the bag, or None if it does not decode."""
    try:
        stamp = reader.deserialize(raw, conn.msgtype).header.stamp
    except Exception:   # rosbags raises several types for damaged CDR
        return None
    return stamp.sec + stamp.nanosec * 1e-9


def log(text):
    print(f'[replay --live] {text}', file=sys.stderr, flush=True)


class Session:
    def __init__(self, node, executor, args):
        self.node, self.executor, self.args = node, executor, args
        self.recorder = Recorder(node, args.pose_topic, args.particles_topic)
        self.image_stamps, self.image_published = [], []

    def spin_once(self, timeout):
        if not rclpy.ok():   # SIGINT/SIGTERM shut the context down
            raise KeyboardInterrupt
        self.executor.spin_once(timeout_sec=timeout)

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.spin_once(min(left, 0.05))

    def spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.spin_once(0.05)
        return True

    def run(self, reader, conns):
        args = self.args
        pubs = {c.topic: self.node.create_publisher(message_class(c.msgtype, c.topic),
                                                    c.topic, PLAY_QOS) for c in conns}
        init_pub = None
        if args.initial_pose:
            init_pub = self.node.create_publisher(PoseWithCovarianceStamped, 'initialpose',
                                                  PLAY_QOS)
        waited = [*pubs.values(), *([init_pub] if init_pub else [])]
        t0 = time.monotonic()
        if not self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in waited)
                               and self.recorder.matched(), args.startup_timeout):
            missing = [p.topic_name for p in waited if p.get_subscription_count() == 0]
            if not self.recorder.matched():
                missing.append(f'{args.pose_topic} (publisher)')
            log(f'the localizer node did not come up within {args.startup_timeout:.0f} s '
                f'(nothing matched on {", ".join(missing)})')
            return 3
        self.spin_for(0.5)   # let every match settle on both sides
        log(f'localizer node ready after {time.monotonic() - t0:.1f} s')
        if init_pub:
            x, y, yaw, sx, sy, syaw = args.initial_pose
            msg = PoseWithCovarianceStamped()
            msg.header.frame_id = args.map_frame
            msg.pose.pose = xyyaw_to_pose((x, y, yaw))
            cov = np.zeros((6, 6))
            cov[0, 0], cov[1, 1], cov[5, 5] = sx * sx, sy * sy, syaw * syaw
            msg.pose.covariance = cov.flatten().tolist()
            init_pub.publish(msg)
            self.spin_for(1.0)
        log(f'playing {", ".join(pubs)} at rate {args.rate:g}')
        first_ns, wall0, count, skipped = None, None, 0, 0
        for conn, t_ns, raw in reader.messages(connections=conns):
            if first_ns is None:
                first_ns, wall0 = t_ns, time.monotonic()
            target = wall0 + (t_ns - first_ns) * 1e-9 / args.rate
            while (left := target - time.monotonic()) > 0:
                self.spin_once(min(left, 0.05))
            if conn.topic == args.image_topic:
                stamp = image_stamp(reader, conn, raw)
                if stamp is None:   # a damaged message: the offline reader skips it too
                    skipped += 1
                    continue
                self.image_stamps.append(stamp)
                self.image_published.append(time.monotonic())
            pubs[conn.topic].publish(bytes(raw))
            count += 1
            if not pubs[conn.topic].get_subscription_count():
                log(f'{conn.topic} lost its subscriber (the node went away)')
                return 3
            self.spin_once(0)
        log(f'played {count} messages ({len(self.image_stamps)} images) in '
            f'{time.monotonic() - (wall0 or time.monotonic()):.1f} s'
            + (f'; skipped {skipped} image messages that do not decode' if skipped else ''))
        rec = self.recorder
        last = self.image_stamps[-1] if self.image_stamps else float('inf')
        end = time.monotonic()

        def finished():
            if rec.stamps and rec.stamps[-1] >= last - 1e-6:
                return True           # the estimate of the last image
            if rec.node_idle(end):    # the node processed or dropped everything it got
                return True
            quiet_since = max([end, *rec.received[-1:]])
            return time.monotonic() - quiet_since > args.settle
        self.spin_until(finished, float('inf'))
        # the node's final counters: /diagnostics (1 Hz) sent after the last estimate
        after = max([end, *rec.received[-1:]])
        self.spin_until(lambda: (rec.diagnostics_received or 0) > after, 1.5)
        log(f'recorded {len(rec.stamps)} estimates ({time.monotonic() - end:.1f} s after the '
            'last message)')
        return 0

    def save(self, path):
        arrays = self.recorder.arrays()
        arrays['image_stamps'] = np.asarray(self.image_stamps, np.float64)
        arrays['image_published'] = np.asarray(self.image_published, np.float64)
        arrays['diagnostics'] = np.asarray(json.dumps(self.recorder.diagnostics))
        with atomic_path(path) as tmp, open(tmp, 'wb') as f:
            np.savez(f, **arrays)


def parse_args(argv):
    p = argparse.ArgumentParser(prog='bag_player', description=__doc__.split('\n')[0])
    p.add_argument('--bag', required=True, type=Path)
    p.add_argument('--topic', action='append', required=True, help='topic to play')
    p.add_argument('--image-topic', required=True, help='played topic whose stamps count')
    p.add_argument('--record', required=True, type=Path, help='output .npz')
    p.add_argument('--rate', type=float, default=1.0)
    p.add_argument('--pose-topic', default='amcl_pose')
    p.add_argument('--particles-topic', default='localizer/particles')
    p.add_argument('--initial-pose', type=float, nargs=6, metavar=('X', 'Y', 'YAW', 'SX', 'SY',
                                                                   'SYAW'))
    p.add_argument('--map-frame', default='map')
    p.add_argument('--startup-timeout', type=float, default=180.0)
    p.add_argument('--settle', type=float, default=10.0,
                   help='after playing, stop when no estimate came for this long (s)')
    args = p.parse_args(argv)
    if not args.rate > 0:
        p.error('--rate must be > 0')
    return args


def main(argv=None):
    args = parse_args(rclpy.utilities.remove_ros_args(sys.argv if argv is None else argv)[1:])
    from dmn_localizer.bags.read import open_bag
    try:
        reader = open_bag(args.bag)
    except UserError as exc:
        print(f'bag_player: error: {exc}', file=sys.stderr)
        return 2
    rclpy.init()
    node = executor = None
    status = 130
    try:
        conns = [c for c in reader.connections if c.topic in args.topic]
        missing = set(args.topic) - {c.topic for c in conns}
        if missing:
            print(f'bag_player: error: {args.bag}: no topic {", ".join(sorted(missing))}',
                  file=sys.stderr)
            return 2
        node = rclpy.create_node('dmn_replay_player')
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        session = Session(node, executor, args)
        status = session.run(reader, conns)
        if status == 0:
            session.save(args.record)
    except UserError as exc:
        print(f'bag_player: error: {exc}', file=sys.stderr)
        status = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        status = 130
    finally:
        reader.close()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == '__main__':
    sys.exit(main())
