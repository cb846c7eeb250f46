"""Offline bag replay: build a map from a mapping bag, localize over a query bag, score it.

Pure core (rosbags + torch + numpy; no rclpy). The bag's images and odometry go in stamp
order through the node's feed loop (:class:`~dmn_localizer.localization.tracker.Tracker`
around the same :class:`~dmn_localizer.localization.localizer.Localizer`), so offline results
equal what the node computes from the same messages. Metrics use ``evo``.
"""
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dmn_localizer.bags import messages as M
from dmn_localizer.bags.read import (BASE_FRAME, camera_intrinsics, camera_mounting,
                                     decode_image, IMAGE_TYPES, open_bag, POSE_TYPES)
from dmn_localizer.data.dataset import TRACKING_SIGMA
from dmn_localizer.depth import DepthBuffer, message_columns
from dmn_localizer.util.errors import UserError
from dmn_localizer.geometry import compose, quaternion_to_yaw, wrap_angle
from dmn_localizer.images import ImageError, resize_square
from dmn_localizer.localization.odometry import OdometryBuffer
from dmn_localizer.localization.tracker import Tracker
from dmn_localizer.mapping.builder import MapBuilder
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.util.atomic import atomic_path, remove_temp_files, write_text

logger = logging.getLogger(__name__)

TIGHT_M = 2.0             # a threshold a robot would care about
CHI2_2DOF_95 = 5.991      # 2-sigma-equivalent ellipse for a 2-D Gaussian
FINAL_SHARE = 0.25        # converged_share_final: the last quarter of the updates
# a camera pose is covered by the map when a map view within MAP_VIEW_M faces within
# MAP_VIEW_YAW of it (map_view_distance): then the model has a view of what the camera sees
MAP_VIEW_M = 2.0
MAP_VIEW_YAW = math.radians(30.0)
MAP_VIEW_CHUNK = 256      # camera poses whose distances to every map view are taken at once


@dataclass
class Topics:
    image: str = '/camera/image_raw'
    odom: str = '/odom'
    truth: str = '/ground_truth/pose'
    depth: str = ''     # a depth image registered to the images (empty: none)


@dataclass
class Stream:
    """A query bag in stamp order: images, odometry (odom_from_base) and ground truth."""
    image_stamps: np.ndarray
    images: np.ndarray
    odom_stamps: np.ndarray
    odom: np.ndarray
    truth_stamps: np.ndarray
    truth: np.ndarray
    counts: dict = field(default_factory=dict)
    image_type: str = M.IMAGE      # message type of the image topic (raw or compressed)
    odom_type: str = M.ODOMETRY    # message type of the odometry topic
    base_from_camera: np.ndarray = None   # the camera mounting from /tf_static (None: none)
    camera_intrinsics: tuple = None       # (width, fx) from camera_info (None: none)
    depth: DepthBuffer = None             # column depths of the depth topic (None: none)


def _check_topics(bag, conns, topics, wanted=None):
    """UserError unless the bag has the ``wanted`` [(topic, message types)] (default: the
    three topics of a query bag) with usable message types."""
    wanted = wanted or ((topics.image, IMAGE_TYPES), (topics.odom, POSE_TYPES),
                        (topics.truth, POSE_TYPES))
    if topics.depth:
        wanted = tuple(wanted) + ((topics.depth, (M.IMAGE,)),)
    missing = [t for t, _ in wanted if t not in conns]
    if missing:
        raise UserError(f'{bag}: no topic {", ".join(missing)} (topics: '
                        f'{", ".join(sorted(conns))})')
    for topic, kinds in wanted:
        if conns[topic].msgtype not in kinds:
            raise UserError(f'{bag}: {topic} is {conns[topic].msgtype}, expected one of '
                            f'{", ".join(kinds)}')


def check_bag(bag, topics):
    """Cheap check of a query bag (topics and types, no message read): {topic: msgtype}."""
    reader = open_bag(bag)
    try:
        conns = {c.topic: c for c in reader.connections}
        _check_topics(bag, conns, topics)
        return {t: c.msgtype for t, c in conns.items()}
    finally:
        reader.close()


