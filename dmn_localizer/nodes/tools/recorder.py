"""Recorder of a localizer node's outputs for ``dmn-localizer replay --live``.

Subscribes ``amcl_pose`` (PoseWithCovarianceStamped; reliable, transient-local like the
node's latched publisher, deep queue so no estimate is lost), ``localizer/particles``
(PoseArray; every ``snapshot_every``-th kept) and ``/diagnostics`` (the node's last status).
Each estimate keeps its header stamp (= the stamp of the image it comes from) and the wall
time it arrived at.
"""
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from dmn_localizer.nodes.conversions import pose_to_xyyaw, stamp_to_sec

# Reliable and transient-local (matches the node's latched amcl_pose), deep enough that a slow
# spin never overwrites an unread estimate.
RECORD_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
COV_INDEX = [0, 1, 5]  # x, y, yaw in the 6x6 (x, y, z, roll, pitch, yaw) covariance
# the localizer node's image counters in /diagnostics
COUNTERS = ('images_received', 'updates', 'dropped_images', 'skipped_images')


class Recorder:
    def __init__(self, node, pose_topic='amcl_pose', particles_topic='localizer/particles',
                 snapshot_every=10):
        self.node = node
        self.stamps, self.estimates, self.covariances, self.received = [], [], [], []
        self.snapshots = []           # (stamp, (K, 3) particles)
        self.snapshot_every = snapshot_every
        self.particle_msgs = 0
        self.diagnostics = {}
        self.diagnostics_received = None
        self.diagnostics_history = []
        self.pose_sub = node.create_subscription(PoseWithCovarianceStamped, pose_topic,
                                                 self.on_pose, RECORD_QOS)
        self.particles_sub = node.create_subscription(
            PoseArray, particles_topic, self.on_particles,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        # the node whose /diagnostics to keep: the namespace of its private particle topic
        # (the pose topic, amcl_pose as AMCL's, has none)
        self.node_name = particles_topic.rsplit('/', 1)[0].strip('/').split('/')[-1]
        node.create_subscription(DiagnosticArray, '/diagnostics', self.on_diagnostics, 10)

    def on_pose(self, msg):
        try:
            xyyaw = pose_to_xyyaw(msg.pose.pose)
        except ValueError:
            return
        cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)
        self.stamps.append(stamp_to_sec(msg.header.stamp))
        self.estimates.append(xyyaw)
        self.covariances.append(cov[np.ix_(COV_INDEX, COV_INDEX)])
        self.received.append(time.monotonic())

    def on_particles(self, msg):
        if self.snapshot_every and self.particle_msgs % self.snapshot_every == 0 and msg.poses:
            try:
                particles = np.array([pose_to_xyyaw(p) for p in msg.poses])
            except ValueError:   # a particle that is not a pose: no snapshot of this cloud
                pass
            else:
                self.snapshots.append((stamp_to_sec(msg.header.stamp), particles))
        self.particle_msgs += 1

    def on_diagnostics(self, msg):
        # the node's statuses of one message (its filter first, then its input rates) as one
        # dict; the message is the filter's
        ours = [s for s in msg.status if s.name.split(':')[0] == self.node_name]
        if not ours:
            return
        values = {}
        for status in reversed(ours):
            values.update({kv.key: kv.value for kv in status.values})
        values['message'] = ours[0].message
        self.diagnostics = values
        self.diagnostics_received = time.monotonic()
        self.diagnostics_history.append((self.diagnostics_received, self.diagnostics))

    def counters(self, diagnostics):
        """The node's image counters from a diagnostics dict, or None (older node)."""
        try:
            return tuple(int(diagnostics[k]) for k in COUNTERS)
        except (KeyError, ValueError):
            return None

    def node_idle(self, since):
        """True when two /diagnostics messages received after ``since`` show the same image
        counters and every update's estimate is recorded: the node's single-threaded executor
        took no image for a whole diagnostics period (1 s), so nothing is left to process."""
        recent = [d for t, d in self.diagnostics_history if t > since][-2:]
        if len(recent) < 2:
            return False
        a, b = (self.counters(d) for d in recent)
        return a is not None and a == b and len(self.stamps) >= b[1]

    def matched(self):
        # Subscription.get_publisher_count is Iron+; Humble has Node.count_publishers
        return self.node.count_publishers(self.pose_sub.topic_name) > 0

    def arrays(self):
        """The recording as numpy arrays (for ``np.savez``)."""
        n = len(self.stamps)
        out = {'est_stamps': np.asarray(self.stamps, np.float64),
               'estimates': np.asarray(self.estimates, np.float64).reshape(n, 3),
               'covariances': np.asarray(self.covariances, np.float64).reshape(n, 3, 3),
               'est_received': np.asarray(self.received, np.float64),
               'snapshot_stamps': np.asarray([s for s, _ in self.snapshots], np.float64)}
        for i, (_, particles) in enumerate(self.snapshots):
            out[f'snapshot_{i}'] = particles
        return out
