"""The nodes' nav2 AMCL-compatible interface: AMCL's parameter names, parameters
that apply at run time, frame checks, lifecycle transitions, the initial pose and the last
pose kept across restarts. In-process tests build the node object in the test process and
call its callbacks; the DDS tests drive a node process from another one."""
import pytest
import numpy as np
from bond.msg import Status
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from tf2_msgs.msg import TFMessage

from conftest import start_python, stop_process
from inprocess import (image_callback, make_node, rgb_msg, ros_context, stamp,
                       subscription_callback, write_tiny_model_and_map)
import test_localizer_node
from dmn_localizer.nodes.common import LATCHED
from dmn_localizer.geometry import compose
from dmn_localizer.nodes.conversions import pose_to_xyyaw, xyyaw_to_pose
from dmn_localizer.nodes.localizer_node import LocalizerNode

POSE_TOPIC = 'amcl_pose'
Robot = test_localizer_node.Robot
MAP_FROM_ODOM = test_localizer_node.MAP_FROM_ODOM
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
    p = dict(num_particles=16, global_num_particles=32, global_initial_particles=0,
             health_samples=8,
             model=str(files / 'tiny.safetensors'), map_file=str(files / 'map.dmnmap'),
             odom_source='topic')
    p.update(params)
    return make_node(LocalizerNode, context, **p)


def test_amcl_parameter_names_and_deprecated_aliases(context, files, capfd):
    """AMCL's names; a renamed parameter still works, with one warning; AMCL parameters the
    node does not have are named in one warning (rclpy would keep them silently)."""
    node = localizer(context, files, map_frame='world', base_frame_id='base',
                     max_particles=2000, alpha1=0.2)
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
    assert err.count('not parameters of this node, ignored: alpha1, max_particles\n') == 1, err


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
        assert len(node.tracker.odometry) == 4 and node.tracker.updates >= 1   # used
        for text in ("odometry in frame 'wheel_odom', expected odom_frame_id 'odom'",
                     "odometry child in frame 'base_footprint', expected base_frame_id "
                     "'base_link'",
                     "image in frame 'front_camera', expected camera_frame_id "
                     "'camera_optical_frame'"):
            assert len(node.log.messages('warning', text)) == 1, (text, node.log.records)
    finally:
        node.destroy_node()


def test_saved_pose_file_used_or_warned_about(context, files, tmp_path, capfd):
    """A valid saved pose starts tracking (num_particles) around it; a corrupt one, or one in
    another frame, is one warning and the node localizes globally (global_num_particles)."""
    from dmn_localizer.localization.saved_pose import save_pose
    pose_file = tmp_path / 'pose.yaml'
    save_pose(pose_file, 'map', [3.0, 2.0, 0.5], np.diag([0.01, 0.01, 0.01]))
    node = localizer(context, files, pose_file=str(pose_file))
    assert node.localizer.particles.shape[1] == 16
    mean = node.localizer.estimate()[0]
    assert abs(mean[0] - 3.0) < 0.5 and abs(mean[1] - 2.0) < 0.5
    node.destroy_node()
    for content in (b'x: [unclosed', b'frame_id: map\nx: 1.0\n'):
        pose_file.write_bytes(content)
        node = localizer(context, files, pose_file=str(pose_file))
        assert node.localizer.particles.shape[1] == 32
        node.destroy_node()
    save_pose(pose_file, 'world', [3.0, 2.0, 0.5], np.eye(3))
    node = localizer(context, files, pose_file=str(pose_file))
    assert node.localizer.particles.shape[1] == 32
    node.destroy_node()
    err = capfd.readouterr().err
    assert err.count('saved pose not used') == 3, err
    assert "in frame 'world', not 'map'" in err and 'Traceback' not in err