def _read_messages(reader, conns, wanted, image_size, base_topic):
    """The messages of ``wanted`` [(topic, kind)] in bag order: ({kind: (stamps, values)},
    counts, base frame). Images are decoded and resized to ``image_size``, depth images
    (kind 'depth') become ``image_size`` column depths (:func:`~dmn_localizer.depth.
    message_columns`), the other kinds are planar poses (x, y, yaw); the base frame is the
    ``child_frame_id`` of Odometry on ``base_topic`` (else ``base_link``). Bad messages are
    counted and skipped."""
    data = {kind: ([], []) for _, kind in wanted}
    counts = {'bad_messages': 0}
    base_frame = BASE_FRAME
    kinds = {}   # topic -> kinds it feeds (odometry and truth may share a topic)
    for topic, kind in wanted:
        kinds.setdefault(topic, []).append(kind)
    for conn, t, raw in reader.messages(connections=[conns[t] for t in kinds]):
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception:
            counts['bad_messages'] += 1
            continue
        stamp = (M.stamp_ns(msg.header.stamp) or t) * 1e-9
        if 'depth' in kinds[conn.topic]:
            try:
                value = message_columns(msg, image_size)
            except ImageError:
                counts['bad_messages'] += 1
                continue
        elif conn.msgtype in IMAGE_TYPES:
            img = decode_image(msg, conn.msgtype)
            if img is None:
                counts['bad_messages'] += 1
                continue
            value = resize_square(img, image_size)
        else:
            if conn.topic == base_topic and conn.msgtype == M.ODOMETRY and msg.child_frame_id:
                base_frame = msg.child_frame_id
            p = msg.pose if conn.msgtype == M.POSE_STAMPED else msg.pose.pose
            q = p.orientation
            value = np.array([p.position.x, p.position.y,
                              quaternion_to_yaw(q.x, q.y, q.z, q.w)])
            if not np.isfinite(value).all():
                counts['bad_messages'] += 1
                continue
        for kind in kinds[conn.topic]:
            data[kind][0].append(stamp)
            data[kind][1].append(value)
    return data, counts, base_frame


def read_stream(bag, topics, image_size, depth_sync_tolerance_s=0.05):
    reader = open_bag(bag)
    try:
        conns = {c.topic: c for c in reader.connections}
        _check_topics(bag, conns, topics)
        data, counts, base_frame = _read_messages(
            reader, conns, _with_depth([(topics.image, 'image'), (topics.odom, 'odom'),
                                        (topics.truth, 'truth')], topics),
            image_size, topics.odom)
        mounting = camera_mounting(reader, topics.image, base_frame, where=bag)
        intrinsics = camera_intrinsics(reader, topics.image)
    finally:
        reader.close()
    depth = _depth_buffer(data, counts, topics, bag, depth_sync_tolerance_s)
    arr = {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in data.items()}
    for k, (s, _) in arr.items():
        counts[k] = len(s)
        if len(s) == 0:
            raise UserError(f'{bag}: no usable {k} messages')
    return Stream(arr['image'][0], arr['image'][1].astype(np.uint8), *arr['odom'],
                  *arr['truth'], counts=counts, image_type=conns[topics.image].msgtype,
                  odom_type=conns[topics.odom].msgtype, base_from_camera=mounting,
                  camera_intrinsics=intrinsics, depth=depth)


def _with_depth(wanted, topics):
    """``wanted`` [(topic, kind)] of :func:`_read_messages`, plus the depth topic if any."""
    return wanted + ([(topics.depth, 'depth')] if topics.depth else [])


def _depth_buffer(data, counts, topics, bag, tolerance_s):
    """A :class:`~dmn_localizer.depth.DepthBuffer` holding all the depth frames
    :func:`_read_messages` read (taken out of ``data``, counted in ``counts``); None without a
    depth topic; UserError when the bag has no usable one."""
    if not topics.depth:
        return None
    stamps, columns = data.pop('depth')
    if not stamps:
        raise UserError(f'{bag}: no usable depth messages on {topics.depth}')
    buf = DepthBuffer(tolerance_s, max_frames=len(stamps) + 1)
    for stamp, value in sorted(zip(stamps, columns), key=lambda e: e[0]):
        buf.add(stamp, value)
    counts['depth'] = len(buf)
    return buf


