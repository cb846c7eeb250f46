"""Record a simulated robot's runs through one world as two rosbag2 bags.

``OUT/mapping`` and ``OUT/localization``: the same world, two trajectories; the localization run
starts :data:`LOCALIZATION_DELAY_S` after the mapping run ends (stamps keep increasing) and has
its own odometry frame origin (odom restarts at identity, like a robot rebooted).

Topics (frames per REP-105; world frame = ``map``):

================================  =============================  ==================================
``/camera/image_raw``             sensor_msgs/msg/Image rgb8     frame ``camera_optical_frame``
``/camera/camera_info``           sensor_msgs/msg/CameraInfo     same stamps as the images
``/odom``                         nav_msgs/msg/Odometry          odom -> base_link, noisy
``/tf``                           tf2_msgs/msg/TFMessage         odom -> base_link (= /odom)
``/tf_static``                    tf2_msgs/msg/TFMessage         base_link -> camera_link ->
                                                                 camera_optical_frame, latched
``/ground_truth/pose``            geometry_msgs/msg/PoseStamped  base_link pose in ``map``
``/camera/depth/image_raw``       sensor_msgs/msg/Image 32FC1    with ``depth=True`` only: depth
                                                                 registered to the images (m;
                                                                 :mod:`~dmn_localizer.sim.
                                                                 depth_camera`)
================================  =============================  ==================================

All messages of one step share its stamp (``rate_hz`` steps a second); the bag's receive
timestamps equal the header stamps.

Storage and format: mcap or sqlite3, rosbag2 format 9 (Jazzy, Kilted) or 8 (QoS profiles stored
as a YAML string, the way Humble's reader expects them; format 9 stores a list, which Humble
rejects). For Humble's ``ros2 bag``: sqlite3 (its default storage) and format 8.
"""
import copy
import logging
import os

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from dmn_localizer.bags import messages as M
from dmn_localizer.geometry import compose, relative, wrap_angle
from dmn_localizer.sim.trajectories import (exploring_trajectory, random_trajectory,
                                            return_route, turn_in_place)
from dmn_localizer.sim.spec import domain_rng
from dmn_localizer.sim.world import make_world
from dmn_localizer.util.atomic import atomic_directory

log = logging.getLogger(__name__)

START_NS = 1_700_000_000 * 1_000_000_000
LOCALIZATION_DELAY_S = 600
ODOM_NOISE = (0.02, 0.01, np.radians(1.0))   # per-step std of (dx, dy, dyaw), body frame
RUNS = ('mapping', 'localization')
MAPPING_MIN_FRAMES = 800
MAPPING_SIGHT_M = 1.5
"""The mapping run counts a place as seen when it passed within this distance (open rooms are
covered in lanes about 3 m apart)."""
TURN_FIRST_FRAMES = 12
"""With ``turn_first``, the localization run's first frames: one full turn in place, 30 deg a
frame."""
TOPICS = {'/camera/image_raw': M.IMAGE, '/camera/camera_info': M.CAMERA_INFO,
          '/odom': M.ODOMETRY, '/tf': M.TF, '/tf_static': M.TF,
          '/ground_truth/pose': M.POSE_STAMPED}
DEPTH_TOPIC = '/camera/depth/image_raw'


BAG_VERSIONS = (8, 9)   # what rosbags writes


