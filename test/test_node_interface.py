"""The nodes' nav2 AMCL-compatible interface (issue 21): AMCL's parameter names, parameters
that apply at run time, frame checks, services. In-process tests build the node object in the
test process and call its callbacks; the DDS tests drive a node process from another one."""
import pytest
import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from tf2_msgs.msg import TFMessage

from conftest import start_python, stop_process
from inprocess import (image_callback, make_node, rgb_msg, ros_context, stamp,
                       subscription_callback, write_tiny_model_and_map)
import test_localizer_node
from dmn_localizer.nodes.common import LATCHED
from dmn_localizer.nodes.conversions import xyyaw_to_pose
from dmn_localizer.nodes.localizer_node import LocalizerNode

POSE_TOPIC = 'amcl_pose'
Robot = test_localizer_node.Robot
world = test_localizer_node.world                  # fixtures: a maze, a tiny model and map
model_and_map = test_localizer_node.model_and_map


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return write_tiny_model_and_map(tmp_path_factory.mktemp('interface'),
                                    [[3.0 * i, 2.0 * (i % 2), 0.5] for i in range(6)])


@pytest.fixture(scope='module')
def context():
    with ros_context() as ctx:
        yield ctx


def localizer(context, files, **params):
    p = dict(num_particles=16, global_num_particles=32, health_samples=8,
             model=str(files / 'tiny.safetensors'), map_file=str(files / 'map.dmnmap'))
    p.update(params)
    return make_node(LocalizerNode, context, **p)


def test_amcl_parameter_names_and_deprecated_aliases(context, files, capfd):
    node = localizer(context, files, map_frame='world', base_frame_id='base')
    try:
        for name in ('global_frame_id', 'odom_frame_id', 'base_frame_id', 'transform_tolerance',
                     'update_min_d', 'update_min_a', 'tf_broadcast'):
            assert node.has_parameter(name), name
        assert not node.has_parameter('map_frame')
        assert node.config.global_frame_id == 'world'  # the old name still works
        assert node.config.base_frame_id == 'base'
        assert node.get_parameter('transform_tolerance').value == 1.0  # AMCL's default
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    assert err.count('parameter map_frame is deprecated: use global_frame_id') == 1, err


def test_frame_ids_checked_with_one_warning(context, files):
    """Odometry and images in frames other than odom_frame_id / base_frame_id /
    camera_frame_id are used, with one warning each."""
    node = localizer(context, files, update_min_d=0.1)
    on_odom, on_image = subscription_callback(node, Odometry), image_callback(node)
    try:
        for i in range(4):
            msg = Odometry(child_frame_id='base_footprint')
            msg.header.frame_id = 'wheel_odom'
            msg.pose.pose = xyyaw_to_pose([0.1 * i, 0.0, 0.0])
            on_odom(stamp(msg, 100.0 + 0.5 * i))
            image = rgb_msg(np.zeros((32, 32, 3), np.uint8), 100.0 + 0.5 * i)
            image.header.frame_id = 'front_camera'
            on_image(image)
        assert len(node.odom) == 4 and node.updates >= 1   # used
        for text in ("odometry in frame 'wheel_odom', expected odom_frame_id 'odom'",
                     "odometry child in frame 'base_footprint', expected base_frame_id "
                     "'base_link'",
                     "image in frame 'front_camera', expected camera_frame_id "
                     "'camera_optical_frame'"):
            assert len(node.log.messages('warning', text)) == 1, (text, node.log.records)
    finally:
        node.destroy_node()


def set_parameters(peer, node_name, **values):
    """set_parameters on another process's node, as ``ros2 param set`` does: the results."""
    client = peer.node.create_client(SetParameters, f'{node_name}/set_parameters')
    assert peer.spin_until(client.service_is_ready, 20)
    future = client.call_async(SetParameters.Request(parameters=[
        Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
    assert peer.spin_until(future.done, 20)
    return future.result().results


def map_to_odom(tf_msgs):
    return [t for m in tf_msgs for t in m.transforms
            if t.header.frame_id == 'map' and t.child_frame_id == 'odom']


def test_runtime_parameters_apply_or_are_refused(ros_env, ros_peer, model_and_map, world):
    """``ros2 param set`` (set_parameters from another process) changes what the node does:
    tf_broadcast false stops map -> odom, a large update_min_d stops the updates, and both
    come back when set back; a parameter read at start is refused with the reason."""
    model_file, map_file = model_and_map
    node = start_python(['-m', 'dmn_localizer', 'run', 'localize', '--map-file', str(map_file),
                         '--model', str(model_file), '-p', 'num_particles:=100',
                         '-p', 'global_num_particles:=300', '-p', 'update_min_d:=0.1'],
                        ros_env)
    poses, tfs = [], []
    n = ros_peer.node
    n.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, poses.append, LATCHED)
    n.create_subscription(TFMessage, '/tf', tfs.append, 100)
    robot = Robot(ros_peer, world)
    try:
        robot.wait_for_node()
        for _ in range(3):
            robot.step()
        assert ros_peer.spin_until(lambda: len(poses) >= 2 and map_to_odom(tfs), 30), \
            stop_process(node)[1][-3000:]
        results = set_parameters(ros_peer, 'localizer', tf_broadcast=False, update_min_d=50.0)
        assert all(r.successful for r in results), results
        ros_peer.spin_until(lambda: False, 1.0)
        count = len(poses)
        tfs.clear()
        for _ in range(4):  # 0.8 m of motion, every image: no update, no map -> odom
            robot.step()
        ros_peer.spin_until(lambda: False, 2.0)
        assert len(poses) == count and not map_to_odom(tfs)

        results = set_parameters(ros_peer, 'localizer', tf_broadcast=True, update_min_d=0.1)
        assert all(r.successful for r in results), results
        for _ in range(2):
            robot.step()
        assert ros_peer.spin_until(lambda: len(poses) > count and map_to_odom(tfs), 20)

        refused = set_parameters(ros_peer, 'localizer', model='/elsewhere.safetensors')
        assert not refused[0].successful and 'model is read at start' in refused[0].reason
        out_of_range = set_parameters(ros_peer, 'localizer', update_min_d=-1.0)
        assert not out_of_range[0].successful
        assert set_parameters(ros_peer, 'localizer', global_frame_id='world')[0].reason
    finally:
        out, err = stop_process(node)
    assert node.returncode == 0, err[-3000:]
    assert 'parameters set: tf_broadcast = False' in err
    assert 'parameters set: update_min_d = 50.0' in err