def build_map(bag, topics, image_size, min_distance=2.0, min_angle=0.5, max_contexts=None,
              sync_tolerance_s=0.05, depth_sync_tolerance_s=0.05):
    """The mapper's pipeline (:class:`~dmn_localizer.mapping.builder.MapBuilder`: pairing by
    stamp, keyframe selection) over a mapping bag's images and true poses in stamp order (the
    camera mounting from its ``/tf_static``, as the mapper's ``camera_offset_*``; the column
    depths of ``topics.depth``, if given), without embeddings."""
    reader = open_bag(bag)
    try:
        conns = {c.topic: c for c in reader.connections}
        _check_topics(bag, conns, topics, ((topics.image, IMAGE_TYPES),
                                           (topics.truth, POSE_TYPES)))
        data, counts, base_frame = _read_messages(
            reader, conns, _with_depth([(topics.image, 'image'), (topics.truth, 'pose')],
                                       topics), image_size, topics.truth)
        mounting = camera_mounting(reader, topics.image, base_frame, where=bag)
    finally:
        reader.close()
    depth = _depth_buffer(data, counts, topics, bag, depth_sync_tolerance_s)
    builder = MapBuilder(ViewMap(), base_from_camera=mounting, min_distance=min_distance,
                         min_angle=min_angle, sync_tolerance_s=sync_tolerance_s,
                         depth_at=None if depth is None else depth.at)
    events = sorted([(stamp, 0, pose) for stamp, pose in zip(*data['pose'])]
                    + [(stamp, 1, image) for stamp, image in zip(*data['image'])],
                    key=lambda e: e[:2])    # a pose before an image of the same stamp
    for stamp, is_image, value in events:
        (builder.add_image if is_image else builder.add_pose)(stamp, value)
        if max_contexts and len(builder.view_map) >= max_contexts:
            break
    counts.update(images=len(data['image'][0]), poses=len(data['pose'][0]),
                  unpaired_images=builder.pairer.dropped)
    logger.info('map from %s: %d contexts (%s)', bag, len(builder.view_map), counts)
    return builder.view_map


@dataclass
class Track:
    """Estimates at every image where the filter updated."""
    stamps: list = field(default_factory=list)
    estimates: list = field(default_factory=list)      # (3,)
    covariances: list = field(default_factory=list)    # (3, 3)
    truth: list = field(default_factory=list)          # (3,)
    snapshots: list = field(default_factory=list)      # (stamp, particles (K,3), weights (K,))
    recoveries: list = field(default_factory=list)     # (update index, 'inject' | 'global')
    evidence: list = field(default_factory=list)       # the belief's log mean likelihood ratio
    lost: list = field(default_factory=list)           # the update flagged lost (unreliable)
    frames: int = 0
    seconds: float = 0.0
    depth_pairs: tuple = None     # (images with, without a depth frame), with a depth topic
    # per update: x-y distance from the true camera pose to the nearest map view facing its
    # way (map_view_distance; empty until annotate_map_views)
    map_view_m: list = field(default_factory=list)

    def errors(self):
        """(x-y error (T,) in m, absolute yaw error (T,) in rad) of each update."""
        est = np.asarray(self.estimates, np.float64).reshape(-1, 3)
        gt = np.asarray(self.truth, np.float64).reshape(-1, 3)
        return (np.hypot(*(est[:, :2] - gt[:, :2]).T),
                np.abs(wrap_angle(est[:, 2] - gt[:, 2])))


def stream_mounting(stream, config):
    """``base_from_camera`` of a stream: its bag's ``/tf_static``, else the localizer's
    ``camera_offset_*`` parameters of ``config`` (the node's rule)."""
    if stream.base_from_camera is not None:
        return stream.base_from_camera
    return (config.camera_offset_x, config.camera_offset_y, config.camera_offset_yaw)