def write_run(path, world, poses, start_ns, rate_hz, rng, storage='mcap', teleports=(),
              version=9, base_from_camera=(0.0, 0.0, 0.0), depth=False, depth_range=0.0,
              depth_noise=0.0, depth_rng=None):
    """Write one run (true base poses (N, 3) in the world frame) to the bag directory ``path``.

    At the frame indices in ``teleports`` the robot was carried (kidnapped): its odometry
    sees no motion into that frame. The camera sits at ``base_from_camera`` (x, y, yaw) on the
    base (rendered there, and in ``/tf_static``). ``depth``: also record the simulated depth
    camera on :data:`DEPTH_TOPIC`, with no reading beyond ``depth_range`` m (0: unlimited) and
    log-normal noise ``depth_noise`` from ``depth_rng`` (:func:`~dmn_localizer.sim.
    depth_camera.degrade`). Returns the number of frames written.
    """
    plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
    if version not in BAG_VERSIONS:
        raise ValueError(f'rosbag2 format {version}: expected one of {BAG_VERSIONS}')
    dt_ns = int(round(1e9 / rate_hz))
    cam = world.camera
    cam_height = cam.height_m or 0.5
    mount = np.asarray(base_from_camera, np.float64)
    camera_poses = compose(poses.astype(np.float64), mount)
    images = world.render(camera_poses.astype(poses.dtype))
    depths = None
    if depth:
        from dmn_localizer.sim.depth_camera import degrade
        depths = degrade(world.render_depth(camera_poses), depth_rng, depth_range, depth_noise)
    topics = dict(TOPICS, **({DEPTH_TOPIC: M.IMAGE} if depth else {}))
    with atomic_directory(path) as tmp, Writer(tmp, version=version, storage_plugin=plugin) as w:
        conns = {t: w.add_connection(t, ty, typestore=M.TYPESTORE,
                                     offered_qos_profiles=[M.qos(1, True) if t == '/tf_static'
                                                           else M.qos(10)])
                 for t, ty in topics.items()}

        def put(topic, ns, msg):
            w.write(conns[topic], ns, M.TYPESTORE.serialize_cdr(msg, topics[topic]))

        put('/tf_static', start_ns, M.tf_message([
            M.transform(start_ns, 'base_link', 'camera_link', (mount[0], mount[1], cam_height),
                        M.yaw_to_quaternion(float(mount[2]))),
            M.transform(start_ns, 'camera_link', 'camera_optical_frame', quat=M.OPTICAL_QUAT)]))
        odometry, steps = noisy_odometry(poses, rng, teleports)
        for i, (pose, odom) in enumerate(zip(poses.astype(np.float64), odometry)):
            ns = start_ns + i * dt_ns
            put('/camera/image_raw', ns, M.image_msg(ns, 'camera_optical_frame', images[i]))
            put('/camera/camera_info', ns, M.camera_info_msg(ns, 'camera_optical_frame', cam))
            if depths is not None:
                put(DEPTH_TOPIC, ns, M.depth_image_msg(ns, 'camera_optical_frame', depths[i]))
            put('/odom', ns, M.odometry_msg(ns, odom, steps[i] * rate_hz))
            qx, qy, qz, qw = M.yaw_to_quaternion(float(odom[2]))
            put('/tf', ns, M.tf_message([M.transform(ns, 'odom', 'base_link',
                                                     (odom[0], odom[1], 0.0),
                                                     (qx, qy, qz, qw))]))
            put('/ground_truth/pose', ns, M.pose_stamped_msg(ns, 'map', pose))
    return len(poses)


def noisy_odometry(poses, rng, teleports=(), noise=ODOM_NOISE):
    """Wheel odometry along true base poses (N, 3): each step's motion in the body frame plus
    Gaussian noise of std ``noise`` (dx, dy, dyaw), accumulated from the identity; no motion
    into the frames in ``teleports``. Returns (odom_from_base (N, 3), noisy steps (N, 3); the
    first step zero)."""
    poses = np.asarray(poses, np.float64)
    odom, steps = np.zeros((len(poses), 3)), np.zeros((len(poses), 3))
    for i in range(1, len(poses)):
        step = np.zeros(3) if i in teleports else relative(poses[i - 1], poses[i])
        step = step + rng.normal(size=3) * np.asarray(noise)
        step[2] = wrap_angle(step[2])
        steps[i] = step
        odom[i] = compose(odom[i - 1], step)
    return odom, steps


def _far_pose(candidates, pose, min_m, rng):
    """A random pose of ``candidates`` at least ``min_m`` from ``pose`` (else the farthest)."""
    dist = np.hypot(*(candidates[:, :2] - pose[:2]).T)
    far = np.flatnonzero(dist >= min_m)
    return candidates[rng.choice(far) if len(far) else int(np.argmax(dist))]


