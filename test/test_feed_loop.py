"""The one feed loop (localization/tracker.py: Tracker) and the one mapper pipeline
(mapping/builder.py: MapBuilder): their order-of-events rules with a real (tiny, untrained)
DMN, and that the localizer node and offline replay share the loop: the real node object, fed
a bag's messages through its subscription callbacks, publishes the estimates replay computes
from the same bag. Nothing here assumes the model localizes."""
import math

import numpy as np
import pytest
import torch
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry

from inprocess import (image_callback, make_node, rgb_msg, ros_context, stamp,
                       subscription_callback, tee_publishers)
from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.config import LocalizerConfig
from dmn_localizer.geometry import quaternion_to_yaw
from dmn_localizer.localization.localizer import Localizer
from dmn_localizer.localization.tracker import Tracker
from dmn_localizer.mapping.builder import MapBuilder, model_embedder
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN
from dmn_localizer.model.io import load_model, save_model
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.nodes.conversions import xyyaw_to_pose
from dmn_localizer.nodes.localizer_node import LocalizerNode
from dmn_localizer.replay import offline

IMAGE = np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    return DMN(DMNConfig())


def tracker(model, publish=None, **overrides):
    rng = np.random.default_rng(0)
    vm = ViewMap()
    for i in range(4):
        vm.add(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), [5.0 * i, 2.0, 0.3 * i])
    cfg = LocalizerConfig(**{'num_particles': 32, 'global_num_particles': 64,
                             'health_samples': 16, 'update_min_d': 0.1, **overrides})
    loc = Localizer(model, cfg, 'cpu', seed=1)
    loc.set_map(vm)
    loc.init_global()
    return Tracker(loc, publish=publish)


def test_an_image_waits_for_the_odometry_that_covers_it(tiny_model):
    t = tracker(tiny_model)
    t.add_odometry(10.0, [0.0, 0.0, 0.0])
    first = t.add_image(10.0, IMAGE)            # covered: through the filter at once
    assert first.processed and first.updated and first.stamp == 10.0
    assert not t.add_image(10.5, IMAGE).processed       # newer than the odometry: waits
    replaced = t.add_image(10.6, IMAGE)                 # a newer one replaces it
    assert replaced.dropped == 1 and t.dropped == 1 and t.waiting[0] == 10.6
    early = t.add_odometry(10.4, [0.4, 0.0, 0.0])       # does not cover 10.6 yet
    assert not early.processed and t.waiting is not None
    covered = t.add_odometry(10.8, [0.8, 0.0, 0.0])
    assert covered.processed and covered.stamp == 10.6 and covered.updated
    assert t.waiting is None and t.images == 3 and t.updates == 2
    assert t.localizer.last_stamp == 10.6


def test_time_going_back_restarts_the_time_base_and_drops_the_waiting_image(tiny_model):
    t = tracker(tiny_model)
    t.add_odometry(10.0, [0.0, 0.0, 0.0])
    assert t.add_image(10.0, IMAGE).updated
    t.add_image(11.0, IMAGE)                            # waits
    reset = t.add_odometry(5.0, [0.0, 0.0, 0.0])        # bag loop
    assert 'time went backwards' in reset.reset and reset.dropped == 1
    assert t.waiting is None and t.localizer.last_stamp is None
    assert t.last_reset[1] == reset.reset and t.odometry.time_resets == 1
    # the next image starts the new time base (the first image after a reset is consumed
    # without motion; the filter updates from the next one that moved enough)
    assert t.add_image(5.0, IMAGE).processed and t.localizer.last_stamp == 5.0


def test_an_image_without_odometry_around_it_is_skipped(tiny_model):
    t = tracker(tiny_model)
    t.add_odometry(10.0, [0.0, 0.0, 0.0])
    t.add_odometry(10.5, [0.2, 0.0, 0.0])
    skipped = t.add_image(9.0, IMAGE)                   # before the odometry history
    assert skipped.skipped and not skipped.updated and t.skipped == 1


def test_the_pose_goes_out_before_the_health_check(tiny_model):
    """publish(stamp, report) runs between the update and its health check; the returned
    outcome carries the report with the health fields filled in."""
    seen = []

    def publish(stamp, report):
        seen.append((stamp, report.updated, math.isnan(report.belief_score),
                     t.localizer._pending_health is not None))
    t = tracker(tiny_model, publish=publish)
    t.add_odometry(10.0, [0.0, 0.0, 0.0])
    out = t.add_image(10.0, IMAGE)
    assert seen == [(10.0, True, True, True)]
    assert 0.0 <= out.report.belief_score <= 1.0 and t.localizer._pending_health is None
    t.add_odometry(10.5, [0.01, 0.0, 0.0])
    out = t.add_image(10.5, IMAGE)                      # moved too little: no update
    assert seen[-1] == (10.5, False, True, False) and not out.updated and t.updates == 1