def localizer_for(model, config, device, seed, stream, view_map, where=''):
    """The :class:`~dmn_localizer.localization.localizer.Localizer` that localizes ``stream``
    on ``view_map``: the camera mounting of :func:`stream_mounting`, the intrinsics of the
    stream's ``camera_info`` (a model trained with another camera is reported in one warning
    naming ``where``), the map set."""
    from dmn_localizer.localization.localizer import Localizer
    loc = Localizer(model, config, device, seed=seed,
                    base_from_camera=stream_mounting(stream, config))
    if stream.camera_intrinsics is not None:
        try:
            warning = loc.set_camera_intrinsics(*stream.camera_intrinsics)
        except ValueError as exc:
            warning = f'{where}: {exc}'
        if warning:
            logger.warning(warning)
    loc.set_map(view_map)
    return loc


def truth_buffer(stream):
    """Ground truth of the stream, interpolated at any stamp it covers (0.5 s beyond)."""
    truth = OdometryBuffer(max_age_s=1e9, max_extrapolation_s=0.5)
    for s, p in zip(stream.truth_stamps, stream.truth):
        truth.add(s, p)
    return truth


def initial_belief(stream, mode, truth=None, sigma=TRACKING_SIGMA):
    """None for 'global' (uniform); for 'tracking' (mean (3,), std (3,)): a Gaussian of std
    ``sigma`` (m, m, rad; default the paper's 6 m / 30 deg) around the first true pose, its
    mean drawn from that Gaussian (seeded)."""
    if mode == 'global':
        return None
    if mode != 'tracking':
        raise UserError(f"mode must be 'global' or 'tracking', not {mode!r}")
    truth = truth_buffer(stream) if truth is None else truth
    rng = np.random.default_rng(0)
    std = np.asarray(sigma, np.float64)
    first = truth.pose_at(stream.image_stamps[0])
    if first is None:
        raise UserError('tracking mode needs ground truth at the first image')
    return first + rng.normal(size=3) * std, std


def events(stream):
    """The stream's odometry samples and images in stamp order, as ``(kind, stamp, value)``,
    kind 'odom' or 'image'; odometry first at equal stamps (within 1 ns)."""
    j = 0
    for stamp, image in zip(stream.image_stamps, stream.images):
        while j < len(stream.odom_stamps) and stream.odom_stamps[j] <= stamp + 1e-9:
            yield 'odom', stream.odom_stamps[j], stream.odom[j]
            j += 1
        yield 'image', stamp, image
    for j in range(j, len(stream.odom_stamps)):
        yield 'odom', stream.odom_stamps[j], stream.odom[j]


def localize(localizer, stream, mode='global', snapshot_every=10, progress=False,
             sigma=TRACKING_SIGMA):
    """Run the filter over the stream: its events through the node's feed loop
    (:class:`~dmn_localizer.localization.tracker.Tracker`). mode 'global' (uniform) or
    'tracking' (Gaussian of std ``sigma`` around the first true pose; default the paper's
    tracking setting). The track holds the estimate after each update's health check."""
    tracker = Tracker(localizer, OdometryBuffer(max_age_s=1e9),
                      depth_at=None if stream.depth is None else stream.depth.at)
    truth = truth_buffer(stream)
    belief = initial_belief(stream, mode, truth, sigma)
    if belief is None:
        localizer.init_global()
    else:
        localizer.init_gaussian(*belief)
    track = Track()
    t0 = time.perf_counter()
    # closed before an exception leaves (a Ctrl-C's message is the last line printed)
    with tqdm(total=len(stream.image_stamps), desc='localizing', unit='frame',
              disable=not progress) as bar:
        for kind, stamp, value in events(stream):
            if kind == 'odom':
                outcome = tracker.add_odometry(stamp, value)
            else:
                track.frames += 1
                outcome = tracker.add_image(stamp, value)
                bar.update()
            report = outcome.report
            if report is not None and report.recovery:
                track.recoveries.append((len(track.stamps), report.recovery))
            gt = None if not outcome.updated else truth.pose_at(outcome.stamp)
            if gt is None:
                continue
            mean, cov = localizer.estimate()
            track.stamps.append(float(outcome.stamp))
            track.estimates.append(mean)
            track.covariances.append(cov)
            track.truth.append(gt)
            track.evidence.append(float('nan') if report is None else report.evidence)
            track.lost.append(report is not None and report.unreliable)
            if snapshot_every and (len(track.stamps) - 1) % snapshot_every == 0:
                track.snapshots.append((float(outcome.stamp), *localizer.particle_array()))
    track.seconds = time.perf_counter() - t0
    if tracker.depth_at is not None:
        track.depth_pairs = (tracker.with_depth, tracker.without_depth)
    return track