def simulate_bag(domain, seed, out, storage='mcap', image_size=64, mapping_frames=None,
                 localization_frames=150, rate_hz=4.0, step_m=0.5, kidnap_at=None,
                 kidnap_min_m=10.0, bag_version=9, base_from_camera=(0.0, 0.0, 0.0),
                 hfov_deg=None, depth=False, depth_range=0.0, depth_noise=0.0,
                 turn_first=False, mapping_return=False):
    """Write ``out/mapping`` and ``out/localization`` for world ``seed`` of ``domain``.

    ``mapping_frames``: the mapping run's length; None (default): until it has seen every
    reachable part of the world (:data:`MAPPING_SIGHT_M`), at least :data:`MAPPING_MIN_FRAMES`
    frames.

    ``kidnap_at``: the localization run's frame at which the robot is teleported (its
    odometry sees nothing) to a mapped place at least ``kidnap_min_m`` away: the
    kidnapped-robot test. ``turn_first``: the localization run begins with one full turn in
    place (:data:`TURN_FIRST_FRAMES` frames, part of ``localization_frames``), then drives the
    route it drives without the turn. ``mapping_return``: after covering the world the mapping
    run turns about and drives its whole route back, so the map has views facing both ways
    along it (:func:`~dmn_localizer.sim.trajectories.return_route`); the localization run is
    the one recorded without the return. ``base_from_camera``: where the camera sits on the robot.
    ``hfov_deg``: another camera's horizontal field of view (default: the world's own camera;
    mazes: only narrower, a centre crop); ``/camera/camera_info`` states its intrinsics.
    ``depth``: also record a depth camera registered to the images (:data:`DEPTH_TOPIC`),
    ``depth_range`` and ``depth_noise`` as in :func:`write_run` (their own random stream: the
    bags are otherwise those without depth).

    Returns a dict run -> (bag path, true poses (N, 3) float32, first stamp ns).
    """
    if turn_first and not TURN_FIRST_FRAMES < (kidnap_at or localization_frames):
        raise ValueError(f'turn_first takes {TURN_FIRST_FRAMES} frames: localization_frames and '
                         f'kidnap_at must be > {TURN_FIRST_FRAMES}')
    os.makedirs(out, exist_ok=True)
    rng = domain_rng(domain, seed, 2)
    depth_rng = domain_rng(domain, seed, 3)
    result = {}
    with make_world(domain, seed, image_size, hfov_deg=hfov_deg) as world:
        start = START_NS
        for run, n in zip(RUNS, (mapping_frames, localization_frames)):
            # the mapping run explores (covers the world); the localization run wanders off
            # from a place the mapping run passed, so it drives mostly through mapped parts
            if run == 'mapping':
                poses = exploring_trajectory(world.spec, rng, n or MAPPING_MIN_FRAMES,
                                             step_m=step_m, turn_sigma=np.radians(10.0),
                                             sight_m=MAPPING_SIGHT_M, cover=n is None)
                mapped = poses
                if mapping_return:
                    # the localization run as without the return: the random streams as the
                    # plain run's odometry and depth noise would leave them
                    plain_rng, plain_depth_rng = copy.deepcopy(rng), copy.deepcopy(depth_rng)
                    noisy_odometry(poses, plain_rng)
                    if depth:
                        from dmn_localizer.sim.depth_camera import degrade
                        cam = world.camera
                        degrade(np.ones((len(poses), cam.height, cam.width), np.float32),
                                plain_depth_rng, depth_range, depth_noise)
                    poses = return_route(poses)
            else:
                start_pose = mapped[rng.integers(len(mapped))]
                turn = turn_in_place(start_pose, TURN_FIRST_FRAMES if turn_first else 0)
                poses = np.concatenate([turn, random_trajectory(
                    world.spec, rng, (kidnap_at or n) - len(turn), step_m=step_m,
                    turn_sigma=np.radians(10.0), start=start_pose)])
                if kidnap_at:
                    poses = np.concatenate([poses, random_trajectory(
                        world.spec, rng, n - kidnap_at, step_m=step_m,
                        turn_sigma=np.radians(10.0),
                        start=_far_pose(mapped, poses[-1], kidnap_min_m, rng))])
            path = os.path.join(out, run)
            write_run(path, world, poses, start, rate_hz, rng, storage,
                      teleports=(kidnap_at,) if run == 'localization' and kidnap_at else (),
                      version=bag_version, base_from_camera=base_from_camera, depth=depth,
                      depth_range=depth_range, depth_noise=depth_noise, depth_rng=depth_rng)
            if run == 'mapping' and mapping_return:
                rng, depth_rng = plain_rng, plain_depth_rng
            result[run] = (path, poses, start)
            log.info('wrote %s: %d frames', path, len(poses))
            start += int((len(poses) / rate_hz + LOCALIZATION_DELAY_S) * 1e9)
    return result