def set_parameters(peer, node_name, **values):
    """set_parameters on another process's node, as ``ros2 param set`` does: the results."""
    return peer.call(SetParameters, f'{node_name}/set_parameters', request=SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])).results


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
                         '-p', 'global_num_particles:=300', '-p', 'update_min_d:=0.1',
                         '-p', 'odom_source:=topic'], ros_env)
    poses, tfs = [], []
    n = ros_peer.node
    n.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, poses.append, LATCHED)
    n.create_subscription(TFMessage, '/tf', tfs.append, 100)
    robot = Robot(ros_peer, world)
    try:
        robot.wait_for_node()
        assert robot.drive_until(lambda: len(poses) >= 2 and map_to_odom(tfs), poses), \
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
        assert robot.drive_until(lambda: len(poses) > count and map_to_odom(tfs), poses)

        refused = set_parameters(ros_peer, 'localizer', model='/elsewhere.safetensors')
        assert not refused[0].successful and 'model is read at configure' in refused[0].reason
        out_of_range = set_parameters(ros_peer, 'localizer', update_min_d=-1.0)
        assert not out_of_range[0].successful
        assert set_parameters(ros_peer, 'localizer', global_frame_id='world')[0].reason
    finally:
        out, err = stop_process(node)
    assert node.returncode == 0, err[-3000:]
    assert 'parameters set: tf_broadcast = False' in err
    assert 'parameters set: update_min_d = 50.0' in err


# the state each transition ends in when it succeeds
GOAL_STATE = {Transition.TRANSITION_CONFIGURE: 'inactive',
              Transition.TRANSITION_ACTIVATE: 'active',
              Transition.TRANSITION_DEACTIVATE: 'inactive',
              Transition.TRANSITION_CLEANUP: 'unconfigured',
              Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: 'finalized'}


def transition(peer, node_name, transition_id, timeout=60.0):
    """``<node>/change_state`` as nav2_lifecycle_manager calls it: success. A transition is
    not sent twice; when its response is lost (see ``RosPeer.call``), the node's state, read
    with get_state, tells whether it succeeded."""
    import time
    client = peer.node.create_client(ChangeState, f'{node_name}/change_state')
    assert peer.spin_until(client.service_is_ready, 30), f'{node_name}/change_state'
    request = ChangeState.Request()
    request.transition.id = transition_id
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not peer.spin_until(future.done, 5.0):
        if lifecycle_state(peer, node_name) == GOAL_STATE[transition_id]:
            return True
        assert time.monotonic() < deadline, f'{node_name}/change_state did not answer'
    return future.result().success


def lifecycle_state(peer, node_name):
    return peer.call(GetState, f'{node_name}/get_state').current_state.label