def _evo_trajectory(stamps, poses):
    from evo.core.trajectory import PoseTrajectory3D
    xyz = np.column_stack([poses[:, 0], poses[:, 1], np.zeros(len(poses))])
    quat = np.column_stack([np.cos(poses[:, 2] / 2), np.zeros(len(poses)),
                            np.zeros(len(poses)), np.sin(poses[:, 2] / 2)])  # w x y z
    return PoseTrajectory3D(positions_xyz=xyz, orientations_quat_wxyz=quat,
                            timestamps=np.asarray(stamps, np.float64))


def map_view_distance(camera_poses, map_poses, max_yaw=MAP_VIEW_YAW):
    """x-y distance (T,) from each camera pose (T, 3) to the nearest map view (N, 3) whose
    heading is within ``max_yaw`` of the camera's, +inf where none is: where it is large the
    mapping run never looked the way the camera looks there, so the map has no view of what
    the image shows."""
    cams = np.asarray(camera_poses, np.float64).reshape(-1, 3)
    views = np.asarray(map_poses, np.float64).reshape(-1, 3)
    out = np.full(len(cams), np.inf)
    if not len(views):
        return out
    for i in range(0, len(cams), MAP_VIEW_CHUNK):
        c = cams[i:i + MAP_VIEW_CHUNK, None]
        d = np.hypot(c[..., 0] - views[:, 0], c[..., 1] - views[:, 1])
        facing = np.abs(wrap_angle(c[..., 2] - views[:, 2])) <= max_yaw
        out[i:i + MAP_VIEW_CHUNK] = np.where(facing, d, np.inf).min(1)
    return out


def annotate_map_views(track, map_poses, base_from_camera):
    """Set ``track.map_view_m``: :func:`map_view_distance` of each update's true camera pose
    (the true base pose composed with the camera mounting ``base_from_camera`` (x, y, yaw))
    to the map's views ``map_poses`` (N, 3), which are camera poses."""
    truth = np.asarray(track.truth, np.float64).reshape(-1, 3)
    cams = compose(truth, np.asarray(base_from_camera, np.float64))
    track.map_view_m = map_view_distance(cams, map_poses).tolist()


def map_view_metrics(err_xy, map_view_m):
    """The metrics of :func:`map_view_distance` for per-update x-y errors: the share of the
    updates covered by the map (a view facing the camera's way within :data:`MAP_VIEW_M`) and
    the share of updates off by :data:`TIGHT_M` or more among the covered ones and among the
    others (None where there are none, or no distances)."""
    view = np.asarray(map_view_m, np.float64)
    err = np.asarray(err_xy, np.float64)
    known = len(view) == len(err) and len(err) > 0
    covered = view <= MAP_VIEW_M if known else np.zeros(0, bool)

    def off_share(where):
        return float(np.mean(err[where] >= TIGHT_M)) if known and where.any() else None
    return {'map_view_threshold_m': MAP_VIEW_M,
            'map_view_max_yaw_deg': round(math.degrees(MAP_VIEW_YAW), 3),
            'map_view_share': float(np.mean(covered)) if known else None,
            'off_share_with_map_view': off_share(covered),
            'off_share_without_map_view': off_share(~covered)}


