"""mapper_node as a real process over DDS: keyframes, latched contexts, save/clear/restart."""
import numpy as np
import pytest
import torch
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from conftest import start_python, stop_process
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.model import build_model
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.model.io import load_model, save_model
from dmn_localizer.nodes.common import LATCHED
from dmn_localizer.nodes.conversions import xyyaw_to_pose


def start_mapper(env, save_path, *extra):
    return start_python(['-m', 'dmn_localizer', 'run', 'mapping', '-p',
                         f'save_path:={save_path}', *extra], env)


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'tiny.safetensors'
    return path, save_model(DMN(DMNConfig()), path)


def feed(peer, poses, before_image=None):
    """Publish one image + PoseStamped per pose, same stamps, as a robot would
    (``before_image(i, stamp)``: publish more of step i first, e.g. its depth frame)."""
    img_pub = peer.node.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
    pose_pub = peer.node.create_publisher(PoseStamped, 'ground_truth/pose', 10)
    assert peer.spin_until(lambda: img_pub.get_subscription_count() > 0
                           and pose_pub.get_subscription_count() > 0, 30)
    peer.spin_until(lambda: False, 0.5)  # matched is not yet delivered (best-effort images)
    for i, p in enumerate(poses):
        stamp = peer.node.get_clock().now().to_msg()
        stamp.sec, stamp.nanosec = 100 + i, 0
        img = Image(height=48, width=64, encoding='bgr8', step=64 * 3,
                    data=np.full((48, 64, 3), 10 * i, np.uint8).tobytes())
        img.header.stamp, img.header.frame_id = stamp, 'camera_link'
        msg = PoseStamped(pose=xyyaw_to_pose(p))
        msg.header.stamp, msg.header.frame_id = stamp, 'map'
        if before_image is not None:
            before_image(i, stamp)
            peer.spin_until(lambda: False, 0.05)
        img_pub.publish(img)
        pose_pub.publish(msg)
        peer.spin_until(lambda: False, 0.05)


def test_mapper_keyframes_save_clear_restart(ros_env, ros_peer, tmp_path, tiny_model):
    save_path = tmp_path / 'map.dmnmap'
    model_path, model_id = tiny_model
    mapper = start_mapper(ros_env, save_path, '--model', str(model_path))
    got = []
    ros_peer.node.create_subscription(PoseArray, 'mapper/contexts', got.append, LATCHED)
    try:
        # 4 poses 3 m apart (new), 1 pose 0.5 m from the first (not new), 1 turned 90 deg (new)
        poses = [(0, 0, 0), (3, 0, 0), (6, 0, 0), (9, 0, 0), (0.5, 0, 0), (0, 0, 1.57)]
        feed(ros_peer, poses)
        assert ros_peer.spin_until(lambda: got and len(got[-1].poses) == 5, 20), \
            [len(m.poses) for m in got]
        assert got[-1].header.frame_id == 'map'
        r = ros_peer.call(Trigger, 'mapper/save_map')
        assert r.success and '5 contexts' in r.message
        saved = ViewMap.load(save_path)
        assert saved.images.shape == (5, 32, 32, 3)  # resized to image_size
        np.testing.assert_allclose(saved.poses[:, 0], [0, 3, 6, 9, 0], atol=1e-6)
        # bgr8 value 10*i in every channel -> RGB keeps it; pixel check proves the pairing
        assert [int(im[0, 0, 0]) for im in saved.images] == [0, 10, 20, 30, 50]
        # each context embedded by the model's CNN1 as it was added
        assert saved.model_id == model_id and saved.embeddings.shape == (5, 64, 8, 8)
        model = load_model(model_path)
        with torch.no_grad():
            expect = model.embed(images_to_tensor(saved.images)).numpy()
        np.testing.assert_allclose(saved.embeddings, expect, atol=1e-5)
        assert ros_peer.call(Trigger, 'mapper/clear_map').success
        assert ros_peer.spin_until(lambda: len(got[-1].poses) == 0, 10)
    finally:
        out, err = stop_process(mapper)
    assert mapper.returncode == 0, err[-2000:]

    # restart from the saved map: identical map, contexts latched for a late subscriber
    mapper = start_mapper(ros_env, tmp_path / 'again.dmnmap', '--map-file', str(save_path),
                          '--model', str(model_path))
    got.clear()
    try:
        assert ros_peer.spin_until(lambda: got and len(got[-1].poses) == 5, 30)
        assert ros_peer.call(Trigger, 'mapper/save_map').success
        again = ViewMap.load(tmp_path / 'again.dmnmap')
        np.testing.assert_array_equal(again.images, saved.images)
        np.testing.assert_array_equal(again.poses, saved.poses)
        np.testing.assert_array_equal(again.embeddings, saved.embeddings)
    finally:
        stop_process(mapper)


def test_mapper_stores_a_depth_cameras_columns(ros_env, ros_peer, tmp_path):
    """depth_topic: each context gets the column depths of the depth frame with its stamp,
    and an aligned model's embedding holds them instead of its predicted depths."""
    from dmn_localizer.depth import depth_image_columns
    torch.manual_seed(0)
    model_path = tmp_path / 'aligned.safetensors'
    save_model(build_model(DMNConfig(architecture='aligned')), model_path)
    save_path = tmp_path / 'map.dmnmap'
    # the model named without its suffix, as replay, eval and the localizer take it
    mapper = start_mapper(ros_env, save_path, '--model', str(model_path.with_suffix('')), '-p',
                          'depth_topic:=camera/depth/image_raw')
    depth_pub = ros_peer.node.create_publisher(Image, 'camera/depth/image_raw',
                                               qos_profile_sensor_data)
    frames = [np.tile((1.0 + i + np.arange(64) / 16.0).astype(np.float32), (48, 1))
              for i in range(3)]

    def publish_depth(i, stamp):
        msg = Image(height=48, width=64, encoding='32FC1', step=64 * 4,
                    data=frames[i].tobytes())
        msg.header.stamp, msg.header.frame_id = stamp, 'camera_link'
        depth_pub.publish(msg)
    try:
        assert ros_peer.spin_until(lambda: depth_pub.get_subscription_count() > 0, 30)
        feed(ros_peer, [(0, 0, 0), (3, 0, 0), (6, 0, 0)], before_image=publish_depth)
        assert ros_peer.spin_until(
            lambda: ros_peer.call(Trigger, 'mapper/save_map').message.startswith('saved 3'),
            20)
    finally:
        out, err = stop_process(mapper)
    assert mapper.returncode == 0, err[-2000:]
    saved = ViewMap.load(save_path)
    expect = np.stack([depth_image_columns(f, 32) for f in frames])
    np.testing.assert_allclose(saved.depths, expect, rtol=1e-6)
    model = load_model(model_path)
    d = model.config.feature_dim
    np.testing.assert_allclose(
        np.exp(saved.embeddings[:, d]),
        model.measured_depth(torch.as_tensor(expect), 3).numpy(), rtol=1e-5)
