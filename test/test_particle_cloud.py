"""``particle_cloud`` (nav2_msgs/ParticleCloud, as AMCL): the bytes the node publishes are the
message rclpy would serialise, and a best-effort subscriber in another process receives the
same particles as ``~/particles``, with weights that sum to one."""
import json
import os

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseArray
from nav2_msgs.msg import Particle, ParticleCloud
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from conftest import start_python, stop_process
from dmn_localizer.nodes.conversions import pose_to_xyyaw, xyyaw_to_pose
from dmn_localizer.nodes.particle_cloud import particle_cloud_cdr
from test_localizer_node import model_and_map, Robot, world  # noqa: F401 (fixtures)

# The type hashes of upstream navigation2's definitions (hashed by rosbags from
# nav2_msgs/msg/*.msg): the locally built interfaces must give the same, else they are not
# wire compatible with nav2 on a real ROS system.
UPSTREAM_HASHES = {
    'msg/Particle': 'RIHS01_c4c61cd1468c7253cc6cc483ebec0c07d8d7d76e5e6c2bcef15c1c77cf70534c',
    'msg/ParticleCloud':
        'RIHS01_193d8cb88ca2b98cd81ece15342744f054bb398ebfa8f6369914432303f42b11'}


@pytest.mark.parametrize('frame_id', ['', 'm', 'map', 'map_frame'])
@pytest.mark.parametrize('k', [0, 1, 5])
def test_cdr_equals_rclpy_serialisation(frame_id, k):
    rng = np.random.default_rng(k)
    particles = rng.uniform(-20, 20, (k, 3))
    weights = rng.dirichlet(np.ones(k)) if k else np.zeros(0)
    stamp = Time(sec=1234, nanosec=5678)
    raw = particle_cloud_cdr(particles, weights, frame_id, stamp)
    ref = ParticleCloud()
    ref.header.frame_id, ref.header.stamp = frame_id, stamp
    ref.particles = [Particle(pose=xyyaw_to_pose(p), weight=float(w))
                     for p, w in zip(particles, weights)]
    assert len(raw) == len(serialize_message(ref))
    got = deserialize_message(raw, ParticleCloud)
    assert got.header == ref.header and len(got.particles) == k
    for a, b in zip(got.particles, ref.particles):
        assert a.weight == b.weight
        np.testing.assert_allclose(pose_to_xyyaw(a.pose), pose_to_xyyaw(b.pose), atol=1e-12)
        assert a.pose.orientation == b.pose.orientation


def test_local_nav2_msgs_have_upstream_type_hashes():
    import nav2_msgs
    from ament_index_python.packages import get_package_share_directory
    share = get_package_share_directory('nav2_msgs')
    for name, want in UPSTREAM_HASHES.items():
        desc = json.loads(open(os.path.join(share, f'{name}.json')).read())
        hashes = {h['type_name']: h['hash_string'] for h in desc['type_hashes']}
        assert hashes[f'nav2_msgs/{name}'] == want, (name, nav2_msgs.__file__)


def test_best_effort_subscriber_receives_the_cloud(ros_env, ros_peer, model_and_map,  # noqa: F811
                                                   world):  # noqa: F811 (fixtures)
    model_file, map_file = model_and_map
    node = start_python(['-m', 'dmn_localizer', 'run', 'localize', '--map-file', str(map_file),
                         '--model', str(model_file), '-p', 'global_num_particles:=300',
                         '-p', 'update_min_d:=0.1', '-p', 'odom_source:=topic'], ros_env)
    clouds, arrays = [], []
    n = ros_peer.node
    n.create_subscription(ParticleCloud, 'particle_cloud', clouds.append,
                          QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    n.create_subscription(PoseArray, 'localizer/particles', arrays.append, 10)
    robot = Robot(ros_peer, world)
    try:
        robot.wait_for_node()
        for _ in range(4):
            robot.step()
            if clouds:
                break
        if not ros_peer.spin_until(lambda: clouds and arrays, 30):
            raise AssertionError((len(clouds), len(arrays), stop_process(node)[1][-3000:]))
        cloud = clouds[-1]
        same = [a for a in arrays if a.header.stamp == cloud.header.stamp]
        assert same, 'no PoseArray with the cloud stamp'
        assert cloud.header.frame_id == 'map' and len(cloud.particles) == 300
        np.testing.assert_allclose([pose_to_xyyaw(p.pose) for p in cloud.particles],
                                   [pose_to_xyyaw(p) for p in same[0].poses], atol=1e-9)
        weights = np.array([p.weight for p in cloud.particles])
        assert (weights >= 0).all() and abs(weights.sum() - 1.0) < 1e-6
    finally:
        out, err = stop_process(node)
    assert node.returncode == 0, err[-3000:]
