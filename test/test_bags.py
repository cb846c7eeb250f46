"""Simulated bags: rosbags round trip, rclpy deserialization, dataset-from-bags."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from pathlib import Path

from dmn_localizer.bags import messages as M
from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.data.dataset import open_dataset
from dmn_localizer.data.from_bags import build_from_bags
from dmn_localizer.geometry import compose, inverse, quaternion_to_yaw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module', params=[('mcap', 9), ('sqlite3', 8)])
def bags(request, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('bag') / 'run')
    storage, version = request.param
    return simulate_bag('mazes', 2, out, storage=storage, image_size=32,
                        mapping_frames=60, localization_frames=30, bag_version=version)


def _read(path):
    with AnyReader([Path(path)], default_typestore=M.TYPESTORE) as r:
        conns = {c.topic: c for c in r.connections}
        msgs = [(c.topic, t, c.msgtype, data) for c, t, data in r.messages()]
    return conns, msgs


def test_bag_round_trip(bags):
    path, poses, start = bags['mapping']
    conns, msgs = _read(path)
    assert set(conns) == {'/camera/image_raw', '/camera/camera_info', '/odom', '/tf',
                          '/tf_static', '/ground_truth/pose'}
    tfs = conns['/tf_static'].ext.offered_qos_profiles[0]
    assert tfs.durability.name == 'TRANSIENT_LOCAL' and tfs.depth == 1
    assert conns['/tf'].msgtype == 'tf2_msgs/msg/TFMessage'
    for c in conns.values():
        assert c.digest.startswith('RIHS01_')
    stamps = [t for _, t, _, _ in msgs]
    assert stamps == sorted(stamps) and stamps[0] == start
    gt = [M.TYPESTORE.deserialize_cdr(d, ty) for tp, _, ty, d in msgs
          if tp == '/ground_truth/pose']
    assert len(gt) == 60 and all(m.header.frame_id == 'map' for m in gt)
    got = np.array([(m.pose.position.x, m.pose.position.y,
                     quaternion_to_yaw(m.pose.orientation.x, m.pose.orientation.y,
                                       m.pose.orientation.z, m.pose.orientation.w))
                    for m in gt])
    assert np.allclose(got[:, :2], poses[:, :2], atol=1e-5)
    assert np.allclose(np.cos(got[:, 2] - poses[:, 2]), 1.0, atol=1e-9)
    odo = [M.TYPESTORE.deserialize_cdr(d, ty) for tp, _, ty, d in msgs if tp == '/odom']
    assert odo[0].header.frame_id == 'odom' and odo[0].child_frame_id == 'base_link'
    # odometry is noisy but close to the true motion in the odom frame
    o = odo[-1].pose.pose
    true_rel = compose(inverse(poses[0].astype(float)), poses[-1].astype(float))
    assert math.hypot(o.position.x - true_rel[0], o.position.y - true_rel[1]) < 5.0
    img = [M.TYPESTORE.deserialize_cdr(d, ty) for tp, _, ty, d in msgs
           if tp == '/camera/image_raw'][0]
    assert img.encoding == 'rgb8' and img.height == 32 and img.step == 96
    assert img.header.frame_id == 'camera_optical_frame'
    _, lmsgs = _read(bags['localization'][0])
    assert lmsgs[0][1] > stamps[-1]     # the localization run comes later


def test_bag_for_humble(tmp_path):
    """sqlite3, format 8: what Humble's rosbag2 (0.15, branch humble) needs to read a bag:
    the metadata fields its decoder reads, with the QoS profiles a YAML string of integer
    enums (format 9's list makes it fail with 'bad conversion'), and its sqlite3 queries.
    Our reader reads the bag back."""
    import sqlite3

    import yaml

    from dmn_localizer.bags.read import read_pairs
    res = simulate_bag('mazes', 3, str(tmp_path / 'b'), storage='sqlite3', image_size=16,
                       mapping_frames=12, localization_frames=4, bag_version=8)
    path = Path(res['mapping'][0])
    info = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 8 and info['storage_identifier'] == 'sqlite3'
    assert isinstance(info['duration']['nanoseconds'], int)
    assert isinstance(info['starting_time']['nanoseconds_since_epoch'], int)
    assert info['compression_format'] == info['compression_mode'] == ''
    for f in info['files']:
        assert {'path', 'starting_time', 'duration', 'message_count'} <= set(f)
    assert [f['path'] for f in info['files']] == info['relative_file_paths']
    humble_qos_keys = {'history', 'depth', 'reliability', 'durability', 'deadline', 'lifespan',
                       'liveliness', 'liveliness_lease_duration',
                       'avoid_ros_namespace_conventions'}
    for t in info['topics_with_message_count']:
        meta = t['topic_metadata']
        assert {'name', 'type', 'serialization_format'} <= set(meta)
        assert isinstance(meta['offered_qos_profiles'], str)
        for q in yaml.safe_load(meta['offered_qos_profiles']):
            assert set(q) == humble_qos_keys
            assert all(isinstance(q[k], int) for k in ('history', 'reliability', 'durability'))
    db = sqlite3.connect(path / info['relative_file_paths'][0])
    try:
        topics = db.execute('SELECT name, type, serialization_format, offered_qos_profiles '
                            'FROM topics ORDER BY id').fetchall()
        assert {t[0] for t in topics} >= {'/camera/image_raw', '/ground_truth/pose'}
        (n,) = db.execute('SELECT COUNT(*) FROM (SELECT data, timestamp, topics.name, '
                          'messages.id FROM messages JOIN topics ON messages.topic_id = '
                          'topics.id)').fetchone()
        assert n == info['message_count']
    finally:
        db.close()
    pairs = read_pairs([str(path)], '/camera/image_raw', '/ground_truth/pose', image_size=16)
    assert len(pairs.poses) == 12
    np.testing.assert_allclose(pairs.poses[:, :2], res['mapping'][1][:, :2], atol=1e-5)
    with pytest.raises(ValueError, match='format 7'):
        simulate_bag('mazes', 3, str(tmp_path / 'c'), storage='sqlite3', image_size=16,
                     mapping_frames=4, localization_frames=2, bag_version=7)


def test_bag_files_have_their_final_names(bags):
    """The data file is named after the bag directory (as metadata.yaml says), not after the
    temporary directory it was written in: a user listing the bag sees it."""
    import yaml
    for run in ('mapping', 'localization'):
        path = Path(bags[run][0])
        names = sorted(os.listdir(path))
        meta = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
        assert names == sorted(['metadata.yaml', *meta['relative_file_paths']])
        assert all(n.startswith(path.name) for n in meta['relative_file_paths']), names
        assert not [n for n in os.listdir(path.parent) if 'partial' in n]
        _, msgs = _read(path)
        assert len(msgs) > 0


def test_camera_mounting_from_tf_static(tmp_path):
    """A camera mounted off the base (in /tf_static): dataset and map poses are the camera's,
    replay's stream carries the mounting for the localizer; a bag without /tf_static has
    none."""
    from dmn_localizer.bags.read import read_pairs
    from dmn_localizer.replay.offline import build_map, read_stream, Topics
    mount = np.array([0.3, -0.2, 1.2])
    runs = simulate_bag('mazes', 4, tmp_path / 'm', image_size=16, mapping_frames=30,
                        localization_frames=4, base_from_camera=mount)
    pairs = read_pairs([runs['mapping'][0]], '/camera/image_raw', '/ground_truth/pose', 16)
    camera = compose(runs['mapping'][1].astype(float), mount)
    assert np.allclose(pairs.poses[:, :2], camera[:, :2], atol=1e-4)
    assert np.allclose(np.cos(pairs.poses[:, 2] - camera[:, 2]), 1.0, atol=1e-6)
    view_map = build_map(runs['mapping'][0], Topics(), 16)
    d = np.hypot(*(view_map.poses[:, None, :2] - camera[None, :, :2]).T)
    assert d.min(axis=0).max() < 1e-4          # every context sits at a camera pose
    stream = read_stream(runs['localization'][0], Topics(), 16)
    assert np.allclose(stream.base_from_camera, mount, atol=1e-6)
    # the truth stays the base's: the localizer estimates the base
    assert np.allclose(stream.truth[:, :2], runs['localization'][1][:, :2], atol=1e-4)
    from rosbags.rosbag2 import Writer
    bare = tmp_path / 'bare'
    with Writer(bare, version=9) as w:
        ci = w.add_connection('/camera/image_raw', M.IMAGE, typestore=M.TYPESTORE)
        for i in range(3):
            img = M.image_msg(10**18 + i, 'cam', np.zeros((4, 4, 3), np.uint8))
            w.write(ci, 10**18 + i, M.TYPESTORE.serialize_cdr(img, M.IMAGE))
    from dmn_localizer.bags.read import camera_mounting, open_bag
    reader = open_bag(bare)
    try:
        assert camera_mounting(reader, '/camera/image_raw') is None
    finally:
        reader.close()


def test_simulate_bag_split(tmp_path):
    """simulate-bag records a test world unless told otherwise, and says which."""
    r = _cli('simulate-bag', '--out', str(tmp_path / 'a'), '--image-size', '16',
             '--mapping-frames', '4', '--localization-frames', '2')
    assert r.returncode == 0, r.stderr
    assert 'mazes test world 1100000' in r.stdout
    r = _cli('simulate-bag', '--out', str(tmp_path / 'b'), '--image-size', '16', '--split',
             'val', '--seed', '2', '--mapping-frames', '4', '--localization-frames', '2')
    assert r.returncode == 0, r.stderr
    assert 'mazes val world 1000002' in r.stdout
    want = simulate_bag('mazes', 1_000_002, tmp_path / 'c', image_size=16, mapping_frames=4,
                        localization_frames=2)['mapping'][1]
    _, msgs = _read(tmp_path / 'b' / 'mapping')
    gt = [M.TYPESTORE.deserialize_cdr(d, ty) for tp, _, ty, d in msgs
          if tp == '/ground_truth/pose']
    assert np.allclose([(m.pose.position.x, m.pose.position.y) for m in gt], want[:, :2],
                       atol=1e-5)
    r = _cli('simulate-bag', '--out', str(tmp_path / 'd'), '--split', 'val', '--seed',
             '100000')
    assert r.returncode == 2 and '--seed must be within 0..99999' in r.stderr


def test_simulate_bag_turn_first(tmp_path):
    """--turn-first: the localization run turns once in place at its start, then drives the
    route it drives without the turn; the odometry in the bag sees the turn; a run too short
    for the turn gets a one-line refusal."""
    kw = dict(image_size=16, mapping_frames=4, localization_frames=20)
    plain = simulate_bag('mazes', 5, tmp_path / 'a', **kw)['localization'][1]
    turned = simulate_bag('mazes', 5, tmp_path / 'b', turn_first=True, **kw)['localization'][1]
    assert np.allclose(turned[:12, :2], plain[0, :2])
    steps = np.diff(np.unwrap(turned[:13, 2]))
    assert np.allclose(steps, math.radians(30.0), atol=1e-5)
    assert np.allclose(turned[12:], plain[:8], atol=1e-5)   # the same drive, turned first
    _, msgs = _read(tmp_path / 'b' / 'localization')
    odom = [M.TYPESTORE.deserialize_cdr(d, ty) for tp, _, ty, d in msgs if tp == '/odom']
    q = [o.pose.pose.orientation for o in odom[:12]]
    odom_yaw = np.unwrap([quaternion_to_yaw(o.x, o.y, o.z, o.w) for o in q])
    assert odom_yaw[-1] - odom_yaw[0] == pytest.approx(math.radians(330.0), abs=0.2)
    r = _cli('simulate-bag', '--out', str(tmp_path / 'c'), '--image-size', '16',
             '--localization-frames', '12', '--turn-first')
    assert r.returncode == 2 and '--turn-first takes the first 12' in r.stderr, r.stderr


def test_simulate_bag_mapping_return(tmp_path):
    """--mapping-return: the mapping run turns about and drives its route back facing the
    other way; the localization run (poses, odometry, images, noisy depth) is the one
    recorded without the return."""
    kw = dict(image_size=16, mapping_frames=10, localization_frames=8, depth=True,
              depth_noise=0.02)
    plain = simulate_bag('rooms', 2, tmp_path / 'a', **kw)
    both = simulate_bag('rooms', 2, tmp_path / 'b', mapping_return=True, **kw)
    fwd, ret = plain['mapping'][1], both['mapping'][1]
    assert len(ret) == 2 * len(fwd) + 3 and np.allclose(ret[:10], fwd)
    assert np.allclose(ret[10:13, :2], fwd[-1, :2])                  # turning about in place
    back = ret[13:]
    assert np.allclose(back[:, :2], fwd[::-1, :2])
    assert np.allclose(np.cos(back[:, 2] - fwd[::-1, 2]), -1.0, atol=1e-5)
    assert np.allclose(both['localization'][1], plain['localization'][1])

    def localization_run(run):   # the odometry poses and the images, in order
        _, msgs = _read(tmp_path / run / 'localization')
        out = []
        for topic, _, ty, data in msgs:
            if topic == '/odom':
                p = M.TYPESTORE.deserialize_cdr(data, ty).pose.pose
                out.append((p.position.x, p.position.y, p.orientation.z, p.orientation.w))
            elif topic in ('/camera/image_raw', '/camera/depth/image_raw'):
                out.append(bytes(M.TYPESTORE.deserialize_cdr(data, ty).data))
        return out
    plain_run, both_run = localization_run('a'), localization_run('b')
    assert len(plain_run) == 3 * 8 and plain_run == both_run


def test_bag_messages_deserialize_in_rclpy(bags):
    from rclpy.serialization import deserialize_message
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image
    from geometry_msgs.msg import PoseStamped
    from tf2_msgs.msg import TFMessage
    classes = {'/camera/image_raw': Image, '/camera/camera_info': CameraInfo,
               '/odom': Odometry, '/tf': TFMessage, '/tf_static': TFMessage,
               '/ground_truth/pose': PoseStamped}
    _, msgs = _read(bags['mapping'][0])
    seen = set()
    for topic, _, ty, data in msgs:
        if topic in seen:
            continue
        seen.add(topic)
        ours = M.TYPESTORE.deserialize_cdr(data, ty)
        theirs = deserialize_message(bytes(data), classes[topic])
        if hasattr(ours, 'header'):
            assert (theirs.header.stamp.sec, theirs.header.stamp.nanosec) == \
                (ours.header.stamp.sec, ours.header.stamp.nanosec)
            assert theirs.header.frame_id == ours.header.frame_id
        if topic == '/camera/image_raw':
            assert bytes(theirs.data) == bytes(ours.data) and theirs.encoding == 'rgb8'
        elif topic == '/camera/camera_info':
            assert np.allclose(theirs.k, ours.k) and theirs.width == ours.width
        elif topic == '/odom':
            assert theirs.pose.pose.position.x == ours.pose.pose.position.x
            assert theirs.child_frame_id == 'base_link'
        elif topic in ('/tf', '/tf_static'):
            assert [t.child_frame_id for t in theirs.transforms] == \
                [t.child_frame_id for t in ours.transforms]
            assert theirs.transforms[0].transform.rotation.w == \
                ours.transforms[0].transform.rotation.w
        else:
            assert theirs.pose.orientation.z == ours.pose.orientation.z
            assert theirs.header.frame_id == 'map'
    assert seen == set(classes)


def test_dataset_from_bags_reproduces_poses(bags, tmp_path):
    paths = [bags['mapping'][0], bags['localization'][0]]
    m = build_from_bags(paths, '/camera/image_raw', '/ground_truth/pose', str(tmp_path / 'd'),
                        image_size=16, contexts=16, trajectories=2, trajectory_length=8)
    assert m['counts']['pairs'] == 90 and m['counts']['bad_images'] == 0
    ds = open_dataset(tmp_path / 'd')
    truth = np.concatenate([bags['mapping'][1], bags['localization'][1]]).astype(float)
    found_origin_zero = False
    for si in range(len(ds.manifest['shards'])):
        a = ds.load_shard(si)
        for w in range(len(a['world_seeds'])):
            o = a['origins'][w]
            found_origin_zero |= bool(np.all(o == 0))
            for p in np.concatenate([a['context_poses'][w], a['traj_poses'][w].reshape(-1, 3)]):
                xy = p[:2] + o
                assert np.all((p[:2] >= 0) & (p[:2] < 40))
                d = np.hypot(*(truth[:, :2] - xy).T)
                # robots turn in place: several true poses may share this x-y
                same_xy = np.nonzero(d < 1e-3)[0]
                assert len(same_xy) > 0
                assert max(math.cos(truth[k, 2] - p[2]) for k in same_xy) > 1 - 1e-6
            for t in a['traj_poses'][w]:   # windows are consecutive frames of a run
                assert np.all(np.hypot(*np.diff(t[:, :2], axis=0).T) < 0.6)
    assert found_origin_zero       # the world's own frame is one of the areas
    ep = next(ds.iter_episodes(4, 8, seed=0, odometry_noise=None))
    assert ep.domain == 'bags' and ep.query_images.shape == (8, 16, 16, 3)


@pytest.fixture(scope='module')
def two_worlds(tmp_path_factory):
    """The mapping and localization runs of two different test mazes, in folders w1, w2."""
    root = tmp_path_factory.mktemp('worlds')
    for name, seed in (('w1', 1_100_001), ('w2', 1_100_002)):
        simulate_bag('mazes', seed, root / name, image_size=32,
                     localization_frames=150)
    return root


def _area_sources(out, worlds):
    """For each area of the dataset at ``out``: the set of worlds its images come from."""
    from dmn_localizer.bags.read import read_pairs
    known = {}
    for name, folder in worlds.items():
        pairs = read_pairs([str(folder / 'mapping'), str(folder / 'localization')],
                           '/camera/image_raw', '/ground_truth/pose', 16)
        for img in pairs.images:
            known.setdefault(img.tobytes(), set()).add(name)
    ds = open_dataset(out)
    sources = []
    for si in range(len(ds.manifest['shards'])):
        a = ds.load_shard(si)
        for w in range(len(a['world_seeds'])):
            traj = a['traj_images'][w]
            imgs = np.concatenate([a['context_images'][w], traj.reshape((-1,) + traj.shape[2:])])
            sources.append(set().union(*(known[i.tobytes()] for i in imgs)))
    return ds.manifest, sources


def test_dataset_from_bags_keeps_worlds_apart(two_worlds, tmp_path, caplog):
    """Bags of two worlds that both say frame 'map': each folder (or --group) is its own
    world, and no area holds views of both. Grouping the two worlds' bags together by
    hand gets a warning (their images differ where their poses agree); a group of one
    world's runs does not."""
    from dmn_localizer.commands.dataset_from_bags import parse_groups
    worlds = {'w1': two_worlds / 'w1', 'w2': two_worlds / 'w2'}
    kw = dict(image_size=16, contexts=16, trajectories=2, trajectory_length=8)
    groups = parse_groups([str(worlds['w1'])], [f'w2={worlds["w2"] / "mapping"},'
                                                f'{worlds["w2"] / "localization"}'])
    assert list(groups) == ['w1', 'w2'] and all(len(b) == 2 for b in groups.values())
    with caplog.at_level('WARNING'):
        m = build_from_bags(groups, '/camera/image_raw', '/ground_truth/pose',
                            str(tmp_path / 'd'), **kw)
    assert 'different places' not in caplog.text
    manifest, sources = _area_sources(tmp_path / 'd', worlds)
    assert [g['name'] for g in m['groups']] == ['w1', 'w2']
    assert all(g['areas'] > 0 and not g['suspected_mixing'] for g in m['groups'])
    assert sum(g['areas'] for g in m['groups']) == m['n_worlds'] == len(sources)
    for g in m['groups']:      # the areas of a group hold its own views only
        for area in range(g['first_area'], g['first_area'] + g['areas']):
            assert sources[area] == {g['name']}, (area, sources[area])
    caplog.clear()
    with caplog.at_level('WARNING'):
        m = build_from_bags({'both': [str(worlds['w1'] / 'mapping'),
                                      str(worlds['w2'] / 'mapping')]}, '/camera/image_raw',
                            '/ground_truth/pose', str(tmp_path / 'mixed'), **kw)
    assert 'look like different places' in caplog.text
    assert m['groups'][0]['suspected_mixing']


def test_the_mixing_check_forgives_a_few_degrees_of_yaw():
    """Two views of one place at "the same pose" differ by up to NEAR_RAD of yaw: the mixing
    check compares them at their best horizontal shift of a few columns."""
    from dmn_localizer.data.from_bags import _shifted_difference
    rng = np.random.default_rng(0)
    scene = rng.random((32, 40)).astype(np.float32)
    a, b = scene[:, 2:34], scene[:, 4:36]          # the second view turned by two columns
    assert _shifted_difference(a, b, 0) > 0.2
    assert _shifted_difference(a, b, 1) > 0.2
    assert _shifted_difference(a, b, 2) == 0.0
    assert _shifted_difference(b, a, 3) == 0.0


def test_the_mixing_rank_tells_one_place_from_two_either_way_round():
    """Two bags passing the same 60 poses: with the same views (noise added) the same pose's
    view looks most alike (rank 0); with another place's views it ranks among unrelated ones
    (about 0.5); the statistic does not depend on which bag comes first."""
    from types import SimpleNamespace
    from dmn_localizer.data.from_bags import MIXING_RANK, mixing_rank
    rng = np.random.default_rng(1)
    poses = np.stack([np.arange(60) * 3.0, np.zeros(60), np.zeros(60)], 1)
    place = rng.integers(0, 256, (60, 16, 16, 3))
    other = rng.integers(0, 256, (60, 16, 16, 3))
    noisy = np.clip(place + rng.normal(0, 20, place.shape), 0, 255)

    def rank(second, i=0, j=1):
        images = np.concatenate([place, second]).astype(np.uint8)
        bags = SimpleNamespace(images=images, poses=np.concatenate([poses, poses]),
                               bag=np.repeat([0, 1], 60))
        return mixing_rank(bags, i, j)
    assert rank(noisy) == rank(noisy, 1, 0) == 0.0
    assert rank(other) == rank(other, 1, 0)
    assert 0.35 < rank(other) < 0.65 and rank(other) > MIXING_RANK


def test_dataset_from_bags_refuses_frames_mixed_in_a_group(tmp_path):
    from rosbags.rosbag2 import Writer
    from dmn_localizer.util.errors import UserError
    for name, frame in (('a', 'map'), ('b', 'world')):
        with Writer(tmp_path / name, version=9) as w:
            ci = w.add_connection('/img', M.IMAGE, typestore=M.TYPESTORE)
            cp = w.add_connection('/pose', M.POSE_STAMPED, typestore=M.TYPESTORE)
            for i in range(20):
                ns = 10**18 + i * 10**8
                w.write(ci, ns, M.TYPESTORE.serialize_cdr(
                    M.image_msg(ns, 'cam', np.zeros((8, 8, 3), np.uint8)), M.IMAGE))
                w.write(cp, ns, M.TYPESTORE.serialize_cdr(
                    M.pose_stamped_msg(ns, frame, (i * 0.3, 1.0, 0.0)), M.POSE_STAMPED))
    kw = dict(image_size=8, contexts=8, trajectories=1, trajectory_length=4)
    with pytest.raises(UserError, match='frames map, world'):
        build_from_bags({'g': [str(tmp_path / 'a'), str(tmp_path / 'b')]}, '/img', '/pose',
                        str(tmp_path / 'd'), **kw)
    m = build_from_bags([str(tmp_path / 'a'), str(tmp_path / 'b')], '/img', '/pose',
                        str(tmp_path / 'e'), **kw)
    assert [g['frame_id'] for g in m['groups']] == ['map', 'world']


def test_dataset_from_bags_counts_bad_messages(tmp_path):
    from rosbags.rosbag2 import Writer
    bag = tmp_path / 'bad'
    with Writer(bag, version=9) as w:
        ci = w.add_connection('/img', M.IMAGE, typestore=M.TYPESTORE)
        cp = w.add_connection('/pose', M.POSE_STAMPED, typestore=M.TYPESTORE)
        rng = np.random.default_rng(0)
        for i in range(40):
            ns = 10**18 + i * 10**8
            img = M.image_msg(ns, 'cam', rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
            if i == 3:
                img.encoding = '16UC1'          # unsupported
            if i == 5:
                img.data = img.data[:10]        # truncated
            w.write(ci, ns, M.TYPESTORE.serialize_cdr(img, M.IMAGE))
            if i != 7:                          # image 7 has no pose
                pose = (i * 0.3, 1.0, float('nan') if i == 9 else 0.0)
                w.write(cp, ns, M.TYPESTORE.serialize_cdr(
                    M.pose_stamped_msg(ns, 'map', pose), M.POSE_STAMPED))
        w.write(cp, 10**18 + 41 * 10**8, b'\x00\x01')   # undecodable
    m = build_from_bags([str(bag)], '/img', '/pose', str(tmp_path / 'd'), image_size=8,
                        contexts=8, trajectories=1, trajectory_length=4)
    c = m['counts']
    assert c['bad_images'] == 2 and c['bad_poses'] == 2 and c['images_without_pose'] == 2
    assert c['pairs'] == 36 and c['images'] == 40 and c['poses'] == 40


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'dmn_localizer', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_bags(tmp_path):
    r = _cli('simulate-bag', '--domain', 'mazes', '--seed', '1', '--out', str(tmp_path / 'b'),
             '--image-size', '16', '--mapping-frames', '40', '--localization-frames', '20',
             '--storage', 'sqlite3', '--bag-version', '8')
    assert r.returncode == 0, r.stderr
    assert 'rosbag2 format 8' in r.stdout
    assert (tmp_path / 'b' / 'mapping' / 'metadata.yaml').exists()
    r = _cli('dataset-from-bags', str(tmp_path / 'b'), '--image-topic', '/camera/image_raw',
             '--pose-topic', '/ground_truth/pose', '--out', str(tmp_path / 'd'),
             '--contexts', '8', '--trajectory-length', '5')
    assert r.returncode == 0, r.stderr
    assert 'areas' in r.stdout and '1 groups' in r.stdout     # both bags: one folder
    for bad in (['simulate-bag', '--out', str(tmp_path / 'b')],          # exists
                ['simulate-bag', '--out', str(tmp_path / 'c'), '--image-size', '2'],
                ['dataset-from-bags', str(tmp_path / 'nope'), '--image-topic', 'a',
                 '--pose-topic', 'b', '--out', str(tmp_path / 'e')],
                ['dataset-from-bags', str(tmp_path / 'b' / 'mapping'), '--image-topic',
                 '/nope', '--pose-topic', '/ground_truth/pose', '--out', str(tmp_path / 'f')],
                ['dataset-from-bags', '--group', 'x', '--image-topic', 'a', '--pose-topic',
                 'b', '--out', str(tmp_path / 'g')],
                ['dataset-from-bags', '--image-topic', 'a', '--pose-topic', 'b', '--out',
                 str(tmp_path / 'h')]):
        r = _cli(*bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_live_player_plays_only_what_the_node_takes_and_skips_damaged_images(tmp_path):
    """The --live bag player publishes the localizer's input types only (one-line refusal of
    another, never an import by a name the bag chose) and skips an image message that does
    not decode, as the offline reader does."""
    from rosbags.rosbag2 import Writer
    from dmn_localizer.bags.read import open_bag
    from dmn_localizer.nodes.tools.bag_player import image_stamp, message_class
    from dmn_localizer.util.errors import UserError
    from sensor_msgs.msg import Image
    assert message_class(M.IMAGE, '/img') is Image
    with pytest.raises(UserError, match='/x is os/path/join; the player publishes'):
        message_class('os/path/join', '/x')
    bag = tmp_path / 'b'
    with Writer(bag, version=9) as w:
        ci = w.add_connection('/img', M.IMAGE, typestore=M.TYPESTORE)
        img = M.image_msg(10**18 + 5, 'cam', np.zeros((4, 4, 3), np.uint8))
        w.write(ci, 10**18, M.TYPESTORE.serialize_cdr(img, M.IMAGE))
        w.write(ci, 10**18 + 1, b'\x00\x01\x00\x00\x07')
    reader = open_bag(bag)
    try:
        stamps = [image_stamp(reader, c, raw) for c, _, raw in reader.messages()]
    finally:
        reader.close()
    assert stamps == [pytest.approx(1e9 + 5e-9, abs=1e-9), None]


def test_live_recorder_skips_a_particle_cloud_that_is_not_poses():
    """A particle message with a non-finite pose costs that snapshot, not the recorder."""
    import rclpy
    from geometry_msgs.msg import Pose, PoseArray
    from inprocess import ros_context
    from dmn_localizer.nodes.tools.recorder import Recorder
    with ros_context() as context:
        node = rclpy.create_node('recorder_test', context=context)
        try:
            rec = Recorder(node, snapshot_every=1)
            good, bad = Pose(), Pose()
            good.orientation.w = 1.0
            bad.position.x = float('nan')
            rec.on_particles(PoseArray(poses=[good, bad]))
            rec.on_particles(PoseArray(poses=[good]))
            assert len(rec.snapshots) == 1 and rec.particle_msgs == 2
        finally:
            node.destroy_node()