def test_lifecycle_transitions_as_nav2_lifecycle_manager(ros_env, ros_peer, model_and_map,
                                                         world):
    """autostart false: the node waits unconfigured; configure, activate, deactivate, cleanup,
    configure, activate, deactivate, cleanup, shutdown through change_state; the pose, TF
    and diagnostics appear only while active."""
    model_file, map_file = model_and_map
    node = start_python(['-m', 'dmn_localizer', 'run', 'localize', '--map-file', str(map_file),
                         '--model', str(model_file), '-p', 'num_particles:=100',
                         '-p', 'global_num_particles:=300', '-p', 'update_min_d:=0.1',
                         '-p', 'autostart:=false', '-p', 'odom_source:=topic'], ros_env)
    poses, tfs, diags, bond = [], [], [], []
    n = ros_peer.node
    n.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, poses.append, LATCHED)
    n.create_subscription(TFMessage, '/tf', tfs.append, 100)
    n.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    n.create_subscription(Status, 'bond', bond.append, 100)
    robot = Robot(ros_peer, world)
    instances = []

    def outputs():
        return len(poses) + len(map_to_odom(tfs)) + len(diags)

    def drive_and_count(steps=3):
        before = outputs()
        for _ in range(steps):
            robot.step()
        ros_peer.spin_until(lambda: False, 1.5)
        return outputs() - before

    try:
        assert lifecycle_state(ros_peer, 'localizer') == 'unconfigured'
        for _ in range(2):  # configure twice: cleanup releases everything, configure again
            assert transition(ros_peer, 'localizer', Transition.TRANSITION_CONFIGURE)
            assert lifecycle_state(ros_peer, 'localizer') == 'inactive'
            robot.wait_for_node()
            assert drive_and_count() == 0     # inactive: nothing out
            assert not set_parameters(ros_peer, 'localizer', model=str(model_file))[0].successful

            assert not bond    # a bond only while active
            assert transition(ros_peer, 'localizer', Transition.TRANSITION_ACTIVATE)
            assert lifecycle_state(ros_peer, 'localizer') == 'active'
            # the bond nav2_lifecycle_manager waits for after activation: heartbeats
            assert ros_peer.spin_until(lambda: len(bond) >= 3, 30)
            assert {(m.id, m.active) for m in bond} == {('localizer', True)}
            instances.append(bond[0].instance_id)
            assert robot.drive_until(lambda: poses and map_to_odom(tfs) and diags, poses), \
                stop_process(node)[1][-3000:]

            assert transition(ros_peer, 'localizer', Transition.TRANSITION_DEACTIVATE)
            assert lifecycle_state(ros_peer, 'localizer') == 'inactive'
            ros_peer.spin_until(lambda: False, 1.0)
            assert drive_and_count() == 0
            # ... which it ends at deactivation, and then beats no more
            end = [m.active for m in bond].index(False)
            assert not any(m.active for m in bond[end:])
            assert {m.instance_id for m in bond} == {instances[-1]}
            bond.clear()

            assert transition(ros_peer, 'localizer', Transition.TRANSITION_CLEANUP)
            assert lifecycle_state(ros_peer, 'localizer') == 'unconfigured'
            # unconfigured: a parameter read at configure can be set
            assert set_parameters(ros_peer, 'localizer', model=str(model_file))[0].successful
        assert transition(ros_peer, 'localizer', Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert lifecycle_state(ros_peer, 'localizer') == 'finalized'
        assert len(set(instances)) == 2 and not bond   # each activation a new bond
        assert node.poll() is None
    finally:
        out, err = stop_process(node)
    assert node.returncode == 0, err[-3000:]
    assert 'Traceback' not in err and '[ERROR]' not in err, err[-3000:]


def test_mapper_lifecycle(ros_env, ros_peer, tmp_path):
    """The mapper as a lifecycle node: inactive, it ignores images and poses and publishes no
    contexts; active, it maps; cleanup drops the map."""
    from test_mapper_node import feed, start_mapper
    write_tiny_model_and_map(tmp_path, [[0.0, 0.0, 0.0]])
    mapper = start_mapper(ros_env, tmp_path / 'out.dmnmap', '--model',
                          str(tmp_path / 'tiny.safetensors'), '-p', 'autostart:=false')
    got = []
    ros_peer.node.create_subscription(PoseArray, 'mapper/contexts', got.append, LATCHED)
    poses = [(0, 0, 0), (3, 0, 0), (6, 0, 0)]
    try:
        assert lifecycle_state(ros_peer, 'mapper') == 'unconfigured'
        assert transition(ros_peer, 'mapper', Transition.TRANSITION_CONFIGURE)
        feed(ros_peer, poses)
        ros_peer.spin_until(lambda: False, 1.0)
        assert not got
        assert transition(ros_peer, 'mapper', Transition.TRANSITION_ACTIVATE)
        assert ros_peer.spin_until(lambda: got, 10) and len(got[-1].poses) == 0
        feed(ros_peer, poses)
        assert ros_peer.spin_until(lambda: len(got[-1].poses) == 3, 20)
        assert transition(ros_peer, 'mapper', Transition.TRANSITION_DEACTIVATE)
        assert transition(ros_peer, 'mapper', Transition.TRANSITION_CLEANUP)
        assert transition(ros_peer, 'mapper', Transition.TRANSITION_CONFIGURE)
        assert transition(ros_peer, 'mapper', Transition.TRANSITION_ACTIVATE)
        assert ros_peer.spin_until(lambda: len(got[-1].poses) == 0, 10)  # a new, empty map
    finally:
        out, err = stop_process(mapper)
    assert mapper.returncode == 0 and 'Traceback' not in err, err[-3000:]


def test_last_pose_kept_across_restarts(ros_env, ros_peer, model_and_map, world, ros_home):
    """As AMCL: set_initial_pose starts from initial_pose.*; the estimate is saved every
    1 / save_pose_rate s; a restart without an initial pose starts from it (tracking with
    num_particles), unless always_reset_initial_pose (global: global_num_particles)."""
    from dmn_localizer.localization.saved_pose import load_pose
    model_file, map_file = model_and_map
    poses, clouds = [], []
    n = ros_peer.node
    n.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, poses.append, LATCHED)
    n.create_subscription(PoseArray, 'localizer/particles', clouds.append, 10)
    robot = Robot(ros_peer, world)
    saved = ros_home / 'dmn_localizer' / 'localizer_pose.yaml'

    def run(*params, saving=False):
        poses.clear()
        clouds.clear()
        args = ['-m', 'dmn_localizer', 'run', 'localize', '--map-file', str(map_file),
                '--model', str(model_file), '-p', 'num_particles:=100',
                '-p', 'global_num_particles:=300', '-p', 'update_min_d:=0.1',
                '-p', 'odom_source:=topic']
        for p in params:
            args += ['-p', p]
        node = start_python(args, ros_env)
        try:
            robot.wait_for_node()
            robot.step()
            assert ros_peer.spin_until(lambda: poses and clouds, 30), \
                stop_process(node)[1][-3000:]
            if saving:   # the timer saves while the node runs (the exit saves too)
                assert ros_peer.spin_until(saved.exists, 10), 'no pose saved while running'
            return len(clouds[0].poses), pose_to_xyyaw(poses[0].pose.pose)
        finally:
            out, err = stop_process(node)
            assert node.returncode == 0, err[-3000:]

    truth = compose(MAP_FROM_ODOM, robot.odom_at(robot.t))
    k, first = run('set_initial_pose:=true', f'initial_pose.x:={truth[0]}',
                   f'initial_pose.y:={truth[1]}', f'initial_pose.yaw:={truth[2]}',
                   'initial_sigma_xy:=0.1', 'save_pose_rate:=5.0', saving=True)
    assert k == 100 and np.hypot(*(first[:2] - truth[:2])) < 1.0
    frame_id, last, _ = load_pose(saved)
    assert frame_id == 'map' and np.hypot(*(last[:2] - truth[:2])) < 2.0

    k, restored = run()  # no initial pose: the saved one
    assert k == 100 and np.hypot(*(restored[:2] - last[:2])) < 1.5

    k, _ = run('always_reset_initial_pose:=true')
    assert k == 300


