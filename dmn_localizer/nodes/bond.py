"""The node side of a bond with nav2_lifecycle_manager, as nav2's own nodes keep one.

After activating a node the manager waits ``bond_timeout / 2`` (2 s by default) for the node's
bond to form, else it aborts the bringup; later, a node whose heartbeats stop for
``bond_timeout`` (4 s) counts as crashed and the manager resets every node it manages. The
protocol (ros/bond_core): both sides publish ``bond/msg/Status`` on the relative topic
``bond``, ``id`` the node's name, ``instance_id`` unique per side and per activation,
``active`` true while alive; ``active`` false says "I am going", and a side that hears its
sister go answers with ``active`` false.

The heartbeat runs on its own thread: an update of the localizer can hold the node's executor
for seconds (a global update of many particles), longer than the manager's timeout.
"""
import threading
import time
import uuid

from rclpy.qos import QoSProfile, ReliabilityPolicy

TOPIC = 'bond'
HEARTBEAT_TIMEOUT_S = 4.0   # what the status reports (nav2's nodes: 4 s)
DEAD_PUBLISH_PERIOD_S = 0.05
DEAD_MESSAGES = 3
# bondcpp: keep last 5, reliable, volatile (rclcpp's defaults)
QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def status_type():
    """``bond.msg.Status``, or None where the bond package is not installed."""
    try:
        from bond.msg import Status
    except ImportError:
        return None
    return Status


class Bond:
    """Heartbeats of an active node: :meth:`start` at activation, :meth:`stop` at
    deactivation (announces the end, as bondcpp's breakBond); :meth:`close` destroys the
    ROS entities. A sister (the manager) that announces its end gets the answer and ends the
    heartbeats."""

    def __init__(self, node, period_s, status_cls):
        self.node, self.period_s, self.status_cls = node, period_s, status_cls
        self.name = node.get_name()
        self.pub = node.create_publisher(status_cls, TOPIC, QOS)
        self.sub = node.create_subscription(status_cls, TOPIC, self._on_status, 100)
        self.instance_id = None
        self._own_ids = set()   # this node's instances, past ones included
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    @property
    def running(self):
        return self._thread is not None

    def start(self):
        self.stop(announce=False)
        self.instance_id = str(uuid.uuid4())
        self._own_ids.add(self.instance_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(self._stop,),
                                        name=f'{self.name} bond', daemon=True)
        self._thread.start()

    def stop(self, announce=True):
        """End the heartbeats; ``announce``: tell the sister (active false)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is None:
            return
        if thread is not threading.current_thread():
            thread.join()
        if announce:
            for i in range(DEAD_MESSAGES):
                if i:
                    time.sleep(DEAD_PUBLISH_PERIOD_S)
                self._publish(False)

    def close(self):
        self.stop()
        self.node.destroy_subscription(self.sub)
        self.node.destroy_publisher(self.pub)

    def _beat(self, stop):
        self._publish(True)
        while not stop.wait(self.period_s):
            self._publish(True)

    def _publish(self, active):
        msg = self.status_cls(id=self.name, instance_id=self.instance_id, active=active,
                              heartbeat_timeout=HEARTBEAT_TIMEOUT_S,
                              heartbeat_period=float(self.period_s))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        try:
            self.pub.publish(msg)
        except Exception:   # the context is shutting down: nobody left to tell
            pass

    def _on_status(self, msg):
        if msg.id != self.name or msg.instance_id in self._own_ids or msg.active:
            return   # another bond, our own status (an earlier activation's too), or alive
        if self.running:
            self.node.get_logger().info('the lifecycle manager ended its bond')
            self.stop()