def converged_from(err_xy, converge_m=TIGHT_M):
    """Index of the first update from which every x-y error is below ``converge_m`` to the
    end of the run, or None when the last one is not (a run that converged and diverged
    later has not converged)."""
    above = np.flatnonzero(~(np.asarray(err_xy) < converge_m))
    start = 0 if len(above) == 0 else int(above[-1]) + 1
    return None if start >= len(err_xy) else start


def chance_rate(truth_xy, map_xy, threshold_m):
    """Share of map context positions ``map_xy`` (N, 2) within ``threshold_m`` (strictly, as
    the success rate counts) of each true position ``truth_xy`` (T, 2), averaged over T: the
    success rate of an estimate drawn at a random mapped pose."""
    d = np.hypot(*(np.asarray(truth_xy)[:, None, :2] - np.asarray(map_xy)[None, :, :2]).T)
    return float(np.mean(d < threshold_m))


def xy_nees(track):
    """x-y NEES of each update of a track (array): error' cov^-1 error, inf where the
    covariance is singular."""
    err = (np.asarray(track.estimates) - np.asarray(track.truth))[:, :2]
    nees = []
    for e, c in zip(err, np.asarray(track.covariances)[:, :2, :2]):
        try:
            nees.append(float(e @ np.linalg.solve(c + 1e-9 * np.eye(2), e)))
        except np.linalg.LinAlgError:
            nees.append(float('inf'))
    return np.asarray(nees)


def compute_metrics(track, converge_m=TIGHT_M, map_xy=None, final_share=FINAL_SHARE):
    """Metrics of a track (keys documented in docs/cli.md); ``map_xy`` (N, 2): the map's
    context positions, for the chance levels of the success rates (None: null)."""
    from evo.core import metrics as evo_metrics

    from dmn_localizer.evaluation.protocol import SUCCESS_M  # the paper's x-y threshold
    if not track.stamps:
        raise UserError('the filter never updated: no odometry or images in the bag?')
    est, gt = np.asarray(track.estimates), np.asarray(track.truth)
    stamps = np.asarray(track.stamps)
    err_xy, err_yaw = track.errors()
    ref, traj = _evo_trajectory(stamps, gt), _evo_trajectory(stamps, est)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, traj))
    rpe_rmse = float('nan')
    if len(stamps) > 1:
        rpe = evo_metrics.RPE(evo_metrics.PoseRelation.translation_part, delta=1,
                              delta_unit=evo_metrics.Unit.frames, all_pairs=False)
        rpe.process_data((ref, traj))
        rpe_rmse = float(rpe.get_statistic(evo_metrics.StatisticsType.rmse))
    converged_at = converged_from(err_xy, converge_m)
    final = err_xy[-max(1, math.ceil(final_share * len(err_xy))):]
    chance = {}
    for key, threshold in (('success_rate_chance', SUCCESS_M),
                           ('success_rate_tight_chance', TIGHT_M)):
        chance[key] = (None if map_xy is None or len(map_xy) == 0
                       else chance_rate(gt[:, :2], map_xy, threshold))
    nees = xy_nees(track)   # covariance consistency on x-y
    return {
        'ape_rmse_m': float(ape.get_statistic(evo_metrics.StatisticsType.rmse)),
        'rpe_rmse_m': rpe_rmse,
        'success_rate': float(np.mean(err_xy < SUCCESS_M)),
        'success_rate_tight': float(np.mean(err_xy < TIGHT_M)),
        **chance,
        'success_threshold_m': SUCCESS_M, 'tight_threshold_m': TIGHT_M,
        'time_to_converge_s': (None if converged_at is None
                               else float(stamps[converged_at] - stamps[0])),
        'converged_share_final': float(np.mean(final < converge_m)),
        'final_error_m': float(err_xy[-1]), 'final_yaw_error_deg': math.degrees(err_yaw[-1]),
        'median_error_after_convergence_m': (None if converged_at is None else
                                             float(np.median(err_xy[converged_at:]))),
        'frames': track.frames, 'updates': len(stamps),
        'frames_per_s': track.frames / max(track.seconds, 1e-9),
        'nees_mean': float(np.mean(nees)),
        'share_inside_2sigma': float(np.mean(nees < CHI2_2DOF_95)),
        # a pose a robot would trust although it is off by more than the tight threshold
        'confident_miss_share': float(np.mean((nees >= CHI2_2DOF_95) & (err_xy >= TIGHT_M))),
        **map_view_metrics(err_xy, track.map_view_m),
    }