def test_map_builder_pairs_keeps_keyframes_and_embeds(tiny_model):
    """Images and poses in either order and at their own stamps: each image takes the pose
    nearest in time (within the tolerance), the camera mounting applies, only new views
    become contexts, each embedded by the model."""
    vm = ViewMap()
    builder = MapBuilder(vm, model_embedder(tiny_model), base_from_camera=(0.5, 0.0, 0.0),
                         min_distance=1.0, min_angle=0.5, sync_tolerance_s=0.05)
    images = [np.full((32, 32, 3), 10 * i, np.uint8) for i in range(4)]
    assert builder.add_image(1.0, images[0]) == 0          # waits for a pose
    assert builder.add_pose(1.02, [0.0, 0.0, 0.0]) == 1    # pairs it: the first context
    assert builder.add_pose(2.0, [0.3, 0.0, 0.0]) == 0
    assert builder.add_image(2.01, images[1]) == 0         # waits: a nearer pose may come
    # pairs it with the pose at 2.0: 0.3 m from the first context, not a new view
    assert builder.add_pose(3.0, [3.0, 0.0, math.pi / 2]) == 0
    assert builder.add_image(3.2, images[2]) == 0          # waits for a later pose
    assert builder.add_pose(3.4, [9.0, 0.0, 0.0]) == 0     # 0.2 s away both sides: dropped
    assert builder.add_image(3.4, images[3]) == 1
    assert builder.pairer.dropped == 1 and len(vm) == 2
    np.testing.assert_allclose(vm.poses, [[0.5, 0.0, 0.0], [9.5, 0.0, 0.0]], atol=1e-12)
    assert [int(im[0, 0, 0]) for im in vm.images] == [0, 30]
    with torch.no_grad():
        expect = tiny_model.embed(images_to_tensor(vm.images)).numpy()
    np.testing.assert_allclose(vm.embeddings, expect, atol=1e-5)


# ---------------------------------------------------------------- node and replay: one loop
@pytest.fixture(scope='module')
def bag_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('feed_loop')
    runs = simulate_bag('mazes', 3, root / 'bags', image_size=32, mapping_frames=60,
                        localization_frames=12)
    torch.manual_seed(0)
    save_model(DMN(DMNConfig()), root / 'tiny.safetensors')
    view_map = offline.build_map(runs['mapping'][0], offline.Topics(), 32)
    view_map.save(root / 'map.dmnmap')
    stream = offline.read_stream(runs['localization'][0], offline.Topics(), 32)
    return root, view_map, stream


@pytest.mark.parametrize('recovery', [True, False], ids=['recovery', 'no_recovery'])
def test_node_and_replay_compute_the_same_estimates(bag_data, recovery):
    """The localizer node (its subscription callbacks) and offline replay (offline.localize)
    over the same bag: the same updates at the same stamps, the same recoveries and the same
    estimates. (The node publishes an update's estimate before its health check, replay
    records it after: they are compared where no recovery changed the belief in between; the
    tiny model's filter collapses often, so a second run turns the recoveries off.)"""
    root, view_map, stream = bag_data
    particles = 32
    health = {} if recovery else {'recovery_alpha': 0.0, 'global_reinit_updates': 0}
    model = load_model(root / 'tiny.safetensors')
    cfg = LocalizerConfig(num_particles=particles, global_num_particles=particles, **health)
    loc = Localizer(model, cfg, 'cpu', seed=0)
    loc.set_map(view_map)
    track = offline.localize(loc, stream, 'global', snapshot_every=0)
    assert len(track.stamps) >= 6

    with ros_context() as context:
        node = make_node(LocalizerNode, context, model=str(root / 'tiny.safetensors'),
                         map_file=str(root / 'map.dmnmap'), num_particles=particles,
                         global_num_particles=particles, device='cpu', save_pose_rate=0.0,
                         pose_file=str(root / 'no_pose.yaml'), odom_source='topic',
                         **health)
        tee_publishers(node, ['pose_pub'])
        recoveries = []
        publish_step = node.tracker.publish

        def counted(stamp_s, report):
            publish_step(stamp_s, report)
            recoveries.append(report)   # the tracker fills in the recovery after this
        node.tracker.publish = counted
        on_odom = subscription_callback(node, Odometry)
        on_image = image_callback(node)
        for kind, t, value in offline.events(stream):
            if kind == 'odom':
                msg = Odometry(child_frame_id='base_link')
                msg.header.frame_id = 'odom'
                msg.pose.pose = xyyaw_to_pose(value)
                on_odom(stamp(msg, t))
            else:
                on_image(rgb_msg(value, t))
        published = [m for m in node.pose_pub.msgs if isinstance(m, PoseWithCovarianceStamped)]
        node.destroy_node()

    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in published]
    np.testing.assert_allclose(stamps, track.stamps, rtol=0, atol=1e-6)  # float s at 1.7e9
    updates = [r for r in recoveries if r.updated]
    assert [(i, r.recovery) for i, r in enumerate(updates) if r.recovery] == track.recoveries
    compared = 0
    for i, (msg, mean, cov) in enumerate(zip(published, track.estimates, track.covariances)):
        if updates[i].recovery:
            continue
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        yaw = quaternion_to_yaw(q.x, q.y, q.z, q.w)
        np.testing.assert_allclose([p.x, p.y], mean[:2], rtol=0, atol=1e-9)
        assert abs(math.remainder(yaw - mean[2], 2 * math.pi)) < 1e-6
        c = np.asarray(msg.pose.covariance).reshape(6, 6)[np.ix_([0, 1, 5], [0, 1, 5])]
        np.testing.assert_allclose(c, cov, rtol=1e-9, atol=1e-12)
        compared += 1
    if recovery:
        assert track.recoveries and compared >= 3, (compared, track.recoveries)
    else:
        assert not track.recoveries and compared == len(track.stamps)
