"""The node side of the bond with nav2_lifecycle_manager (dmn_localizer.nodes.bond), over
DDS between two rclpy contexts. nav2's manager itself (C++) cannot be installed here: the
test peer plays its side of the protocol (ros/bond_core: bond/msg/Status on ``bond``). The
nodes' bond through their lifecycle: test_node_interface.py."""
import pytest
from bond.msg import Status

from conftest import RosPeer
from dmn_localizer.nodes.bond import Bond


def test_heartbeats_need_no_executor_and_a_manager_that_leaves_is_answered(ros_env, ros_peer):
    got = []
    ros_peer.node.create_subscription(Status, 'bond', got.append, 100)
    manager = ros_peer.node.create_publisher(Status, 'bond', 10)
    side = RosPeer(ros_env, name='localizer')   # the node's side: its own DDS participant
    node, executor = side.node, side.executor
    bond = Bond(node, 0.1, Status)
    try:
        bond.start()
        # the node's executor never spins here (a long update holds it): heartbeats go on
        assert ros_peer.spin_until(lambda: len(got) >= 5, 30), got
        assert {(m.id, m.instance_id, m.active) for m in got} \
            == {('localizer', bond.instance_id, True)}
        assert got[0].heartbeat_period == pytest.approx(0.1) and got[0].heartbeat_timeout == 4.0

        # the manager ends the bond (bondcpp's breakBond): the node answers and stops
        assert ros_peer.spin_until(lambda: manager.get_subscription_count() >= 2, 30)  # +ours
        manager.publish(Status(id='other_node', instance_id='manager', active=False))

        def spin_node(seconds):
            ros_peer.spin_until(lambda: executor.spin_once(timeout_sec=0.05), seconds)
        spin_node(1.0)
        assert bond.running, 'ended by the end of another bond'
        manager.publish(Status(id='localizer', instance_id='manager', active=False))

        def mine():
            return [m for m in got if m.instance_id == bond.instance_id]

        def answered():
            executor.spin_once(timeout_sec=0.05)
            return any(not m.active for m in mine())
        assert ros_peer.spin_until(answered, 30)
        assert not bond.running
        n = len(mine())
        ros_peer.spin_until(lambda: False, 0.5)
        after = mine()[[m.active for m in mine()].index(False):]
        assert not any(m.active for m in after), 'heartbeats after the answer'
        assert len(mine()) - n <= 2   # the rest of the answer (3 messages), nothing more

        # a new activation: a new instance, alive again
        first = bond.instance_id
        bond.start()
        assert ros_peer.spin_until(lambda: got[-1].active, 30)
        assert bond.instance_id != first and got[-1].instance_id == bond.instance_id
        # the end of its own earlier instance, arriving late, is not a manager's
        manager.publish(Status(id='localizer', instance_id=first, active=False))
        spin_node(1.0)
        assert bond.running
    finally:
        bond.close()
        side.close()