UPDATE_COLUMNS = ('stamp_s', 'x_m', 'y_m', 'yaw_rad', 'true_x_m', 'true_y_m', 'true_yaw_rad',
                  'error_xy_m', 'error_yaw_deg', 'std_x_m', 'std_y_m', 'std_yaw_deg', 'nees_xy',
                  'inside_2sigma', 'evidence', 'lost', 'recovery', 'map_view_m')
"""The columns of ``updates.csv`` (documented in docs/cli.md)."""


def update_rows(track):
    """One row per update of ``track`` (:data:`UPDATE_COLUMNS`): the estimate, the truth, the
    errors, the published standard deviations, the x-y NEES and whether the truth is inside
    the 2-sigma ellipse, the belief's evidence, the lost flag, the recovery the update
    applied and the distance to the nearest map view facing the camera's way (``inf``: none).
    Values a track lacks (the evidence and flag of a ``--live`` replay) are empty."""
    est, gt = np.asarray(track.estimates, np.float64), np.asarray(track.truth, np.float64)
    std = np.sqrt(np.maximum(np.diagonal(np.asarray(track.covariances, np.float64),
                                         axis1=1, axis2=2), 0.0))
    err_xy, err_yaw = track.errors()
    nees = xy_nees(track)
    recovery = dict(track.recoveries)
    rows = []
    for i, stamp in enumerate(track.stamps):
        evidence = track.evidence[i] if i < len(track.evidence) else float('nan')
        lost = track.lost[i] if i < len(track.lost) else None
        view = track.map_view_m[i] if i < len(track.map_view_m) else None
        rows.append(['%.9f' % stamp, *('%.4f' % v for v in est[i]),
                     *('%.4f' % v for v in gt[i]), '%.4f' % err_xy[i],
                     '%.3f' % math.degrees(err_yaw[i]), '%.4f' % std[i, 0], '%.4f' % std[i, 1],
                     '%.3f' % math.degrees(std[i, 2]), '%.4g' % nees[i],
                     int(nees[i] < CHI2_2DOF_95),
                     '' if not math.isfinite(evidence) else '%.4f' % evidence,
                     '' if lost is None else int(lost), recovery.get(i, ''),
                     '' if view is None else '%.2f' % view])
    return rows


def write_update_table(track, path):
    """``updates.csv`` (:func:`update_rows` under a header of :data:`UPDATE_COLUMNS`),
    written atomically."""
    import csv
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(UPDATE_COLUMNS)
            writer.writerows(update_rows(track))


def write_outputs(track, metrics, out, view_map=None, layout=None):
    """TUM trajectories, the per-update table ``updates.csv``, PNG plots and metrics.json in
    ``out``, each written atomically.

    metrics.json goes last and an older one is removed first: when it exists, the other files
    are complete and from the same run (an interrupted run leaves no metrics.json)."""
    from evo.tools import file_interface
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out)
    (out / 'metrics.json').unlink(missing_ok=True)
    stamps = np.asarray(track.stamps)
    evo_log = logging.getLogger('evo')
    level = evo_log.level
    evo_log.setLevel(logging.WARNING)   # evo logs every save under the temporary name
    try:
        for name, poses in (('estimate.tum', track.estimates),
                            ('groundtruth.tum', track.truth)):
            with atomic_path(out / name) as tmp:
                file_interface.write_tum_trajectory_file(str(tmp), _evo_trajectory(
                    stamps, np.asarray(poses)))
    finally:
        evo_log.setLevel(level)
    write_update_table(track, out / 'updates.csv')
    from dmn_localizer.replay.plots import plot_replay
    pngs = plot_replay(track, metrics, out, view_map=view_map, layout=layout)
    write_text(out / 'metrics.json', json.dumps(metrics, indent=2) + '\n')
    return pngs