def test_camera_info_reaches_the_model(context, files, tmp_path):
    """camera_info's field of view is given to an aligned model; a DMN trained with another
    camera gets one warning."""
    import math

    import torch
    from sensor_msgs.msg import CameraInfo

    from dmn_localizer.model import build_model, DMNConfig, save_model

    def info(width, hfov_deg):
        fx = width / 2 / math.tan(math.radians(hfov_deg) / 2)
        c = width / 2
        return CameraInfo(width=width, height=width, k=[fx, 0.0, c, 0.0, fx, c, 0.0, 0.0, 1.0])
    torch.manual_seed(0)
    save_model(build_model(DMNConfig(architecture='aligned', hfov_deg=90.0)),
               tmp_path / 'aligned.safetensors')
    save_model(build_model(DMNConfig()), tmp_path / 'dmn.safetensors',
               metadata={'train_data': {'domain': 'mazes'}})
    node = localizer(context, files, model=str(tmp_path / 'aligned.safetensors'))
    try:
        on_info = subscription_callback(node, CameraInfo)
        on_info(info(64, 60.0))
        assert node.localizer.model.hfov_deg == pytest.approx(60.0)
        on_info(CameraInfo(width=64))   # no intrinsics (fx 0): rejected
        assert node.localizer.model.hfov_deg == pytest.approx(60.0)
        assert len(node.log.messages('warning', 'must be positive')) == 1
    finally:
        node.destroy_node()
    node = localizer(context, files, model=str(tmp_path / 'dmn.safetensors'))
    try:
        on_info = subscription_callback(node, CameraInfo)
        for _ in range(3):
            on_info(info(640, 60.0))
        assert len(node.log.messages('warning', 'trained with 90.0 deg')) == 1
    finally:
        node.destroy_node()
